//! The meaning of a run, as a pure state machine both drivers share.
//!
//! [`Run`] is built from a validated [`Scenario`] and a seed. It owns the
//! schedule (`[[load]]` and `[[event]]` entries, node ramps, the timed end
//! of every fault), decides what each action touches (which nodes, wards
//! and aggregators; what it silences; when it ends), keeps the timeline and
//! the ground truth detectors are scored against, and assembles the report.
//!
//! A driver — real time over MQTT, or virtual time — asks it in quinn's
//! grammar: sleep until [`Run::poll_timeout`] (time since the nodes
//! started), call [`Run::handle_timeout`], then carry out every
//! [`Run::poll_command`]. Injected actions go through [`Run::apply`]. The
//! driver only turns commands into bytes and time (a node mailbox, a link
//! condition, a modelled broker); it never decides what an action means.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use vitalmesh_core::AlertKind;
use vitalmesh_firmware::{FaultMode, VitalSign};
use vitalmesh_scenario::slo::SloFigures;
use vitalmesh_scenario::{Action, Group, RogueKind, Scenario, Scheduled, resolve};
use vitalmesh_wire::NodeId;

use crate::latency::Percentiles;
use crate::ledger::{self, NodeFinal};
use crate::observe::Observer;
use crate::report::{
    AlertsReport, BrokerReport, ConfigSummary, ConnectionsReport, CpuReport, LatencyReport,
    MemoryReport, REPORT_SCHEMA, Report, RogueReport, RunMode, Throughput, WardLatency,
};
use crate::timeline::TimelineEntry;

/// Key for the random choices of injected actions (scenario entries use
/// their own index, so a scenario picks the same nodes every run).
const INJECTED_KEYS: u32 = 1 << 30;

/// What to do to some nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeOp {
    /// Power fails: RAM lost, socket dropped.
    Crash,
    /// Power back on after a crash or a flat battery.
    Restart,
    /// Clean reboot: buffer kept.
    Reboot,
    /// Leave the mesh: deliver the backlog, then switch off.
    ShutDown,
    /// New sample interval.
    SetInterval(Duration),
    /// A sensor fault from now, for a while or until repaired.
    Fault {
        /// Which sign (all if `None`).
        sign: Option<VitalSign>,
        /// What goes wrong.
        mode: FaultMode,
        /// How long.
        for_: Option<Duration>,
    },
    /// The patient's fever starts this long from now.
    Fever {
        /// Time to onset.
        after: Duration,
    },
    /// The patient starts deteriorating now.
    Deteriorate,
}

/// Whose link a network condition applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkTarget {
    /// These nodes' links.
    Nodes(Vec<NodeId>),
    /// One aggregator's link.
    Aggregator(u16),
}

/// A network condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkOp {
    /// Bytes stop both ways (partitions nest).
    Partition,
    /// One partition ends.
    Heal,
    /// Extra one-way delay.
    Latency {
        /// Per direction.
        latency: Duration,
        /// Uniform ±.
        jitter: Duration,
    },
    /// Extra delay ends.
    ClearLatency,
    /// A share of segments is lost (retransmission delay).
    Loss(f64),
    /// Loss ends.
    ClearLoss,
}

/// What a driver must do, now.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Start nodes `first..first + count` (ids in start order).
    StartNodes {
        /// First id.
        first: u32,
        /// How many.
        count: u32,
    },
    /// Act on nodes.
    Node {
        /// Which.
        nodes: Vec<NodeId>,
        /// What.
        op: NodeOp,
    },
    /// Change link conditions.
    Link {
        /// Whose.
        target: LinkTarget,
        /// What.
        op: LinkOp,
    },
    /// An aggregator dies without a goodbye.
    KillAggregator(u16),
    /// A killed aggregator starts again (next incarnation).
    RestartAggregator(u16),
    /// The broker is killed and started again.
    RestartBroker,
    /// Start a rogue client.
    Rogue {
        /// What it does.
        kind: RogueKind,
        /// Messages to send.
        messages: u32,
        /// Connections to open.
        connections: u32,
        /// Per second.
        rate: f64,
        /// Its randomness.
        seed: u64,
    },
}

/// Nodes starting at a steady rate.
#[derive(Debug, Clone)]
struct Ramp {
    start: Duration,
    count: u32,
    over: Duration,
    started: u32,
}

impl Ramp {
    /// When the ramp's `k`-th node (0-based) is due.
    fn due(&self, k: u32) -> Duration {
        let over = self.over.as_micros();
        self.start
            + Duration::from_micros((over * u128::from(k) / u128::from(self.count.max(1))) as u64)
    }
}

/// A timed fault's end.
#[derive(Debug, Clone)]
struct PendingEnd {
    at: Duration,
    commands: Vec<Command>,
    action: &'static str,
    description: String,
    /// Network conditions end when the run drains; interval changes need not.
    network: bool,
}

/// The pure run.
#[derive(Debug, Clone)]
pub struct Run {
    scenario: Scenario,
    seed: u64,
    entries: Vec<Scheduled>,
    next_entry: usize,
    ramps: Vec<Ramp>,
    started: u32,
    ends: Vec<PendingEnd>,
    intervals: Vec<Duration>,
    aggregator_running: Vec<bool>,
    touched: BTreeSet<u32>,
    timeline: Vec<TimelineEntry>,
    injections: u32,
    commands: VecDeque<Command>,
    begun: bool,
}

impl Run {
    /// A run of `scenario` with master seed `seed`, not yet begun.
    pub fn new(scenario: &Scenario, seed: u64) -> Self {
        let mut entries: Vec<Scheduled> = scenario
            .load
            .iter()
            .chain(&scenario.events)
            .cloned()
            .collect();
        // Stable: entries at the same time keep file order, loads first.
        entries.sort_by_key(|s| s.at);
        let nodes = scenario.population.nodes() as usize;
        Self {
            seed,
            entries,
            next_entry: 0,
            ramps: Vec::new(),
            started: 0,
            ends: Vec::new(),
            intervals: vec![scenario.profile.sample_interval; nodes],
            aggregator_running: vec![true; usize::from(scenario.aggregators)],
            touched: BTreeSet::new(),
            timeline: Vec::new(),
            injections: 0,
            commands: VecDeque::new(),
            begun: false,
            scenario: scenario.clone(),
        }
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The master seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Nodes started so far.
    pub fn started(&self) -> u32 {
        self.started
    }

    /// Whether every node that will start has been started.
    pub fn ramped(&self) -> bool {
        self.begun && self.ramps.is_empty()
    }

    /// What happened on purpose so far.
    pub fn timeline(&self) -> &[TimelineEntry] {
        &self.timeline
    }

    /// The current sample interval of `node`.
    pub fn interval_of(&self, node: NodeId) -> Duration {
        self.intervals
            .get(node.0 as usize)
            .copied()
            .unwrap_or(self.scenario.profile.sample_interval)
    }

    /// Starts the nodes' clock (time zero). Without `ramp` entries every
    /// node starts at the connect rate from now.
    pub fn begin(&mut self) {
        if self.begun {
            return;
        }
        self.begun = true;
        let ramps_scheduled = self
            .entries
            .iter()
            .any(|s| matches!(s.action, Action::Ramp { .. }));
        if !ramps_scheduled {
            let count = self.scenario.population.nodes();
            let over =
                Duration::from_secs_f64(f64::from(count) / f64::from(self.scenario.connect_rate));
            self.ramps.push(Ramp {
                start: Duration::ZERO,
                count,
                over,
                started: 0,
            });
        }
    }

    /// When [`Run::handle_timeout`] is next due, as time since the nodes
    /// started (`None`: nothing is scheduled).
    pub fn poll_timeout(&self) -> Option<Duration> {
        let entry = self.entries.get(self.next_entry).map(|s| s.at);
        let ramp = self.ramps.iter().map(|r| r.due(r.started)).min();
        let end = self.ends.iter().map(|e| e.at).min();
        [entry, ramp, end].into_iter().flatten().min()
    }

    /// Fires what is due at `elapsed`: scheduled entries, node starts, the
    /// ends of timed faults. Their commands wait in [`Run::poll_command`].
    pub fn handle_timeout(&mut self, elapsed: Duration) {
        if !self.begun {
            return;
        }
        while let Some(s) = self
            .entries
            .get(self.next_entry)
            .filter(|s| s.at <= elapsed)
        {
            let (action, origin) = (s.action.clone(), s.origin.clone());
            let key = self.next_entry as u32;
            self.next_entry += 1;
            self.apply(&action, &origin, Some(key), elapsed);
        }
        let mut due = 0;
        for ramp in &mut self.ramps {
            while ramp.started < ramp.count && ramp.due(ramp.started) <= elapsed {
                ramp.started += 1;
                due += 1;
            }
        }
        self.ramps.retain(|r| r.started < r.count);
        let due = due.min(self.scenario.population.nodes() - self.started);
        if due > 0 {
            self.commands.push_back(Command::StartNodes {
                first: self.started,
                count: due,
            });
            self.started += due;
        }
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ends)
            .into_iter()
            .partition(|e| e.at <= elapsed);
        self.ends = later;
        for end in now {
            self.end(end, elapsed);
        }
    }

    fn end(&mut self, end: PendingEnd, elapsed: Duration) {
        for c in &end.commands {
            if let Command::Node {
                nodes,
                op: NodeOp::SetInterval(d),
            } = c
            {
                for n in nodes {
                    if let Some(i) = self.intervals.get_mut(n.0 as usize) {
                        *i = *d;
                    }
                }
            }
        }
        self.commands.extend(end.commands);
        self.timeline.push(TimelineEntry::new(
            elapsed.as_secs_f64(),
            "scheduled end",
            end.action,
            end.description,
        ));
    }

    /// The next thing the driver must do.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The run is ending: every network fault still in force is lifted so
    /// the drain can deliver (no timeline entry: the fault did not end, the
    /// run did).
    pub fn lift_network_faults(&mut self) {
        for end in std::mem::take(&mut self.ends) {
            if end.network {
                self.commands.extend(end.commands);
            }
        }
    }

    /// Applies `action` now (`elapsed` since the nodes started) and records
    /// it; returns its timeline index. `key` seeds its random choices
    /// (scenario entries pass their index; `None` for injections).
    pub fn apply(
        &mut self,
        action: &Action,
        source: &str,
        key: Option<u32>,
        elapsed: Duration,
    ) -> usize {
        let key = key.unwrap_or_else(|| {
            self.injections += 1;
            INJECTED_KEYS + self.injections
        });
        let mut rng = resolve::event_rng(self.seed, key);
        let population = self.scenario.population;
        let at_s = elapsed.as_secs_f64();
        let mut entry = TimelineEntry::new(at_s, source, action.name(), action.to_string());
        entry.detail = serde_json::to_value(action).unwrap_or_default();
        let targets = |s, rng: &mut _| resolve::resolve(s, &population, rng);
        let ids = |nodes: &[NodeId]| nodes.iter().map(|n| n.0).collect::<Vec<u32>>();
        let node_command = |this: &mut Self, nodes: Vec<NodeId>, op: NodeOp| {
            this.commands.push_back(Command::Node { nodes, op });
        };
        match action {
            Action::Ramp { count, over } => {
                let pending: u32 = self.ramps.iter().map(|r| r.count - r.started).sum();
                let remaining = population.nodes() - self.started - pending;
                let count = count.map_or(remaining, |c| c.min(remaining));
                self.ramps.push(Ramp {
                    start: elapsed,
                    count,
                    over: *over,
                    started: 0,
                });
                entry.description = format!(
                    "start {count} nodes over {}",
                    vitalmesh_scenario::duration::format(*over)
                );
            }
            Action::Leave { target } => {
                let nodes = targets(target, &mut rng);
                entry.nodes = ids(&nodes);
                node_command(self, nodes, NodeOp::ShutDown);
            }
            Action::SampleRate { target, interval } => {
                let nodes = targets(target, &mut rng);
                for n in &nodes {
                    self.intervals[n.0 as usize] = *interval;
                }
                entry.nodes = ids(&nodes);
                node_command(self, nodes, NodeOp::SetInterval(*interval));
            }
            Action::Burst {
                target,
                interval,
                for_,
            } => {
                let nodes = targets(target, &mut rng);
                // Each node goes back to the interval it had before.
                let mut by_interval: Vec<(Duration, Vec<NodeId>)> = Vec::new();
                for n in &nodes {
                    let before = self.intervals[n.0 as usize];
                    match by_interval.iter_mut().find(|(d, _)| *d == before) {
                        Some((_, list)) => list.push(*n),
                        None => by_interval.push((before, vec![*n])),
                    }
                }
                self.ends.push(PendingEnd {
                    at: elapsed + *for_,
                    commands: by_interval
                        .into_iter()
                        .map(|(d, nodes)| Command::Node {
                            nodes,
                            op: NodeOp::SetInterval(d),
                        })
                        .collect(),
                    action: "burst",
                    description: format!("burst of {} nodes ended", nodes.len()),
                    network: false,
                });
                entry.nodes = ids(&nodes);
                node_command(self, nodes, NodeOp::SetInterval(*interval));
            }
            Action::KillNodes { target } => {
                let nodes = targets(target, &mut rng);
                entry.nodes = ids(&nodes);
                node_command(self, nodes, NodeOp::Crash);
            }
            Action::RebootNodes { target } => {
                let nodes = targets(target, &mut rng);
                entry.nodes = ids(&nodes);
                node_command(self, nodes, NodeOp::Reboot);
            }
            Action::RestartNodes { target } => {
                let nodes = targets(target, &mut rng);
                entry.nodes = ids(&nodes);
                node_command(self, nodes, NodeOp::Restart);
            }
            Action::Deterioration { target } => {
                let nodes = targets(target, &mut rng);
                entry.nodes = ids(&nodes);
                node_command(self, nodes, NodeOp::Deteriorate);
            }
            Action::SensorFault {
                target,
                sign,
                mode,
                for_,
            } => {
                let nodes = targets(target, &mut rng);
                entry.nodes = ids(&nodes);
                node_command(
                    self,
                    nodes,
                    NodeOp::Fault {
                        sign: *sign,
                        mode: *mode,
                        for_: *for_,
                    },
                );
            }
            Action::Outbreak {
                ward,
                attack_rate,
                onset_median,
                onset_spread,
            } => {
                let cases = resolve::outbreak_onsets(
                    *ward,
                    *attack_rate,
                    *onset_median,
                    *onset_spread,
                    &population,
                    &mut rng,
                );
                entry.nodes = cases.iter().map(|(n, _)| n.0).collect();
                entry.onsets = cases
                    .iter()
                    .map(|(n, d)| (n.0, at_s + d.as_secs_f64()))
                    .collect();
                for (node, after) in cases {
                    node_command(self, vec![node], NodeOp::Fever { after });
                }
            }
            Action::KillAggregator { aggregator } => {
                entry.aggregator = Some(*aggregator);
                match self.aggregator_running.get_mut(usize::from(*aggregator)) {
                    Some(running) if *running => {
                        *running = false;
                        self.commands
                            .push_back(Command::KillAggregator(*aggregator));
                    }
                    _ => entry.error = Some(format!("aggregator {aggregator} is not running")),
                }
            }
            Action::RestartAggregator { aggregator } => {
                entry.aggregator = Some(*aggregator);
                match self.aggregator_running.get_mut(usize::from(*aggregator)) {
                    Some(running) if !*running => {
                        *running = true;
                        self.commands
                            .push_back(Command::RestartAggregator(*aggregator));
                    }
                    _ => entry.error = Some(format!("aggregator {aggregator} is already running")),
                }
            }
            Action::RestartBroker => self.commands.push_back(Command::RestartBroker),
            Action::Partition { group, for_ } => {
                let target = self.link_target(group, &mut rng, &mut entry);
                self.timed_link(
                    target,
                    LinkOp::Partition,
                    LinkOp::Heal,
                    elapsed + *for_,
                    "partition",
                    format!("partition of {group} ended"),
                );
            }
            Action::Latency {
                group,
                latency,
                jitter,
                for_,
            } => {
                let target = self.link_target(group, &mut rng, &mut entry);
                self.timed_link(
                    target,
                    LinkOp::Latency {
                        latency: *latency,
                        jitter: *jitter,
                    },
                    LinkOp::ClearLatency,
                    elapsed + *for_,
                    "latency",
                    format!("added latency on {group} ended"),
                );
            }
            Action::PacketLoss { group, share, for_ } => {
                let target = self.link_target(group, &mut rng, &mut entry);
                self.timed_link(
                    target,
                    LinkOp::Loss(*share),
                    LinkOp::ClearLoss,
                    elapsed + *for_,
                    "packet_loss",
                    format!("packet loss on {group} ended"),
                );
            }
            Action::Rogue {
                kind,
                messages,
                connections,
                rate,
            } => {
                self.commands.push_back(Command::Rogue {
                    kind: *kind,
                    messages: *messages,
                    connections: *connections,
                    rate: *rate,
                    seed: self.seed ^ u64::from(key),
                });
            }
        }
        if entry.error.is_none() {
            if matches!(action, Action::RestartBroker) {
                // Every connection drops: true for every started node.
                self.touched.extend(0..self.started);
            } else if action.silences_nodes() {
                self.touched.extend(entry.nodes.iter().copied());
            }
        }
        if let Some(ward) = action.ward() {
            entry.wards = vec![ward];
        }
        self.timeline.push(entry);
        self.timeline.len() - 1
    }

    fn link_target(
        &self,
        group: &Group,
        rng: &mut rand_chacha::ChaCha8Rng,
        entry: &mut TimelineEntry,
    ) -> LinkTarget {
        match group {
            Group::Nodes(selector) => {
                let nodes = resolve::resolve(selector, &self.scenario.population, rng);
                entry.nodes = nodes.iter().map(|n| n.0).collect();
                LinkTarget::Nodes(nodes)
            }
            Group::Aggregator(a) => {
                entry.aggregator = Some(*a);
                LinkTarget::Aggregator(*a)
            }
        }
    }

    fn timed_link(
        &mut self,
        target: LinkTarget,
        start: LinkOp,
        stop: LinkOp,
        at: Duration,
        action: &'static str,
        description: String,
    ) {
        self.commands.push_back(Command::Link {
            target: target.clone(),
            op: start,
        });
        self.ends.push(PendingEnd {
            at,
            commands: vec![Command::Link { target, op: stop }],
            action,
            description,
            network: true,
        });
    }

    /// The timeline entry at `index`.
    pub fn entry(&self, index: usize) -> &TimelineEntry {
        &self.timeline[index]
    }

    /// The driver could not carry out the entry at `index` (a broker that
    /// would not restart, say): it is recorded as refused. Nodes it may
    /// already have disturbed stay touched — a broker that failed to come
    /// back still dropped every connection.
    pub fn refuse(&mut self, index: usize, error: String) {
        if let Some(entry) = self.timeline.get_mut(index) {
            entry.error = Some(error);
        }
    }

    /// Broker restarts done on purpose (applied, not refused): the others
    /// are the broker's own failures.
    fn injected_broker_restarts(&self) -> u64 {
        self.timeline
            .iter()
            .filter(|e| e.action == "restart_broker" && e.error.is_none())
            .count() as u64
    }

    /// Nodes reported down that no action silenced: false alarms.
    pub fn false_node_down(&self, observer: &Observer) -> Vec<u32> {
        observer
            .nodes_ever_down
            .iter()
            .map(|n| n.0)
            .filter(|n| !self.touched.contains(n))
            .collect()
    }

    /// Why each recorded ownership move happened.
    fn explain_moves(&self, observer: &Observer) -> crate::observe::OwnershipReport {
        let mut ownership = observer.ownership.clone();
        for m in &mut ownership.moves {
            m.cause = match m.from {
                None => "first assignment".into(),
                Some(from) => {
                    let recent = |e: &&TimelineEntry| {
                        e.error.is_none() && e.at_s <= m.at_s + 1e-9 && e.at_s >= m.at_s - 60.0
                    };
                    let involved = |a: u16| {
                        self.timeline
                            .iter()
                            .rev()
                            .filter(recent)
                            .find(|e| e.aggregator == Some(a) || e.action == "restart_broker")
                    };
                    let down = observer.alerts.iter().rev().find(|a| {
                        matches!(a.kind, AlertKind::AggregatorDown { aggregator, .. } if aggregator.0 == from)
                    });
                    if let Some(e) = involved(from).or_else(|| involved(m.to)) {
                        format!("{} ({} at {:.1} s)", e.description, e.source, e.at_s)
                    } else if let Some(a) = down {
                        match a.kind {
                            AlertKind::AggregatorDown { reason, .. } => {
                                format!("aggregator {from} reported down: {reason:?}")
                            }
                            _ => unreachable!("filtered above"),
                        }
                    } else {
                        format!("rebalance: aggregator {} joined or left", m.to)
                    }
                }
            };
        }
        ownership
    }

    /// Assembles the report from what the driver measured and observed.
    pub fn report(&self, inputs: ReportInputs<'_>) -> Report {
        let s = &self.scenario;
        let observer = inputs.observer;
        let mut ledger = ledger::compute(inputs.finals, &observer.delivered, &[], &s.population);
        // Per-node duplicates are not tracked separately; attribute the
        // observer's total to the ledger's total.
        ledger.total.duplicates = observer.duplicates;
        let false_node_down = self.false_node_down(observer);
        let latency = LatencyReport {
            clock: match inputs.mode {
                RunMode::Real => "wall",
                RunMode::Virtual => "simulated",
            },
            end_to_end: Percentiles::of(&observer.e2e_total),
            publish_ack: inputs.publish_ack,
            per_ward: observer
                .e2e_ward
                .iter()
                .enumerate()
                .map(|(w, h)| WardLatency {
                    ward: w as u16,
                    latency: Percentiles::of(h),
                })
                .collect(),
        };
        let rejected: u64 = observer.rejected.values().sum();
        let totals = &ledger.total;
        let figures = SloFigures {
            unexplained: totals.unexplained,
            delivered_share: if totals.produced == 0 {
                0.0
            } else {
                totals.delivered as f64 / totals.produced as f64
            },
            p50_ms: latency.end_to_end.p50_ms,
            p99_ms: latency.end_to_end.p99_ms,
            p999_ms: latency.end_to_end.p99_9_ms,
            max_ms: latency.end_to_end.max_ms,
            dropped_overflow: totals.dropped_overflow,
            lost_on_crash: totals.lost_on_crash,
            duplicates: totals.duplicates,
            connect_failures: inputs.connections.failures,
            false_node_down: false_node_down.len() as u64,
            rejected,
            unplanned_broker_restarts: inputs
                .broker
                .process_restarts
                .saturating_sub(self.injected_broker_restarts()),
        };
        Report {
            schema: REPORT_SCHEMA,
            vitalmesh_version: env!("CARGO_PKG_VERSION"),
            scenario: s.name.clone(),
            seed: self.seed,
            mode: inputs.mode,
            modelled: match inputs.mode {
                RunMode::Real => Vec::new(),
                RunMode::Virtual => vec!["latency", "connections", "broker"],
            },
            started_at_unix_s: inputs.started_at_unix_s,
            ran_for_s: inputs.ran_for.as_secs_f64(),
            interrupted: inputs.interrupted,
            config: ConfigSummary {
                nodes: s.population.nodes(),
                wards: s.population.wards,
                aggregators: s.aggregators,
                partitions: s.partitions,
                sample_interval_ms: s.profile.sample_interval.as_millis() as u64,
                buffer_bytes: s.profile.buffer_bytes,
                connect_rate: s.connect_rate,
                duration_s: s.duration.as_secs_f64(),
            },
            broker: inputs.broker,
            slo: vitalmesh_scenario::slo::evaluate(&s.slos, &figures),
            ledger,
            latency,
            throughput: inputs.throughput,
            connections: inputs.connections,
            cpu: inputs.cpu,
            memory: inputs.memory,
            aggregators: observer.aggregators.values().cloned().collect(),
            ownership: self.explain_moves(observer),
            alerts: AlertsReport {
                counts: observer.alert_counts.clone(),
                nodes_reported_down: observer.nodes_ever_down.iter().map(|n| n.0).collect(),
                false_node_down,
                recent: observer
                    .alerts
                    .iter()
                    .rev()
                    .take(200)
                    .rev()
                    .copied()
                    .collect(),
            },
            rejected: observer.rejected.clone(),
            rejected_examples: observer.rejected_examples.clone(),
            timeline: self.timeline.clone(),
            rogue: inputs.rogue,
        }
    }
}

/// What a driver hands [`Run::report`].
#[derive(Debug)]
pub struct ReportInputs<'a> {
    /// Which driver.
    pub mode: RunMode,
    /// When the run started, Unix seconds.
    pub started_at_unix_s: f64,
    /// How long the nodes ran.
    pub ran_for: Duration,
    /// Stopped early.
    pub interrupted: bool,
    /// Every node at the end.
    pub finals: &'a [NodeFinal],
    /// What the aggregators did.
    pub observer: &'a Observer,
    /// Node → broker PUBACK latency.
    pub publish_ack: Percentiles,
    /// Per-second series.
    pub throughput: Throughput,
    /// Connection figures.
    pub connections: ConnectionsReport,
    /// Broker figures.
    pub broker: BrokerReport,
    /// Host CPU (real time only).
    pub cpu: Option<CpuReport>,
    /// Host memory (real time only).
    pub memory: Option<MemoryReport>,
    /// Rogue clients.
    pub rogue: Vec<RogueReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str) -> Scenario {
        let text = format!(
            "[scenario]\nname = \"t\"\nduration = \"60s\"\n[population]\nwards = 2\nnodes_per_ward = 5\nconnect_rate = 5\n{extra}"
        );
        vitalmesh_scenario::parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn drain(run: &mut Run) -> Vec<Command> {
        std::iter::from_fn(|| run.poll_command()).collect()
    }

    #[test]
    fn without_ramps_every_node_starts_at_the_connect_rate() {
        let mut run = Run::new(&scenario(""), 1);
        run.begin();
        let mut starts = Vec::new();
        while let Some(t) = run.poll_timeout() {
            run.handle_timeout(t);
            for c in drain(&mut run) {
                if let Command::StartNodes { first, count } = c {
                    starts.push((t, first, count));
                }
            }
        }
        assert_eq!(starts.len(), 10);
        assert_eq!(starts[0], (Duration::ZERO, 0, 1));
        assert_eq!(starts[9], (Duration::from_millis(1800), 9, 1));
        assert!(run.ramped());
    }

    #[test]
    fn a_timed_fault_ends_on_time_with_its_own_timeline_entry() {
        let mut run = Run::new(
            &scenario("[[event]]\nat = \"5s\"\naction = \"partition\"\nward = 1\nfor = \"10s\"\n"),
            3,
        );
        run.begin();
        run.handle_timeout(Duration::from_secs(2));
        drain(&mut run);
        assert_eq!(run.poll_timeout(), Some(Duration::from_secs(5)));
        run.handle_timeout(Duration::from_secs(5));
        let c = drain(&mut run);
        assert_eq!(
            c,
            [Command::Link {
                target: LinkTarget::Nodes((5..10).map(NodeId).collect()),
                op: LinkOp::Partition
            }]
        );
        assert_eq!(run.poll_timeout(), Some(Duration::from_secs(15)));
        run.handle_timeout(Duration::from_secs(15));
        assert!(matches!(
            drain(&mut run)[..],
            [Command::Link {
                op: LinkOp::Heal,
                ..
            }]
        ));
        let t = run.timeline();
        assert_eq!(
            (t[0].action.as_str(), t[0].wards.as_slice()),
            ("partition", &[1][..])
        );
        assert_eq!(t[1].source, "scheduled end");
    }

    #[test]
    fn killing_a_dead_aggregator_is_refused_and_touches_nothing() {
        let mut run = Run::new(&scenario(""), 1);
        run.begin();
        let first = run.apply(
            &Action::KillAggregator { aggregator: 1 },
            "inject",
            None,
            Duration::ZERO,
        );
        assert!(run.entry(first).error.is_none());
        let again = run.apply(
            &Action::KillAggregator { aggregator: 1 },
            "inject",
            None,
            Duration::ZERO,
        );
        assert_eq!(
            run.entry(again).error.as_deref(),
            Some("aggregator 1 is not running")
        );
        assert_eq!(drain(&mut run), [Command::KillAggregator(1)]);
    }

    #[test]
    fn a_burst_restores_each_nodes_own_interval() {
        let mut run = Run::new(
            &scenario(
                "[[load]]\nat = \"1s\"\naction = \"sample_rate\"\nnodes = [0]\ninterval = \"2s\"\n[[load]]\nat = \"2s\"\naction = \"burst\"\nward = 0\ninterval = \"100ms\"\nfor = \"1s\"\n",
            ),
            1,
        );
        run.begin();
        run.handle_timeout(Duration::from_secs(3));
        let restores: Vec<Command> = drain(&mut run)
            .into_iter()
            .filter(|c| matches!(c, Command::Node { op: NodeOp::SetInterval(d), .. } if *d != Duration::from_millis(100)))
            .collect();
        assert!(restores.contains(&Command::Node {
            nodes: vec![NodeId(0)],
            op: NodeOp::SetInterval(Duration::from_secs(2))
        }));
        assert_eq!(run.interval_of(NodeId(1)), Duration::from_secs(1));
        assert_eq!(run.interval_of(NodeId(0)), Duration::from_secs(2));
    }
}

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
use vitalmesh_firmware::physiology::{DeteriorationEpisode, FeverEpisode};
use vitalmesh_firmware::{FaultMode, PatientOptions, VitalSign};
use vitalmesh_scenario::slo::SloFigures;
use vitalmesh_scenario::{Action, Group, RogueKind, Scenario, Scheduled, resolve};
use vitalmesh_wire::{AggregatorId, GatewayId, NodeId, Scope, Timestamp};

use crate::census::{BedEvent, Census, Planned};
use crate::truth::{Episode, EpisodeKind, GroundTruth, Outbreak};

use crate::latency::Percentiles;
use crate::ledger::{self, NodeFinal};
use crate::observe::Observer;
use crate::report::{
    AlertsReport, BrokerReport, ConfigSummary, ConnectionsReport, CpuReport, DetectionReport,
    IncidentsReport, LatencyReport, MemoryReport, REPORT_SCHEMA, Report, RogueReport, RunMode,
    Throughput, WardLatency, WardSeriesReport,
};
use crate::timeline::TimelineEntry;

/// Key for the random choices of injected actions (scenario entries use
/// their own index, so a scenario picks the same nodes every run).
const INJECTED_KEYS: u32 = 1 << 30;

/// What to do to some gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayOp {
    /// Power fails: what it holds is lost; its nodes buffer.
    Crash,
    /// Powers on again; its nodes rejoin.
    Restart,
}

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
    /// The patient gets this fever, starting this long from now.
    Fever {
        /// Time to onset.
        after: Duration,
        /// Its course (its `onset` is set by the driver: now + `after`).
        episode: FeverEpisode,
    },
    /// The patient starts deteriorating now, over this ramp.
    Deteriorate {
        /// How long the decline lasts before it plateaus.
        ramp: Duration,
    },
    /// The patient is discharged: the bed is empty.
    Discharge,
    /// A new patient is admitted to the bed.
    Admit {
        /// The patient's clinical facts.
        options: PatientOptions,
    },
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
    /// Gateways crash or boot again.
    Gateways {
        /// Which.
        gateways: Vec<GatewayId>,
        /// What.
        op: GatewayOp,
    },
    /// An aggregator joins the running mesh.
    AddAggregator {
        /// Its slot.
        aggregator: u16,
        /// Its capacity weight.
        weight: u16,
    },
    /// An aggregator hands its partitions over and leaves.
    RemoveAggregator(u16),
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
    /// Every aggregator slot's state (`[aggregators] max` of them).
    aggregator_slots: Vec<SlotState>,
    touched: BTreeSet<u32>,
    /// Nodes this run crashed or switched off, and not yet restarted: what
    /// a restart touches.
    down: BTreeSet<u32>,
    /// Gateways crashed and not restarted.
    gateways_down: BTreeSet<u32>,
    timeline: Vec<TimelineEntry>,
    injections: u32,
    commands: VecDeque<Command>,
    begun: bool,
    census: Census,
    truth: GroundTruth,
    /// Open patient episodes (indices into `truth.episodes`) per node.
    open_episodes: Vec<Vec<usize>>,
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
            aggregator_slots: (0..scenario.aggregator_slots)
                .map(|a| {
                    if a < scenario.aggregators {
                        SlotState::Running
                    } else {
                        SlotState::Free
                    }
                })
                .collect(),
            touched: BTreeSet::new(),
            down: BTreeSet::new(),
            gateways_down: BTreeSet::new(),
            timeline: Vec::new(),
            injections: 0,
            commands: VecDeque::new(),
            begun: false,
            census: Census::new(scenario, seed),
            truth: GroundTruth::default(),
            open_episodes: vec![Vec::new(); nodes],
            scenario: scenario.clone(),
        }
    }

    /// What really happened so far.
    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    /// Whether bed `node` holds a patient now.
    pub fn occupied(&self, node: NodeId) -> bool {
        self.census
            .beds
            .get(node.0 as usize)
            .is_some_and(|b| b.occupied)
    }

    /// The admission number of the patient in bed `node` (or its last).
    pub fn admission_of(&self, node: NodeId) -> u32 {
        self.census
            .beds
            .get(node.0 as usize)
            .map_or(0, |b| b.admission)
    }

    /// The clinical facts of the patient in bed `node`.
    pub fn patient_of(&self, node: NodeId) -> PatientOptions {
        self.census
            .beds
            .get(node.0 as usize)
            .map_or_else(PatientOptions::default, |b| b.options)
    }

    /// A node behind a gateway went out of its radio's range (the driver
    /// saw it): its silence was real, so a node-down report for it is not
    /// a false alarm.
    pub fn node_out_of_range(&mut self, node: NodeId) {
        self.touched.insert(node.0);
    }

    /// A node's battery ran flat (the driver saw it): a restart touches it.
    pub fn node_went_flat(&mut self, node: NodeId) {
        self.down.insert(node.0);
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

    /// Starts the nodes' clock (time zero, `origin_unix_s` on the wall
    /// clock: patients' time of day). Without `ramp` entries every node
    /// starts at the connect rate from now.
    pub fn begin(&mut self, origin_unix_s: u64) {
        if self.begun {
            return;
        }
        self.begun = true;
        self.census.begin(origin_unix_s);
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
        let census = self.census.poll_timeout();
        [entry, ramp, end, census].into_iter().flatten().min()
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
            // Beds empty at time zero are empty from the node's first moment.
            let empty: Vec<NodeId> = (self.started..self.started + due)
                .filter(|&n| !self.census.beds[n as usize].occupied)
                .map(NodeId)
                .collect();
            if !empty.is_empty() {
                self.commands.push_back(Command::Node {
                    nodes: empty,
                    op: NodeOp::Discharge,
                });
            }
            self.started += due;
        }
        while let Some(p) = self.census.pop_due(elapsed) {
            if p.node >= self.started {
                // Its node has not started yet: the bed's life waits for it.
                self.census.postpone(p, elapsed + Duration::from_secs(1));
                continue;
            }
            self.bed_event(p, elapsed);
        }
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ends)
            .into_iter()
            .partition(|e| e.at <= elapsed);
        self.ends = later;
        for end in now {
            self.end(end, elapsed);
        }
    }

    /// An admission, discharge or background illness of one bed.
    fn bed_event(&mut self, p: Planned, elapsed: Duration) {
        let at_s = elapsed.as_secs_f64();
        let node = NodeId(p.node);
        match p.event {
            BedEvent::Discharge => {
                self.census.discharge(p.node, at_s);
                self.close_episodes(p.node, at_s);
                self.truth.discharges += 1;
                self.commands.push_back(Command::Node {
                    nodes: vec![node],
                    op: NodeOp::Discharge,
                });
            }
            BedEvent::Admit => {
                let options = self.census.admit(p.node, at_s);
                self.truth.admissions += 1;
                self.commands.push_back(Command::Node {
                    nodes: vec![node],
                    op: NodeOp::Admit { options },
                });
            }
            BedEvent::Fever(episode) => {
                self.record_fever(p.node, at_s, &episode, "background", None);
                self.commands.push_back(Command::Node {
                    nodes: vec![node],
                    op: NodeOp::Fever {
                        after: Duration::ZERO,
                        episode,
                    },
                });
            }
            BedEvent::Deteriorate(ramp) => {
                self.record_patient_episode(
                    p.node,
                    EpisodeKind::Deterioration,
                    at_s,
                    None,
                    "background",
                    None,
                );
                self.commands.push_back(Command::Node {
                    nodes: vec![node],
                    op: NodeOp::Deteriorate { ramp },
                });
            }
        }
    }

    /// Records a patient episode of bed `node`'s current patient.
    fn record_patient_episode(
        &mut self,
        node: u32,
        kind: EpisodeKind,
        onset_s: f64,
        end_s: Option<f64>,
        source: &str,
        outbreak: Option<usize>,
    ) {
        let population = self.scenario.population;
        self.truth.episodes.push(Episode {
            kind,
            node,
            ward: population.ward_of(NodeId(node)).0,
            admission: self.admission_of(NodeId(node)),
            onset_s,
            end_s,
            source: source.into(),
            outbreak,
            sign: None,
            mode: None,
        });
        self.open_episodes[node as usize].push(self.truth.episodes.len() - 1);
    }

    fn record_fever(
        &mut self,
        node: u32,
        onset_s: f64,
        episode: &FeverEpisode,
        source: &str,
        outbreak: Option<usize>,
    ) {
        let length = episode
            .end()
            .saturating_duration_since(episode.onset)
            .as_secs_f64();
        self.record_patient_episode(
            node,
            EpisodeKind::Fever,
            onset_s,
            Some(onset_s + length),
            source,
            outbreak,
        );
    }

    /// The patient of `node` leaves: their episodes end now.
    fn close_episodes(&mut self, node: u32, at_s: f64) {
        for i in std::mem::take(&mut self.open_episodes[node as usize]) {
            let e = &mut self.truth.episodes[i];
            if e.end_s.is_none_or(|end| end > at_s) {
                e.end_s = Some(at_s);
            }
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
                self.down.extend(entry.nodes.iter().copied());
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
                self.down.extend(entry.nodes.iter().copied());
                node_command(self, nodes, NodeOp::Crash);
            }
            Action::KillGateways { target } => {
                let down = &self.gateways_down;
                let gateways = resolve::resolve_gateways(target, &population, &mut rng, |g| {
                    !down.contains(&g.0)
                });
                // The nodes behind them fall silent: ground truth for the
                // node-down detector.
                entry.nodes = gateways
                    .iter()
                    .flat_map(|g| population.nodes_of_gateway(*g))
                    .collect();
                entry.description = format!("{} ({})", entry.description, gateway_list(&gateways));
                self.gateways_down.extend(gateways.iter().map(|g| g.0));
                self.commands.push_back(Command::Gateways {
                    gateways,
                    op: GatewayOp::Crash,
                });
            }
            Action::RestartGateways { target } => {
                let down = &self.gateways_down;
                let gateways = resolve::resolve_gateways(target, &population, &mut rng, |g| {
                    down.contains(&g.0)
                });
                entry.nodes = gateways
                    .iter()
                    .flat_map(|g| population.nodes_of_gateway(*g))
                    .collect();
                entry.description = format!("{} ({})", entry.description, gateway_list(&gateways));
                for g in &gateways {
                    self.gateways_down.remove(&g.0);
                }
                self.commands.push_back(Command::Gateways {
                    gateways,
                    op: GatewayOp::Restart,
                });
            }
            Action::RebootNodes { target } => {
                let nodes = targets(target, &mut rng);
                entry.nodes = ids(&nodes);
                node_command(self, nodes, NodeOp::Reboot);
            }
            Action::RestartNodes { target } => {
                // Only the nodes that are down: the ground truth of a restart
                // is what it brought back, not the whole ward.
                let down = &self.down;
                let nodes =
                    resolve::resolve_among(target, &population, &mut rng, |n| down.contains(&n.0));
                entry.nodes = ids(&nodes);
                for n in &nodes {
                    self.down.remove(&n.0);
                }
                node_command(self, nodes, NodeOp::Restart);
            }
            Action::Deterioration { target } => {
                let beds = &self.census.beds;
                let nodes = resolve::resolve_among(target, &population, &mut rng, |n| {
                    beds[n.0 as usize].occupied
                });
                entry.nodes = ids(&nodes);
                for n in nodes {
                    let d = DeteriorationEpisode::draw(Timestamp::EPOCH, &mut rng);
                    self.record_patient_episode(
                        n.0,
                        EpisodeKind::Deterioration,
                        at_s,
                        None,
                        source,
                        None,
                    );
                    node_command(self, vec![n], NodeOp::Deteriorate { ramp: d.ramp });
                }
            }
            Action::SensorFault {
                target,
                sign,
                mode,
                for_,
            } => {
                let nodes = targets(target, &mut rng);
                entry.nodes = ids(&nodes);
                let mode_name = fault_mode_name(mode);
                for n in &nodes {
                    self.truth.episodes.push(Episode {
                        kind: EpisodeKind::SensorFault,
                        node: n.0,
                        ward: population.ward_of(*n).0,
                        admission: self.admission_of(*n),
                        onset_s: at_s,
                        end_s: for_.map(|d| at_s + d.as_secs_f64()),
                        source: source.into(),
                        outbreak: None,
                        sign: *sign,
                        mode: Some(mode_name),
                    });
                }
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
                let beds = &self.census.beds;
                let cases = resolve::outbreak_onsets(
                    *ward,
                    *attack_rate,
                    *onset_median,
                    *onset_spread,
                    &population,
                    &mut rng,
                    |n| beds[n.0 as usize].occupied,
                );
                entry.nodes = cases.iter().map(|(n, _)| n.0).collect();
                entry.onsets = cases
                    .iter()
                    .map(|(n, d)| (n.0, at_s + d.as_secs_f64()))
                    .collect();
                let outbreak = self.truth.outbreaks.len();
                self.truth.outbreaks.push(Outbreak {
                    ward: *ward,
                    source: source.into(),
                    at_s,
                    onset_s: entry
                        .onsets
                        .iter()
                        .map(|(_, t)| *t)
                        .fold(f64::INFINITY, f64::min),
                    end_s: None,
                    cases: cases.len() as u32,
                });
                for (node, after) in cases {
                    let baseline = self.census.baseline_temperature(node.0);
                    let episode = FeverEpisode::draw(Timestamp::EPOCH, baseline, &mut rng);
                    let onset_s = at_s + after.as_secs_f64();
                    self.record_fever(node.0, onset_s, &episode, source, Some(outbreak));
                    node_command(self, vec![node], NodeOp::Fever { after, episode });
                }
            }
            Action::KillAggregator { aggregator } => {
                entry.aggregator = Some(*aggregator);
                match self.aggregator_slots.get_mut(usize::from(*aggregator)) {
                    Some(slot) if *slot == SlotState::Running => {
                        *slot = SlotState::Killed;
                        self.commands
                            .push_back(Command::KillAggregator(*aggregator));
                    }
                    _ => entry.error = Some(format!("aggregator {aggregator} is not running")),
                }
            }
            Action::RestartAggregator { aggregator } => {
                entry.aggregator = Some(*aggregator);
                match self.aggregator_slots.get_mut(usize::from(*aggregator)) {
                    Some(slot) if *slot == SlotState::Killed => {
                        *slot = SlotState::Running;
                        self.commands
                            .push_back(Command::RestartAggregator(*aggregator));
                    }
                    Some(SlotState::Free) => {
                        entry.error = Some(format!(
                            "aggregator {aggregator} is not part of the mesh; add_aggregator starts one"
                        ));
                    }
                    _ => entry.error = Some(format!("aggregator {aggregator} is already running")),
                }
            }
            Action::AddAggregator { count, weight } => {
                let free: Vec<u16> = (0..self.aggregator_slots.len() as u16)
                    .filter(|&a| self.aggregator_slots[usize::from(a)] == SlotState::Free)
                    .take(*count as usize)
                    .collect();
                if free.len() < *count as usize {
                    entry.error = Some(format!(
                        "only {} of {} aggregator slots are free ([aggregators] max)",
                        free.len(),
                        self.aggregator_slots.len()
                    ));
                }
                entry.aggregator = free.first().copied();
                entry.aggregators.clone_from(&free);
                if !free.is_empty() {
                    entry.description =
                        format!("{} ({})", entry.description, aggregator_list(&free));
                }
                for a in free {
                    self.aggregator_slots[usize::from(a)] = SlotState::Running;
                    self.commands.push_back(Command::AddAggregator {
                        aggregator: a,
                        weight: *weight,
                    });
                }
            }
            Action::RemoveAggregator { aggregator, count } => {
                let leaving: Vec<u16> = match aggregator {
                    Some(a) => vec![*a],
                    None => (0..self.aggregator_slots.len() as u16)
                        .rev()
                        .filter(|&a| self.aggregator_slots[usize::from(a)] == SlotState::Running)
                        .take(*count as usize)
                        .collect(),
                };
                let running = self
                    .aggregator_slots
                    .iter()
                    .filter(|s| **s == SlotState::Running)
                    .count();
                let stays = running.saturating_sub(
                    leaving
                        .iter()
                        .filter(|&&a| {
                            self.aggregator_slots.get(usize::from(a)) == Some(&SlotState::Running)
                        })
                        .count(),
                );
                entry.aggregator = leaving.first().copied();
                entry.aggregators.clone_from(&leaving);
                if stays == 0 {
                    entry.error = Some("the last running aggregator cannot leave".into());
                } else if leaving.len() < *count as usize {
                    entry.error = Some(format!(
                        "only {} aggregators are running besides the one that must stay",
                        leaving.len()
                    ));
                } else {
                    entry.description =
                        format!("{} ({})", entry.description, aggregator_list(&leaving));
                    for a in leaving {
                        match self.aggregator_slots.get_mut(usize::from(a)) {
                            Some(slot @ SlotState::Running) => {
                                *slot = SlotState::Free;
                                self.commands.push_back(Command::RemoveAggregator(a));
                            }
                            Some(slot @ SlotState::Killed) => *slot = SlotState::Free,
                            _ => {
                                entry.error =
                                    Some(format!("aggregator {a} is not part of the mesh"));
                            }
                        }
                    }
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
                        self.timeline.iter().rev().filter(recent).find(|e| {
                            e.aggregator == Some(a)
                                || e.aggregators.contains(&a)
                                || e.action == "restart_broker"
                        })
                    };
                    let down = observer.history.iter().rev().find(|a| {
                        a.scope
                            == Scope::Aggregator {
                                aggregator: AggregatorId(from),
                            }
                            && matches!(
                                a.kind,
                                AlertKind::AggregatorDown { .. } | AlertKind::AggregatorLeft
                            )
                    });
                    if let Some(e) = involved(from).or_else(|| involved(m.to)) {
                        format!("{} ({} at {:.1} s)", e.description, e.source, e.at_s)
                    } else if let Some(a) = down {
                        match a.kind {
                            AlertKind::AggregatorDown { reason } => {
                                format!("aggregator {from} reported down: {reason:?}")
                            }
                            _ => format!("aggregator {from} left"),
                        }
                    } else {
                        format!("rebalance: aggregator {} joined or left", m.to)
                    }
                }
            };
        }
        ownership
    }

    /// The ground truth as of `ran_for`: episodes still going on then are
    /// open, and every bed's occupied time is counted up to then.
    pub fn truth_at(&self, ran_for: Duration) -> GroundTruth {
        let end_s = ran_for.as_secs_f64();
        let mut truth = self.truth.clone();
        let mut occupied = self.census.occupied_s.clone();
        let per_ward = self.scenario.population.nodes_per_ward.max(1);
        for (n, bed) in self.census.beds.iter().enumerate() {
            if bed.occupied && (n as u32) < self.started {
                if let Some(w) = occupied.get_mut(n / per_ward as usize) {
                    *w += (end_s - bed.since_s).max(0.0);
                }
            }
        }
        truth.occupied_bed_s = occupied;
        // Episodes that begin after the run ended did not happen in it.
        truth.episodes.retain(|e| e.onset_s < end_s);
        for o in &mut truth.outbreaks {
            o.end_s = None;
        }
        truth
    }

    /// Assembles the report from what the driver measured and observed.
    pub fn report(&self, inputs: ReportInputs<'_>) -> Report {
        let s = &self.scenario;
        let observer = inputs.observer;
        let truth = self.truth_at(inputs.ran_for);
        let scores = crate::score::score(
            &truth,
            crate::score::ScoreInputs {
                origin: inputs.origin,
                ran_for_s: inputs.ran_for.as_secs_f64(),
                wards: s.population.wards,
                nodes: s.population.nodes(),
                ward: &s.detection.ward,
                alerts: &observer.history,
                news2_five: &observer.news2_five,
            },
        );
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
            outbreak_recall: scores.any.recall.unwrap_or(f64::NAN),
            false_alarms_per_ward_day: if scores.ward_days > 0.0 {
                scores.any.false_alarms_per_ward_day
            } else {
                f64::NAN
            },
            time_to_detect_s: scores.any.ttd_median_s.unwrap_or(f64::NAN),
            sensor_fault_recall: scores.sensor.recall.unwrap_or(f64::NAN),
            fevers_misflagged: scores.sensor.misflagged_share.unwrap_or(f64::NAN),
            deterioration_early: scores.patient.early_share.unwrap_or(f64::NAN),
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
            throughput: {
                let mut per_second = inputs.throughput;
                // The observer closes the same seconds as the driver's
                // series; each series is as long as the seconds it saw.
                let seconds = &observer.latency_per_second;
                let pick = |k: usize| {
                    seconds
                        .iter()
                        .map(|s| s.map(|p| (p[k] * 1000.0).round() / 1000.0))
                        .collect()
                };
                per_second.latency_p50_ms = pick(0);
                per_second.latency_p99_ms = pick(1);
                per_second.latency_max_ms = pick(2);
                let step = Throughput::step_for(per_second.produced.len());
                per_second.coarsened(step)
            },
            connections: inputs.connections,
            gateways: inputs.gateways,
            machine: inputs.machine,
            cpu: inputs.cpu,
            memory: inputs.memory,
            aggregators: observer.aggregators.values().cloned().collect(),
            ownership: self.explain_moves(observer),
            alerts: AlertsReport {
                counts: observer.alert_counts.clone(),
                cleared: observer.cleared_counts.clone(),
                active_at_end: observer.active_alerts().count() as u64,
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
            incidents: {
                let all = observer.incidents.incidents();
                let mut counts = std::collections::BTreeMap::new();
                for i in all {
                    *counts.entry(i.category).or_default() += 1;
                }
                IncidentsReport {
                    counts,
                    open_at_end: observer.incidents.open().count() as u64,
                    list: all
                        .iter()
                        .take(crate::report::INCIDENTS_KEPT)
                        .cloned()
                        .collect(),
                }
            },
            detection: DetectionReport {
                detectors: s.detection.ward.detectors.clone(),
                scores,
                wards: observer
                    .wards
                    .iter()
                    .enumerate()
                    .map(|(w, b)| WardSeriesReport {
                        ward: w as u16,
                        buckets: b.clone(),
                    })
                    .collect(),
            },
            ground_truth: truth,
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
    /// When the nodes started, on the clock alerts carry.
    pub origin: Timestamp,
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
    /// Gateway totals, if the population has gateways.
    pub gateways: Option<crate::report::GatewaysReport>,
    /// Broker figures.
    pub broker: BrokerReport,
    /// The machine (real time only).
    pub machine: Option<crate::report::MachineReport>,
    /// Host CPU (real time only).
    pub cpu: Option<CpuReport>,
    /// Host memory (real time only).
    pub memory: Option<MemoryReport>,
    /// Rogue clients.
    pub rogue: Vec<RogueReport>,
}

/// A sensor fault mode's name in files and reports.
fn fault_mode_name(mode: &FaultMode) -> &'static str {
    match mode {
        FaultMode::StuckAt { .. } => "stuck_at",
        FaultMode::Drift { .. } => "drift",
        FaultMode::Spike { .. } => "spike",
        FaultMode::Dropout { .. } => "dropout",
        FaultMode::Noise { .. } => "noise",
    }
}

/// What an aggregator slot holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Never started, or removed.
    Free,
    /// Running.
    Running,
    /// Killed; `restart_aggregator` brings it back.
    Killed,
}

/// "aggregators 2, 3" for a timeline entry.
fn aggregator_list(aggregators: &[u16]) -> String {
    let names: Vec<String> = aggregators.iter().map(u16::to_string).collect();
    format!(
        "aggregator{} {}",
        if aggregators.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
}

/// "gateways 3, 7" for a timeline entry (at most eight named).
fn gateway_list(gateways: &[GatewayId]) -> String {
    if gateways.is_empty() {
        return "none of them down".into();
    }
    let mut names: Vec<String> = gateways.iter().take(8).map(|g| g.0.to_string()).collect();
    if gateways.len() > 8 {
        names.push(format!("and {} more", gateways.len() - 8));
    }
    format!(
        "gateway{} {}",
        if gateways.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
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
        run.begin(vitalmesh_scenario::DEFAULT_VIRTUAL_START_UNIX_S);
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
        run.begin(vitalmesh_scenario::DEFAULT_VIRTUAL_START_UNIX_S);
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
        run.begin(vitalmesh_scenario::DEFAULT_VIRTUAL_START_UNIX_S);
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
        run.begin(vitalmesh_scenario::DEFAULT_VIRTUAL_START_UNIX_S);
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

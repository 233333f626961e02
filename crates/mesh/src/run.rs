//! A whole run: broker, aggregators, nodes, measurements, report.
//!
//! [`Mesh`] owns everything that is running and offers the operations a
//! scenario, an operator or a test needs (kill an aggregator, crash nodes,
//! restart the broker). [`run`] drives a `Mesh` for a planned duration,
//! feeding snapshots to whoever watches and stopping early on request.
//!
//! Order of a run: broker up → aggregators connect and join (each owns its
//! partitions before any node starts) → nodes start at the configured
//! connect rate → every second, throughput, latency and memory are sampled →
//! at the end nodes stop sampling and drain their buffers for a moment →
//! nodes and aggregators stop → the ledger is computed.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use vitalmesh_core::{Aggregator, AggregatorConfig, Alert, Population};
use vitalmesh_firmware::{Node, NodeConfig, PatientOptions};
use vitalmesh_wire::envelope::{Keyring, Principal};
use vitalmesh_wire::{AggregatorId, NodeId, Partitioning, TopicScheme};

use crate::MeshError;
use crate::aggregator_driver::{
    AggregatorControl, AggregatorRuntime, AggregatorStop, run_aggregator,
};
use crate::broker::{BrokerHandle, BrokerReport, BrokerSpec};
use crate::clock::RunClock;
use crate::collector::{AggregatorView, Collector};
use crate::ledger;
use crate::metrics::{DisconnectReason, LiveCounters, NodeHealth};
use crate::node_driver::{Mailbox, NodeCommand, NodeOutcome, NodeRuntime, run_node};
use crate::report::{
    AlertsReport, ConfigSummary, ConnectionsReport, LatencyReport, MemoryReport, Percentiles,
    REPORT_SCHEMA, Report, Throughput,
};

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Name shown in reports.
    pub scenario: String,
    /// Master seed.
    pub seed: u64,
    /// Wards and nodes.
    pub population: Population,
    /// Number of aggregators.
    pub aggregators: u16,
    /// Number of partitions.
    pub partitions: u16,
    /// How long nodes run.
    pub duration: Duration,
    /// After the run, how long nodes may keep delivering their backlog.
    pub drain: Duration,
    /// Node behaviour (every node starts from this).
    pub node: NodeConfig,
    /// Share of patients on supplemental oxygen.
    pub oxygen_share: f64,
    /// Share of patients on SpO2 scale 2.
    pub scale2_share: f64,
    /// Which broker.
    pub broker: BrokerSpec,
    /// New node connections per second during the ramp.
    pub connect_rate: u32,
    /// Connection handshakes in progress at once, at most.
    pub connect_concurrency: usize,
    /// Topic root.
    pub topic_root: String,
    /// Keep per-second latency histograms for an HdrHistogram log.
    pub keep_intervals: bool,
}

impl MeshConfig {
    /// The default run: 1,000 nodes in 10 wards, 4 aggregators, 60 s, on an
    /// embedded broker started from `program`.
    pub fn new(program: PathBuf) -> Self {
        Self {
            scenario: "default".into(),
            seed: 0,
            population: Population {
                wards: 10,
                nodes_per_ward: 100,
            },
            aggregators: 4,
            partitions: Partitioning::DEFAULT_COUNT,
            duration: Duration::from_secs(60),
            drain: Duration::from_secs(5),
            node: NodeConfig::default(),
            oxygen_share: 0.1,
            scale2_share: 0.02,
            broker: BrokerSpec::Embedded {
                program,
                listeners: 1,
                max_connections: 0,
                ports: None,
            },
            connect_rate: 1000,
            connect_concurrency: 256,
            topic_root: "vm".into(),
            keep_intervals: false,
        }
    }

    /// Spreads `nodes` over `wards` (the last ward may be smaller... no: every
    /// ward gets the same number, rounded up, so ids stay ward-contiguous).
    pub fn set_nodes(&mut self, nodes: u32, wards: u16) {
        let wards = wards.max(1);
        self.population = Population {
            wards,
            nodes_per_ward: nodes.div_ceil(u32::from(wards)).max(1),
        };
    }

    /// Checks values that would make the run meaningless.
    pub fn validate(&self) -> Result<(), MeshError> {
        if self.population.nodes() == 0 {
            return Err(MeshError::config(
                "nodes",
                "'0' is not enough; expected at least 1",
            ));
        }
        if self.aggregators == 0 {
            return Err(MeshError::config(
                "aggregators",
                "'0' is not enough; expected at least 1",
            ));
        }
        if self.partitions == 0 {
            return Err(MeshError::config(
                "partitions",
                "'0' is not enough; expected at least 1",
            ));
        }
        if self.connect_rate == 0 {
            return Err(MeshError::config(
                "connect_rate",
                "'0' would never connect a node; expected at least 1 per second",
            ));
        }
        if self.node.sample_interval.is_zero() {
            return Err(MeshError::config(
                "sample_interval",
                "'0s' is not a rate; expected a positive duration",
            ));
        }
        for (name, v) in [
            ("oxygen_share", self.oxygen_share),
            ("scale2_share", self.scale2_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(MeshError::config(
                    name,
                    format!("'{v}' is not a share; expected a number from 0 to 1"),
                ));
            }
        }
        TopicScheme::new(&self.topic_root)
            .map_err(|e| MeshError::config("topic_root", e.to_string()))?;
        Ok(())
    }

    fn run_secret(&self) -> [u8; 16] {
        // The run secret models provisioned device keys. Derived from the
        // seed so a virtual-time replay produces identical bytes; a rogue
        // client in the mesh does not know it.
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&self.seed.to_le_bytes());
        s[8..].copy_from_slice(&(!self.seed).rotate_left(17).to_le_bytes());
        s
    }
}

/// What a run is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Broker and aggregators coming up.
    Starting,
    /// Nodes connecting.
    Ramping,
    /// All nodes started.
    Running,
    /// Sampling stopped; buffers draining.
    Draining,
    /// Finished.
    Done,
}

/// One second of throughput.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RatePoint {
    /// Samples taken.
    pub produced: u64,
    /// Samples published (re-sends included).
    pub published: u64,
    /// Distinct samples delivered.
    pub delivered: u64,
    /// Samples acknowledged end to end.
    pub acked: u64,
}

/// The state of a run at one moment, for progress lines and dashboards.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Scenario name.
    pub scenario: String,
    /// Master seed.
    pub seed: u64,
    /// `real time` (virtual time comes later).
    pub mode: &'static str,
    /// Where the broker is.
    pub broker_url: String,
    /// What the run is doing.
    pub phase: Phase,
    /// Since nodes started.
    pub elapsed: Duration,
    /// Planned node run time.
    pub planned: Duration,
    /// Nodes.
    pub nodes: u32,
    /// Nodes connected now.
    pub connected: i64,
    /// Samples taken.
    pub produced: u64,
    /// Samples published.
    pub published: u64,
    /// Distinct samples delivered.
    pub delivered: u64,
    /// Re-deliveries.
    pub duplicates: u64,
    /// Samples acknowledged end to end.
    pub acked: u64,
    /// Held in node buffers now.
    pub buffered: i64,
    /// Evicted from full buffers so far.
    pub dropped_overflow: u64,
    /// Lost in crashes so far.
    pub lost_on_crash: u64,
    /// Last second.
    pub rate: RatePoint,
    /// The last two minutes, oldest first.
    pub history: Vec<RatePoint>,
    /// End-to-end latency over the last ten seconds.
    pub latency_recent: Percentiles,
    /// End-to-end latency over the whole run.
    pub latency_total: Percentiles,
    /// Node→broker PUBACK latency over the whole run.
    pub publish_ack: Percentiles,
    /// Health of every node, by id.
    pub node_health: Vec<NodeHealth>,
    /// Nodes the aggregators report down.
    pub nodes_down: Vec<u32>,
    /// Ward layout.
    pub population: Population,
    /// Aggregators.
    pub aggregators: Vec<AggregatorView>,
    /// Most recent alerts, newest last.
    pub alerts: Vec<Alert>,
    /// Broker restarts and canary figures.
    pub broker: BrokerReport,
    /// This process's RSS.
    pub rss_bytes: u64,
    /// The broker's RSS.
    pub broker_rss_bytes: u64,
}

/// Orders a running mesh accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum MeshCommand {
    /// Kill an aggregator (its will fires).
    KillAggregator(AggregatorId),
    /// Start a killed aggregator again (new incarnation).
    RestartAggregator(AggregatorId),
    /// Kill the broker and start it on the same ports.
    RestartBroker,
    /// Send a command to nodes.
    Nodes(Vec<NodeId>, NodeCommand),
}

struct NodeSlot {
    mailbox: Arc<Mailbox>,
    task: Option<JoinHandle<NodeOutcome>>,
}

struct AggregatorSlot {
    control: Arc<AggregatorControl>,
    task: Option<JoinHandle<()>>,
    incarnation: u64,
}

/// Per-second sampling state.
#[derive(Debug, Default)]
struct Sampler {
    last: RatePoint,
    throughput: Throughput,
    history: std::collections::VecDeque<RatePoint>,
    rate: RatePoint,
    process_peak: u64,
    broker_peak: u64,
    rss: u64,
    broker_rss: u64,
    all_connected_after: Option<Duration>,
}

/// Resident set size of a process, bytes.
fn rss_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A running mesh.
pub struct Mesh {
    config: MeshConfig,
    clock: RunClock,
    started_wall: SystemTime,
    broker: BrokerHandle,
    counters: Arc<LiveCounters>,
    collector: Arc<Mutex<Collector>>,
    keys: Keyring,
    node_rt: Arc<NodeRuntime>,
    agg_rt: Arc<AggregatorRuntime>,
    nodes: Vec<NodeSlot>,
    aggregators: Vec<AggregatorSlot>,
    phase: Phase,
    nodes_started_at: Option<Instant>,
    sampler: Sampler,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("scenario", &self.config.scenario)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// Starts the broker and the aggregators, and waits until the
    /// aggregators own every partition.
    pub async fn start(config: MeshConfig) -> Result<Self, MeshError> {
        config.validate()?;
        let nodes = config.population.nodes();
        crate::limits::check_budget(u64::from(nodes) + u64::from(config.aggregators) + 8)?;
        let clock = RunClock::start();
        let started_wall = SystemTime::now();
        let broker_spec = match config.broker.clone() {
            BrokerSpec::Embedded {
                program,
                listeners,
                max_connections,
                ports,
            } => BrokerSpec::Embedded {
                program,
                // Spread clients so each listener sees a few thousand at most.
                listeners: listeners.max((nodes as usize).div_ceil(2500)).clamp(1, 8),
                max_connections: max_connections.max(nodes as usize * 5 / 4 + 1024),
                ports,
            },
            external => external,
        };
        let broker = BrokerHandle::start(broker_spec, clock).await?;
        let topics = TopicScheme::new(&config.topic_root)
            .map_err(|e| MeshError::config("topic_root", e.to_string()))?;
        let keys = Keyring::new(config.run_secret(), nodes);
        let counters = Arc::new(LiveCounters::new(nodes as usize));
        let collector = Arc::new(Mutex::new(Collector::new(
            nodes as usize,
            config.keep_intervals,
        )));
        let node_rt = Arc::new(NodeRuntime {
            clock,
            counters: counters.clone(),
            broker: broker.addrs().to_vec(),
            topics: topics.clone(),
            keys: keys.clone(),
            connect_gate: Semaphore::new(config.connect_concurrency.max(1)),
            connect_timeout: Duration::from_secs(20),
            keep_alive_secs: 15,
            inflight_window: 16,
        });
        let agg_rt = Arc::new(AggregatorRuntime {
            clock,
            broker: broker.addrs().to_vec(),
            collector: collector.clone(),
            keep_alive_secs: 5,
            connect_timeout: Duration::from_secs(3),
        });
        let mut mesh = Self {
            nodes: (0..nodes)
                .map(|_| NodeSlot {
                    mailbox: Arc::new(Mailbox::default()),
                    task: None,
                })
                .collect(),
            aggregators: (0..config.aggregators)
                .map(|_| AggregatorSlot {
                    control: Arc::new(AggregatorControl::default()),
                    task: None,
                    incarnation: 0,
                })
                .collect(),
            config,
            clock,
            started_wall,
            broker,
            counters,
            collector,
            keys,
            node_rt,
            agg_rt,
            phase: Phase::Starting,
            nodes_started_at: None,
            sampler: Sampler::default(),
        };
        for id in 0..mesh.config.aggregators {
            mesh.spawn_aggregator(AggregatorId(id));
        }
        mesh.wait_for_aggregators().await?;
        Ok(mesh)
    }

    fn spawn_aggregator(&mut self, id: AggregatorId) {
        let slot = &mut self.aggregators[usize::from(id.0)];
        slot.incarnation += 1;
        slot.control = Arc::new(AggregatorControl::default());
        let mut config = AggregatorConfig::new(id, self.config.population);
        config.incarnation = slot.incarnation;
        config.partitioning = Partitioning::new(self.config.partitions).expect("validated");
        config.topics = self.node_rt.topics.clone();
        config.node_phi.first_interval = self.config.node.sample_interval;
        let agg = Aggregator::new(config, self.keys.clone());
        slot.task = Some(tokio::spawn(run_aggregator(
            agg,
            self.agg_rt.clone(),
            slot.control.clone(),
        )));
    }

    async fn wait_for_aggregators(&self) -> Result<(), MeshError> {
        let want = usize::from(self.config.aggregators);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let owned: u32 = {
                let c = self.collector.lock().unwrap_or_else(|p| p.into_inner());
                let agreed = c
                    .aggregators
                    .values()
                    .filter(|v| v.up && v.live_view.len() == want)
                    .count();
                if agreed == want {
                    c.aggregators
                        .values()
                        .map(|v| u32::from(v.stats.primary_partitions))
                        .sum()
                } else {
                    0
                }
            };
            if owned == u32::from(self.config.partitions) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(MeshError::Broker(format!(
                    "the {want} aggregators did not agree on partition ownership within 20 s; is the broker delivering?"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    /// The device keys of this run (for tools and tests that decode traffic).
    pub fn keyring(&self) -> &Keyring {
        &self.keys
    }

    /// Live counters.
    pub fn counters(&self) -> &LiveCounters {
        &self.counters
    }

    /// The broker.
    pub fn broker(&self) -> &BrokerHandle {
        &self.broker
    }

    /// Since the first node started (zero before).
    pub fn elapsed(&self) -> Duration {
        self.nodes_started_at
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Starts every node, `connect_rate` per second, calling `tick` about
    /// every 100 ms (so a caller can sample and watch while the ramp runs).
    /// Returns early, with the nodes started so far, if `stop` turns true.
    pub async fn start_nodes(&mut self, stop: &mut watch::Receiver<bool>) {
        self.phase = Phase::Ramping;
        self.nodes_started_at = Some(Instant::now());
        let rate = f64::from(self.config.connect_rate);
        let start = Instant::now();
        let total = self.nodes.len();
        let mut started = 0;
        while started < total {
            if *stop.borrow() {
                break;
            }
            let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(total);
            while started < due {
                self.spawn_node(started);
                started += 1;
            }
            self.maybe_tick();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.phase = Phase::Running;
    }

    fn spawn_node(&mut self, index: usize) {
        let id = NodeId(index as u32);
        let partitioning = Partitioning::new(self.config.partitions).expect("validated");
        let mut config = self.config.node.clone();
        config.patient = PatientOptions::assign(
            self.config.seed,
            id,
            self.config.oxygen_share,
            self.config.scale2_share,
        );
        let key = self.keys.derive(Principal::Node(id));
        let node = Node::new(
            id,
            partitioning.partition_of(id),
            config,
            self.config.seed,
            key,
            self.clock.now(),
        );
        let slot = &mut self.nodes[index];
        slot.task = Some(tokio::spawn(run_node(
            node,
            self.node_rt.clone(),
            slot.mailbox.clone(),
        )));
    }

    /// Applies a command.
    pub async fn command(&mut self, command: MeshCommand) -> Result<(), MeshError> {
        match command {
            MeshCommand::KillAggregator(id) => {
                let slot = self.aggregators.get_mut(usize::from(id.0)).ok_or_else(|| {
                    MeshError::config("aggregator", format!("'{}' does not exist", id.0))
                })?;
                if let Some(task) = slot.task.take() {
                    slot.control.stop(AggregatorStop::Kill);
                    let _ = task.await;
                    self.collector
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .aggregator_restarted(id);
                }
            }
            MeshCommand::RestartAggregator(id) => {
                if usize::from(id.0) >= self.aggregators.len() {
                    return Err(MeshError::config(
                        "aggregator",
                        format!("'{}' does not exist", id.0),
                    ));
                }
                if self.aggregators[usize::from(id.0)].task.is_none() {
                    self.spawn_aggregator(id);
                }
            }
            MeshCommand::RestartBroker => self.broker.restart("injected").await?,
            MeshCommand::Nodes(ids, command) => {
                for id in ids {
                    if let Some(slot) = self.nodes.get(id.0 as usize) {
                        slot.mailbox.send(command.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Samples once a second (calls more often are ignored).
    pub fn maybe_tick(&mut self) {
        let Some(started) = self.nodes_started_at else {
            return;
        };
        let seconds_done = self.sampler.throughput.produced.len();
        if started.elapsed() < Duration::from_secs(seconds_done as u64 + 1) {
            if self.sampler.all_connected_after.is_none()
                && self.counters.connected.load(Ordering::Relaxed) >= self.nodes.len() as i64
            {
                self.sampler.all_connected_after = Some(started.elapsed());
            }
            return;
        }
        let c = &self.counters;
        let now = RatePoint {
            produced: LiveCounters::get(&c.produced),
            published: LiveCounters::get(&c.published),
            delivered: self
                .collector
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .delivered_total,
            acked: LiveCounters::get(&c.e2e_acked),
        };
        let last = self.sampler.last;
        let rate = RatePoint {
            produced: now.produced - last.produced,
            published: now.published - last.published,
            delivered: now.delivered - last.delivered,
            acked: now.acked - last.acked,
        };
        self.sampler.last = now;
        self.sampler.rate = rate;
        let t = &mut self.sampler.throughput;
        t.produced.push(rate.produced);
        t.published.push(rate.published);
        t.delivered.push(rate.delivered);
        t.acked.push(rate.acked);
        t.connected.push(c.connected.load(Ordering::Relaxed));
        if self.sampler.history.len() == 120 {
            self.sampler.history.pop_front();
        }
        self.sampler.history.push_back(rate);
        self.collector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tick(seconds_done as f64);
        self.sampler.rss = rss_of("self");
        self.sampler.process_peak = self.sampler.process_peak.max(self.sampler.rss);
        self.sampler.broker_rss = self
            .broker
            .child_pid()
            .map_or(0, |pid| rss_of(&pid.to_string()));
        self.sampler.broker_peak = self.sampler.broker_peak.max(self.sampler.broker_rss);
    }

    /// The state now.
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.counters;
        let col = self.collector.lock().unwrap_or_else(|p| p.into_inner());
        Snapshot {
            scenario: self.config.scenario.clone(),
            seed: self.config.seed,
            mode: "real time",
            broker_url: self.broker.report().url,
            phase: self.phase,
            elapsed: self.elapsed(),
            planned: self.config.duration,
            nodes: self.nodes.len() as u32,
            connected: c.connected.load(Ordering::Relaxed),
            produced: LiveCounters::get(&c.produced),
            published: LiveCounters::get(&c.published),
            delivered: col.delivered_total,
            duplicates: col.duplicates,
            acked: LiveCounters::get(&c.e2e_acked),
            buffered: c.buffered.load(Ordering::Relaxed),
            dropped_overflow: LiveCounters::get(&c.dropped_overflow),
            lost_on_crash: LiveCounters::get(&c.lost_on_crash),
            rate: self.sampler.rate,
            history: self.sampler.history.iter().copied().collect(),
            latency_recent: Percentiles::of(&col.window_histogram()),
            latency_total: Percentiles::of(&col.e2e_total),
            publish_ack: Percentiles::of(&c.publish_ack_latency.snapshot()),
            node_health: c.health(),
            nodes_down: col.nodes_down.iter().map(|n| n.0).collect(),
            population: self.config.population,
            aggregators: col.aggregators.values().cloned().collect(),
            alerts: col.alerts.iter().rev().take(100).rev().copied().collect(),
            broker: self.broker.report(),
            rss_bytes: self.sampler.rss,
            broker_rss_bytes: self.sampler.broker_rss,
        }
    }

    /// Stops sampling, drains, stops everything and writes the report.
    pub async fn finish(mut self, interrupted: bool) -> Outcome {
        let ran_for = self.elapsed();
        self.phase = Phase::Draining;
        for slot in &self.nodes {
            slot.mailbox.send(NodeCommand::StopSampling);
        }
        let drain_until = Instant::now() + self.config.drain;
        while Instant::now() < drain_until && self.counters.buffered.load(Ordering::Relaxed) > 0 {
            self.maybe_tick();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut outcomes = Vec::with_capacity(self.nodes.len());
        for slot in &self.nodes {
            slot.mailbox.send(NodeCommand::Stop);
        }
        for slot in &mut self.nodes {
            if let Some(task) = slot.task.take() {
                if let Ok(outcome) = task.await {
                    outcomes.push(outcome);
                }
            }
        }
        for slot in &mut self.aggregators {
            if let Some(task) = slot.task.take() {
                slot.control.stop(AggregatorStop::Leave);
                let _ = task.await;
            }
        }
        self.phase = Phase::Done;
        let report = self.build_report(&outcomes, ran_for, interrupted);
        let intervals = self
            .collector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .intervals
            .take();
        let started = self.started_wall;
        self.broker.shutdown().await;
        Outcome {
            report,
            intervals,
            started,
        }
    }

    fn build_report(
        &mut self,
        outcomes: &[NodeOutcome],
        ran_for: Duration,
        interrupted: bool,
    ) -> Report {
        let col = self.collector.lock().unwrap_or_else(|p| p.into_inner());
        // Per-node duplicates are not tracked separately; attribute the
        // observer's total to the ledger's total.
        let mut ledger = ledger::compute(outcomes, &col.delivered, &[], &self.config.population);
        ledger.total.duplicates = col.duplicates;
        let nodes = u64::from(self.config.population.nodes()).max(1);
        let process_peak = self.sampler.process_peak.max(rss_of("self"));
        let c = &self.counters;
        Report {
            schema: REPORT_SCHEMA,
            vitalmesh_version: env!("CARGO_PKG_VERSION"),
            scenario: self.config.scenario.clone(),
            seed: self.config.seed,
            started_at_unix_s: self.clock.started_at().as_secs_f64(),
            ran_for_s: ran_for.as_secs_f64(),
            interrupted,
            config: ConfigSummary {
                nodes: self.config.population.nodes(),
                wards: self.config.population.wards,
                aggregators: self.config.aggregators,
                partitions: self.config.partitions,
                sample_interval_ms: self.config.node.sample_interval.as_millis() as u64,
                buffer_bytes: self.config.node.buffer_bytes,
                connect_rate: self.config.connect_rate,
                duration_s: self.config.duration.as_secs_f64(),
            },
            broker: self.broker.report(),
            ledger,
            latency: LatencyReport {
                end_to_end: Percentiles::of(&col.e2e_total),
                publish_ack: Percentiles::of(&c.publish_ack_latency.snapshot()),
            },
            throughput: self.sampler.throughput.clone(),
            connections: ConnectionsReport {
                attempts: LiveCounters::get(&c.connect_attempts),
                failures: LiveCounters::get(&c.connect_failures),
                disconnects: LiveCounters::get(&c.disconnects),
                disconnect_reasons: DisconnectReason::ALL
                    .iter()
                    .map(|r| {
                        (
                            r.name(),
                            LiveCounters::get(&c.disconnect_reasons[*r as usize]),
                        )
                    })
                    .filter(|(_, n)| *n > 0)
                    .collect(),
                peak_connected: c.peak_connected.load(Ordering::Relaxed),
                all_connected_after_s: self.sampler.all_connected_after.map(|d| d.as_secs_f64()),
            },
            memory: MemoryReport {
                process_peak_bytes: process_peak,
                broker_peak_bytes: self.sampler.broker_peak,
                per_node_bytes: (process_peak + self.sampler.broker_peak) / nodes,
                per_node_bytes_excluding_broker: process_peak / nodes,
            },
            aggregators: col.aggregators.values().cloned().collect(),
            alerts: AlertsReport {
                counts: col.alert_counts.clone(),
                nodes_reported_down: col.nodes_ever_down.iter().map(|n| n.0).collect(),
                recent: col.alerts.iter().rev().take(200).rev().copied().collect(),
            },
            rejected: col.rejected.clone(),
        }
    }
}

/// What a finished run leaves behind.
#[derive(Debug)]
pub struct Outcome {
    /// The report.
    pub report: Report,
    /// Per-second latency histograms, if kept.
    pub intervals: Option<Vec<(f64, Histogram<u64>)>>,
    /// Wall-clock start.
    pub started: SystemTime,
}

/// How a caller watches and steers [`run`].
#[derive(Debug)]
pub struct RunControl {
    /// Turns true to stop early (the report is still produced).
    pub stop: watch::Receiver<bool>,
    /// Receives a snapshot about every second (dropped when the receiver
    /// lags: the latest matters).
    pub snapshots: Option<mpsc::Sender<Snapshot>>,
    /// Commands to apply while running.
    pub commands: Option<mpsc::Receiver<MeshCommand>>,
}

/// Runs a mesh for its planned duration, or until stopped.
pub async fn run(config: MeshConfig, mut control: RunControl) -> Result<Outcome, MeshError> {
    let mut mesh = Mesh::start(config).await?;
    mesh.start_nodes(&mut control.stop).await;
    let end = Instant::now() + mesh.config.duration.saturating_sub(mesh.elapsed());
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_snapshot = Instant::now();
    let mut interrupted = *control.stop.borrow();
    while !interrupted && Instant::now() < end {
        tokio::select! {
            _ = tick.tick() => {}
            changed = control.stop.changed() => {
                interrupted = changed.is_err() || *control.stop.borrow();
            }
            Some(cmd) = async { control.commands.as_mut()?.recv().await }, if control.commands.is_some() => {
                let _ = mesh.command(cmd).await;
            }
        }
        mesh.maybe_tick();
        if let Some(tx) = &control.snapshots {
            if last_snapshot.elapsed() >= Duration::from_millis(900) {
                last_snapshot = Instant::now();
                let _ = tx.try_send(mesh.snapshot());
            }
        }
    }
    Ok(mesh.finish(interrupted).await)
}

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

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use vitalmesh_core::{Aggregator, AggregatorConfig, Alert, Population};
use vitalmesh_firmware::{Node, NodeConfig, PatientOptions, SensorFault};
use vitalmesh_scenario::slo::{Slo, SloFigures};
use vitalmesh_scenario::{
    Action, BrokerChoice, Group, Limits, NodeSelector, RogueKind, Scenario, Scheduled, resolve,
};
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
use crate::mqtt::LinkConditions;
use crate::node_driver::{Mailbox, NodeCommand, NodeOutcome, NodeRuntime, run_node};
use crate::procfs;
use crate::report::{
    AlertsReport, ConfigSummary, ConnectionsReport, CpuReport, LatencyReport, MemoryReport,
    Percentiles, REPORT_SCHEMA, Report, Throughput,
};
use crate::rogue::{self, RogueCounters, RogueReport, RogueTarget};

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
    /// New node connections per second when nodes start (without `ramp`
    /// entries every node starts at this rate from time zero).
    pub connect_rate: u32,
    /// Connection handshakes in progress at once, at most.
    pub connect_concurrency: usize,
    /// Topic root.
    pub topic_root: String,
    /// Keep per-second latency histograms for an HdrHistogram log.
    pub keep_intervals: bool,
    /// Load changes and faults, by time from the start of the nodes.
    pub schedule: Vec<Scheduled>,
    /// Pass/fail thresholds.
    pub slos: Vec<Slo>,
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
            schedule: Vec::new(),
            slos: Vec::new(),
        }
    }

    /// A run of `scenario`, with `seed` (the scenario's own, or one drawn).
    pub fn from_scenario(scenario: &Scenario, program: PathBuf, seed: u64) -> Self {
        let mut c = Self::new(program);
        c.scenario = scenario.name.clone();
        c.seed = seed;
        c.population = scenario.population;
        c.aggregators = scenario.aggregators;
        c.partitions = scenario.partitions;
        c.duration = scenario.duration;
        c.drain = scenario.drain;
        c.oxygen_share = scenario.oxygen_share;
        c.scale2_share = scenario.scale2_share;
        c.connect_rate = scenario.connect_rate;
        let p = &scenario.profile;
        c.node.sample_interval = p.sample_interval;
        c.node.buffer_bytes = p.buffer_bytes;
        c.node.drop_policy = p.drop_policy;
        c.node.ack_timeout = p.ack_timeout;
        c.node.battery = p.battery;
        c.broker = match &scenario.broker {
            BrokerChoice::Embedded { listeners } => match c.broker {
                BrokerSpec::Embedded { program, .. } => BrokerSpec::Embedded {
                    program,
                    listeners: listeners.map_or(1, usize::from),
                    max_connections: 0,
                    ports: None,
                },
                external => external,
            },
            BrokerChoice::External { host, port } => BrokerSpec::External {
                host: host.clone(),
                port: *port,
            },
        };
        let mut schedule: Vec<Scheduled> = scenario
            .load
            .iter()
            .chain(&scenario.events)
            .cloned()
            .collect();
        schedule.sort_by_key(|s| s.at);
        c.schedule = schedule;
        c.slos = scenario.slos.clone();
        c
    }

    /// Spreads `nodes` over `wards` (every ward gets the same number, rounded
    /// up, so node ids stay ward-contiguous).
    pub fn set_nodes(&mut self, nodes: u32, wards: u16) {
        let wards = wards.max(1);
        self.population = Population {
            wards,
            nodes_per_ward: nodes.div_ceil(u32::from(wards)).max(1),
        };
    }

    /// What injected actions are checked against.
    pub fn limits(&self) -> Limits {
        Limits {
            wards: self.population.wards,
            nodes_per_ward: self.population.nodes_per_ward,
            aggregators: self.aggregators,
            external_broker: matches!(self.broker, BrokerSpec::External { .. }),
        }
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

/// Something that happened to the mesh on purpose: the ground truth that
/// detectors are scored against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Seconds since the nodes started.
    pub at_s: f64,
    /// `event[3]`, `load[0]`, `inject`, `dashboard`, or `scheduled end`.
    pub source: String,
    /// The action's name.
    pub action: String,
    /// What happened, in words.
    pub description: String,
    /// Nodes affected, by id.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub nodes: Vec<u32>,
    /// Wards affected.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub wards: Vec<u16>,
    /// Aggregator affected.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub aggregator: Option<u16>,
    /// For outbreaks: (node, onset in seconds since the nodes started).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub onsets: Vec<(u32, f64)>,
    /// The action as data.
    pub detail: serde_json::Value,
    /// Why it could not be applied, if it could not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
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
    /// When the nodes' clock started (alerts carry absolute times).
    pub origin: vitalmesh_wire::Timestamp,
    /// Planned node run time.
    pub planned: Duration,
    /// Nodes.
    pub nodes: u32,
    /// Nodes started so far.
    pub started: u32,
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
    /// Messages refused by aggregators so far.
    pub rejected: u64,
    /// Last second.
    pub rate: RatePoint,
    /// The last two minutes, oldest first.
    pub history: Vec<RatePoint>,
    /// End-to-end latency over the last ten seconds.
    pub latency_recent: Percentiles,
    /// End-to-end latency over the whole run.
    pub latency_total: Percentiles,
    /// Latency distribution over the last ten seconds: (upper bound ms, count).
    pub latency_recent_buckets: Vec<(f64, u64)>,
    /// Latency distribution over the whole run.
    pub latency_total_buckets: Vec<(f64, u64)>,
    /// Node→broker PUBACK latency over the whole run.
    pub publish_ack: Percentiles,
    /// Health of every node, by id.
    pub node_health: Vec<NodeHealth>,
    /// Nodes the aggregators report down.
    pub nodes_down: Vec<u32>,
    /// Nodes an aggregator suspects (samples missing) but has not declared down.
    pub nodes_suspected: Vec<u32>,
    /// Ward layout.
    pub population: Population,
    /// Aggregators.
    pub aggregators: Vec<AggregatorView>,
    /// Most recent alerts, newest last.
    pub alerts: Vec<Alert>,
    /// Most recent timeline entries, newest last.
    pub timeline: Vec<TimelineEntry>,
    /// Broker restarts and canary figures.
    pub broker: BrokerReport,
    /// This process's RSS.
    pub rss_bytes: u64,
    /// The broker's RSS.
    pub broker_rss_bytes: u64,
}

/// Orders a running mesh accepts.
#[derive(Debug)]
pub enum MeshCommand {
    /// Apply an action now and record it.
    Apply {
        /// What.
        action: Action,
        /// Who asked (`inject`, `dashboard`, …).
        source: String,
        /// Where to send the timeline entry or the error.
        reply: Option<oneshot::Sender<Result<TimelineEntry, String>>>,
    },
}

struct NodeSlot {
    mailbox: Arc<Mailbox>,
    task: Option<JoinHandle<NodeOutcome>>,
    link: Arc<LinkConditions>,
    interval: Duration,
}

struct AggregatorSlot {
    control: Arc<AggregatorControl>,
    task: Option<JoinHandle<()>>,
    incarnation: u64,
    link: Arc<LinkConditions>,
}

/// Starts nodes at a steady rate.
#[derive(Debug)]
struct Ramp {
    start: Instant,
    count: usize,
    over: Duration,
    started: usize,
}

/// Undoes a timed fault.
enum Restore {
    Heal(Vec<Arc<LinkConditions>>),
    ClearLatency(Vec<Arc<LinkConditions>>),
    ClearLoss(Vec<Arc<LinkConditions>>),
    Intervals(Vec<(usize, Duration)>),
}

struct PendingRestore {
    at: Instant,
    restore: Restore,
    description: String,
    action: &'static str,
}

struct RogueRun {
    kind: RogueKind,
    started_at_s: f64,
    counters: Arc<RogueCounters>,
    task: JoinHandle<()>,
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
    broker_cpu: procfs::BrokerCpu,
    all_connected_after: Option<Duration>,
}

/// Log-spaced latency buckets for display: upper bounds 0.1 ms … ~6.5 s.
fn buckets(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    let mut out = Vec::new();
    let mut lower = 0u64;
    let mut upper = 100u64; // µs
    while upper <= 6_553_600 {
        let n = h.count_between(lower, upper.saturating_sub(1));
        out.push((upper as f64 / 1000.0, n));
        lower = upper;
        upper *= 2;
    }
    let rest = h.count_between(lower, u64::MAX);
    if let Some(last) = out.last_mut() {
        last.1 += rest;
    }
    out
}

/// Key for the random choices of injected actions (scenario entries use
/// their own index, so a scenario picks the same nodes every run).
const INJECTED_KEYS: u32 = 1 << 30;

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
    next_node: usize,
    aggregators: Vec<AggregatorSlot>,
    phase: Phase,
    nodes_started_at: Option<Instant>,
    origin: vitalmesh_wire::Timestamp,
    ramps: Vec<Ramp>,
    restores: Vec<PendingRestore>,
    timeline: Vec<TimelineEntry>,
    /// Nodes a fault silenced or disconnected on purpose: their node-down
    /// reports are true positives.
    touched: BTreeSet<u32>,
    injected_broker_restarts: u64,
    injections: u32,
    rogues: Vec<RogueRun>,
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
                listeners: listeners.max((nodes as usize).div_ceil(2500)).clamp(1, 16),
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
        let interval = config.node.sample_interval;
        let mut mesh = Self {
            nodes: (0..nodes)
                .map(|_| NodeSlot {
                    mailbox: Arc::new(Mailbox::default()),
                    task: None,
                    link: Arc::new(LinkConditions::default()),
                    interval,
                })
                .collect(),
            next_node: 0,
            aggregators: (0..config.aggregators)
                .map(|_| AggregatorSlot {
                    control: Arc::new(AggregatorControl::default()),
                    task: None,
                    incarnation: 0,
                    link: Arc::new(LinkConditions::default()),
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
            origin: clock.now(),
            ramps: Vec::new(),
            restores: Vec::new(),
            timeline: Vec::new(),
            touched: BTreeSet::new(),
            injected_broker_restarts: 0,
            injections: 0,
            rogues: Vec::new(),
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
            slot.link.clone(),
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

    /// Since the nodes' time zero (zero before).
    pub fn elapsed(&self) -> Duration {
        self.nodes_started_at
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// What happened on purpose so far.
    pub fn timeline(&self) -> &[TimelineEntry] {
        &self.timeline
    }

    /// Starts the nodes' clock. Without `ramp` entries in the schedule,
    /// every node starts at the configured connect rate from now.
    pub fn begin(&mut self) {
        if self.nodes_started_at.is_some() {
            return;
        }
        self.nodes_started_at = Some(Instant::now());
        self.origin = self.clock.now();
        self.phase = Phase::Ramping;
        let ramps_scheduled = self
            .config
            .schedule
            .iter()
            .any(|s| matches!(s.action, Action::Ramp { .. }));
        if !ramps_scheduled {
            let count = self.nodes.len();
            let over = Duration::from_secs_f64(count as f64 / f64::from(self.config.connect_rate));
            self.ramps.push(Ramp {
                start: Instant::now(),
                count,
                over,
                started: 0,
            });
        }
    }

    /// Starts every node at the connect rate and waits until all have
    /// started, sampling on the way. Returns early if `stop` turns true.
    pub async fn start_nodes(&mut self, stop: &mut watch::Receiver<bool>) {
        self.begin();
        while self.next_node < self.nodes.len() && !*stop.borrow() {
            self.step();
            self.maybe_tick();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts nodes that ramps have made due and undoes timed faults that
    /// have run their course. Call often (every few tens of milliseconds).
    pub fn step(&mut self) {
        let now = Instant::now();
        let mut due_total = 0;
        for ramp in &mut self.ramps {
            let fraction = if ramp.over.is_zero() {
                1.0
            } else {
                (now.saturating_duration_since(ramp.start).as_secs_f64() / ramp.over.as_secs_f64())
                    .min(1.0)
            };
            let due = ((fraction * ramp.count as f64).ceil() as usize).min(ramp.count);
            due_total += due - ramp.started;
            ramp.started = due;
        }
        self.ramps.retain(|r| r.started < r.count);
        for _ in 0..due_total {
            if self.next_node >= self.nodes.len() {
                break;
            }
            self.spawn_node(self.next_node);
            self.next_node += 1;
        }
        if self.phase == Phase::Ramping && self.ramps.is_empty() {
            self.phase = Phase::Running;
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.restores)
            .into_iter()
            .partition(|r| r.at <= now);
        self.restores = later;
        for r in due {
            match &r.restore {
                Restore::Heal(links) => links.iter().for_each(|l| l.heal()),
                Restore::ClearLatency(links) => links
                    .iter()
                    .for_each(|l| l.set_latency(Duration::ZERO, Duration::ZERO)),
                Restore::ClearLoss(links) => links.iter().for_each(|l| l.set_loss(0.0)),
                Restore::Intervals(list) => {
                    for &(i, d) in list {
                        self.nodes[i].interval = d;
                        self.nodes[i]
                            .mailbox
                            .send(NodeCommand::SetSampleInterval(d));
                    }
                }
            }
            self.record(TimelineEntry {
                at_s: self.elapsed().as_secs_f64(),
                source: "scheduled end".into(),
                action: r.action.into(),
                description: r.description,
                nodes: Vec::new(),
                wards: Vec::new(),
                aggregator: None,
                onsets: Vec::new(),
                detail: serde_json::Value::Null,
                error: None,
            });
        }
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
        config.sample_interval = self.nodes[index].interval;
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
            slot.link.clone(),
        )));
    }

    fn record(&mut self, entry: TimelineEntry) {
        self.timeline.push(entry);
    }

    fn send(&self, nodes: &[NodeId], command: &NodeCommand) {
        for n in nodes {
            if let Some(slot) = self.nodes.get(n.0 as usize) {
                slot.mailbox.send(command.clone());
            }
        }
    }

    /// The links of a group, and who they belong to.
    fn links_of(
        &self,
        group: &Group,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> (Vec<Arc<LinkConditions>>, Vec<NodeId>, Option<u16>) {
        match group {
            Group::Nodes(selector) => {
                let nodes = resolve::resolve(selector, &self.config.population, rng);
                (
                    nodes
                        .iter()
                        .map(|n| self.nodes[n.0 as usize].link.clone())
                        .collect(),
                    nodes,
                    None,
                )
            }
            Group::Aggregator(a) => (
                vec![self.aggregators[usize::from(*a)].link.clone()],
                Vec::new(),
                Some(*a),
            ),
        }
    }

    /// Applies an action now, records it in the timeline and returns the entry.
    /// `key` seeds its random choices (scenario entries pass their index).
    pub async fn apply(
        &mut self,
        action: &Action,
        source: &str,
        key: Option<u32>,
    ) -> TimelineEntry {
        let key = key.unwrap_or_else(|| {
            self.injections += 1;
            INJECTED_KEYS + self.injections
        });
        let mut rng = resolve::event_rng(self.config.seed, key);
        let now = Instant::now();
        let now_ts = self.clock.now();
        let at_s = self.elapsed().as_secs_f64();
        let mut entry = TimelineEntry {
            at_s,
            source: source.into(),
            action: action.name().into(),
            description: action.to_string(),
            nodes: Vec::new(),
            wards: Vec::new(),
            aggregator: None,
            onsets: Vec::new(),
            detail: serde_json::to_value(action).unwrap_or_default(),
            error: None,
        };
        let population = self.config.population;
        let node_targets = |s: &NodeSelector, rng: &mut rand_chacha::ChaCha8Rng| {
            resolve::resolve(s, &population, rng)
        };
        let timed = |for_: &Duration| now + *for_;
        match action {
            Action::Ramp { count, over } => {
                let remaining = self.nodes.len()
                    - self.next_node
                    - self
                        .ramps
                        .iter()
                        .map(|r| r.count - r.started)
                        .sum::<usize>();
                let count = count.map_or(remaining, |c| (c as usize).min(remaining));
                self.ramps.push(Ramp {
                    start: now,
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
                let nodes = node_targets(target, &mut rng);
                self.send(&nodes, &NodeCommand::ShutDown);
                self.touched.extend(nodes.iter().map(|n| n.0));
                entry.nodes = nodes.iter().map(|n| n.0).collect();
            }
            Action::SampleRate { target, interval } => {
                let nodes = node_targets(target, &mut rng);
                for n in &nodes {
                    self.nodes[n.0 as usize].interval = *interval;
                }
                self.send(&nodes, &NodeCommand::SetSampleInterval(*interval));
                entry.nodes = nodes.iter().map(|n| n.0).collect();
            }
            Action::Burst {
                target,
                interval,
                for_,
            } => {
                let nodes = node_targets(target, &mut rng);
                let before: Vec<(usize, Duration)> = nodes
                    .iter()
                    .map(|n| (n.0 as usize, self.nodes[n.0 as usize].interval))
                    .collect();
                self.send(&nodes, &NodeCommand::SetSampleInterval(*interval));
                self.restores.push(PendingRestore {
                    at: timed(for_),
                    restore: Restore::Intervals(before),
                    description: format!("burst of {} nodes ended", nodes.len()),
                    action: "burst",
                });
                entry.nodes = nodes.iter().map(|n| n.0).collect();
            }
            Action::KillNodes { target } | Action::RebootNodes { target } => {
                let nodes = node_targets(target, &mut rng);
                let command = if matches!(action, Action::KillNodes { .. }) {
                    NodeCommand::Crash
                } else {
                    NodeCommand::Reboot
                };
                self.send(&nodes, &command);
                self.touched.extend(nodes.iter().map(|n| n.0));
                entry.nodes = nodes.iter().map(|n| n.0).collect();
            }
            Action::RestartNodes { target } => {
                let nodes = node_targets(target, &mut rng);
                self.send(&nodes, &NodeCommand::Restart);
                entry.nodes = nodes.iter().map(|n| n.0).collect();
            }
            Action::Deterioration { target } => {
                let nodes = node_targets(target, &mut rng);
                self.send(&nodes, &NodeCommand::Deteriorate);
                entry.nodes = nodes.iter().map(|n| n.0).collect();
            }
            Action::SensorFault {
                target,
                sign,
                mode,
                for_,
            } => {
                let nodes = node_targets(target, &mut rng);
                let fault = SensorFault {
                    sign: *sign,
                    mode: *mode,
                    since: now_ts,
                    until: for_.map(|d| now_ts + d),
                };
                self.send(&nodes, &NodeCommand::InjectFault(fault));
                entry.nodes = nodes.iter().map(|n| n.0).collect();
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
                for (node, after) in &cases {
                    self.send(
                        &[*node],
                        &NodeCommand::Fever {
                            onset: now_ts + *after,
                        },
                    );
                }
                entry.wards = vec![*ward];
                entry.nodes = cases.iter().map(|(n, _)| n.0).collect();
                entry.onsets = cases
                    .iter()
                    .map(|(n, d)| (n.0, at_s + d.as_secs_f64()))
                    .collect();
            }
            Action::KillAggregator { aggregator } => {
                let id = AggregatorId(*aggregator);
                let slot = &mut self.aggregators[usize::from(*aggregator)];
                match slot.task.take() {
                    Some(task) => {
                        slot.control.stop(AggregatorStop::Kill);
                        let _ = task.await;
                        self.collector
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .aggregator_restarted(id);
                    }
                    None => entry.error = Some(format!("aggregator {aggregator} is not running")),
                }
                entry.aggregator = Some(*aggregator);
            }
            Action::RestartAggregator { aggregator } => {
                if self.aggregators[usize::from(*aggregator)].task.is_none() {
                    self.spawn_aggregator(AggregatorId(*aggregator));
                } else {
                    entry.error = Some(format!("aggregator {aggregator} is already running"));
                }
                entry.aggregator = Some(*aggregator);
            }
            Action::RestartBroker => {
                // Every connection drops: true for every started node.
                self.touched.extend(0..self.next_node as u32);
                match self.broker.restart("injected").await {
                    Ok(()) => self.injected_broker_restarts += 1,
                    Err(e) => entry.error = Some(e.to_string()),
                }
            }
            Action::Partition { group, for_ } => {
                let (links, nodes, aggregator) = self.links_of(group, &mut rng);
                links.iter().for_each(|l| l.partition());
                self.touched.extend(nodes.iter().map(|n| n.0));
                self.restores.push(PendingRestore {
                    at: timed(for_),
                    restore: Restore::Heal(links),
                    description: format!("partition of {group} ended"),
                    action: "partition",
                });
                entry.nodes = nodes.iter().map(|n| n.0).collect();
                entry.aggregator = aggregator;
            }
            Action::Latency {
                group,
                latency,
                jitter,
                for_,
            } => {
                let (links, nodes, aggregator) = self.links_of(group, &mut rng);
                links.iter().for_each(|l| l.set_latency(*latency, *jitter));
                self.touched.extend(nodes.iter().map(|n| n.0));
                self.restores.push(PendingRestore {
                    at: timed(for_),
                    restore: Restore::ClearLatency(links),
                    description: format!("added latency on {group} ended"),
                    action: "latency",
                });
                entry.nodes = nodes.iter().map(|n| n.0).collect();
                entry.aggregator = aggregator;
            }
            Action::PacketLoss { group, share, for_ } => {
                let (links, nodes, aggregator) = self.links_of(group, &mut rng);
                links.iter().for_each(|l| l.set_loss(*share));
                self.touched.extend(nodes.iter().map(|n| n.0));
                self.restores.push(PendingRestore {
                    at: timed(for_),
                    restore: Restore::ClearLoss(links),
                    description: format!("packet loss on {group} ended"),
                    action: "packet_loss",
                });
                entry.nodes = nodes.iter().map(|n| n.0).collect();
                entry.aggregator = aggregator;
            }
            Action::Rogue {
                kind,
                messages,
                connections,
                rate,
            } => {
                let counters = Arc::new(RogueCounters::default());
                let target = RogueTarget {
                    broker: self.broker.addrs()[0],
                    topics: self.node_rt.topics.clone(),
                    partitioning: Partitioning::new(self.config.partitions).expect("validated"),
                    nodes: self.config.population.nodes(),
                };
                let seed = self.config.seed ^ u64::from(key);
                let task = tokio::spawn(rogue::run(
                    *kind,
                    *messages,
                    *connections,
                    *rate,
                    target,
                    seed,
                    counters.clone(),
                ));
                self.rogues.push(RogueRun {
                    kind: *kind,
                    started_at_s: at_s,
                    counters,
                    task,
                });
            }
        }
        if let Some(ward) = match action {
            Action::Leave { target }
            | Action::SampleRate { target, .. }
            | Action::Burst { target, .. }
            | Action::KillNodes { target }
            | Action::RebootNodes { target }
            | Action::RestartNodes { target }
            | Action::Deterioration { target }
            | Action::SensorFault { target, .. } => target.ward,
            Action::Partition {
                group: Group::Nodes(t),
                ..
            }
            | Action::Latency {
                group: Group::Nodes(t),
                ..
            }
            | Action::PacketLoss {
                group: Group::Nodes(t),
                ..
            } => t.ward,
            _ => None,
        } {
            entry.wards = vec![ward];
        }
        self.record(entry.clone());
        entry
    }

    /// Samples once a second (calls more often are ignored).
    pub fn maybe_tick(&mut self) {
        let Some(started) = self.nodes_started_at else {
            return;
        };
        let seconds_done = self.sampler.throughput.produced.len();
        if started.elapsed() < Duration::from_secs(seconds_done as u64 + 1) {
            if self.sampler.all_connected_after.is_none()
                && self.next_node == self.nodes.len()
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
        self.sampler.rss = procfs::rss_bytes("self");
        self.sampler.process_peak = self.sampler.process_peak.max(self.sampler.rss);
        self.sampler.broker_rss = self
            .broker
            .child_pid()
            .map_or(0, |pid| procfs::rss_bytes(&pid.to_string()));
        self.sampler.broker_peak = self.sampler.broker_peak.max(self.sampler.broker_rss);
        self.sampler.broker_cpu.sample(self.broker.child_pid());
    }

    /// The state now.
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.counters;
        let col = self.collector.lock().unwrap_or_else(|p| p.into_inner());
        let recent = col.window_histogram();
        Snapshot {
            scenario: self.config.scenario.clone(),
            seed: self.config.seed,
            mode: "real time",
            broker_url: self.broker.report().url,
            phase: self.phase,
            elapsed: self.elapsed(),
            origin: self.origin,
            planned: self.config.duration,
            nodes: self.nodes.len() as u32,
            started: self.next_node as u32,
            connected: c.connected.load(Ordering::Relaxed),
            produced: LiveCounters::get(&c.produced),
            published: LiveCounters::get(&c.published),
            delivered: col.delivered_total,
            duplicates: col.duplicates,
            acked: LiveCounters::get(&c.e2e_acked),
            buffered: c.buffered.load(Ordering::Relaxed),
            dropped_overflow: LiveCounters::get(&c.dropped_overflow),
            lost_on_crash: LiveCounters::get(&c.lost_on_crash),
            rejected: col.rejected.values().sum(),
            rate: self.sampler.rate,
            history: self.sampler.history.iter().copied().collect(),
            latency_recent: Percentiles::of(&recent),
            latency_total: Percentiles::of(&col.e2e_total),
            latency_recent_buckets: buckets(&recent),
            latency_total_buckets: buckets(&col.e2e_total),
            publish_ack: Percentiles::of(&c.publish_ack_latency.snapshot()),
            node_health: c.health(),
            nodes_down: col.nodes_down.iter().map(|n| n.0).collect(),
            nodes_suspected: col
                .aggregators
                .values()
                .filter(|a| a.up)
                .flat_map(|a| a.suspected.iter().copied())
                .collect(),
            population: self.config.population,
            aggregators: col.aggregators.values().cloned().collect(),
            alerts: col.alerts.iter().rev().take(100).rev().copied().collect(),
            timeline: self
                .timeline
                .iter()
                .rev()
                .take(100)
                .rev()
                .cloned()
                .collect(),
            broker: self.broker.report(),
            rss_bytes: self.sampler.rss,
            broker_rss_bytes: self.sampler.broker_rss,
        }
    }

    /// Stops sampling, drains, stops everything and writes the report.
    pub async fn finish(mut self, interrupted: bool) -> Outcome {
        let ran_for = self.elapsed();
        self.phase = Phase::Draining;
        // Heal every network fault: the drain must be able to deliver.
        for r in std::mem::take(&mut self.restores) {
            match r.restore {
                Restore::Heal(links) => links.iter().for_each(|l| l.heal()),
                Restore::ClearLatency(links) => links
                    .iter()
                    .for_each(|l| l.set_latency(Duration::ZERO, Duration::ZERO)),
                Restore::ClearLoss(links) => links.iter().for_each(|l| l.set_loss(0.0)),
                Restore::Intervals(_) => {}
            }
        }
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
        for rogue in &self.rogues {
            rogue.task.abort();
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
        let process_peak = self.sampler.process_peak.max(procfs::rss_bytes("self"));
        let c = &self.counters;
        let broker = self.broker.report();
        let false_node_down: Vec<u32> = col
            .nodes_ever_down
            .iter()
            .map(|n| n.0)
            .filter(|n| !self.touched.contains(n))
            .collect();
        let latency = LatencyReport {
            end_to_end: Percentiles::of(&col.e2e_total),
            publish_ack: Percentiles::of(&c.publish_ack_latency.snapshot()),
        };
        let rejected: u64 = col.rejected.values().sum();
        let l = &ledger.total;
        let figures = SloFigures {
            unexplained: l.unexplained,
            delivered_share: if l.produced == 0 {
                0.0
            } else {
                l.delivered as f64 / l.produced as f64
            },
            p50_ms: latency.end_to_end.p50_ms,
            p99_ms: latency.end_to_end.p99_ms,
            p999_ms: latency.end_to_end.p99_9_ms,
            max_ms: latency.end_to_end.max_ms,
            dropped_overflow: l.dropped_overflow,
            lost_on_crash: l.lost_on_crash,
            duplicates: l.duplicates,
            connect_failures: LiveCounters::get(&c.connect_failures),
            false_node_down: false_node_down.len() as u64,
            rejected,
            unplanned_broker_restarts: broker
                .process_restarts
                .saturating_sub(self.injected_broker_restarts),
        };
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
            broker,
            slo: vitalmesh_scenario::slo::evaluate(&self.config.slos, &figures),
            ledger,
            latency,
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
            cpu: CpuReport {
                process_s: procfs::cpu_seconds("self").unwrap_or(0.0),
                broker_s: self.sampler.broker_cpu.total(),
                threads_s: procfs::thread_cpu_seconds(),
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
                false_node_down,
                recent: col.alerts.iter().rev().take(200).rev().copied().collect(),
            },
            rejected: col.rejected.clone(),
            rejected_examples: col.rejected_examples.clone(),
            timeline: self.timeline.clone(),
            rogue: self
                .rogues
                .iter()
                .map(|r| RogueReport {
                    kind: r.kind,
                    started_at_s: r.started_at_s,
                    messages_sent: r.counters.messages.load(Ordering::Relaxed),
                    connections_opened: r.counters.connections.load(Ordering::Relaxed),
                    dropped_by_broker: r.counters.dropped_by_broker.load(Ordering::Relaxed),
                })
                .collect(),
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
    /// Commands to apply while running (the dashboard's keys).
    pub commands: Option<mpsc::Receiver<MeshCommand>>,
    /// Serve live injection on this Unix socket.
    pub control_socket: Option<PathBuf>,
}

/// Runs a mesh for its planned duration, or until stopped: scheduled
/// actions fire on time, injected ones as they come.
pub async fn run(config: MeshConfig, mut control: RunControl) -> Result<Outcome, MeshError> {
    let schedule = config.schedule.clone();
    let limits = config.limits();
    let (inject_tx, mut inject_rx) = mpsc::channel::<MeshCommand>(16);
    let server = match &control.control_socket {
        Some(path) => Some(tokio::spawn(crate::control::serve(
            crate::control::bind(path)?,
            limits,
            inject_tx.clone(),
        ))),
        None => None,
    };
    drop(inject_tx);
    let result = async {
        let mut mesh = Mesh::start(config).await?;
        mesh.begin();
        let end = Instant::now() + mesh.config.duration;
        let mut next = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_snapshot: Option<Instant> = None;
        let mut interrupted = *control.stop.borrow();
        while !interrupted && Instant::now() < end {
            let command = tokio::select! {
                _ = tick.tick() => None,
                changed = control.stop.changed() => {
                    interrupted = changed.is_err() || *control.stop.borrow();
                    None
                }
                Some(cmd) = inject_rx.recv() => Some(cmd),
                Some(cmd) = async { control.commands.as_mut()?.recv().await }, if control.commands.is_some() => Some(cmd),
            };
            if let Some(MeshCommand::Apply { action, source, reply }) = command {
                let entry = mesh.apply(&action, &source, None).await;
                if let Some(reply) = reply {
                    let _ = reply.send(match &entry.error {
                        Some(e) => Err(e.clone()),
                        None => Ok(entry),
                    });
                }
            }
            while let Some(s) = schedule.get(next).filter(|s| s.at <= mesh.elapsed()) {
                let index = next as u32;
                mesh.apply(&s.action, &s.origin, Some(index)).await;
                next += 1;
            }
            mesh.step();
            mesh.maybe_tick();
            if let Some(tx) = &control.snapshots {
                if last_snapshot.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
                    last_snapshot = Some(Instant::now());
                    let _ = tx.try_send(mesh.snapshot());
                }
            }
        }
        Ok(mesh.finish(interrupted).await)
    }
    .await;
    if let Some(server) = server {
        server.abort();
    }
    if let Some(path) = &control.control_socket {
        let _ = std::fs::remove_file(path);
    }
    result
}

//! The real-time driver: the pure [`Run`] over real MQTT, a real broker and
//! real sockets.
//!
//! [`Mesh`] owns everything that is running — broker, aggregator tasks,
//! node tasks — and carries out the commands the pure run gives it
//! (`vitalmesh_sim::Command`): a node mailbox, a link condition, a task
//! killed or spawned, the broker restarted. What an action *means* is
//! decided in `vitalmesh-sim`; this module moves bytes and time. [`run`]
//! drives a `Mesh` for its planned duration, sleeping until the next
//! deadline (a scheduled action, the next second, a snapshot), feeding
//! snapshots to whoever watches and taking commands from whoever steers.
//!
//! Order of a run: broker up → aggregators connect and join (each owns its
//! partitions before any node starts) → nodes start as the schedule says →
//! every second, throughput, latency and memory are sampled → at the end
//! nodes stop sampling and drain their buffers for a moment → nodes and
//! aggregators stop → the report is assembled.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vitalmesh_firmware::SensorFault;
use vitalmesh_firmware::physiology::FeverEpisode;
use vitalmesh_scenario::{BrokerChoice, Limits, RogueKind, Scenario};
use vitalmesh_sim::ledger::NodeFinal;
use vitalmesh_sim::merge::{PART_FORMAT, PartLatency, Recipe, ShardPart, encode_histogram};
use vitalmesh_sim::report::{
    ConnectionsReport, CpuReport, GatewaysReport, MemoryReport, RogueReport,
};
use vitalmesh_sim::shard::{Shard, ShardStatus};
use vitalmesh_sim::{
    Command, GatewayOp, LinkOp, LinkTarget, NodeOp, Observer, Percentiles, Phase, RatePoint,
    ReportInputs, Run, RunMode, Seconds, Snapshot, TimelineEntry, setup,
};
use vitalmesh_wire::envelope::Keyring;
use vitalmesh_wire::{AggregatorId, GatewayId, NodeId, TopicScheme};

use crate::MeshError;
use crate::aggregator_driver::{
    AggregatorControl, AggregatorRuntime, AggregatorStop, run_aggregator,
};
use crate::broker::{BrokerHandle, BrokerLogin, BrokerSpec, BrokerTls};
use crate::clock::RunClock;
use crate::gateway_driver::{GatewayCommand, GatewayFinal, run_gateway};
use crate::metrics::{DisconnectReason, LiveCounters};
use crate::mqtt::{LinkConditions, TlsClient};
use crate::node_driver::{Mailbox, NodeCommand, NodeRuntime, run_node};
use crate::procfs;
use crate::report::Report;
use crate::rogue::{self, RogueCounters, RogueTarget};
use crate::shard_link::ShardLink;

/// A real-time run: the validated scenario, its seed, and the knobs only a
/// real-time run has. Everything a scenario can say is said by the
/// [`Scenario`]; there is no second copy of its defaults here.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// What runs.
    pub scenario: Scenario,
    /// Master seed.
    pub seed: u64,
    /// Which broker (the scenario's choice, resolved: the embedded one runs
    /// this program's hidden `broker` subcommand).
    pub broker: BrokerSpec,
    /// Connection handshakes in progress at once, at most.
    pub connect_concurrency: usize,
    /// Topic root.
    pub topic_root: String,
    /// Keep per-second latency histograms for an HdrHistogram log.
    pub keep_intervals: bool,
    /// Log every client in with its own credentials. Always on for the
    /// embedded broker (which then refuses everyone else); for an external
    /// broker, only when it was set up with the run's credentials
    /// (`--broker-auth`, [`crate::broker::mosquitto::Mosquitto::start_secured`]).
    pub broker_auth: bool,
    /// The authority an external TLS broker's certificate chains to
    /// (`--tls-ca`); the embedded broker's is made for the run.
    pub tls_ca: Option<PathBuf>,
    /// Run one shard of a sharded run (`--shard I/N`), or the whole.
    pub shard: Option<ShardPlan>,
}

/// One shard of a sharded run: which, the run it belongs to, and how the
/// merge builds its scenario again.
#[derive(Debug, Clone)]
pub struct ShardPlan {
    /// Which shard.
    pub shard: Shard,
    /// The run's id, the same in every shard (status messages of other
    /// runs on the broker are ignored).
    pub run_id: String,
    /// The scenario as the part file records it.
    pub recipe: Recipe,
    /// How long to wait for the other shards to be ready.
    pub wait: Duration,
}

impl MeshConfig {
    /// A real-time run of `scenario` with `seed`; an embedded broker is
    /// started from `program`.
    pub fn new(scenario: Scenario, seed: u64, program: PathBuf) -> Self {
        let broker = match &scenario.broker {
            BrokerChoice::Embedded { listeners } => BrokerSpec::Embedded {
                program,
                listeners: listeners.map_or(1, usize::from),
                max_connections: 0,
                segment_bytes: 0,
                ports: None,
            },
            BrokerChoice::External { host, port } => BrokerSpec::External {
                host: host.clone(),
                port: *port,
                also: Vec::new(),
            },
        };
        Self {
            scenario,
            seed,
            broker,
            connect_concurrency: 256,
            topic_root: "vm".into(),
            keep_intervals: false,
            broker_auth: false,
            tls_ca: None,
            shard: None,
        }
    }

    /// What injected actions are checked against.
    pub fn limits(&self) -> Limits {
        let mut limits = self.scenario.limits();
        limits.external_broker = matches!(self.broker, BrokerSpec::External { .. });
        limits
    }
}

/// Orders a running mesh accepts.
#[derive(Debug)]
pub enum MeshCommand {
    /// Apply an action now and record it.
    Apply {
        /// What.
        action: vitalmesh_scenario::Action,
        /// Who asked (`inject`, `dashboard`, …).
        source: String,
        /// Where to send the timeline entry or the error.
        reply: Option<oneshot::Sender<Result<TimelineEntry, String>>>,
    },
}

/// A direct node's task, inbox and link; a node behind a gateway has none
/// of its own (its gateway's task runs it).
struct NodeSlot {
    mailbox: Arc<Mailbox>,
    task: Option<JoinHandle<NodeFinal>>,
    link: Arc<LinkConditions>,
}

struct GatewaySlot {
    mailbox: Arc<Mailbox<GatewayCommand>>,
    task: Option<JoinHandle<GatewayFinal>>,
    link: Arc<LinkConditions>,
}

struct AggregatorSlot {
    /// Capacity weight (kept across restarts).
    weight: u16,
    control: Arc<AggregatorControl>,
    task: Option<JoinHandle<()>>,
    incarnation: u64,
    link: Arc<LinkConditions>,
}

struct RogueRun {
    kind: RogueKind,
    started_at_s: f64,
    counters: Arc<RogueCounters>,
    task: JoinHandle<()>,
}

/// Host measurements taken once a second.
#[derive(Debug, Default)]
struct HostSampler {
    process_peak: u64,
    broker_peak: u64,
    rss: u64,
    broker_rss: u64,
    broker_cpu: procfs::BrokerCpu,
    all_connected_after: Option<Duration>,
}

/// A running mesh.
pub struct Mesh {
    config: MeshConfig,
    run: Run,
    clock: RunClock,
    started_wall: SystemTime,
    broker: BrokerHandle,
    counters: Arc<LiveCounters>,
    observer: Arc<Mutex<Observer>>,
    keys: Keyring,
    node_rt: Arc<NodeRuntime>,
    agg_rt: Arc<AggregatorRuntime>,
    /// By node id; `None` for nodes behind a gateway.
    nodes: Vec<Option<NodeSlot>>,
    gateways: Vec<GatewaySlot>,
    aggregators: Vec<AggregatorSlot>,
    phase: Phase,
    nodes_started_at: Option<Instant>,
    origin: vitalmesh_wire::Timestamp,
    rogues: Vec<RogueRun>,
    seconds: Seconds,
    host: HostSampler,
    /// Direct nodes and gateways this process connects.
    clients: u32,
    /// A sharded run's link to the other shards.
    shard_link: Option<ShardLink>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("scenario", &self.config.scenario.name)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

fn locked(observer: &Mutex<Observer>) -> MutexGuard<'_, Observer> {
    observer.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mesh {
    /// Starts the broker and the aggregators, and waits until the
    /// aggregators own every partition.
    pub async fn start(config: MeshConfig) -> Result<Self, MeshError> {
        let scenario = &config.scenario;
        let nodes = scenario.population.nodes();
        let shard = config.shard.as_ref().map_or(Shard::WHOLE, |p| p.shard);
        // One MQTT connection per direct node and per gateway (of this
        // shard's).
        let clients = if scenario.population.has_gateways() {
            (0..scenario.population.gateways())
                .filter(|g| shard.owns_gateway(GatewayId(*g)))
                .count() as u32
        } else {
            (0..nodes).filter(|n| shard.owns_node(NodeId(*n))).count() as u32
        };
        crate::limits::check_budget(u64::from(clients) + u64::from(scenario.aggregators) + 8)?;
        let clock = RunClock::start();
        let started_wall = SystemTime::now();
        let broker_spec = match config.broker.clone() {
            BrokerSpec::Embedded {
                program,
                listeners,
                max_connections,
                segment_bytes,
                ports,
            } => BrokerSpec::Embedded {
                program,
                // Spread clients so each listener sees a few thousand at most.
                listeners: listeners
                    .max((clients as usize).div_ceil(2500))
                    .clamp(1, 16),
                max_connections: max_connections.max(clients as usize * 5 / 4 + 1024),
                segment_bytes: if segment_bytes == 0 {
                    crate::broker::segment_bytes_for(
                        nodes,
                        scenario.profile.sample_interval,
                        scenario.partitions,
                    )
                } else {
                    segment_bytes
                },
                ports,
            },
            external => external,
        };
        let login = (matches!(broker_spec, BrokerSpec::Embedded { .. }) || config.broker_auth)
            .then(|| BrokerLogin::new(setup::provisioning_secret(scenario, config.seed)));
        let tls = if scenario.broker_tls {
            Some(match (&broker_spec, &config.tls_ca) {
                (BrokerSpec::Embedded { .. }, _) => BrokerTls::for_embedded()?,
                (BrokerSpec::External { host, .. }, Some(ca)) => {
                    BrokerTls::trusting(TlsClient::from_ca_file(ca, host)?)
                }
                (BrokerSpec::External { host, port, .. }, None) => {
                    return Err(MeshError::config(
                        "tls-ca",
                        format!(
                            "the broker 'mqtts://{host}:{port}' needs the certificate authority its certificate chains to; expected --tls-ca FILE (PEM)"
                        ),
                    ));
                }
            })
        } else {
            None
        };
        let broker = BrokerHandle::start(broker_spec, clock, login.clone(), tls).await?;
        let tls = broker.tls_client().cloned();
        let topics = TopicScheme::new(&config.topic_root)
            .map_err(|e| MeshError::config("topic_root", e.to_string()))?;
        let keys = setup::keyring(scenario, config.seed);
        let counters = Arc::new(LiveCounters::new(nodes as usize));
        // A shard ships its per-second histograms: the merge adds them.
        let observer = Arc::new(Mutex::new(Observer::new(
            scenario.population,
            config.keep_intervals || config.shard.is_some(),
        )));
        let node_rt = Arc::new(NodeRuntime {
            clock,
            counters: counters.clone(),
            broker: broker.addrs().to_vec(),
            topics: topics.clone(),
            login: login.clone(),
            tls: tls.clone(),
            connect_gate: Semaphore::new(config.connect_concurrency.max(1)),
            connect_timeout: Duration::from_secs(20),
            keep_alive_secs: 15,
            inflight_window: 16,
        });
        let agg_rt = Arc::new(AggregatorRuntime {
            clock,
            broker: broker.addrs().to_vec(),
            observer: observer.clone(),
            origin: Arc::new(std::sync::OnceLock::new()),
            topics,
            login,
            tls,
            keep_alive_secs: 5,
            connect_timeout: Duration::from_secs(3),
        });
        let mut mesh = Self {
            run: Run::new(scenario, config.seed),
            nodes: (0..nodes)
                .map(|n| {
                    let direct = scenario.population.gateway_of(NodeId(n)).is_none();
                    (direct && shard.owns_node(NodeId(n))).then(|| NodeSlot {
                        mailbox: Arc::new(Mailbox::default()),
                        task: None,
                        link: Arc::new(LinkConditions::default()),
                    })
                })
                .collect(),
            gateways: (0..scenario.population.gateways())
                .map(|_| GatewaySlot {
                    mailbox: Arc::new(Mailbox::default()),
                    task: None,
                    link: Arc::new(LinkConditions::default()),
                })
                .collect(),
            aggregators: (0..scenario.aggregator_slots)
                .map(|_| AggregatorSlot {
                    weight: 1,
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
            observer,
            keys,
            node_rt,
            agg_rt,
            phase: Phase::Starting,
            nodes_started_at: None,
            origin: clock.now(),
            rogues: Vec::new(),
            seconds: Seconds::default(),
            host: HostSampler::default(),
            clients,
            shard_link: None,
        };
        if let Some(plan) = &mesh.config.shard {
            mesh.shard_link = Some(ShardLink::start(plan, mesh.node_rt.clone()));
        }
        for id in 0..mesh.config.scenario.aggregators {
            mesh.spawn_aggregator(AggregatorId(id));
        }
        mesh.wait_for_aggregators().await?;
        // Gateways are infrastructure: up before their nodes start.
        for g in 0..mesh.gateways.len() as u32 {
            mesh.spawn_gateway(GatewayId(g));
        }
        if let Some(link) = &mesh.shard_link {
            link.ready(mesh.clock.now());
            let start_at = link
                .start_at(
                    mesh.clock,
                    mesh.config
                        .shard
                        .as_ref()
                        .map_or(Duration::ZERO, |p| p.wait),
                )
                .await?;
            tokio::time::sleep_until(mesh.clock.instant_of(start_at)).await;
        }
        Ok(mesh)
    }

    /// What this process runs: the whole mesh, or one shard of it.
    fn shard(&self) -> Shard {
        self.config.shard.as_ref().map_or(Shard::WHOLE, |p| p.shard)
    }

    fn spawn_aggregator(&mut self, id: AggregatorId) {
        if !self.shard().owns_aggregator(id) {
            return;
        }
        let slot = &mut self.aggregators[usize::from(id.0)];
        slot.incarnation += 1;
        slot.control = Arc::new(AggregatorControl::default());
        let agg = setup::aggregator(
            &self.config.scenario,
            &self.keys,
            &self.agg_rt.topics,
            id,
            slot.incarnation,
            slot.weight,
        );
        slot.task = Some(tokio::spawn(run_aggregator(
            agg,
            self.agg_rt.clone(),
            slot.control.clone(),
            slot.link.clone(),
        )));
    }

    async fn wait_for_aggregators(&self) -> Result<(), MeshError> {
        let want = usize::from(self.config.scenario.aggregators);
        let mine = (0..self.config.scenario.aggregators)
            .filter(|a| self.shard().owns_aggregator(AggregatorId(*a)))
            .count();
        // A shard waits for the others' aggregators too: they start when
        // their processes do.
        let wait = match &self.config.shard {
            Some(plan) => plan.wait,
            None => Duration::from_secs(20),
        };
        let deadline = Instant::now() + wait;
        loop {
            let agreed = {
                let o = locked(&self.observer);
                let agreed = o
                    .aggregators
                    .values()
                    .filter(|v| v.up && v.live_view.len() == want)
                    .count();
                let owned: u32 = o
                    .aggregators
                    .values()
                    .map(|v| u32::from(v.stats.primary_partitions))
                    .sum();
                // Unsharded, this process sees every owner; a shard sees
                // its own aggregators agree on the whole membership.
                agreed == mine
                    && (self.config.shard.is_some()
                        || owned == u32::from(self.config.scenario.partitions))
            };
            if agreed {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(MeshError::Broker(format!(
                    "the {want} aggregators did not agree on partition ownership within {} s; is the broker delivering{}?",
                    wait.as_secs(),
                    if self.config.shard.is_some() {
                        ", and are the other shards running"
                    } else {
                        ""
                    }
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
        self.run.timeline()
    }

    /// Starts the nodes' clock: time zero of the schedule.
    pub fn begin(&mut self) {
        if self.nodes_started_at.is_some() {
            return;
        }
        self.nodes_started_at = Some(Instant::now());
        self.origin = self.clock.now();
        let _ = self.agg_rt.origin.set(self.origin);
        locked(&self.observer).origin = Some(self.origin);
        self.phase = Phase::Ramping;
        self.run.begin(self.origin.as_micros() / 1_000_000);
    }

    /// Starts every node as the schedule says and waits until all have
    /// started, sampling on the way. Returns early if `stop` turns true.
    pub async fn start_nodes(&mut self, stop: &mut watch::Receiver<bool>) {
        self.begin();
        while !self.run.ramped() && !*stop.borrow() {
            self.advance().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Fires whatever the schedule has due now and samples the second if
    /// one has passed. [`run`] calls it at every deadline; tests that drive
    /// a mesh by hand call it as often as they like.
    pub async fn advance(&mut self) {
        self.run.handle_timeout(self.elapsed());
        self.carry_out(None).await;
        if self.phase == Phase::Ramping && self.run.ramped() {
            self.phase = Phase::Running;
        }
        self.maybe_close_second();
    }

    /// When [`Mesh::advance`] next has something to do.
    fn next_deadline(&self) -> Instant {
        let start = self.nodes_started_at.unwrap_or_else(Instant::now);
        let second = start + Duration::from_secs(self.seconds.count() as u64 + 1);
        match self.run.poll_timeout() {
            Some(t) => second.min(start + t),
            None => second,
        }
    }

    /// Carries out the pure run's commands; `entry` is the timeline entry
    /// they belong to, for a failure the driver alone can see.
    async fn carry_out(&mut self, entry: Option<usize>) {
        while let Some(command) = self.run.poll_command() {
            match command {
                Command::StartNodes { first, count } => {
                    for id in first..first + count {
                        self.spawn_node(NodeId(id));
                    }
                }
                Command::Gateways { gateways, op } => {
                    for g in gateways
                        .into_iter()
                        .filter(|g| self.shard().owns_gateway(*g))
                    {
                        if let Some(slot) = self.gateways.get(g.0 as usize) {
                            slot.mailbox.send(match op {
                                GatewayOp::Crash => GatewayCommand::Crash,
                                GatewayOp::Restart => GatewayCommand::Restart,
                            });
                        }
                    }
                }
                Command::Node { nodes, op } => {
                    let now = self.clock.now();
                    let command = match op {
                        NodeOp::Crash => NodeCommand::Crash,
                        NodeOp::Restart => NodeCommand::Restart,
                        NodeOp::Reboot => NodeCommand::Reboot,
                        NodeOp::ShutDown => NodeCommand::ShutDown,
                        NodeOp::SetInterval(d) => NodeCommand::SetSampleInterval(d),
                        NodeOp::Fault { sign, mode, for_ } => {
                            NodeCommand::InjectFault(SensorFault {
                                sign,
                                mode,
                                since: now,
                                until: for_.map(|d| now + d),
                            })
                        }
                        NodeOp::Fever { after, episode } => NodeCommand::Fever(FeverEpisode {
                            onset: now + after,
                            ..episode
                        }),
                        NodeOp::Deteriorate { ramp } => NodeCommand::Deteriorate(ramp),
                        NodeOp::Discharge => NodeCommand::Discharge,
                        NodeOp::Admit { options } => NodeCommand::Admit(options),
                    };
                    for n in nodes {
                        self.send_to_node(n, command.clone());
                    }
                }
                Command::Link { target, op } => {
                    let links: Vec<&Arc<LinkConditions>> = match &target {
                        LinkTarget::Nodes(nodes) => {
                            // A node behind a gateway reaches the broker over
                            // its gateway's connection: a network fault on
                            // the node acts there.
                            let population = self.config.scenario.population;
                            let mut links: Vec<&Arc<LinkConditions>> = nodes
                                .iter()
                                .filter_map(|n| match population.gateway_of(*n) {
                                    Some(g) => self.gateways.get(g.0 as usize).map(|s| &s.link),
                                    None => self.nodes.get(n.0 as usize)?.as_ref().map(|s| &s.link),
                                })
                                .collect();
                            links.dedup_by(|a, b| Arc::ptr_eq(a, b));
                            links
                        }
                        LinkTarget::Aggregator(a) => self
                            .aggregators
                            .get(usize::from(*a))
                            .map(|s| &s.link)
                            .into_iter()
                            .collect(),
                    };
                    for l in links {
                        match op {
                            LinkOp::Partition => l.partition(),
                            LinkOp::Heal => l.heal(),
                            LinkOp::Latency { latency, jitter } => l.set_latency(latency, jitter),
                            LinkOp::ClearLatency => l.set_latency(Duration::ZERO, Duration::ZERO),
                            LinkOp::Loss(share) => l.set_loss(share),
                            LinkOp::ClearLoss => l.set_loss(0.0),
                        }
                    }
                    if let (LinkOp::Heal, LinkTarget::Nodes(nodes)) = (op, &target) {
                        // The device's network stack sees the path back (as
                        // a phone's connectivity callback would): offline
                        // clients try now rather than after their backoff.
                        let population = self.config.scenario.population;
                        let mut gateways: Vec<GatewayId> = nodes
                            .iter()
                            .filter_map(|n| population.gateway_of(*n))
                            .collect();
                        gateways.dedup();
                        for g in gateways {
                            if let Some(slot) = self.gateways.get(g.0 as usize) {
                                slot.mailbox.send(GatewayCommand::UplinkAvailable);
                            }
                        }
                        for n in nodes
                            .iter()
                            .filter(|n| population.gateway_of(**n).is_none())
                        {
                            self.send_to_node(*n, NodeCommand::LinkAvailable);
                        }
                    }
                }
                Command::KillAggregator(a) => {
                    let slot = &mut self.aggregators[usize::from(a)];
                    if let Some(task) = slot.task.take() {
                        slot.control.stop(AggregatorStop::Kill);
                        let _ = task.await;
                        locked(&self.observer).aggregator_killed(AggregatorId(a));
                    }
                }
                Command::RestartAggregator(a) => self.spawn_aggregator(AggregatorId(a)),
                Command::AddAggregator { aggregator, weight } => {
                    self.aggregators[usize::from(aggregator)].weight = weight;
                    self.spawn_aggregator(AggregatorId(aggregator));
                }
                Command::RemoveAggregator(a) => {
                    // It says it is leaving (peers take over, it flushes its
                    // acknowledgements) and disconnects cleanly: no will.
                    let slot = &mut self.aggregators[usize::from(a)];
                    if let Some(task) = slot.task.take() {
                        slot.control.stop(AggregatorStop::HandOver);
                        // It finishes on its own after the hand-over; the
                        // run goes on meanwhile.
                        let observer = self.observer.clone();
                        tokio::spawn(async move {
                            let _ = task.await;
                            locked(&observer).aggregator_removed(AggregatorId(a));
                        });
                    }
                }
                Command::RestartBroker => {
                    if let Err(e) = self.broker.restart("injected").await {
                        if let Some(i) = entry {
                            self.run.refuse(i, e.to_string());
                        }
                    }
                }
                // Rogue clients attack from the first shard only: the
                // attack is the scenario's, not one per shard.
                Command::Rogue { .. } if self.shard().index != 0 => {}
                Command::Rogue {
                    kind,
                    messages,
                    connections,
                    rate,
                    seed,
                } => {
                    let counters = Arc::new(RogueCounters::default());
                    let target = RogueTarget {
                        broker: self.broker.addrs()[0],
                        topics: self.node_rt.topics.clone(),
                        partitioning: setup::partitioning(&self.config.scenario),
                        nodes: self.config.scenario.population.nodes(),
                        login: self.node_rt.login.clone(),
                        tls: self.node_rt.tls.clone(),
                    };
                    let task = tokio::spawn(rogue::run(
                        kind,
                        messages,
                        connections,
                        rate,
                        target,
                        seed,
                        counters.clone(),
                    ));
                    self.rogues.push(RogueRun {
                        kind,
                        started_at_s: self.elapsed().as_secs_f64(),
                        counters,
                        task,
                    });
                }
            }
        }
    }

    fn spawn_node(&mut self, id: NodeId) {
        if !self
            .shard()
            .owns_device(&self.config.scenario.population, id)
        {
            return;
        }
        let node = setup::node(
            &self.config.scenario,
            self.config.seed,
            &self.keys,
            id,
            self.run.interval_of(id),
            self.clock.now(),
        );
        if let Some(g) = self.config.scenario.population.gateway_of(id) {
            if let Some(slot) = self.gateways.get(g.0 as usize) {
                slot.mailbox.send(GatewayCommand::Start(Box::new(node)));
            }
            return;
        }
        let Some(slot) = self.nodes[id.0 as usize].as_mut() else {
            return;
        };
        slot.task = Some(tokio::spawn(run_node(
            node,
            self.node_rt.clone(),
            slot.mailbox.clone(),
            slot.link.clone(),
        )));
    }

    fn spawn_gateway(&mut self, id: GatewayId) {
        if !self.shard().owns_gateway(id) {
            return;
        }
        let Some(cell) = setup::gateway(&self.config.scenario, self.config.seed, &self.keys, id)
        else {
            return;
        };
        let slot = &mut self.gateways[id.0 as usize];
        slot.task = Some(tokio::spawn(run_gateway(
            cell,
            self.node_rt.clone(),
            slot.mailbox.clone(),
            slot.link.clone(),
        )));
    }

    /// Sends `command` to node `id`'s task, or to its gateway's.
    fn send_to_node(&self, id: NodeId, command: NodeCommand) {
        if !self
            .shard()
            .owns_device(&self.config.scenario.population, id)
        {
            return;
        }
        match self.config.scenario.population.gateway_of(id) {
            Some(g) => {
                if let Some(slot) = self.gateways.get(g.0 as usize) {
                    slot.mailbox.send(GatewayCommand::Node(id, command));
                }
            }
            None => {
                if let Some(Some(slot)) = self.nodes.get(id.0 as usize) {
                    slot.mailbox.send(command);
                }
            }
        }
    }

    /// Applies an action now, records it in the timeline and returns the
    /// entry (with its error, if it was refused). `key` seeds its random
    /// choices (scenario entries pass their index).
    pub async fn apply(
        &mut self,
        action: &vitalmesh_scenario::Action,
        source: &str,
        key: Option<u32>,
    ) -> TimelineEntry {
        let index = self.run.apply(action, source, key, self.elapsed());
        self.carry_out(Some(index)).await;
        self.run.entry(index).clone()
    }

    /// Samples once a second (calls more often are ignored).
    pub fn maybe_close_second(&mut self) {
        let Some(started) = self.nodes_started_at else {
            return;
        };
        let seconds_done = self.seconds.count();
        if started.elapsed() < Duration::from_secs(seconds_done as u64 + 1) {
            if self.host.all_connected_after.is_none()
                && self.run.ramped()
                && self.counters.connected.load(Ordering::Relaxed) >= i64::from(self.clients)
            {
                self.host.all_connected_after = Some(started.elapsed());
            }
            return;
        }
        let c = &self.counters;
        let totals = RatePoint {
            produced: LiveCounters::get(&c.produced),
            published: LiveCounters::get(&c.published),
            delivered: locked(&self.observer).delivered_total,
            acked: LiveCounters::get(&c.e2e_acked),
        };
        self.seconds
            .close(totals, c.connected.load(Ordering::Relaxed));
        locked(&self.observer).tick(seconds_done as f64);
        // A node whose battery ran flat is down: a restart must reach it.
        for (n, h) in c.health().iter().enumerate() {
            match h {
                vitalmesh_sim::NodeHealth::Flat => self.run.node_went_flat(NodeId(n as u32)),
                // Out of its gateway's radio range: its silence is real.
                vitalmesh_sim::NodeHealth::OutOfRange => {
                    self.run.node_out_of_range(NodeId(n as u32))
                }
                _ => {}
            }
        }
        self.host.rss = procfs::rss_bytes("self");
        self.host.process_peak = self.host.process_peak.max(self.host.rss);
        self.host.broker_rss = self
            .broker
            .child_pid()
            .map_or(0, |pid| procfs::rss_bytes(&pid.to_string()));
        self.host.broker_peak = self.host.broker_peak.max(self.host.broker_rss);
        self.host.broker_cpu.sample(self.broker.child_pid());
        if let Some(link) = &self.shard_link {
            link.update(self.shard_status());
        }
    }

    /// This shard's figures for the others (the run, the shard and the
    /// times are the link's to fill in).
    fn shard_status(&self) -> ShardStatus {
        let c = &self.counters;
        ShardStatus {
            phase: self.phase.name().into(),
            nodes: self.clients,
            produced: LiveCounters::get(&c.produced),
            delivered: locked(&self.observer).delivered_total,
            connected: c.connected.load(Ordering::Relaxed),
            ..ShardStatus::default()
        }
    }

    /// The state now.
    pub fn snapshot(&self) -> Snapshot {
        // Before the observer is locked: the status reads it too.
        let whole_run = self
            .shard_link
            .as_ref()
            .map(|l| l.whole(&self.shard_status()));
        let c = &self.counters;
        let o = locked(&self.observer);
        let s = &self.config.scenario;
        Snapshot {
            scenario: s.name.clone(),
            seed: self.config.seed,
            mode: RunMode::Real,
            speed: None,
            broker_url: self.broker.report().url,
            phase: self.phase,
            elapsed: self.elapsed(),
            origin: self.origin,
            planned: s.duration,
            nodes: s.population.nodes(),
            started: self.run.started(),
            connected: c.connected.load(Ordering::Relaxed),
            produced: LiveCounters::get(&c.produced),
            published: LiveCounters::get(&c.published),
            acked: LiveCounters::get(&c.e2e_acked),
            buffered: c.buffered.load(Ordering::Relaxed),
            dropped_overflow: LiveCounters::get(&c.dropped_overflow),
            lost_on_crash: LiveCounters::get(&c.lost_on_crash),
            publish_ack: Percentiles::of(&c.publish_ack_latency.snapshot()),
            node_health: c.health(),
            population: s.population,
            broker: self.broker.report(),
            rss_bytes: self.host.rss,
            broker_rss_bytes: self.host.broker_rss,
            whole_run,
            ..Snapshot::observed(&o, &self.seconds, self.run.timeline(), s)
        }
    }

    /// Stops sampling, drains, stops everything and assembles the report.
    pub async fn finish(self, interrupted: bool) -> Outcome {
        self.finish_watched(interrupted, None).await
    }

    /// [`Mesh::finish`], telling `snapshots` how the drain goes (every
    /// 500 ms) and how it ended: the last snapshot's counters are the
    /// report's.
    pub async fn finish_watched(
        mut self,
        interrupted: bool,
        snapshots: Option<&mpsc::Sender<Snapshot>>,
    ) -> Outcome {
        let ran_for = self.elapsed();
        self.phase = Phase::Draining;
        // Heal every network fault: the drain must be able to deliver.
        self.run.lift_network_faults();
        self.carry_out(None).await;
        for slot in self.nodes.iter().flatten() {
            slot.mailbox.send(NodeCommand::StopSampling);
        }
        for slot in &self.gateways {
            slot.mailbox.send(GatewayCommand::StopSampling);
        }
        let drain_until = Instant::now() + self.config.scenario.drain;
        let mut next_snapshot = Instant::now();
        while Instant::now() < drain_until && self.counters.buffered.load(Ordering::Relaxed) > 0 {
            self.maybe_close_second();
            if let Some(tx) = snapshots.filter(|_| Instant::now() >= next_snapshot) {
                next_snapshot = Instant::now() + Duration::from_millis(500);
                let _ = tx.try_send(self.snapshot());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut finals = Vec::with_capacity(self.nodes.len());
        for slot in self.nodes.iter().flatten() {
            slot.mailbox.send(NodeCommand::Stop);
        }
        for slot in &self.gateways {
            slot.mailbox.send(GatewayCommand::Stop);
        }
        for slot in self.nodes.iter_mut().flatten() {
            if let Some(task) = slot.task.take() {
                if let Ok(last) = task.await {
                    finals.push(last);
                }
            }
        }
        let mut gateway_ledgers = Vec::with_capacity(self.gateways.len());
        for slot in &mut self.gateways {
            if let Some(task) = slot.task.take() {
                if let Ok(last) = task.await {
                    finals.extend(last.nodes);
                    gateway_ledgers.push(last.ledger);
                }
            }
        }
        finals.sort_by_key(|f| f.id);
        // The run's own shutdown is not news: aggregators leaving now would
        // announce each other's departure.
        locked(&self.observer).closed = true;
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
        if let Some(tx) = snapshots {
            // Waits for room: the last word must not be dropped.
            let _ = tx.send(self.snapshot()).await;
        }
        let gateways = (!self.gateways.is_empty()).then(|| GatewaysReport::of(&gateway_ledgers));
        let report = self.build_report(&finals, gateways, ran_for, interrupted);
        let part = self.part(&report, finals, ran_for, interrupted);
        if let Some(link) = self.shard_link.take() {
            link.stop(self.shard_status()).await;
        }
        let intervals = locked(&self.observer).intervals.take();
        let started = self.started_wall;
        self.broker.shutdown().await;
        Outcome {
            report,
            intervals,
            started,
            part,
        }
    }

    /// A sharded run's part file: what the merge needs from this shard.
    fn part(
        &self,
        report: &Report,
        finals: Vec<NodeFinal>,
        ran_for: Duration,
        interrupted: bool,
    ) -> Option<ShardPart> {
        let plan = self.config.shard.as_ref()?;
        let link = self.shard_link.as_ref()?;
        let o = locked(&self.observer);
        Some(ShardPart {
            format: PART_FORMAT.into(),
            run_id: plan.run_id.clone(),
            shard: plan.shard.into(),
            recipe: plan.recipe.clone(),
            seed: self.config.seed,
            origin_us: self.origin.as_micros(),
            started_at_unix_s: self.clock.started_at().as_secs_f64(),
            ran_for_s: ran_for.as_secs_f64(),
            interrupted,
            nodes: finals,
            delivered: o
                .delivered
                .iter()
                .enumerate()
                .filter(|(_, set)| !set.is_empty())
                .map(|(n, set)| (n as u32, set.clone()))
                .collect(),
            delivered_total: o.delivered_total,
            duplicates: o.duplicates,
            latency: PartLatency {
                end_to_end: encode_histogram(&o.e2e_total),
                per_ward: o.e2e_ward.iter().map(encode_histogram).collect(),
                publish_ack: encode_histogram(&self.counters.publish_ack_latency.snapshot()),
                per_second: o
                    .intervals
                    .iter()
                    .flatten()
                    .filter(|(_, h)| !h.is_empty())
                    .map(|(at, h)| (*at, encode_histogram(h)))
                    .collect(),
            },
            alerts: o.history.clone(),
            news2_five: o
                .news2_five
                .iter()
                .map(|(&(node, admission), &at)| (node, admission, at))
                .collect(),
            wards: o.wards.clone(),
            rejected: o
                .rejected
                .iter()
                .map(|(k, n)| ((*k).to_string(), *n))
                .collect(),
            aggregators: o.aggregators.values().cloned().collect(),
            ownership: o.ownership.clone(),
            clock: link.clock(),
            report: serde_json::from_slice(&report.to_json()).unwrap_or_default(),
        })
    }

    fn build_report(
        &mut self,
        finals: &[NodeFinal],
        gateways: Option<GatewaysReport>,
        ran_for: Duration,
        interrupted: bool,
    ) -> Report {
        let observer = locked(&self.observer);
        let nodes = u64::from(self.config.scenario.population.nodes()).max(1);
        let process_peak = self.host.process_peak.max(procfs::rss_bytes("self"));
        let c = &self.counters;
        self.run.report(ReportInputs {
            mode: RunMode::Real,
            started_at_unix_s: self.clock.started_at().as_secs_f64(),
            origin: self.origin,
            ran_for,
            interrupted,
            finals,
            observer: &observer,
            publish_ack: Percentiles::of(&c.publish_ack_latency.snapshot()),
            throughput: self.seconds.throughput.clone(),
            gateways,
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
                all_connected_after_s: self.host.all_connected_after.map(|d| d.as_secs_f64()),
            },
            broker: self.broker.report(),
            machine: Some(procfs::machine()),
            cpu: Some(CpuReport {
                process_s: procfs::cpu_seconds("self").unwrap_or(0.0),
                broker_s: self.host.broker_cpu.total(),
                threads_s: procfs::thread_cpu_seconds(),
            }),
            memory: Some(MemoryReport {
                process_peak_bytes: process_peak,
                broker_peak_bytes: self.host.broker_peak,
                per_node_bytes: (process_peak + self.host.broker_peak) / nodes,
                per_node_bytes_excluding_broker: process_peak / nodes,
            }),
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
        })
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
    /// A shard's part file (`--shard`), for `vitalmesh merge`.
    pub part: Option<ShardPart>,
}

/// How a caller watches and steers [`run`].
#[derive(Debug)]
pub struct RunControl {
    /// Turns true to stop early (the report is still produced).
    pub stop: watch::Receiver<bool>,
    /// Receives a snapshot about twice a second (dropped when the receiver
    /// lags: the latest matters).
    pub snapshots: Option<mpsc::Sender<Snapshot>>,
    /// Commands to apply while running (the dashboard's keys, the control
    /// socket's injections: the caller merges its sources into one).
    pub commands: Option<mpsc::Receiver<MeshCommand>>,
}

/// Runs a mesh for its planned duration, or until stopped: scheduled
/// actions fire on time, commands as they come.
pub async fn run(config: MeshConfig, mut control: RunControl) -> Result<Outcome, MeshError> {
    let mut mesh = Mesh::start(config).await?;
    mesh.begin();
    let end = Instant::now() + mesh.config.scenario.duration;
    let snapshot_every = Duration::from_millis(500);
    let mut next_snapshot = Instant::now();
    let mut interrupted = *control.stop.borrow();
    while !interrupted && Instant::now() < end {
        mesh.advance().await;
        if let Some(tx) = &control.snapshots {
            if Instant::now() >= next_snapshot {
                next_snapshot = Instant::now() + snapshot_every;
                let _ = tx.try_send(mesh.snapshot());
            }
        }
        let mut wake = mesh.next_deadline().min(end);
        if control.snapshots.is_some() {
            wake = wake.min(next_snapshot);
        }
        let command = tokio::select! {
            () = tokio::time::sleep_until(wake) => None,
            changed = control.stop.changed() => {
                interrupted = changed.is_err() || *control.stop.borrow();
                None
            }
            Some(cmd) = async { control.commands.as_mut()?.recv().await }, if control.commands.is_some() => Some(cmd),
        };
        if let Some(MeshCommand::Apply {
            action,
            source,
            reply,
        }) = command
        {
            let entry = mesh.apply(&action, &source, None).await;
            if let Some(reply) = reply {
                let _ = reply.send(match &entry.error {
                    Some(e) => Err(e.clone()),
                    None => Ok(entry),
                });
            }
        }
    }
    Ok(mesh
        .finish_watched(interrupted, control.snapshots.as_ref())
        .await)
}

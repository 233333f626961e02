//! The virtual-time driver: the same node firmware, aggregator and [`Run`]
//! state machines as a real-time run, on a discrete-event clock with a
//! modelled broker and network instead of sockets — days of a hospital in
//! seconds, byte-identical from a seed.
//!
//! # What is modelled
//!
//! - **Links.** Every client has a link to the broker with a one-way delay
//!   (`[virtual] link_delay ± link_jitter`); scenario faults act on it as on
//!   a real socket: a partition holds bytes both ways until it heals (TCP
//!   would deliver them after retransmission), latency adds delay, packet
//!   loss adds a retransmission timeout. Order is kept per direction.
//! - **The broker.** Sessions (clean), subscriptions with MQTT filter
//!   matching, QoS 1 PUBACKs to nodes, last wills published when an
//!   aggregator's connection ends without a goodbye (a kill, or a
//!   keep-alive expiry after 1.5 × keep-alive of silence), and restarts
//!   that drop every connection, subscription and message in flight.
//!   With `[virtual] broker_capacity` it delivers at most that many copies
//!   a second in arrival order, acknowledging publishes on receipt as
//!   rumqttd and mosquitto do, so overload shows as growing delivery delay
//!   (the report's `broker.peak_queue_s`); without it the broker is never
//!   the bottleneck.
//! - **Clients.** A node publishes at QoS 1 with at most 16 messages
//!   awaiting PUBACK, as the real driver does; a client whose link is
//!   partitioned gives its connection up after two keep-alives. Connection
//!   attempts during a partition wait for it to heal or time out.
//!
//! Every byte a node or an aggregator sends still goes through the real
//! codec: node batches, acknowledgements and heartbeats are encoded,
//! authenticated and decoded exactly as over MQTT. An acknowledgement batch
//! fanned out to a partition's nodes is decoded once per message and shared,
//! as the bytes are the same.
//!
//! # What is not
//!
//! MQTT framing, TCP slow start, the broker's CPU and memory (its capacity
//! is a number the scenario gives), listener
//! poisoning and rogue clients (refused when a scenario is checked for a
//! virtual run). Latency in a virtual report is simulated time and is
//! labelled so; host figures (CPU, memory, wall time) are kept out of the
//! report so the same seed gives the same bytes.

mod broker;
mod gateways;
mod network;
mod queue;

use std::cell::OnceCell;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use vitalmesh_core::aggregator::{Aggregator, HAND_OVER, Output};
use vitalmesh_firmware::physiology::{DeteriorationEpisode, Episode, FeverEpisode};
use vitalmesh_firmware::rng::{Purpose, stream};
use vitalmesh_firmware::{GatewayCell, LinkAction, Node, SensorFault};
use vitalmesh_scenario::Scenario;
use vitalmesh_wire::envelope::{Keyring, peek_acks};
use vitalmesh_wire::{
    AckBatch, AggregatorId, GatewayId, NodeId, PartitionId, Timestamp, TopicScheme, WireTopic,
};

use self::broker::{Client, Subscriptions};
use self::network::{Dir, Link};
use self::queue::EventQueue;
use crate::health::NodeHealth;
use crate::latency::{Percentiles, latency_histogram, record_latency};
use crate::ledger::{NodeFinal, NodeTally};
use crate::observe::Observer;
use crate::report::{
    BrokerEvent, BrokerReport, ConnectionsReport, GatewaysReport, Report, RunMode,
};
use crate::run::{Command, GatewayOp, LinkOp, LinkTarget, NodeOp, ReportInputs, Run};
use crate::setup;
use crate::snapshot::{Phase, RatePoint, Seconds, Snapshot};
use crate::timeline::TimelineEntry;

pub use self::network::{MIN_RTO, shaped_delay};

/// Keep-alive of a node's connection (as the real driver's).
const NODE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Keep-alive of an aggregator's connection.
const AGG_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a node waits for a connection before giving up.
const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an aggregator waits for a connection.
const AGG_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// An aggregator's wait before it tries to connect again.
const AGG_RETRY: Duration = Duration::from_millis(500);
/// QoS 1 publishes a node keeps awaiting PUBACK.
const INFLIGHT_WINDOW: u32 = 16;
/// How long aggregators may take to agree on ownership before a run fails.
const JOIN_LIMIT: Duration = Duration::from_secs(60);

/// Why a virtual run could not proceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtualError {
    /// Aggregators never agreed on partition ownership.
    #[error("the {0} aggregators did not agree on partition ownership within 60 simulated seconds")]
    NoAgreement(u16),
}

/// A message as the broker carries it.
#[derive(Debug)]
struct Msg {
    topic: Rc<str>,
    /// The topic parsed, when the sender's topic never changes.
    parsed: Option<WireTopic>,
    payload: Rc<[u8]>,
    /// The acknowledgement batch in it, decoded by the first node that
    /// receives it (the same bytes for every subscriber).
    ack: OnceCell<Option<AckBatch>>,
}

impl Msg {
    /// The acknowledgement batch in it, decoded once for every subscriber.
    /// Read without the aggregator's key, as a node or gateway would: each
    /// entry is believed only once its node has checked its tag.
    fn acks(&self) -> Option<&AckBatch> {
        self.ack
            .get_or_init(|| peek_acks(&self.payload).ok())
            .as_ref()
    }
}

/// What travels on a link.
#[derive(Debug)]
enum Packet {
    Connect {
        attempt: u32,
    },
    ConnAck {
        attempt: u32,
    },
    Refused {
        attempt: u32,
    },
    Publish {
        msg: Rc<Msg>,
        qos1_sent_us: Option<u64>,
    },
    PubAck {
        sent_us: u64,
    },
    Subscribe(String),
    Unsubscribe(String),
    /// A clean goodbye.
    Disconnect,
    /// The socket closed without a goodbye (crash, kill).
    Closed,
    /// The broker closed the connection.
    Reset,
}

#[derive(Debug)]
enum What {
    NodeWake {
        node: u32,
        token: u32,
    },
    AggWake {
        agg: u16,
        token: u32,
    },
    RunWake {
        token: u32,
    },
    Second {
        index: u64,
    },
    /// A packet reaches the broker.
    Up {
        from: Client,
        session: u32,
        packet: Packet,
    },
    /// A packet reaches a client.
    Down {
        to: Client,
        session: u32,
        packet: Packet,
    },
    /// One message reaching several clients at the same instant (a
    /// partition's acknowledgements, a sample to its primary and standby).
    Deliver {
        to: Vec<(Client, u32)>,
        msg: Rc<Msg>,
    },
    /// A node's PUBACK window may have opened.
    PubAckWake {
        node: u32,
    },
    GwWake {
        gw: u32,
        token: u32,
    },
    ConnectTimeout {
        client: Client,
        attempt: u32,
    },
    BrokerKeepAlive {
        client: Client,
        epoch: u32,
    },
    ClientKeepAlive {
        client: Client,
        epoch: u32,
    },
    BrokerUp,
    /// A removed aggregator's hand-over is over: it disconnects.
    AggGone {
        agg: u16,
        incarnation: u64,
    },
    /// The modelled broker has worked through its delivery queue up to
    /// this publish: its copies go out now.
    Serviced {
        msg: Rc<Msg>,
        /// The broker's incarnation that accepted it.
        epoch: u32,
    },
}

/// A client's end of its connection.
#[derive(Debug)]
struct Endpoint {
    link: Link,
    /// The session this client believes it has.
    conn: Option<u32>,
    /// The connection attempt in progress.
    connecting: Option<u32>,
    attempts: u32,
    /// Packets waiting for a partition to heal, in order.
    held: Vec<What>,
}

#[derive(Debug)]
struct VNode {
    node: Option<Node>,
    ep: Endpoint,
    topic: Rc<str>,
    partition: PartitionId,
    wake_at: u64,
    wake_token: u32,
    inflight: u32,
    /// PUBACKs on their way: (arrival, publish time, session).
    pubacks: std::collections::VecDeque<(u64, u64, u32)>,
    /// When a `PubAckWake` is queued for this node (`u64::MAX`: none).
    puback_wake: u64,
    tally: NodeTally,
    /// Behind a gateway: whether its radio link is up (counted as
    /// connected, as a direct node's MQTT connection is).
    online: bool,
}

/// A gateway and its nodes, as one client of the broker.
#[derive(Debug)]
struct VGw {
    cell: GatewayCell,
    ep: Endpoint,
    topic: Rc<str>,
    parsed: WireTopic,
    partition: PartitionId,
    wake_at: u64,
    wake_token: u32,
}

#[derive(Debug)]
struct VAgg {
    agg: Option<Aggregator>,
    incarnation: u64,
    ep: Endpoint,
    wake_at: u64,
    wake_token: u32,
    retry_at: u64,
    will: Option<(Rc<str>, Rc<[u8]>)>,
    /// Capacity weight (kept across restarts).
    weight: u16,
}

/// Running totals (what the real driver keeps in atomics).
#[derive(Debug, Default)]
struct Totals {
    produced: u64,
    published: u64,
    acked: u64,
    buffered: i64,
    dropped: u64,
    lost: u64,
    connected: i64,
    peak_connected: i64,
    attempts: u64,
    failures: u64,
    disconnects: u64,
    closed_by_broker: u64,
    keep_alive_timeout: u64,
}

impl Totals {
    /// Folds what one node did since its last tally into the totals;
    /// returns whether its battery just went flat.
    fn fold(&mut self, tally: &mut NodeTally, node: &Node) -> bool {
        let d = tally.update(node);
        self.produced += d.produced;
        self.acked += d.acked;
        self.dropped += d.dropped;
        self.lost += d.lost;
        self.buffered += d.buffered;
        d.went_flat
    }
}

/// Options of a virtual run besides the scenario.
#[derive(Debug, Clone, Default)]
pub struct VirtualOptions {
    /// Keep per-second latency histograms for an HdrHistogram log.
    pub keep_intervals: bool,
}

/// What a finished virtual run leaves behind.
#[derive(Debug)]
pub struct VirtualOutcome {
    /// The report (byte-identical for a seed).
    pub report: Report,
    /// Per-second latency histograms, if kept (simulated seconds).
    pub intervals: Option<Vec<(f64, Histogram<u64>)>>,
    /// Events processed: a measure of the work done.
    pub events: u64,
    /// Every node at the end (what the ledger is computed from).
    pub finals: Vec<NodeFinal>,
    /// Per node: the sequence numbers the aggregators ingested.
    pub delivered: Vec<vitalmesh_wire::SeqSet>,
}

/// A mesh in virtual time.
#[derive(Debug)]
pub struct VirtualMesh {
    run: Run,
    keys: Keyring,
    topics: TopicScheme,
    now: u64,
    start: u64,
    origin: Option<u64>,
    queue: EventQueue<What>,
    nodes: Vec<VNode>,
    aggs: Vec<VAgg>,
    gws: Vec<VGw>,
    gw_sessions: Vec<Option<u32>>,
    touched_scratch: Vec<NodeId>,
    broker_up: bool,
    node_sessions: Vec<Option<u32>>,
    agg_sessions: Vec<Option<u32>>,
    next_session: u32,
    subs: Subscriptions,
    observer: Observer,
    seconds: Seconds,
    totals: Totals,
    publish_ack: Histogram<u64>,
    broker_events: Vec<BrokerEvent>,
    broker_restarts: u64,
    phase: Phase,
    run_token: u32,
    all_connected_after: Option<Duration>,
    route_scratch: Vec<Client>,
    transmit_scratch: Vec<(Rc<[u8]>, usize)>,
    /// Nanoseconds one broker operation takes (`[virtual] broker_capacity`);
    /// `None`: the broker is never the bottleneck.
    broker_op_ns: Option<u64>,
    /// When the modelled broker has worked through its queue, ns.
    broker_free_ns: u64,
    /// Bumped by every broker restart.
    broker_epoch: u32,
    /// Longest a publish waited in the modelled broker's queue, µs.
    broker_peak_queue_us: u64,
}

impl VirtualMesh {
    /// A virtual mesh for `scenario` with `seed`; check the scenario with
    /// [`Scenario::check_virtual`] first.
    pub fn new(scenario: &Scenario, seed: u64, options: &VirtualOptions) -> Self {
        let topics = TopicScheme::default();
        let keys = setup::keyring(scenario, seed);
        let model = scenario.virtual_model;
        let partitioning = setup::partitioning(scenario);
        let start = scenario.start_unix_s.saturating_mul(1_000_000);
        let endpoint = |stream_id: u32| Endpoint {
            link: Link::new(
                model.link_delay,
                model.link_jitter,
                stream(seed, NodeId(stream_id), Purpose::Link),
            ),
            conn: None,
            connecting: None,
            attempts: 0,
            held: Vec::new(),
        };
        let nodes = (0..scenario.population.nodes())
            .map(|i| {
                let partition = partitioning.partition_of(NodeId(i));
                VNode {
                    node: None,
                    ep: endpoint(i),
                    topic: topics.data(partition, NodeId(i)).into(),
                    partition,
                    wake_at: u64::MAX,
                    wake_token: 0,
                    inflight: 0,
                    pubacks: std::collections::VecDeque::new(),
                    puback_wake: u64::MAX,
                    tally: NodeTally::default(),
                    online: false,
                }
            })
            .collect();
        let aggs = (0..scenario.aggregator_slots)
            .map(|a| VAgg {
                weight: 1,
                agg: None,
                incarnation: 0,
                ep: endpoint((1 << 31) | u32::from(a)),
                wake_at: u64::MAX,
                wake_token: 0,
                retry_at: u64::MAX,
                will: None,
            })
            .collect();
        let gws: Vec<VGw> = (0..scenario.population.gateways())
            .filter_map(|g| {
                let cell = setup::gateway(scenario, seed, &keys, GatewayId(g))?;
                let partition = cell.topic_partition();
                Some(VGw {
                    ep: endpoint((1 << 30) | g),
                    topic: topics.relay(partition, GatewayId(g)).into(),
                    parsed: WireTopic::Relay {
                        partition,
                        gateway: GatewayId(g),
                    },
                    partition,
                    cell,
                    wake_at: u64::MAX,
                    wake_token: 0,
                })
            })
            .collect();
        Self {
            run: Run::new(scenario, seed),
            gw_sessions: vec![None; gws.len()],
            gws,
            touched_scratch: Vec::new(),
            subs: Subscriptions::new(topics.clone(), scenario.partitions),
            keys,
            topics,
            now: start,
            start,
            origin: None,
            queue: EventQueue::new(),
            nodes,
            aggs,
            broker_up: true,
            node_sessions: vec![None; scenario.population.nodes() as usize],
            agg_sessions: vec![None; usize::from(scenario.aggregator_slots)],
            next_session: 1,
            observer: Observer::new(scenario.population, options.keep_intervals),
            seconds: Seconds::default(),
            totals: Totals::default(),
            publish_ack: latency_histogram(),
            broker_events: vec![BrokerEvent {
                at_s: 0.0,
                kind: "started",
                detail: "modelled broker".into(),
            }],
            broker_restarts: 0,
            phase: Phase::Starting,
            run_token: 0,
            all_connected_after: None,
            route_scratch: Vec::new(),
            transmit_scratch: Vec::new(),
            broker_op_ns: model
                .broker_capacity
                .map(|ops| (1_000_000_000 / u64::from(ops.max(1))).max(1)),
            broker_free_ns: 0,
            broker_epoch: 0,
            broker_peak_queue_us: 0,
        }
    }

    /// The pure run (timeline, scenario).
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// Simulated time since the nodes started (zero before).
    pub fn elapsed(&self) -> Duration {
        self.origin
            .map_or(Duration::ZERO, |o| Duration::from_micros(self.now - o))
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.queue.popped()
    }

    /// Starts the aggregators, waits (in simulated time) until they own
    /// every partition, then starts the nodes' clock.
    pub fn start(&mut self) -> Result<(), VirtualError> {
        let starting = self.run.scenario().aggregators;
        for a in 0..starting {
            self.spawn_aggregator(a);
        }
        let limit = self.now + JOIN_LIMIT.as_micros() as u64;
        while !self.aggregators_agree() {
            if self.now >= limit {
                return Err(VirtualError::NoAgreement(starting));
            }
            let step = self.now + 100_000;
            self.process_until(step);
        }
        self.origin = Some(self.now);
        self.observer.origin = Some(self.ts());
        self.phase = Phase::Ramping;
        self.run.begin(self.now / 1_000_000);
        for g in 0..self.gws.len() as u32 {
            self.poll_gw(g);
        }
        self.schedule(self.now + 1_000_000, What::Second { index: 0 });
        self.fire_run();
        Ok(())
    }

    fn aggregators_agree(&self) -> bool {
        let want = self.aggs.iter().filter(|a| a.agg.is_some()).count();
        let mut owned = 0u32;
        for a in self.aggs.iter().filter(|a| a.agg.is_some()) {
            let Some(agg) = &a.agg else { return false };
            if !agg.is_active() || agg.live_view().len() != want {
                return false;
            }
            owned += u32::from(agg.stats().primary_partitions);
        }
        owned == u32::from(self.run.scenario().partitions)
    }

    /// Runs the mesh until `elapsed` since the nodes started.
    pub fn run_until(&mut self, elapsed: Duration) {
        let origin = self.origin.unwrap_or(self.now);
        self.process_until(origin + elapsed.as_micros() as u64);
    }

    fn process_until(&mut self, until: u64) {
        while let Some((at, what)) = self.queue.pop_due(until) {
            self.now = at;
            self.dispatch(what);
        }
        self.now = self.now.max(until);
    }

    fn schedule(&mut self, at: u64, what: What) {
        self.queue.push(at, what);
    }

    fn ts(&self) -> Timestamp {
        Timestamp::from_micros(self.now)
    }

    fn at_s(&self) -> f64 {
        self.elapsed().as_secs_f64()
    }

    fn endpoint(&mut self, c: Client) -> &mut Endpoint {
        match c {
            Client::Node(n) => &mut self.nodes[n as usize].ep,
            Client::Agg(a) => &mut self.aggs[usize::from(a)].ep,
            Client::Gw(g) => &mut self.gws[g as usize].ep,
        }
    }

    fn broker_session(&self, c: Client) -> Option<u32> {
        match c {
            Client::Node(n) => self.node_sessions[n as usize],
            Client::Agg(a) => self.agg_sessions[usize::from(a)],
            Client::Gw(g) => self.gw_sessions[g as usize],
        }
    }

    fn set_broker_session(&mut self, c: Client, s: Option<u32>) {
        match c {
            Client::Node(n) => self.node_sessions[n as usize] = s,
            Client::Agg(a) => self.agg_sessions[usize::from(a)] = s,
            Client::Gw(g) => self.gw_sessions[g as usize] = s,
        }
    }

    /// Sends a packet over `c`'s link: held while partitioned.
    fn send(&mut self, c: Client, dir: Dir, session: u32, packet: Packet) {
        let what = match dir {
            Dir::Up => What::Up {
                from: c,
                session,
                packet,
            },
            Dir::Down => What::Down {
                to: c,
                session,
                packet,
            },
        };
        let now = self.now;
        let ep = self.endpoint(c);
        if ep.link.is_partitioned() {
            ep.held.push(what);
        } else {
            let at = ep.link.arrival(now, dir);
            self.schedule(at, what);
        }
    }

    // ---- events ----------------------------------------------------------

    fn dispatch(&mut self, what: What) {
        match what {
            What::NodeWake { node, token } => {
                let now = self.ts();
                let v = &mut self.nodes[node as usize];
                if v.wake_token != token {
                    return;
                }
                v.wake_at = u64::MAX;
                if let Some(n) = v.node.as_mut() {
                    n.handle_timeout(now);
                }
                self.poll_node(node);
            }
            What::AggWake { agg, token } => {
                let now = self.ts();
                let a = &mut self.aggs[usize::from(agg)];
                if a.wake_token != token {
                    return;
                }
                a.wake_at = u64::MAX;
                if a.ep.conn.is_none() && a.ep.connecting.is_none() && now.as_micros() >= a.retry_at
                {
                    a.retry_at = u64::MAX;
                    if a.agg.is_some() {
                        self.connect(Client::Agg(agg));
                    }
                } else if let Some(g) = a.agg.as_mut() {
                    g.handle_timeout(now);
                }
                self.poll_agg(agg);
            }
            What::RunWake { token } => {
                if token == self.run_token {
                    self.fire_run();
                }
            }
            What::Second { index } => self.close_second(index),
            What::Up {
                from,
                session,
                packet,
            } => self.at_broker(from, session, packet),
            What::Down {
                to,
                session,
                packet,
            } => self.at_client(to, session, packet),
            What::Deliver { to, msg } => {
                for (c, session) in to {
                    self.at_client(
                        c,
                        session,
                        Packet::Publish {
                            msg: msg.clone(),
                            qos1_sent_us: None,
                        },
                    );
                }
            }
            What::GwWake { gw, token } => {
                let now = self.ts();
                let v = &mut self.gws[gw as usize];
                if v.wake_token != token {
                    return;
                }
                v.wake_at = u64::MAX;
                v.cell.handle_timeout(now);
                self.poll_gw(gw);
            }
            What::PubAckWake { node } => {
                self.nodes[node as usize].puback_wake = u64::MAX;
                self.poll_node(node);
            }
            What::ConnectTimeout { client, attempt } => {
                if self.endpoint(client).connecting == Some(attempt) {
                    self.connect_failed(client);
                }
            }
            What::BrokerKeepAlive { client, epoch } => {
                let link = &self.endpoint(client).link;
                if link.is_partitioned()
                    && link.partition_epoch == epoch
                    && self.broker_session(client).is_some()
                {
                    self.end_session(client, true);
                }
            }
            What::ClientKeepAlive { client, epoch } => {
                let ep = self.endpoint(client);
                if ep.link.is_partitioned() && ep.link.partition_epoch == epoch && ep.conn.is_some()
                {
                    self.totals.keep_alive_timeout += 1;
                    self.lose_connection(client);
                }
            }
            What::Serviced { msg, epoch } => {
                // A restart loses what the broker had queued.
                if epoch == self.broker_epoch {
                    self.route(&msg);
                }
            }
            What::AggGone {
                agg: a,
                incarnation,
            } => {
                let v = &mut self.aggs[usize::from(a)];
                if v.incarnation != incarnation || v.agg.is_none() {
                    return; // added again meanwhile, or killed
                }
                v.agg = None;
                v.retry_at = u64::MAX;
                v.ep.connecting = None;
                if let Some(s) = v.ep.conn.take() {
                    self.send(Client::Agg(a), Dir::Up, s, Packet::Disconnect);
                }
                self.observer.aggregator_removed(AggregatorId(a));
            }
            What::BrokerUp => {
                self.broker_up = true;
                self.broker_events.push(BrokerEvent {
                    at_s: self.at_s(),
                    kind: "restarted",
                    detail: "injected".into(),
                });
            }
        }
    }

    /// A packet reaches the broker.
    fn at_broker(&mut self, from: Client, session: u32, packet: Packet) {
        if !self.broker_up {
            if let Packet::Connect { attempt } = packet {
                // No broker process: the host's TCP stack refuses.
                self.send(from, Dir::Down, 0, Packet::Refused { attempt });
            }
            return;
        }
        if let Packet::Connect { attempt } = packet {
            let s = self.next_session;
            self.next_session += 1;
            if self.broker_session(from).is_some() {
                // A client id connecting again takes over its old session.
                self.end_session(from, false);
            }
            self.set_broker_session(from, Some(s));
            match from {
                Client::Node(n) => {
                    let p = self.nodes[n as usize].partition;
                    self.subs.subscribe_ack(p, from);
                }
                Client::Gw(g) => {
                    let p = self.gws[g as usize].partition;
                    self.subs.subscribe_ack(p, from);
                }
                Client::Agg(_) => {}
            }
            self.send(from, Dir::Down, s, Packet::ConnAck { attempt });
            return;
        }
        if self.broker_session(from) != Some(session) {
            return;
        }
        match packet {
            Packet::Publish { msg, qos1_sent_us } => {
                if let Some(sent_us) = qos1_sent_us {
                    // Acknowledged on receipt, before delivery, as rumqttd
                    // and mosquitto do: an overloaded broker shows as
                    // growing delivery delay, not as refused publishes.
                    self.puback(from, session, sent_us);
                }
                if let Some(op_ns) = self.broker_op_ns {
                    // A broker with finite capacity: delivering each copy
                    // takes one operation, in arrival order.
                    let mut out = std::mem::take(&mut self.route_scratch);
                    self.subs.route_publish(&msg.topic, msg.parsed, &mut out);
                    let copies = out.len() as u64;
                    self.route_scratch = out;
                    let now_ns = self.now * 1_000;
                    let done_ns = self.broker_free_ns.max(now_ns) + copies.max(1) * op_ns;
                    self.broker_free_ns = done_ns;
                    let at = done_ns.div_ceil(1_000);
                    self.broker_peak_queue_us = self.broker_peak_queue_us.max(at - self.now);
                    self.schedule(
                        at,
                        What::Serviced {
                            msg,
                            epoch: self.broker_epoch,
                        },
                    );
                    return;
                }
                self.route(&msg);
            }
            Packet::Subscribe(filter) => self.subs.subscribe(&filter, from),
            Packet::Unsubscribe(filter) => self.subs.unsubscribe(&filter, from),
            Packet::Disconnect => self.end_session(from, false),
            Packet::Closed => self.end_session(from, true),
            Packet::Connect { .. }
            | Packet::ConnAck { .. }
            | Packet::Refused { .. }
            | Packet::PubAck { .. }
            | Packet::Reset => {}
        }
    }

    /// Sends `msg` to every subscriber; subscribers it reaches at the same
    /// instant share one event.
    fn route(&mut self, msg: &Rc<Msg>) {
        let mut out = std::mem::take(&mut self.route_scratch);
        self.subs.route_publish(&msg.topic, msg.parsed, &mut out);
        let now = self.now;
        let mut group: Vec<(Client, u32)> = Vec::new();
        let mut group_at = 0;
        for &to in &out {
            let Some(s) = self.broker_session(to) else {
                continue;
            };
            let ep = self.endpoint(to);
            if ep.link.is_partitioned() {
                ep.held.push(What::Down {
                    to,
                    session: s,
                    packet: Packet::Publish {
                        msg: msg.clone(),
                        qos1_sent_us: None,
                    },
                });
                continue;
            }
            let at = ep.link.arrival(now, Dir::Down);
            if !group.is_empty() && at != group_at {
                let to = std::mem::take(&mut group);
                self.schedule(
                    group_at,
                    What::Deliver {
                        to,
                        msg: msg.clone(),
                    },
                );
            }
            group_at = at;
            group.push((to, s));
        }
        if !group.is_empty() {
            self.schedule(
                group_at,
                What::Deliver {
                    to: group,
                    msg: msg.clone(),
                },
            );
        }
        self.route_scratch = out;
    }

    /// The broker acknowledges a node's QoS 1 publish. While the link is
    /// open the PUBACK's arrival is known now, so it waits in the node's
    /// queue instead of the event queue: a node sending once a second never
    /// fills its window, and its PUBACKs then cost no event at all.
    fn puback(&mut self, from: Client, session: u32, sent_us: u64) {
        let now = self.now;
        if let Client::Gw(g) = from {
            // A gateway's relays are not windowed here: only the latency.
            let link = &mut self.gws[g as usize].ep.link;
            if !link.is_partitioned() {
                let at = link.arrival(now, Dir::Down);
                record_latency(&mut self.publish_ack, Duration::from_micros(at - sent_us));
            }
            return;
        }
        let Client::Node(n) = from else { return };
        let v = &mut self.nodes[n as usize];
        if v.ep.link.is_partitioned() {
            self.send(from, Dir::Down, session, Packet::PubAck { sent_us });
            return;
        }
        let at = v.ep.link.arrival(now, Dir::Down);
        v.pubacks.push_back((at, sent_us, session));
        if v.inflight >= INFLIGHT_WINDOW && v.puback_wake == u64::MAX {
            v.puback_wake = at;
            self.schedule(at, What::PubAckWake { node: n });
        }
    }

    /// The broker forgets a session; an aggregator's will goes out unless
    /// it said goodbye.
    fn end_session(&mut self, c: Client, will: bool) {
        self.set_broker_session(c, None);
        let ack = match c {
            Client::Node(n) => Some(self.nodes[n as usize].partition),
            Client::Gw(g) => Some(self.gws[g as usize].partition),
            Client::Agg(_) => None,
        };
        self.subs.drop_client(c, ack);
        if let (true, Client::Agg(a)) = (will, c) {
            if let Some((topic, payload)) = self.aggs[usize::from(a)].will.clone() {
                let msg = Rc::new(Msg {
                    topic,
                    parsed: None,
                    payload,
                    ack: OnceCell::new(),
                });
                self.route(&msg);
            }
        }
    }

    /// A packet reaches a client.
    fn at_client(&mut self, to: Client, session: u32, packet: Packet) {
        match packet {
            Packet::ConnAck { attempt } => {
                if self.endpoint(to).connecting != Some(attempt) {
                    return;
                }
                if self.broker_session(to) != Some(session) {
                    // The broker lost the session on the way (a restart).
                    self.connect_failed(to);
                    return;
                }
                let ep = self.endpoint(to);
                ep.connecting = None;
                ep.conn = Some(session);
                let now = self.ts();
                match to {
                    Client::Node(n) => {
                        self.totals.connected += 1;
                        self.totals.peak_connected =
                            self.totals.peak_connected.max(self.totals.connected);
                        let v = &mut self.nodes[n as usize];
                        v.inflight = 0;
                        v.pubacks.clear();
                        if let Some(node) = v.node.as_mut() {
                            node.handle_connected(now);
                        }
                        self.poll_node(n);
                    }
                    Client::Agg(a) => {
                        if let Some(g) = self.aggs[usize::from(a)].agg.as_mut() {
                            g.handle_connected(now);
                        }
                        self.poll_agg(a);
                        self.report_agg_status(a);
                    }
                    Client::Gw(g) => {
                        self.gws[g as usize].cell.handle_connected(now);
                        self.poll_gw(g);
                    }
                }
            }
            Packet::Refused { attempt } => {
                if self.endpoint(to).connecting == Some(attempt) {
                    self.connect_failed(to);
                }
            }
            _ if self.endpoint(to).conn != Some(session) => {}
            Packet::Publish { msg, .. } => match to {
                Client::Node(n) => {
                    let ack = msg.acks();
                    if let Some(acks) = ack {
                        let id = NodeId(n);
                        if let Ok(i) = acks.acks.binary_search_by_key(&id, |a| a.node) {
                            let entry = acks.acks[i];
                            let now = self.ts();
                            if let Some(node) = self.nodes[n as usize].node.as_mut() {
                                node.handle_ack(&entry, now);
                            }
                            self.poll_node(n);
                        }
                    }
                }
                Client::Agg(a) => {
                    let now = self.ts();
                    if let Some(g) = self.aggs[usize::from(a)].agg.as_mut() {
                        g.handle_message(&msg.topic, &msg.payload, now);
                    }
                    self.poll_agg(a);
                }
                Client::Gw(g) => {
                    let ack = msg.acks();
                    if let Some(acks) = ack {
                        let now = self.ts();
                        self.gws[g as usize].cell.handle_acks(acks, now);
                        self.poll_gw(g);
                    }
                }
            },
            Packet::PubAck { sent_us } => {
                if let Client::Node(n) = to {
                    record_latency(
                        &mut self.publish_ack,
                        Duration::from_micros(self.now - sent_us),
                    );
                    let v = &mut self.nodes[n as usize];
                    v.inflight = v.inflight.saturating_sub(1);
                    self.poll_node(n);
                }
            }
            Packet::Reset => {
                self.totals.closed_by_broker += 1;
                self.lose_connection(to);
            }
            Packet::Connect { .. }
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::Disconnect
            | Packet::Closed => {}
        }
    }

    /// A client's established connection is gone (reset, keep-alive).
    fn lose_connection(&mut self, c: Client) {
        let ep = self.endpoint(c);
        if ep.conn.take().is_none() {
            return;
        }
        let now = self.ts();
        match c {
            Client::Node(n) => {
                self.totals.connected -= 1;
                self.totals.disconnects += 1;
                if let Some(node) = self.nodes[n as usize].node.as_mut() {
                    node.handle_disconnected(now);
                }
                self.poll_node(n);
            }
            Client::Agg(a) => {
                let v = &mut self.aggs[usize::from(a)];
                if let Some(g) = v.agg.as_mut() {
                    g.handle_disconnected(now);
                }
                v.retry_at = self.now + AGG_RETRY.as_micros() as u64;
                self.poll_agg(a);
                self.report_agg_status(a);
            }
            Client::Gw(g) => {
                self.gws[g as usize].cell.handle_disconnected(now);
                self.poll_gw(g);
            }
        }
    }

    fn connect(&mut self, c: Client) {
        let timeout = match c {
            Client::Node(_) => {
                self.totals.attempts += 1;
                NODE_CONNECT_TIMEOUT
            }
            Client::Agg(_) => AGG_CONNECT_TIMEOUT,
            Client::Gw(_) => NODE_CONNECT_TIMEOUT,
        };
        if let Client::Agg(a) = c {
            // A will per connection (see `Aggregator::last_will`).
            let v = &mut self.aggs[usize::from(a)];
            if let Some(agg) = v.agg.as_mut() {
                let (topic, payload) = agg.last_will();
                v.will = Some((topic.into(), payload.into()));
            }
        }
        let ep = self.endpoint(c);
        ep.attempts += 1;
        let attempt = ep.attempts;
        ep.connecting = Some(attempt);
        self.send(c, Dir::Up, 0, Packet::Connect { attempt });
        let at = self.now + timeout.as_micros() as u64;
        self.schedule(at, What::ConnectTimeout { client: c, attempt });
    }

    fn connect_failed(&mut self, c: Client) {
        let now = self.ts();
        self.endpoint(c).connecting = None;
        match c {
            Client::Node(n) => {
                self.totals.failures += 1;
                if let Some(node) = self.nodes[n as usize].node.as_mut() {
                    node.handle_disconnected(now);
                }
                self.poll_node(n);
            }
            Client::Agg(a) => {
                self.aggs[usize::from(a)].retry_at = self.now + AGG_RETRY.as_micros() as u64;
                self.poll_agg(a);
            }
            Client::Gw(g) => {
                self.gws[g as usize].cell.handle_disconnected(now);
                self.poll_gw(g);
            }
        }
    }

    // ---- the state machines ----------------------------------------------

    fn poll_node(&mut self, n: u32) {
        let i = n as usize;
        if self.nodes[i].node.is_none() {
            return;
        }
        self.node_links(n);
        self.node_transmits(n);
        // A goodbye goes out with the last transmit, and then the node asks
        // to disconnect: the publish is on the link before the goodbye.
        self.node_links(n);
        self.node_timers(n);
    }

    fn node_links(&mut self, n: u32) {
        let i = n as usize;
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        let mut actions = Vec::new();
        while let Some(a) = node.poll_link() {
            actions.push(a);
        }
        for a in actions {
            match a {
                LinkAction::Connect => self.connect(Client::Node(n)),
                LinkAction::Disconnect { graceful } => {
                    let ep = &mut self.nodes[i].ep;
                    ep.connecting = None;
                    if let Some(s) = ep.conn.take() {
                        self.totals.connected -= 1;
                        let packet = if graceful {
                            Packet::Disconnect
                        } else {
                            Packet::Closed
                        };
                        self.send(Client::Node(n), Dir::Up, s, packet);
                    }
                }
            }
        }
    }

    fn node_transmits(&mut self, n: u32) {
        let i = n as usize;
        let now = self.ts();
        let conn = self.nodes[i].ep.conn;
        while let Some(&(at, sent, session)) = self.nodes[i].pubacks.front() {
            if at > self.now {
                break;
            }
            self.nodes[i].pubacks.pop_front();
            if conn == Some(session) {
                record_latency(&mut self.publish_ack, Duration::from_micros(at - sent));
                let v = &mut self.nodes[i];
                v.inflight = v.inflight.saturating_sub(1);
            }
        }
        if let Some(s) = conn {
            let mut out = std::mem::take(&mut self.transmit_scratch);
            let v = &mut self.nodes[i];
            let node = v.node.as_mut().expect("checked above");
            while v.inflight + (out.len() as u32) < INFLIGHT_WINDOW {
                let Some(t) = node.poll_transmit(now) else {
                    break;
                };
                out.push((t.payload.into(), t.samples));
            }
            let (topic, partition) = (v.topic.clone(), v.partition);
            for (payload, samples) in out.drain(..) {
                self.nodes[i].inflight += 1;
                self.totals.published += samples as u64;
                let msg = Rc::new(Msg {
                    topic: topic.clone(),
                    parsed: Some(WireTopic::Data {
                        partition,
                        node: NodeId(n),
                    }),
                    payload,
                    ack: OnceCell::new(),
                });
                self.send(
                    Client::Node(n),
                    Dir::Up,
                    s,
                    Packet::Publish {
                        msg,
                        qos1_sent_us: Some(self.now),
                    },
                );
            }
            self.transmit_scratch = out;
            let v = &mut self.nodes[i];
            if v.inflight >= INFLIGHT_WINDOW && v.puback_wake == u64::MAX {
                if let Some(&(at, _, _)) = v.pubacks.front() {
                    v.puback_wake = at;
                    self.schedule(at, What::PubAckWake { node: n });
                }
            }
        }
    }

    fn node_timers(&mut self, n: u32) {
        let i = n as usize;
        let v = &mut self.nodes[i];
        let Some(node) = v.node.as_ref() else {
            return;
        };
        if self.totals.fold(&mut v.tally, node) {
            self.run.node_went_flat(NodeId(n));
        }
        let v = &mut self.nodes[i];
        let node = v.node.as_ref().expect("checked above");
        let wake = node.poll_timeout().map_or(u64::MAX, Timestamp::as_micros);
        if wake != v.wake_at {
            v.wake_at = wake;
            v.wake_token = v.wake_token.wrapping_add(1);
            if wake != u64::MAX {
                let token = v.wake_token;
                self.schedule(wake.max(self.now), What::NodeWake { node: n, token });
            }
        }
    }

    fn poll_agg(&mut self, a: u16) {
        let i = usize::from(a);
        let at_s = self.at_s();
        let Some(agg) = self.aggs[i].agg.as_mut() else {
            return;
        };
        setup::observe_events(agg, &mut self.observer, at_s);
        let mut outputs = Vec::new();
        while let Some(o) = agg.poll_output() {
            outputs.push(o);
        }
        if let Some(s) = self.aggs[i].ep.conn {
            for o in outputs {
                let packet = match o {
                    Output::Subscribe(f) => Packet::Subscribe(f),
                    Output::Unsubscribe(f) => Packet::Unsubscribe(f),
                    Output::Publish { topic, payload } => Packet::Publish {
                        msg: Rc::new(Msg {
                            topic: topic.into(),
                            parsed: None,
                            payload: payload.into(),
                            ack: OnceCell::new(),
                        }),
                        qos1_sent_us: None,
                    },
                };
                self.send(Client::Agg(a), Dir::Up, s, packet);
            }
        }
        let v = &mut self.aggs[i];
        let agg_wake = v
            .agg
            .as_ref()
            .and_then(Aggregator::poll_timeout)
            .map_or(u64::MAX, Timestamp::as_micros);
        let wake = agg_wake.min(v.retry_at);
        if wake != v.wake_at {
            v.wake_at = wake;
            v.wake_token = v.wake_token.wrapping_add(1);
            if wake != u64::MAX {
                let token = v.wake_token;
                self.schedule(wake.max(self.now), What::AggWake { agg: a, token });
            }
        }
    }

    fn report_agg_status(&mut self, a: u16) {
        let now = self.ts();
        let v = &self.aggs[usize::from(a)];
        if let Some(agg) = &v.agg {
            let update = setup::aggregator_status(agg, v.ep.conn.is_some(), now, false);
            self.observer.aggregator_status(update);
        }
    }

    fn spawn_aggregator(&mut self, a: u16) {
        let v = &mut self.aggs[usize::from(a)];
        v.incarnation += 1;
        let agg = setup::aggregator(
            self.run.scenario(),
            &self.keys,
            &self.topics,
            AggregatorId(a),
            v.incarnation,
            v.weight,
        );
        v.agg = Some(agg);
        v.retry_at = u64::MAX;
        self.connect(Client::Agg(a));
        self.report_agg_status(a);
    }

    fn spawn_node(&mut self, id: NodeId) {
        let now = self.ts();
        let node = setup::node(
            self.run.scenario(),
            self.run.seed(),
            &self.keys,
            id,
            self.run.interval_of(id),
            now,
        );
        if let Some(g) = self.run.scenario().population.gateway_of(id) {
            let added = self.gws[g.0 as usize].cell.add_node(node, now);
            debug_assert!(added.is_ok(), "node {} is behind gateway {}", id.0, g.0);
            self.poll_gw(g.0);
            return;
        }
        self.nodes[id.0 as usize].node = Some(node);
        self.poll_node(id.0);
    }

    /// Runs `f` on node `id` wherever it lives (its own slot or its
    /// gateway's cell) and lets the driver act on what changed.
    fn with_node(&mut self, id: NodeId, f: impl FnOnce(&mut Node)) {
        let now = self.ts();
        if let Some(g) = self.run.scenario().population.gateway_of(id) {
            if self.gws[g.0 as usize].cell.with_node(id, now, f).is_some() {
                self.poll_gw(g.0);
            }
            return;
        }
        if let Some(node) = self
            .nodes
            .get_mut(id.0 as usize)
            .and_then(|v| v.node.as_mut())
        {
            f(node);
            self.poll_node(id.0);
        }
    }

    /// Node `id`'s health now, wherever it lives.
    fn node_health(&self, id: NodeId, now: Timestamp) -> NodeHealth {
        if let Some(g) = self.run.scenario().population.gateway_of(id) {
            if self.gws[g.0 as usize].cell.is_out_of_range(id) {
                return NodeHealth::OutOfRange;
            }
        }
        self.node(id)
            .map_or(NodeHealth::Pending, |n| NodeHealth::of(n, now))
    }

    /// Node `id`, if started, wherever it lives.
    fn node(&self, id: NodeId) -> Option<&Node> {
        match self.run.scenario().population.gateway_of(id) {
            Some(g) => self.gws.get(g.0 as usize)?.cell.node(id),
            None => self.nodes.get(id.0 as usize)?.node.as_ref(),
        }
    }

    // ---- the run ----------------------------------------------------------

    fn fire_run(&mut self) {
        self.run.handle_timeout(self.elapsed());
        self.carry_out(None);
        if self.phase == Phase::Ramping && self.run.ramped() {
            self.phase = Phase::Running;
        }
        self.run_token = self.run_token.wrapping_add(1);
        if let (Some(t), Some(origin)) = (self.run.poll_timeout(), self.origin) {
            // Rounded up: a deadline between two microseconds is reached at
            // the later one, never missed at the earlier.
            let at = (origin + t.as_nanos().div_ceil(1000) as u64).max(self.now);
            let token = self.run_token;
            self.schedule(at, What::RunWake { token });
        }
    }

    /// Applies an action now (injected, or from the dashboard).
    pub fn apply(&mut self, action: &vitalmesh_scenario::Action, source: &str) -> TimelineEntry {
        let index = self.run.apply(action, source, None, self.elapsed());
        self.carry_out(Some(index));
        // The action may have added timed ends: wake for them.
        self.fire_run();
        self.run.entry(index).clone()
    }

    fn carry_out(&mut self, entry: Option<usize>) {
        while let Some(command) = self.run.poll_command() {
            let now = self.ts();
            match command {
                Command::StartNodes { first, count } => {
                    for id in first..first + count {
                        self.spawn_node(NodeId(id));
                    }
                }
                Command::Node { nodes, op } => {
                    for id in nodes {
                        let op = op.clone();
                        self.with_node(id, |node| match op {
                            NodeOp::Crash => node.crash(now),
                            NodeOp::Restart => node.restart(now),
                            NodeOp::Reboot => node.reboot(now),
                            NodeOp::ShutDown => node.shut_down(now),
                            NodeOp::SetInterval(d) => node.set_sample_interval(d, now),
                            NodeOp::Fault { sign, mode, for_ } => node.inject_fault(SensorFault {
                                sign,
                                mode,
                                since: now,
                                until: for_.map(|d| now + d),
                            }),
                            NodeOp::Fever { after, episode } => {
                                node.add_episode(Episode::Fever(FeverEpisode {
                                    onset: now + after,
                                    ..episode
                                }));
                            }
                            NodeOp::Deteriorate { ramp } => {
                                node.add_episode(Episode::Deterioration(DeteriorationEpisode {
                                    onset: now,
                                    ramp,
                                }));
                            }
                            NodeOp::Discharge => node.discharge(now),
                            NodeOp::Admit { options } => node.admit(options, now),
                        });
                    }
                }
                Command::Gateways { gateways, op } => {
                    for g in gateways {
                        let Some(v) = self.gws.get_mut(g.0 as usize) else {
                            continue;
                        };
                        match op {
                            GatewayOp::Crash => v.cell.crash(now),
                            GatewayOp::Restart => v.cell.restart(now),
                        }
                        self.poll_gw(g.0);
                    }
                }
                Command::Link { target, op } => {
                    let clients: Vec<Client> = match target {
                        LinkTarget::Nodes(nodes) => {
                            // A node behind a gateway reaches the broker
                            // over its gateway's connection: that is what
                            // a network fault on the node degrades.
                            let population = self.run.scenario().population;
                            let mut clients: Vec<Client> = nodes
                                .into_iter()
                                .map(|n| match population.gateway_of(n) {
                                    Some(g) => Client::Gw(g.0),
                                    None => Client::Node(n.0),
                                })
                                .collect();
                            clients.dedup();
                            clients
                        }
                        LinkTarget::Aggregator(a) => vec![Client::Agg(a)],
                    };
                    for c in clients {
                        self.link_op(c, op);
                    }
                }
                Command::KillAggregator(a) => {
                    let v = &mut self.aggs[usize::from(a)];
                    v.agg = None;
                    v.retry_at = u64::MAX;
                    v.ep.connecting = None;
                    if let Some(s) = v.ep.conn.take() {
                        self.send(Client::Agg(a), Dir::Up, s, Packet::Closed);
                    }
                    self.observer.aggregator_killed(AggregatorId(a));
                }
                Command::RestartAggregator(a) => self.spawn_aggregator(a),
                Command::AddAggregator { aggregator, weight } => {
                    self.aggs[usize::from(aggregator)].weight = weight;
                    self.spawn_aggregator(aggregator);
                }
                Command::RemoveAggregator(a) => {
                    // It says it is leaving (peers take over its partitions,
                    // it flushes its acknowledgements), then disconnects
                    // cleanly: no will.
                    if let Some(agg) = self.aggs[usize::from(a)].agg.as_mut() {
                        agg.leave();
                    }
                    self.poll_agg(a);
                    let incarnation = self.aggs[usize::from(a)].incarnation;
                    let at = self.now + HAND_OVER.as_micros() as u64;
                    self.schedule(
                        at,
                        What::AggGone {
                            agg: a,
                            incarnation,
                        },
                    );
                }
                Command::RestartBroker => self.restart_broker(),
                Command::Rogue { .. } => {
                    if let Some(i) = entry {
                        self.run
                            .refuse(i, "rogue clients are not modelled in virtual time".into());
                    }
                }
            }
        }
    }

    fn link_op(&mut self, c: Client, op: LinkOp) {
        let now = self.now;
        let keep_alive = match c {
            Client::Node(_) | Client::Gw(_) => NODE_KEEP_ALIVE,
            Client::Agg(_) => AGG_KEEP_ALIVE,
        };
        let ep = self.endpoint(c);
        match op {
            LinkOp::Partition => {
                ep.link.partitions += 1;
                if ep.link.partitions == 1 {
                    ep.link.partition_epoch += 1;
                    let epoch = ep.link.partition_epoch;
                    let ka = keep_alive.as_micros() as u64;
                    self.schedule(now + ka * 3 / 2, What::BrokerKeepAlive { client: c, epoch });
                    self.schedule(now + ka * 2, What::ClientKeepAlive { client: c, epoch });
                }
            }
            LinkOp::Heal => {
                if ep.link.partitions == 0 {
                    return;
                }
                ep.link.partitions -= 1;
                if ep.link.partitions > 0 {
                    return;
                }
                let held = std::mem::take(&mut ep.held);
                for what in held {
                    let dir = match what {
                        What::Up { .. } => Dir::Up,
                        _ => Dir::Down,
                    };
                    let at = self.endpoint(c).link.arrival(now, dir);
                    self.schedule(at, what);
                }
                // A session the broker dropped meanwhile is reset as soon
                // as the client's bytes reach it.
                if let Some(s) = self.endpoint(c).conn {
                    if self.broker_session(c) != Some(s) {
                        self.send(c, Dir::Down, s, Packet::Reset);
                    }
                }
                // The device's network stack sees the path back (as a
                // phone's connectivity callback would): an offline client
                // tries now rather than after its backoff.
                let ts = self.ts();
                match c {
                    Client::Node(n) => {
                        if let Some(node) = self.nodes[n as usize].node.as_mut() {
                            node.handle_link_available(ts);
                        }
                        self.poll_node(n);
                    }
                    Client::Gw(g) => {
                        self.gws[g as usize].cell.handle_uplink_available(ts);
                        self.poll_gw(g);
                    }
                    Client::Agg(a) => {
                        let v = &mut self.aggs[usize::from(a)];
                        if v.retry_at != u64::MAX {
                            v.retry_at = v.retry_at.min(now);
                        }
                        self.poll_agg(a);
                    }
                }
            }
            LinkOp::Latency { latency, jitter } => ep.link.set_latency(latency, jitter),
            LinkOp::ClearLatency => ep.link.set_latency(Duration::ZERO, Duration::ZERO),
            LinkOp::Loss(share) => ep.link.set_loss(share),
            LinkOp::ClearLoss => ep.link.set_loss(0.0),
        }
    }

    fn restart_broker(&mut self) {
        self.broker_restarts += 1;
        // What the broker had queued dies with it.
        self.broker_epoch += 1;
        self.broker_free_ns = self.now * 1_000;
        self.broker_up = false;
        self.subs.clear();
        let clients: Vec<(Client, u32)> = (0..self.nodes.len() as u32)
            .filter_map(|n| self.node_sessions[n as usize].map(|s| (Client::Node(n), s)))
            .chain(
                (0..self.aggs.len() as u16)
                    .filter_map(|a| self.agg_sessions[usize::from(a)].map(|s| (Client::Agg(a), s))),
            )
            .chain(
                (0..self.gws.len() as u32)
                    .filter_map(|g| self.gw_sessions[g as usize].map(|s| (Client::Gw(g), s))),
            )
            .collect();
        for (c, s) in clients {
            self.set_broker_session(c, None);
            // The process died: every socket is reset, no will is sent.
            self.send(c, Dir::Down, s, Packet::Reset);
        }
        let restart = self.run.scenario().virtual_model.broker_restart;
        self.schedule(self.now + restart.as_micros() as u64, What::BrokerUp);
    }

    fn close_second(&mut self, index: u64) {
        let totals = RatePoint {
            produced: self.totals.produced,
            published: self.totals.published,
            delivered: self.observer.delivered_total,
            acked: self.totals.acked,
        };
        for a in 0..self.aggs.len() as u16 {
            self.report_agg_status(a);
        }
        self.seconds.close(totals, self.totals.connected);
        self.observer.tick(index as f64);
        if self.all_connected_after.is_none()
            && self.run.ramped()
            && self.totals.connected >= self.nodes.len() as i64
        {
            self.all_connected_after = Some(self.elapsed());
        }
        let origin = self.origin.unwrap_or(self.start);
        self.schedule(
            origin + (index + 2) * 1_000_000,
            What::Second { index: index + 1 },
        );
    }

    /// The state now.
    pub fn snapshot(&self, speed: Option<f64>) -> Snapshot {
        let s = self.run.scenario();
        let now = self.ts();
        Snapshot {
            scenario: s.name.clone(),
            seed: self.run.seed(),
            mode: RunMode::Virtual,
            speed,
            broker_url: "virtual://broker".into(),
            phase: self.phase,
            elapsed: self.elapsed(),
            origin: Timestamp::from_micros(self.origin.unwrap_or(self.start)),
            planned: s.duration,
            nodes: self.nodes.len() as u32,
            started: self.run.started(),
            connected: self.totals.connected,
            produced: self.totals.produced,
            published: self.totals.published,
            acked: self.totals.acked,
            buffered: self.totals.buffered,
            dropped_overflow: self.totals.dropped,
            lost_on_crash: self.totals.lost,
            publish_ack: Percentiles::of(&self.publish_ack),
            node_health: (0..self.nodes.len() as u32)
                .map(|n| self.node_health(NodeId(n), now))
                .collect(),
            population: s.population,
            broker: self.broker_report(),
            // Suspicions cost a φ per node, so they are computed only here,
            // when someone is watching.
            nodes_suspected: self
                .aggs
                .iter()
                .filter(|a| a.ep.conn.is_some())
                .filter_map(|a| a.agg.as_ref())
                .flat_map(|a| a.suspected_nodes(now, setup::SUSPECT_PHI))
                .map(|n| n.0)
                .collect(),
            ..Snapshot::observed(&self.observer, &self.seconds, self.run.timeline(), s)
        }
    }

    fn broker_report(&self) -> BrokerReport {
        BrokerReport {
            kind: "modelled",
            url: "virtual://broker".into(),
            process_restarts: self.broker_restarts,
            listener_restarts: 0,
            canary_failures: 0,
            auth_refused: 0,
            events: self.broker_events.clone(),
            peak_queue_s: self
                .broker_op_ns
                .map(|_| self.broker_peak_queue_us as f64 / 1e6),
        }
    }

    /// Runs the whole scenario: its duration, then the drain.
    pub fn run_to_end(mut self) -> VirtualOutcome {
        let d = self.run.scenario().duration;
        self.run_until(d);
        self.finish(false)
    }

    /// Stops sampling, drains, stops everything and assembles the report.
    pub fn finish(mut self, interrupted: bool) -> VirtualOutcome {
        let ran_for = self.elapsed();
        self.phase = Phase::Draining;
        self.run.lift_network_faults();
        self.carry_out(None);
        let now = self.ts();
        for n in 0..self.nodes.len() as u32 {
            self.with_node(NodeId(n), |node| node.set_sampling(false, now));
        }
        let drain = self.run.scenario().drain;
        let drain_until = ran_for + drain;
        let mut t = ran_for;
        while t < drain_until && self.totals.buffered > 0 {
            t = (t + Duration::from_millis(50)).min(drain_until);
            self.run_until(t);
        }
        self.phase = Phase::Done;
        let finals: Vec<NodeFinal> = (0..self.nodes.len() as u32)
            .filter_map(|n| self.node(NodeId(n)).map(NodeFinal::of))
            .collect();
        for a in 0..self.aggs.len() as u16 {
            self.report_agg_status(a);
        }
        let report = self.run.report(ReportInputs {
            mode: RunMode::Virtual,
            started_at_unix_s: self.start as f64 / 1e6,
            origin: Timestamp::from_micros(self.origin.unwrap_or(self.start)),
            ran_for,
            interrupted,
            finals: &finals,
            observer: &self.observer,
            publish_ack: Percentiles::of(&self.publish_ack),
            throughput: self.seconds.throughput.clone(),
            connections: ConnectionsReport {
                attempts: self.totals.attempts,
                failures: self.totals.failures,
                disconnects: self.totals.disconnects,
                disconnect_reasons: [
                    ("closed_by_broker", self.totals.closed_by_broker),
                    ("keep_alive_timeout", self.totals.keep_alive_timeout),
                ]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect(),
                peak_connected: self.totals.peak_connected,
                all_connected_after_s: self.all_connected_after.map(|d| d.as_secs_f64()),
            },
            gateways: (!self.gws.is_empty())
                .then(|| GatewaysReport::of(self.gws.iter().map(|g| g.cell.ledger()))),
            broker: self.broker_report(),
            machine: None,
            cpu: None,
            memory: None,
            rogue: Vec::new(),
        });
        VirtualOutcome {
            report,
            intervals: self.observer.intervals.take(),
            events: self.queue.popped(),
            finals,
            delivered: std::mem::take(&mut self.observer.delivered),
        }
    }
}

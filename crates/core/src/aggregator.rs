//! The aggregator as a state machine.
//!
//! # Driving an aggregator
//!
//! Like the node firmware, it never touches a socket or a clock. The runtime
//! feeds it [`Aggregator::handle_connected`], [`Aggregator::handle_disconnected`],
//! [`Aggregator::handle_message`] (every MQTT publish it receives) and
//! [`Aggregator::handle_timeout`], then drains [`Aggregator::poll_output`]
//! (subscribe, unsubscribe, publish) and [`Aggregator::poll_event`]
//! (deliveries, alerts, ownership changes, judged ward buckets), and sleeps
//! until [`Aggregator::poll_timeout`]. It connects with
//! [`Aggregator::last_will`].
//!
//! # What it does
//!
//! - **Ownership.** Every aggregator heartbeats on its status topic and
//!   watches the others ([`crate::membership`]). From its view of the live
//!   set, rendezvous hashing ([`crate::rendezvous`]) makes it primary or hot
//!   standby for some partitions; it subscribes to exactly those. After
//!   (re)connecting it observes for a join grace before claiming anything, so
//!   it does not briefly claim the whole mesh.
//! - **Ingest.** Uplinks are authenticated and checked against their topic
//!   (a node cannot publish as another). Each node's stream is de-duplicated
//!   by sequence number; `held_from` lets the receiver skip what the node
//!   gave up. Only the primary acknowledges (cumulatively, per partition,
//!   every `ack_interval`) and reports deliveries; the standby keeps the same
//!   state in the shadows so it can take over without a gap.
//! - **Watching nodes.** φ-accrual per node on its arrivals raises node-down
//!   alerts (cleared when the node is heard again). A node that says goodbye
//!   is *left*, never down; an empty bed's heartbeats keep its node alive.
//! - **Watching patients.** Every sample goes through the patient monitor
//!   ([`crate::detect::patient`]): sensor checks, NEWS2 escalation on the
//!   readings it trusts, a CUSUM against the patient's own baseline. Only
//!   the primary raises the alerts; the standby reaches the same state.
//! - **Watching wards.** At the end of every bucket each aggregator reports
//!   each ward's patients on the ward topic; every aggregator assembles
//!   every ward's series and runs the population detectors
//!   ([`crate::detect::ward`]); the ward's owner (rendezvous hashing over
//!   the live aggregators) raises the alerts.
//! - **Watching peers.** The lowest-numbered live aggregator reports
//!   aggregator failures; an aggregator that cannot hear itself reports its
//!   own isolation, and clears it when it hears itself again.
//!
//! Every alert raised or cleared is also published on the alerts topic.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use vitalmesh_wire::envelope::{
    Header, Keyring, Principal, Sealer, claimed_sender, fingerprint, open, open_relay,
};
use vitalmesh_wire::message::{MAX_ACKS_PER_BATCH, MAX_WARD_REPORT_PATIENTS};
use vitalmesh_wire::{
    AckBatch, AggregatorId, AggregatorState, AggregatorStatus, Batch, Body, GatewayId, NodeAck,
    NodeId, PartitionId, Partitioning, PatientBucket, Presence, Scope, SeqSet, Timestamp,
    TopicScheme, WardReport, WireError, WireTopic,
};

use crate::alert::{Alert, AlertKind, Evidence};
use crate::detect::DetectionConfig;
use crate::detect::patient::{PatientEvent, PatientMonitor};
use crate::detect::ward::{self, ReportRefused, WardBucket, WardDetection};
use crate::membership::{DownReason, Membership, PeerChange};
use crate::phi::{PhiConfig, PhiDetector};
use crate::population::{Population, WardId};
use crate::rendezvous;
use crate::replay::{Freshness, ReplayWindow};

/// How an aggregator behaves.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Who it is.
    pub id: AggregatorId,
    /// Distinguishes this life from earlier ones (e.g. a restart counter).
    pub incarnation: u64,
    /// How nodes are split.
    pub partitioning: Partitioning,
    /// Topic names.
    pub topics: TopicScheme,
    /// Ward layout.
    pub population: Population,
    /// Between status heartbeats.
    pub heartbeat_interval: Duration,
    /// Observe this long after connecting before owning partitions.
    pub join_grace: Duration,
    /// Between acknowledgement flushes.
    pub ack_interval: Duration,
    /// Between liveness checks of nodes and peers.
    pub liveness_interval: Duration,
    /// Capacity weight: its share of the partitions is proportional to it
    /// (weighted rendezvous), announced in every heartbeat.
    pub weight: u16,
    /// φ-accrual for peers.
    pub peer_phi: PhiConfig,
    /// φ-accrual for nodes (`first_interval` = the nodes' sample interval).
    pub node_phi: PhiConfig,
    /// What it detects, and how.
    pub detection: DetectionConfig,
}

impl AggregatorConfig {
    /// How often a primary acks its partitions, unless configured.
    pub const DEFAULT_ACK_INTERVAL: Duration = Duration::from_secs(1);

    /// Defaults for aggregator `id`: heartbeats every second, φ = 8 with a
    /// 3 s acceptable pause (detection ≈ 4.5 s), acks every second (each
    /// node receives its partition's ack batch: more often would multiply
    /// broker fan-out for no gain, acks only free buffer space), and the
    /// default detectors.
    pub fn new(id: AggregatorId, population: Population) -> Self {
        Self {
            id,
            incarnation: 0,
            partitioning: Partitioning::default(),
            topics: TopicScheme::default(),
            population,
            heartbeat_interval: Duration::from_secs(1),
            join_grace: Duration::from_secs(2),
            ack_interval: Self::DEFAULT_ACK_INTERVAL,
            liveness_interval: Duration::from_millis(250),
            weight: 1,
            peer_phi: PhiConfig::default(),
            node_phi: PhiConfig::default(),
            detection: DetectionConfig::default(),
        }
    }
}

/// How long an aggregator leaving a running mesh keeps serving after it
/// said so: its partitions' new owners hear `Leaving` and subscribe within a
/// round trip, and until then it still ingests, delivers and acknowledges,
/// so no sample goes unheard even when a partition's primary and standby
/// leave together.
pub const HAND_OVER: Duration = Duration::from_secs(1);

/// An aggregator's part in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Acknowledges, reports deliveries and raises alerts.
    Primary,
    /// Shadows the primary, ready to take over.
    Standby,
}

/// Something the runtime must do on the broker connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Subscribe to a filter (QoS 1).
    Subscribe(String),
    /// Unsubscribe from a filter.
    Unsubscribe(String),
    /// Publish (QoS 0: acks are cumulative and heartbeats periodic, so a
    /// lost one is superseded by the next).
    Publish {
        /// Topic.
        topic: String,
        /// Envelope bytes.
        payload: Vec<u8>,
    },
}

/// A sample ingested for the first time by this aggregator as primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The node.
    pub node: NodeId,
    /// Its ward.
    pub ward: WardId,
    /// The sample's sequence number.
    pub seq: u64,
    /// When the sample was due: latency is `now − sample_time`.
    pub sample_time: Timestamp,
    /// When it was ingested.
    pub ingested_at: Timestamp,
}

/// Why an incoming message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Bytes that do not decode or authenticate.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A node's batch on a topic that is not that node's.
    #[error(
        "'{topic}' carries a batch from node '{claimed}'; expected node '{expected}' in partition '{partition}'"
    )]
    WrongTopic {
        /// The topic.
        topic: String,
        /// Node named by the batch.
        claimed: u32,
        /// Node named by the topic.
        expected: u32,
        /// Partition named by the topic.
        partition: u16,
    },
    /// A gateway relaying for a node that is not behind it (or a relay on
    /// a partition that is not the gateway's).
    #[error(
        "'{topic}' carries a relay from gateway '{gateway}' with a batch from node '{node}'; expected a node behind gateway '{gateway}' in partition '{partition}'"
    )]
    WrongGateway {
        /// The topic.
        topic: String,
        /// Gateway named by the topic.
        gateway: u32,
        /// Node named by the batch (or the relay's gateway, if it is the
        /// relay itself that names another gateway).
        node: u32,
        /// Partition named by the topic.
        partition: u16,
    },
    /// A well-formed message of the wrong kind for its topic.
    #[error("'{topic}' carries a message of the wrong kind")]
    UnexpectedBody {
        /// The topic.
        topic: String,
    },
    /// A message its sender sent before, from an earlier epoch or older
    /// than the replay window: a capture played back.
    #[error(
        "'{topic}' carries a replayed message from {sender} (epoch '{epoch}', counter '{counter}'); expected one newer than the last seen"
    )]
    Replayed {
        /// The topic.
        topic: String,
        /// The sender.
        sender: Principal,
        /// Its epoch.
        epoch: u32,
        /// Its counter.
        counter: u64,
    },
    /// A heartbeat sent longer ago than [`MAX_STATUS_AGE`].
    #[error(
        "'{topic}' carries a status from {sender} sent '{age_ms}' ms ago; expected one from the last 30 s"
    )]
    Stale {
        /// The topic.
        topic: String,
        /// The sender.
        sender: Principal,
        /// How old, by our clock.
        age_ms: u64,
    },
    /// A topic outside the scheme.
    #[error("'{topic}' is not a vitalmesh topic")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// A ward report this mesh cannot use (another bucket length, a ward it
    /// does not have).
    #[error(
        "'{topic}' carries a ward report for ward '{ward}' with {seconds} s buckets; expected a ward below {wards} and {expected} s buckets"
    )]
    WardReport {
        /// The topic.
        topic: String,
        /// Its ward.
        ward: u16,
        /// Its bucket length.
        seconds: u32,
        /// Wards here.
        wards: u16,
        /// Bucket length here.
        expected: u64,
    },
}

/// Longest part of a foreign topic a rejection keeps.
const SHOWN_TOPIC_CHARS: usize = 96;

/// A topic that is not ours, as a rejection keeps it: anyone can publish
/// one, up to 65,535 bytes of anything, so it is cut short and its control
/// characters escaped before it can reach a report or a terminal.
fn shown_topic(topic: &str) -> String {
    let mut shown: String = topic
        .chars()
        .take(SHOWN_TOPIC_CHARS)
        .flat_map(char::escape_default)
        .collect();
    if topic.chars().nth(SHOWN_TOPIC_CHARS).is_some() {
        shown.push_str(&format!("… ({} bytes)", topic.len()));
    }
    shown
}

impl Rejection {
    /// A short, stable name for the kind of rejection, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Wire(e) => e.kind(),
            Self::WrongTopic { .. } => "wrong_topic",
            Self::WrongGateway { .. } => "wrong_gateway",
            Self::UnexpectedBody { .. } => "unexpected_body",
            Self::UnknownTopic { .. } => "unknown_topic",
            Self::Replayed { .. } => "replayed",
            Self::Stale { .. } => "stale",
            Self::WardReport { .. } => "ward_report",
        }
    }
}

/// A patient's NEWS2 first held at 5 or more (ground truth for scoring early
/// warnings: did a detector see the deterioration before NEWS2 did?).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct News2Five {
    /// The bed's node.
    pub node: NodeId,
    /// The admission.
    pub admission: u32,
    /// When the sample was taken.
    pub sampled_at: Timestamp,
}

/// What happened, for the observer.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new sample ingested as primary.
    Delivered(Delivery),
    /// A message refused.
    Rejected {
        /// Why.
        why: Rejection,
        /// Which message ([`fingerprint`] of its bytes): every aggregator
        /// that reads a topic refuses the same message, and the observer
        /// counts it once.
        message: u64,
    },
    /// An alert raised, or cleared (`cleared_at` set).
    Alert(Alert),
    /// The partitions this aggregator owns changed.
    Ownership {
        /// As primary.
        primary: Vec<PartitionId>,
        /// As standby.
        standby: Vec<PartitionId>,
    },
    /// A ward's bucket judged by its owner.
    WardBucket(WardBucket),
    /// A patient's NEWS2 first held at 5 or more (from the primary).
    News2Five(News2Five),
}

/// Counters for dashboards and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AggregatorStats {
    /// Samples ingested for the first time as primary.
    pub ingested: u64,
    /// Samples ingested for the first time as standby.
    pub shadow_ingested: u64,
    /// Samples seen again (re-sent by a node after a lost ack or failover).
    pub duplicates: u64,
    /// Messages refused.
    pub rejected: u64,
    /// Data for partitions no longer owned (in flight during a handover).
    pub stray: u64,
    /// Acknowledgement batches published.
    pub ack_batches: u64,
    /// Readings kept out of NEWS2 and the ward counts as suspect.
    pub suspect_readings: u64,
    /// Samples whose time bucket had already been reported when they
    /// arrived (backfill after a long outage): delivered and scored, not
    /// counted in the ward series.
    pub late_for_bucket: u64,
    /// Ward reports that arrived after their bucket was judged.
    pub late_ward_reports: u64,
    /// Partitions owned as primary.
    pub primary_partitions: u16,
    /// Partitions owned as standby.
    pub standby_partitions: u16,
    /// Nodes being tracked.
    pub tracked_nodes: usize,
    /// Tracked nodes currently reported down.
    pub nodes_down: usize,
}

/// Per-node receive state: what has been ingested, whether it is alive,
/// how its patient is doing.
#[derive(Debug, Clone)]
struct NodeTrack {
    partition: PartitionId,
    ward: WardId,
    /// Every sequence number below this is ingested (or given up by the node).
    next_expected: u64,
    /// Ingested sequence numbers at or above `next_expected`.
    above: SeqSet,
    detector: PhiDetector,
    /// When its φ is next worth computing (see [`Aggregator::check_nodes`]).
    check_at: Timestamp,
    /// The earliest wake-up queued for it in `Aggregator::checks`
    /// ([`Timestamp::MAX`]: none). A heartbeat moves `check_at` later
    /// without queueing anything: the queued wake-up, when it comes,
    /// re-queues itself at the new time. One heap entry per node and quiet
    /// period, not one per message.
    check_queued: Timestamp,
    down_since: Option<Timestamp>,
    /// It said goodbye.
    left: bool,
    /// What it said last.
    presence: Presence,
    /// The patient at its bed.
    patient: PatientMonitor,
    /// As standby: `(seq, sample time)` of samples ingested here that the
    /// primary has not yet acknowledged. If the primary dies, these may never
    /// have reached it; on promotion they are reported as delivered.
    unconfirmed: VecDeque<(u64, Timestamp)>,
}

/// Queues a wake-up for `track`'s `check_at` unless one at or before it is
/// already queued.
fn queue_check(
    checks: &mut BinaryHeap<Reverse<(Timestamp, NodeId)>>,
    node: NodeId,
    track: &mut NodeTrack,
) {
    if track.check_at < track.check_queued {
        checks.push(Reverse((track.check_at, node)));
        track.check_queued = track.check_at;
    }
}

impl NodeTrack {
    /// Skips what the node no longer holds.
    fn skip_below(&mut self, held_from: u64) {
        if held_from > self.next_expected {
            self.next_expected = held_from;
            self.above.remove_below(held_from);
            self.advance();
        }
    }

    /// Records `seq`; whether it is new.
    fn accept(&mut self, seq: u64) -> bool {
        if seq < self.next_expected || !self.above.insert(seq) {
            return false;
        }
        self.advance();
        true
    }

    fn advance(&mut self) {
        if self.above.first() == Some(self.next_expected) {
            self.next_expected = self.above.ranges()[0].end;
            self.above.remove_below(self.next_expected);
        }
    }

    /// Starts judging liveness afresh from `now`.
    fn rearm(&mut self, now: Timestamp, phi: &PhiConfig) {
        self.detector = PhiDetector::new(phi);
        self.detector.heartbeat(now, phi);
        self.check_at = self.detector.quiet_until(phi);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Disconnected,
    Joining { until: Timestamp },
    Active,
}

/// One aggregator.
#[derive(Debug)]
pub struct Aggregator {
    config: AggregatorConfig,
    keys: Keyring,
    /// Seals our messages; its epoch is our incarnation, and each
    /// connection starts a block of 2^32 counters whose last one is
    /// that connection's will (see [`Aggregator::last_will`]).
    sealer: Sealer,
    /// Connections made (the counter block in use).
    connections: u64,
    /// The newest status seen from each peer, by envelope order: an older
    /// one is a replay and changes nothing. Kept across reconnects.
    status_seen: BTreeMap<AggregatorId, (u32, u64)>,
    /// Per node, the anti-replay window over its envelopes.
    replay: BTreeMap<NodeId, ReplayWindow>,
    /// The bytes of the message being handled, for rejections.
    handling: u64,
    /// The latest `now` any input brought: the send time of statuses
    /// published outside an input that carries one (`leave`, the will).
    clock: Timestamp,
    link: Link,
    membership: Membership,
    roles: Vec<Option<Role>>,
    subscribed: Vec<bool>,
    /// Standby partitions whose ack topic we follow, to learn what the
    /// primary has confirmed.
    acks_followed: Vec<bool>,
    /// It said goodbye: its heartbeats say `Leaving` from then on, so the
    /// others do not take it back during its hand-over.
    leaving: bool,
    /// Peers that were joining when we turned active: counted as owners
    /// while they finish joining (see [`Aggregator::rebalance`]).
    joined_with: BTreeSet<AggregatorId>,
    /// Boxed: a track is ~2.2 KB, and inline in the B-tree's nodes eleven
    /// of them share one allocation, so every lookup walks past tens of
    /// kilobytes and every insert shifts them.
    nodes: BTreeMap<NodeId, Box<NodeTrack>>,
    /// When each node's liveness is next worth judging, earliest first;
    /// entries that no longer match their track's `check_at` are stale.
    checks: BinaryHeap<Reverse<(Timestamp, NodeId)>>,
    ack_dirty: Vec<BTreeSet<NodeId>>,
    /// Partitions with acknowledgements waiting: without any, no flush
    /// slot needs a wake-up.
    acks_pending: usize,
    outputs: VecDeque<Output>,
    events: VecDeque<Event>,
    next_heartbeat: Timestamp,
    next_ack_flush: Timestamp,
    /// The partition whose acks the next flush sends: partitions are flushed
    /// one slot at a time, `ack_interval / partitions` apart, so thousands of
    /// nodes are not all woken by acks in the same instant.
    ack_cursor: usize,
    next_liveness: Timestamp,
    /// The next bucket this aggregator reports, and when.
    report_bucket: u64,
    report_at: Timestamp,
    wards: WardDetection,
    /// When our own heartbeat last came back through the broker.
    heard_myself: Timestamp,
    /// Whether we are cut off (and have said so).
    isolated: bool,
    beat: u64,
    stats: AggregatorStats,
    /// Scratch for the patient monitor's events.
    patient_events: Vec<PatientEvent>,
}

impl Aggregator {
    /// An aggregator, disconnected. `keys` verifies nodes and peers and signs
    /// its own messages.
    pub fn new(config: AggregatorConfig, keys: Keyring) -> Self {
        let partitions = usize::from(config.partitioning.count());
        Self {
            sealer: keys.sealer(
                Principal::Aggregator(config.id),
                u32::try_from(config.incarnation).unwrap_or(u32::MAX),
            ),
            connections: 0,
            status_seen: BTreeMap::new(),
            replay: BTreeMap::new(),
            handling: 0,
            clock: Timestamp::EPOCH,
            membership: Membership::new(config.id, config.peer_phi),
            roles: vec![None; partitions],
            joined_with: BTreeSet::new(),
            leaving: false,
            subscribed: vec![false; partitions],
            acks_followed: vec![false; partitions],
            ack_dirty: vec![BTreeSet::new(); partitions],
            acks_pending: 0,
            nodes: BTreeMap::new(),
            checks: BinaryHeap::new(),
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            link: Link::Disconnected,
            next_heartbeat: Timestamp::MAX,
            next_ack_flush: Timestamp::MAX,
            ack_cursor: 0,
            next_liveness: Timestamp::MAX,
            report_bucket: 0,
            report_at: Timestamp::MAX,
            wards: WardDetection::new(
                config.detection.ward.clone(),
                config.population.wards,
                config.partitioning.count(),
            ),
            heard_myself: Timestamp::EPOCH,
            isolated: false,
            beat: 0,
            stats: AggregatorStats::default(),
            patient_events: Vec::new(),
            config,
            keys,
        }
    }

    /// Its id.
    pub fn id(&self) -> AggregatorId {
        self.config.id
    }

    /// Its configuration.
    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> AggregatorStats {
        let (primary, standby) = self.roles.iter().fold((0, 0), |(p, s), r| match r {
            Some(Role::Primary) => (p + 1, s),
            Some(Role::Standby) => (p, s + 1),
            None => (p, s),
        });
        AggregatorStats {
            primary_partitions: primary,
            standby_partitions: standby,
            tracked_nodes: self.nodes.len(),
            ..self.stats
        }
    }

    /// Nodes of its primary partitions that are quiet enough to be suspected
    /// but not yet declared down: the stage before a node-down alert.
    ///
    /// Suspected means φ at or above `phi` (3: a 0.1 % chance of being
    /// wrong) *without* the acceptable pause. Down uses the pause (3 s by
    /// default), and with regular 1 Hz samples φ climbs from 3 to 8 within a
    /// quarter of a second once the pause is spent; without it, a node that
    /// has missed a sample or two is suspected for the seconds before it is
    /// declared down — which is what a dashboard should show.
    pub fn suspected_nodes(&self, now: Timestamp, phi: f64) -> Vec<NodeId> {
        if self.link != Link::Active || self.isolated {
            return Vec::new();
        }
        let node_phi = PhiConfig {
            acceptable_pause: Duration::ZERO,
            ..self.config.node_phi
        };
        self.nodes
            .iter()
            .filter(|(_, t)| {
                t.down_since.is_none()
                    && !t.left
                    && self.roles[usize::from(t.partition.0)] == Some(Role::Primary)
                    && t.detector.phi(now, &node_phi) >= phi
            })
            .map(|(&n, _)| n)
            .collect()
    }

    /// Its role for `partition`.
    pub fn role(&self, partition: PartitionId) -> Option<Role> {
        self.roles.get(usize::from(partition.0)).copied().flatten()
    }

    /// Aggregators it believes alive, itself included once active.
    pub fn live_view(&self) -> BTreeSet<AggregatorId> {
        let mut live: BTreeSet<_> = self.membership.live_peers().collect();
        if self.link == Link::Active {
            live.insert(self.config.id);
        }
        live
    }

    /// Whether it has finished joining and owns partitions.
    pub fn is_active(&self) -> bool {
        self.link == Link::Active
    }

    /// Whether it owns `ward` (raises its population alerts) in its view.
    pub fn owns_ward(&self, ward: u16) -> bool {
        self.link == Link::Active && ward::owner(ward, &self.live_view()) == Some(self.config.id)
    }

    /// The last-will topic and payload to register when connecting; call
    /// once per connection, before it.
    ///
    /// The will is sealed now and published by the broker later, so it
    /// takes the *last* counter of a block of 2^32 that this connection
    /// starts: it orders after every message the connection sends, and
    /// before the next connection's, so receivers can refuse any status
    /// that is older than the newest they saw — a replay — without
    /// refusing a will.
    pub fn last_will(&mut self) -> (String, Vec<u8>) {
        self.connections += 1;
        let block = self.connections << 32;
        self.sealer.skip_to(block);
        let mut will = self.sealer.clone();
        will.skip_to(block | u64::from(u32::MAX));
        let body = Body::Status(AggregatorStatus {
            aggregator: self.config.id,
            incarnation: self.config.incarnation,
            beat: u64::MAX,
            state: AggregatorState::Offline,
            weight: self.config.weight,
            sent_at: self.clock,
        });
        let topic = WireTopic::Status {
            aggregator: self.config.id,
        };
        let payload = will
            .seal_to_vec(&body, &topic)
            .expect("aggregator messages are always valid");
        (self.config.topics.status(self.config.id), payload)
    }

    // ---- inputs ----------------------------------------------------------

    /// The broker connection is up (clean session: nothing is subscribed).
    pub fn handle_connected(&mut self, now: Timestamp) {
        self.clock = self.clock.max(now);
        self.link = Link::Joining {
            until: now + self.config.join_grace,
        };
        self.membership.reset();
        self.joined_with.clear();
        self.subscribed.fill(false);
        self.acks_followed.fill(false);
        self.outputs
            .push_back(Output::Subscribe(self.config.topics.status_filter()));
        self.outputs
            .push_back(Output::Subscribe(self.config.topics.ward_filter()));
        self.publish_status(AggregatorState::Joining);
        self.heard_myself = now;
        self.isolated = false;
        self.next_heartbeat = now + self.config.heartbeat_interval;
        self.next_liveness = now + self.config.liveness_interval;
        self.next_ack_flush = now + self.ack_slot();
        if self.report_at == Timestamp::MAX {
            // The first bucket to report is the one whose report is still
            // ahead of us.
            let w = self.wards.config();
            let current = w.bucket_of(now);
            self.report_bucket = if current > 0 && now < w.report_at(current - 1) {
                current - 1
            } else {
                current
            };
            self.report_at = w.report_at(self.report_bucket);
        }
    }

    /// The broker connection is gone. Ownership is kept until the next
    /// connection's join, but nothing is judged while blind: no node is
    /// declared down because *we* cannot hear it.
    pub fn handle_disconnected(&mut self, _now: Timestamp) {
        self.link = Link::Disconnected;
        self.next_heartbeat = Timestamp::MAX;
        self.next_ack_flush = Timestamp::MAX;
        self.next_liveness = Timestamp::MAX;
        self.outputs.clear();
    }

    /// Announces a clean departure (call before disconnecting gracefully):
    /// acknowledges what it ingested as primary, then says it is leaving,
    /// so its standbys take over with every node up to date.
    pub fn leave(&mut self) {
        if self.link != Link::Disconnected {
            for p in 0..self.roles.len() {
                if self.roles[p] == Some(Role::Primary) {
                    self.flush_acks(p);
                }
            }
            self.publish_status(AggregatorState::Leaving);
            self.leaving = true;
        }
    }

    /// A publish arrived on `topic`.
    pub fn handle_message(&mut self, topic: &str, payload: &[u8], now: Timestamp) {
        self.clock = self.clock.max(now);
        if self.link == Link::Disconnected {
            return;
        }
        self.handling = fingerprint(payload);
        let Some(wire_topic) = self.config.topics.parse(topic) else {
            return self.reject(Rejection::UnknownTopic {
                topic: shown_topic(topic),
            });
        };
        match wire_topic {
            WireTopic::Data { partition, node } => {
                self.on_data(topic, partition, node, payload, now)
            }
            WireTopic::Relay { partition, gateway } => {
                self.on_relay(topic, partition, gateway, payload, now)
            }
            WireTopic::Status { aggregator } => self.on_status(topic, aggregator, payload, now),
            WireTopic::Ack { partition } => self.on_ack(topic, partition, payload),
            WireTopic::Ward { .. } => self.on_ward(topic, &wire_topic, payload),
            // Alerts are for people and their tools; aggregators do not
            // subscribe to them, but a stray one is harmless.
            WireTopic::Alert { .. } => {}
        }
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.clock = self.clock.max(now);
        if let Link::Joining { until } = self.link {
            if now >= until {
                // Say so at once: peers hand over the moment they hear it,
                // and we own from now.
                self.joined_with = self.membership.joining_peers(now).collect();
                self.link = Link::Active;
                self.publish_status(AggregatorState::Alive);
                self.next_heartbeat = now + self.config.heartbeat_interval;
                self.rebalance(now);
            }
        }
        if self.link == Link::Disconnected {
            return;
        }
        if now >= self.next_heartbeat {
            let state = if self.leaving {
                AggregatorState::Leaving
            } else if self.link == Link::Active {
                AggregatorState::Alive
            } else {
                AggregatorState::Joining
            };
            self.publish_status(state);
            self.next_heartbeat = now + self.config.heartbeat_interval;
        }
        if self.link != Link::Active {
            return;
        }
        if now >= self.next_liveness {
            self.next_liveness = now + self.config.liveness_interval;
            self.check_isolation(now);
            if !self.isolated {
                let changes = self.membership.check(now);
                if !changes.is_empty() {
                    for change in changes {
                        self.on_peer_change(change, now);
                    }
                    self.rebalance(now);
                }
                self.check_nodes(now);
            }
        }
        // Catch up on every slot that has passed, so a caller with a coarse
        // clock (or virtual time in big steps) still acks every partition.
        let slot = self.ack_slot();
        let mut flushed = 0;
        while now >= self.next_ack_flush && flushed < self.roles.len() {
            let p = self.ack_cursor;
            self.ack_cursor = (p + 1) % self.roles.len();
            self.flush_acks(p);
            self.next_ack_flush = self.next_ack_flush + slot;
            flushed += 1;
        }
        if now >= self.next_ack_flush {
            self.next_ack_flush = now + slot;
        }
        while now >= self.report_at {
            self.report_bucket(now);
        }
        self.judge_wards(now);
    }

    // ---- outputs ---------------------------------------------------------

    /// The next thing to do on the connection.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next event for the observer.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Aggregator::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.link {
            Link::Disconnected => None,
            Link::Joining { until } => Some(until.min(self.next_heartbeat)),
            Link::Active => {
                let acks = if self.acks_pending > 0 {
                    self.next_ack_flush
                } else {
                    Timestamp::MAX
                };
                Some(
                    self.next_heartbeat
                        .min(self.next_liveness)
                        .min(acks)
                        .min(self.report_at)
                        .min(self.wards.poll_timeout().unwrap_or(Timestamp::MAX)),
                )
            }
        }
    }

    // ---- internals -------------------------------------------------------

    fn seal(&mut self, body: &Body, topic: WireTopic) -> Vec<u8> {
        // Our own status, ack, ward and alert bodies always satisfy the
        // protocol rules (lists are chunked to their limits, texts cut to
        // theirs), so sealing cannot fail.
        self.sealer
            .seal_to_vec(body, &topic)
            .expect("aggregator messages are always valid")
    }

    fn publish_status(&mut self, state: AggregatorState) {
        self.beat += 1;
        let body = Body::Status(AggregatorStatus {
            aggregator: self.config.id,
            incarnation: self.config.incarnation,
            beat: self.beat,
            state,
            weight: self.config.weight,
            sent_at: self.clock,
        });
        let payload = self.seal(
            &body,
            WireTopic::Status {
                aggregator: self.config.id,
            },
        );
        self.outputs.push_back(Output::Publish {
            topic: self.config.topics.status(self.config.id),
            payload,
        });
    }

    fn reject(&mut self, why: Rejection) {
        self.stats.rejected += 1;
        self.events.push_back(Event::Rejected {
            why,
            message: self.handling,
        });
    }

    /// Hands an alert (raised or cleared) to the observer and publishes it.
    fn emit(&mut self, alert: Alert) {
        let payload = self.seal(
            &Body::Alert(alert.notice()),
            WireTopic::Alert {
                aggregator: self.config.id,
            },
        );
        self.outputs.push_back(Output::Publish {
            topic: self.config.topics.alert(self.config.id),
            payload,
        });
        self.events.push_back(Event::Alert(alert));
    }

    fn raise(&mut self, now: Timestamp, kind: AlertKind, scope: Scope, evidence: Option<Evidence>) {
        let mut alert = Alert::raise(kind, scope, now, self.config.id);
        alert.evidence = evidence;
        self.emit(alert);
    }

    fn clear(&mut self, now: Timestamp, kind: AlertKind, scope: Scope) {
        let mut alert = Alert::raise(kind, scope, now, self.config.id);
        alert.cleared_at = Some(now);
        self.emit(alert);
    }

    fn on_status(&mut self, topic: &str, from: AggregatorId, payload: &[u8], now: Timestamp) {
        let wire_topic = WireTopic::Status { aggregator: from };
        let (header, status) = match open(payload, &wire_topic, &self.keys) {
            Ok((h, Body::Status(s))) if s.aggregator == from => (h, s),
            Ok(_) => {
                return self.reject(Rejection::UnexpectedBody {
                    topic: topic.into(),
                });
            }
            Err(e) => return self.reject(e.into()),
        };
        // Only the newest status counts: a capture played back (a dead
        // aggregator's heartbeat, a will of a life that went on) is refused
        // before membership sees it. Our own echo is checked too: a replay
        // of our own old heartbeat must not pass for our broker round trip.
        let order = header.order();
        match self.status_seen.get(&from) {
            Some(&newest) if order <= newest => {
                return self.reject(Rejection::Replayed {
                    topic: topic.into(),
                    sender: header.sender,
                    epoch: header.epoch,
                    counter: header.counter,
                });
            }
            _ => {
                self.status_seen.insert(from, order);
            }
        }
        if u64::from(header.epoch) != status.incarnation.min(u64::from(u32::MAX)) {
            return self.reject(Rejection::UnexpectedBody {
                topic: topic.into(),
            });
        }
        // A heartbeat from long ago is a capture, even to an aggregator
        // that never heard this peer before (and so has nothing to order it
        // against). A will is exempt: it is sealed when its connection
        // starts, and believing a stale one only costs a rebalance until
        // the next real heartbeat.
        if status.state != AggregatorState::Offline && status.sent_at + MAX_STATUS_AGE < now {
            return self.reject(Rejection::Stale {
                topic: topic.into(),
                sender: header.sender,
                age_ms: now.saturating_duration_since(status.sent_at).as_millis() as u64,
            });
        }
        if status.aggregator == self.config.id && status.incarnation == self.config.incarnation {
            self.heard_myself = now;
        }
        if let Some(change) = self.membership.handle_status(&status, now) {
            self.on_peer_change(change, now);
            if self.link != Link::Disconnected {
                self.rebalance(now);
            }
        } else if matches!(self.link, Link::Joining { .. })
            && status.state == AggregatorState::Joining
        {
            // Another aggregator joining with us: our shadow copy must
            // follow the ownership we will both take up.
            self.rebalance(now);
        }
    }

    fn on_peer_change(&mut self, change: PeerChange, now: Timestamp) {
        // One reporter for aggregator alerts: the lowest id we believe alive
        // (ourselves included), so the mesh does not raise K copies.
        let reporter = self.live_view().into_iter().next();
        if reporter != Some(self.config.id) {
            return;
        }
        match change {
            PeerChange::Up(aggregator) => {
                let scope = Scope::Aggregator { aggregator };
                self.clear(
                    now,
                    AlertKind::AggregatorDown {
                        reason: DownReason::Silent,
                    },
                    scope,
                );
                self.clear(now, AlertKind::AggregatorLeft, scope);
            }
            PeerChange::Down(aggregator, DownReason::Leaving) => {
                self.raise(
                    now,
                    AlertKind::AggregatorLeft,
                    Scope::Aggregator { aggregator },
                    None,
                );
            }
            PeerChange::Down(aggregator, reason) => {
                self.raise(
                    now,
                    AlertKind::AggregatorDown { reason },
                    Scope::Aggregator { aggregator },
                    None,
                );
            }
        }
    }

    fn on_data(
        &mut self,
        topic: &str,
        partition: PartitionId,
        topic_node: NodeId,
        payload: &[u8],
        now: Timestamp,
    ) {
        let Some(role) = self.role(partition) else {
            self.stats.stray += 1;
            return;
        };
        let wire_topic = WireTopic::Data {
            partition,
            node: topic_node,
        };
        let (header, batch): (Header, Batch) = match open(payload, &wire_topic, &self.keys) {
            Ok((h, Body::Batch(b))) => (h, b),
            Ok(_) => {
                return self.reject(Rejection::UnexpectedBody {
                    topic: topic.into(),
                });
            }
            Err(e) => return self.reject(e.into()),
        };
        if batch.node != topic_node
            || self.config.population.gateway_of(batch.node).is_some()
            || self.config.partitioning.partition_of(batch.node) != partition
        {
            return self.reject(Rejection::WrongTopic {
                topic: topic.into(),
                claimed: batch.node.0,
                expected: topic_node.0,
                partition: partition.0,
            });
        }
        if self.is_replayed(topic, &header) {
            return;
        }
        self.ingest(partition, role, batch, now);
    }

    /// Checks a node's envelope against its anti-replay window, and
    /// rejects it if it is a replay. A duplicate inside the window (MQTT
    /// redelivery, a gateway's re-relay) goes on: processing it again is
    /// harmless and re-confirms its acks.
    fn is_replayed(&mut self, topic: &str, header: &Header) -> bool {
        let Principal::Node(node) = header.sender else {
            return false;
        };
        let window = self.replay.entry(node).or_default();
        if window.check(header.order()) == Freshness::Replayed {
            self.reject(Rejection::Replayed {
                topic: topic.into(),
                sender: header.sender,
                epoch: header.epoch,
                counter: header.counter,
            });
            return true;
        }
        false
    }

    /// A gateway's relay: every frame is its node's own envelope, decoded
    /// and authenticated on its own, and must come from a node behind that
    /// gateway. A bad frame is rejected alone.
    fn on_relay(
        &mut self,
        topic: &str,
        partition: PartitionId,
        topic_gateway: GatewayId,
        payload: &[u8],
        now: Timestamp,
    ) {
        let Some(role) = self.role(partition) else {
            self.stats.stray += 1;
            return;
        };
        let wire_topic = WireTopic::Relay {
            partition,
            gateway: topic_gateway,
        };
        let relay = match open_relay(payload, &wire_topic, &self.keys) {
            Ok(Some((_, r))) => r,
            Ok(None) => {
                return self.reject(Rejection::UnexpectedBody {
                    topic: topic.into(),
                });
            }
            Err(e) => return self.reject(e.into()),
        };
        if relay.gateway != topic_gateway
            || self.config.partitioning.partition_of_gateway(relay.gateway) != partition
        {
            return self.reject(Rejection::WrongGateway {
                topic: topic.into(),
                gateway: topic_gateway.0,
                node: relay.gateway.0,
                partition: partition.0,
            });
        }
        for frame in relay.frames {
            self.handling = fingerprint(frame);
            // A frame is bound to its node's own data topic, whichever way
            // it travels; the header names the node before anything opens.
            let node = match claimed_sender(frame) {
                Some(Principal::Node(node)) => node,
                // Not a node's frame: opening it says exactly what is wrong.
                _ => NodeId(u32::MAX),
            };
            let frame_topic = WireTopic::Data { partition, node };
            let (header, batch) = match open(frame, &frame_topic, &self.keys) {
                Ok((h, Body::Batch(b))) => (h, b),
                Ok(_) => {
                    self.reject(Rejection::UnexpectedBody {
                        topic: topic.into(),
                    });
                    continue;
                }
                Err(e) => {
                    self.reject(e.into());
                    continue;
                }
            };
            if self.config.population.gateway_of(batch.node) != Some(relay.gateway) {
                self.reject(Rejection::WrongGateway {
                    topic: topic.into(),
                    gateway: relay.gateway.0,
                    node: batch.node.0,
                    partition: partition.0,
                });
                continue;
            }
            if self.is_replayed(topic, &header) {
                continue;
            }
            self.ingest(partition, role, batch, now);
        }
    }

    /// One authenticated batch of a node in `partition`, whichever way it
    /// came.
    fn ingest(&mut self, partition: PartitionId, role: Role, batch: Batch, now: Timestamp) {
        let node = batch.node;
        let ward = self.config.population.ward_of(node);
        let node_phi = self.config.node_phi;
        let track = self.nodes.entry(node).or_insert_with(|| {
            Box::new(NodeTrack {
                partition,
                ward,
                next_expected: 0,
                above: SeqSet::new(),
                detector: PhiDetector::new(&node_phi),
                check_at: Timestamp::MAX,
                check_queued: Timestamp::MAX,
                down_since: None,
                left: false,
                presence: Presence::Monitoring,
                patient: PatientMonitor::new(0),
                unconfirmed: VecDeque::new(),
            })
        });
        track.detector.heartbeat(now, &node_phi);
        let came_back = track.down_since.take().is_some();
        if came_back {
            self.stats.nodes_down -= 1;
        }
        let was_left = track.left;
        track.left = batch.presence == Presence::Leaving;
        let (left_now, rejoined) = (track.left && !was_left, was_left && !track.left);
        let discharged =
            batch.presence == Presence::BedEmpty && track.presence == Presence::Monitoring;
        track.presence = batch.presence;
        track.check_at = if track.left {
            Timestamp::MAX
        } else {
            track.detector.quiet_until(&node_phi)
        };

        track.skip_below(batch.held_from);

        let detection = &self.config.detection;
        let bucket_len = detection.ward.bucket;
        let reported_up_to = self.report_bucket;
        let mut events = std::mem::take(&mut self.patient_events);
        events.clear();
        let mut fives = Vec::new();
        for sample in &batch.samples {
            if !track.accept(sample.seq) {
                self.stats.duplicates += 1;
                continue;
            }
            match role {
                Role::Primary => {
                    self.stats.ingested += 1;
                    self.events.push_back(Event::Delivered(Delivery {
                        node,
                        ward,
                        seq: sample.seq,
                        sample_time: sample.time,
                        ingested_at: now,
                    }));
                }
                Role::Standby => {
                    self.stats.shadow_ingested += 1;
                    track.unconfirmed.push_back((sample.seq, sample.time));
                }
            }
            if sample.admission < track.patient.admission() {
                continue; // a previous patient's backfill: delivered, not judged
            }
            if sample.admission > track.patient.admission() {
                track.patient.admit(sample.admission, &mut events);
            }
            if detection.ward.bucket_of(sample.time) < reported_up_to {
                self.stats.late_for_bucket += 1;
            }
            let before = events.len();
            let a = track.patient.observe(
                sample,
                &detection.patient,
                &detection.sensor,
                bucket_len,
                &mut events,
            );
            self.stats.suspect_readings += u64::from(a.suspect.count_ones());
            for e in &events[before..] {
                if let PatientEvent::News2ReachedFive { sampled_at } = e {
                    fives.push(News2Five {
                        node,
                        admission: sample.admission,
                        sampled_at: *sampled_at,
                    });
                }
            }
        }
        if discharged {
            // The patient has gone: their alerts end with their stay.
            let admission = track.patient.admission();
            track.patient.admit(admission, &mut events);
        }

        queue_check(&mut self.checks, node, track);
        if role == Role::Primary {
            // Also after duplicates: a node re-sending missed our ack.
            let dirty = &mut self.ack_dirty[usize::from(partition.0)];
            if dirty.is_empty() {
                self.acks_pending += 1;
            }
            dirty.insert(node);
            let device = Scope::Node { node, ward: ward.0 };
            let patient = Scope::Patient { node, ward: ward.0 };
            if came_back {
                self.clear(
                    now,
                    AlertKind::NodeDown {
                        last_seen: Timestamp::EPOCH,
                    },
                    device,
                );
            }
            if rejoined {
                self.clear(now, AlertKind::NodeLeft, device);
            }
            if left_now {
                self.raise(now, AlertKind::NodeLeft, device, None);
            }
            for e in &events {
                match *e {
                    PatientEvent::Raise(kind, evidence) => {
                        let scope = scope_of(kind, device, patient);
                        self.raise(now, kind, scope, evidence);
                    }
                    PatientEvent::Clear(kind) => {
                        let scope = scope_of(kind, device, patient);
                        self.clear(now, kind, scope);
                    }
                    PatientEvent::News2ReachedFive { .. } => {}
                }
            }
            for f in fives {
                self.events.push_back(Event::News2Five(f));
            }
        }
        self.patient_events = events;
    }

    /// A ward report from any aggregator (ourselves included).
    fn on_ward(&mut self, topic: &str, wire_topic: &WireTopic, payload: &[u8]) {
        let report = match open(payload, wire_topic, &self.keys) {
            Ok((_, Body::Ward(r))) => r,
            Ok(_) => {
                return self.reject(Rejection::UnexpectedBody {
                    topic: topic.into(),
                });
            }
            Err(e) => return self.reject(e.into()),
        };
        match self.wards.handle_report(&report) {
            Ok(()) => {}
            Err(ReportRefused::Late) => self.stats.late_ward_reports += 1,
            Err(ReportRefused::UnknownWard | ReportRefused::BucketMismatch) => {
                self.reject(Rejection::WardReport {
                    topic: topic.into(),
                    ward: report.ward,
                    seconds: report.bucket_s,
                    wards: self.config.population.wards,
                    expected: self.wards.config().bucket.as_secs(),
                })
            }
        }
    }

    /// Closes the bucket due for reporting: every patient we track (as
    /// primary or standby) is summarised and each ward's report published.
    fn report_bucket(&mut self, now: Timestamp) {
        let bucket = self.report_bucket;
        self.report_bucket += 1;
        self.report_at = self.wards.config().report_at(self.report_bucket);
        if self.link != Link::Active || now >= self.wards.config().judge_by(bucket) {
            return; // joined too late to be of use for this one
        }
        let partitions: Vec<u16> = (0..self.roles.len())
            .filter(|&p| self.roles[p].is_some())
            .map(|p| p as u16)
            .collect();
        let wards = self.config.population.wards;
        let mut per_ward: Vec<Vec<PatientBucket>> = vec![Vec::new(); usize::from(wards)];
        for (&node, track) in &mut self.nodes {
            if let Some(flags) = track.patient.close_bucket(bucket) {
                if let Some(list) = per_ward.get_mut(usize::from(track.ward.0)) {
                    list.push(PatientBucket { node, flags });
                }
            }
        }
        let bucket_s = self.wards.config().bucket.as_secs() as u32;
        for (w, patients) in per_ward.into_iter().enumerate() {
            let chunks: Vec<&[PatientBucket]> = if patients.is_empty() {
                vec![&[]]
            } else {
                patients.chunks(MAX_WARD_REPORT_PATIENTS).collect()
            };
            let n = chunks.len() as u16;
            for (i, chunk) in chunks.into_iter().enumerate() {
                let body = Body::Ward(WardReport {
                    aggregator: self.config.id,
                    ward: w as u16,
                    bucket_s,
                    bucket,
                    partitions: partitions.clone(),
                    chunk: i as u16,
                    chunks: n,
                    patients: chunk.to_vec(),
                });
                let payload = self.seal(&body, WireTopic::Ward { ward: w as u16 });
                self.outputs.push_back(Output::Publish {
                    topic: self.config.topics.ward(w as u16),
                    payload,
                });
            }
        }
    }

    /// Judges the ward buckets that are ready; the owner of each ward tells
    /// the observer and raises or clears its alerts.
    fn judge_wards(&mut self, now: Timestamp) {
        let mut judged = Vec::new();
        self.wards.poll(now, &mut judged);
        for b in judged {
            if !self.owns_ward(b.ward) {
                continue;
            }
            let scope = Scope::Ward { ward: b.ward };
            for (d, change) in b.changes.iter().enumerate() {
                let Some(started) = *change else { continue };
                let spec = &self.wards.config().detectors[d];
                let kind = AlertKind::WardAnomaly {
                    detector: d as u8,
                    method: spec.method.method,
                    series: spec.series,
                };
                if started {
                    let step = b.steps[d];
                    let evidence = Evidence {
                        statistic: step.statistic.unwrap_or(f64::NAN),
                        threshold: step.threshold.unwrap_or(f64::NAN),
                        window: (b.start, b.end),
                    };
                    self.raise(now, kind, scope, Some(evidence));
                } else {
                    self.clear(now, kind, scope);
                }
            }
            self.events.push_back(Event::WardBucket(b));
        }
    }

    /// Not hearing our own heartbeats through the broker means *we* are cut
    /// off, and every node and peer would look silent. Judge nobody until we
    /// hear ourselves again, and then measure silence from that moment.
    fn check_isolation(&mut self, now: Timestamp) {
        let deaf = now.saturating_duration_since(self.heard_myself)
            > self.config.heartbeat_interval * 5 / 2;
        if deaf == self.isolated {
            return;
        }
        self.isolated = deaf;
        let kind = AlertKind::AggregatorIsolated {
            last_heard: self.heard_myself,
        };
        let scope = Scope::Aggregator {
            aggregator: self.config.id,
        };
        if deaf {
            self.raise(now, kind, scope, None);
        } else {
            // Healed: say so, and judge nodes and peers from now on.
            self.clear(now, kind, scope);
            let node_phi = self.config.node_phi;
            for (&node, track) in self.nodes.iter_mut().filter(|(_, t)| !t.left) {
                track.rearm(now, &node_phi);
                queue_check(&mut self.checks, node, track);
            }
            self.membership.restart_clocks(now);
        }
    }

    /// The primary's acknowledgements, seen as standby: what it confirmed
    /// no longer needs reporting if we take over.
    fn on_ack(&mut self, topic: &str, partition: PartitionId, payload: &[u8]) {
        if self.role(partition) != Some(Role::Standby) {
            return;
        }
        let acks = match open(payload, &WireTopic::Ack { partition }, &self.keys) {
            Ok((_, Body::Ack(a))) if a.partition == partition => a,
            Ok(_) => {
                return self.reject(Rejection::UnexpectedBody {
                    topic: topic.into(),
                });
            }
            Err(e) => return self.reject(e.into()),
        };
        for ack in &acks.acks {
            if let Some(track) = self.nodes.get_mut(&ack.node) {
                while track
                    .unconfirmed
                    .front()
                    .is_some_and(|(seq, _)| *seq < ack.next_expected)
                {
                    track.unconfirmed.pop_front();
                }
            }
        }
    }

    /// Declares down the nodes whose silence has become suspicious.
    ///
    /// A node cannot be suspect before its expected interval plus the
    /// acceptable pause has passed since its last message
    /// ([`PhiDetector::quiet_until`]), so only nodes whose quiet time is
    /// over are looked at — an aggregator with 10,000 nodes does not
    /// compute 10,000 φ values four times a second. A late node is looked
    /// at again every liveness interval until it speaks or is declared
    /// down.
    fn check_nodes(&mut self, now: Timestamp) {
        let node_phi = self.config.node_phi;
        let mut newly_down = Vec::new();
        while let Some(&Reverse((at, node))) = self.checks.peek() {
            if at > now {
                break;
            }
            self.checks.pop();
            let Some(track) = self.nodes.get_mut(&node) else {
                continue;
            };
            if track.check_queued != at {
                continue; // stale: an earlier wake-up replaced this one
            }
            track.check_queued = Timestamp::MAX;
            if track.left || track.down_since.is_some() {
                continue;
            }
            if track.check_at > now {
                // The node spoke since: wait for its new quiet time.
                queue_check(&mut self.checks, node, track);
                continue;
            }
            if track.detector.is_available(now, &node_phi) {
                track.check_at = now + self.config.liveness_interval;
                queue_check(&mut self.checks, node, track);
                continue;
            }
            track.down_since = Some(now);
            self.stats.nodes_down += 1;
            track.check_at = Timestamp::MAX;
            if self.roles[usize::from(track.partition.0)] == Some(Role::Primary) {
                let last_seen = track.detector.last_heartbeat().unwrap_or(now);
                let phi = track.detector.phi(now, &node_phi);
                newly_down.push((node, track.ward, last_seen, phi));
            }
        }
        for (node, ward, last_seen, phi) in newly_down {
            let evidence = Evidence {
                statistic: if phi.is_finite() { phi } else { f64::MAX },
                threshold: node_phi.threshold,
                window: (last_seen, now),
            };
            self.raise(
                now,
                AlertKind::NodeDown { last_seen },
                Scope::Node { node, ward: ward.0 },
                Some(evidence),
            );
        }
    }

    fn ack_slot(&self) -> Duration {
        (self.config.ack_interval / self.roles.len().max(1) as u32).max(Duration::from_millis(1))
    }

    /// Publishes the pending acknowledgements of partition `p`.
    fn flush_acks(&mut self, p: usize) {
        if self.ack_dirty[p].is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.ack_dirty[p]);
        self.acks_pending -= 1;
        if self.roles[p] != Some(Role::Primary) {
            return;
        }
        let partition = PartitionId(p as u16);
        let acks: Vec<NodeAck> = dirty
            .iter()
            .filter_map(|n| {
                let track = self.nodes.get(n)?;
                // Each entry tagged for its node, which believes nothing else.
                let key = self.keys.ack_key(*n)?;
                Some(key.ack(partition, *n, track.next_expected))
            })
            .collect();
        for chunk in acks.chunks(MAX_ACKS_PER_BATCH) {
            let body = Body::Ack(AckBatch {
                partition,
                aggregator: self.config.id,
                acks: chunk.to_vec(),
            });
            let payload = self.seal(&body, WireTopic::Ack { partition });
            self.stats.ack_batches += 1;
            self.outputs.push_back(Output::Publish {
                topic: self.config.topics.ack(partition),
                payload,
            });
        }
    }

    /// Recomputes ownership from the current view and subscribes,
    /// unsubscribes and hands over accordingly.
    /// Recomputes ownership over the live view, plus the peers that joined
    /// together with us and are about to be up (a mesh starting at once,
    /// whose members turn active milliseconds apart and must not take each
    /// other's partitions meanwhile). A peer joining alone into a running
    /// mesh is not counted until it says `Alive`. While joining, the
    /// aggregator takes up the partitions it is
    /// about to own as a *standby*: it subscribes and builds their nodes'
    /// state without acknowledging, so that when it turns active it is a
    /// warm standby promoted, and the peer handing over flushes its last
    /// acknowledgements as it steps down. No partition is ever left
    /// without an acknowledging owner (make before break).
    fn rebalance(&mut self, now: Timestamp) {
        let joining = matches!(self.link, Link::Joining { .. });
        let mut live = self.live_view();
        let joined_with = &self.joined_with;
        live.extend(
            self.membership
                .joining_peers(now)
                .filter(|a| joined_with.contains(a)),
        );
        if joining {
            live.extend(self.membership.joining_peers(now));
            live.insert(self.config.id);
        }
        let me_weight = self.config.weight;
        let me_id = self.config.id;
        let membership = &self.membership;
        let assignment = rendezvous::assign_weighted(self.config.partitioning, &live, |a| {
            if a == me_id {
                me_weight
            } else {
                membership.weight_of(a)
            }
        });
        let me = Some(self.config.id);
        let mut changed = false;
        for p in 0..self.roles.len() {
            let new = if assignment.primary[p] == me {
                Some(if joining {
                    Role::Standby
                } else {
                    Role::Primary
                })
            } else if assignment.standby[p] == me {
                Some(Role::Standby)
            } else {
                None
            };
            let partition = PartitionId(p as u16);
            if new.is_some() && !self.subscribed[p] {
                self.outputs
                    .push_back(Output::Subscribe(self.config.topics.data_filter(partition)));
                self.subscribed[p] = true;
                // We have not been listening: judge liveness from now on.
                let node_phi = self.config.node_phi;
                for (&node, track) in self
                    .nodes
                    .iter_mut()
                    .filter(|(_, t)| t.partition == partition && !t.left)
                {
                    track.rearm(now, &node_phi);
                    queue_check(&mut self.checks, node, track);
                }
            }
            if new.is_none() && self.subscribed[p] {
                self.outputs.push_back(Output::Unsubscribe(
                    self.config.topics.data_filter(partition),
                ));
                self.subscribed[p] = false;
            }
            let follow_acks = new == Some(Role::Standby);
            if follow_acks != self.acks_followed[p] {
                let topic = self.config.topics.ack(partition);
                self.outputs.push_back(if follow_acks {
                    Output::Subscribe(topic)
                } else {
                    Output::Unsubscribe(topic)
                });
                self.acks_followed[p] = follow_acks;
            }
            if new == Some(Role::Primary) && self.roles[p] != Some(Role::Primary) {
                // Promoted: report what only we may have received, and tell
                // every node where it stands at once.
                let mut nodes = Vec::new();
                for (&node, track) in self
                    .nodes
                    .iter_mut()
                    .filter(|(_, t)| t.partition == partition)
                {
                    for (seq, sample_time) in track.unconfirmed.drain(..) {
                        self.stats.ingested += 1;
                        self.events.push_back(Event::Delivered(Delivery {
                            node,
                            ward: track.ward,
                            seq,
                            sample_time,
                            ingested_at: now,
                        }));
                    }
                    nodes.push(node);
                }
                if !nodes.is_empty() && self.ack_dirty[p].is_empty() {
                    self.acks_pending += 1;
                }
                self.ack_dirty[p].extend(nodes);
            }
            if new != Some(Role::Primary) && !self.ack_dirty[p].is_empty() {
                if self.roles[p] == Some(Role::Primary) {
                    // Stepping down: acknowledge what we ingested now, not
                    // never (the new primary may not have it).
                    self.flush_acks(p);
                } else {
                    self.ack_dirty[p].clear();
                    self.acks_pending -= 1;
                }
            }
            changed |= new != self.roles[p];
            self.roles[p] = new;
        }
        let roles = &self.roles;
        self.nodes
            .retain(|_, t| roles[usize::from(t.partition.0)].is_some());
        self.stats.nodes_down = self
            .nodes
            .values()
            .filter(|t| t.down_since.is_some())
            .count();
        if changed {
            let of = |role| {
                (0..self.roles.len())
                    .filter(|&p| self.roles[p] == Some(role))
                    .map(|p| PartitionId(p as u16))
                    .collect()
            };
            self.events.push_back(Event::Ownership {
                primary: of(Role::Primary),
                standby: of(Role::Standby),
            });
        }
    }
}

/// How old a heartbeat may be, by the receiver's clock, and still count.
/// A heartbeat that late could not keep a peer up anyway (φ declares it
/// down after about 4.5 s of silence), so this is set far above that, to
/// tolerate a broker queue under overload and clock skew between
/// machines; it bounds how long after its death a replay can show a dead
/// aggregator to one that started after the death.
pub const MAX_STATUS_AGE: Duration = Duration::from_secs(30);

/// Sensor alerts are about the device; the rest of a patient monitor's
/// alerts are about the patient.
fn scope_of(kind: AlertKind, device: Scope, patient: Scope) -> Scope {
    match kind {
        AlertKind::CheckSensor { .. } => device,
        _ => patient,
    }
}

#[cfg(test)]
mod tests {
    use vitalmesh_firmware::{LinkAction, Node, NodeConfig};
    use vitalmesh_wire::envelope::Sealer;
    use vitalmesh_wire::{Acvpu, FaultFlags, Sample, SpO2Scale, Vitals};

    use crate::detect::WardBucket;
    use crate::news2::Risk;

    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_767_225_600);
    const SECRET: [u8; 32] = *b"aggregator-tests-aggregator-test";

    fn keys() -> Keyring {
        static RING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
        RING.get_or_init(|| Keyring::new(SECRET, 10_000)).clone()
    }

    /// Opens a message published on `topic`.
    fn decode(topic: &str, payload: &[u8], keys: &Keyring) -> Result<Body, WireError> {
        let t = TopicScheme::default().parse(topic).expect("a mesh topic");
        vitalmesh_wire::decode(payload, &t, keys)
    }

    /// Seals `batch` as its node would: each call a new counter.
    fn seal_batch(batch: Batch) -> Vec<u8> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let node = batch.node;
        let topic = WireTopic::Data {
            partition: Partitioning::default().partition_of(node),
            node,
        };
        let mut sealer = keys().sealer(Principal::Node(node), 0);
        sealer.skip_to(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        sealer.seal_to_vec(&Body::Batch(batch), &topic).unwrap()
    }

    fn population() -> Population {
        Population {
            wards: 4,
            nodes_per_ward: 25,
            nodes_per_gateway: 0,
        }
    }

    /// Aggregators on an in-memory broker with MQTT `+` matching.
    struct Bus {
        aggs: Vec<Aggregator>,
        subs: Vec<BTreeSet<String>>,
        up: Vec<bool>,
        now: Timestamp,
        events: Vec<(AggregatorId, Event)>,
        /// Each aggregator's will, registered when it connected.
        wills: Vec<(String, Vec<u8>)>,
        /// Everything published, as an eavesdropper on `#` would see it.
        wire: Vec<(String, Vec<u8>)>,
    }

    impl Bus {
        fn new(n: u16) -> Self {
            Self::with(n, |_| {})
        }

        fn with(n: u16, configure: impl Fn(&mut AggregatorConfig)) -> Self {
            let aggs: Vec<_> = (0..n)
                .map(|i| {
                    let mut config = AggregatorConfig::new(AggregatorId(i), population());
                    configure(&mut config);
                    Aggregator::new(config, keys())
                })
                .collect();
            let mut bus = Self {
                subs: vec![BTreeSet::new(); aggs.len()],
                up: vec![true; aggs.len()],
                aggs,
                now: T0,
                events: Vec::new(),
                wills: Vec::new(),
                wire: Vec::new(),
            };
            for i in 0..bus.aggs.len() {
                let will = bus.aggs[i].last_will();
                bus.wills.push(will);
                bus.aggs[i].handle_connected(T0);
            }
            bus.pump();
            bus
        }

        /// Delivers outputs until quiet.
        fn pump(&mut self) {
            loop {
                let mut published = Vec::new();
                for i in 0..self.aggs.len() {
                    while let Some(out) = self.aggs[i].poll_output() {
                        match out {
                            Output::Subscribe(f) => {
                                self.subs[i].insert(f);
                            }
                            Output::Unsubscribe(f) => {
                                self.subs[i].remove(&f);
                            }
                            Output::Publish { topic, payload } => published.push((topic, payload)),
                        }
                    }
                    while let Some(e) = self.aggs[i].poll_event() {
                        self.events.push((AggregatorId(i as u16), e));
                    }
                }
                if published.is_empty() {
                    return;
                }
                for (topic, payload) in published {
                    self.publish(&topic, &payload);
                }
            }
        }

        fn publish(&mut self, topic: &str, payload: &[u8]) {
            self.wire.push((topic.into(), payload.into()));
            for i in 0..self.aggs.len() {
                if self.up[i]
                    && self.subs[i]
                        .iter()
                        .any(|f| vitalmesh_wire::topic::filter_matches(f, topic))
                {
                    self.aggs[i].handle_message(topic, payload, self.now);
                }
            }
        }

        /// Advances time in 50 ms steps, firing timers.
        fn advance(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now = self.now + Duration::from_millis(50);
                for i in 0..self.aggs.len() {
                    if self.up[i] {
                        self.aggs[i].handle_timeout(self.now);
                    }
                }
                self.pump();
            }
        }

        /// Kills aggregator `i`: its connection drops and the broker
        /// publishes its last will.
        fn kill(&mut self, i: usize) {
            self.up[i] = false;
            self.subs[i].clear();
            self.aggs[i].handle_disconnected(self.now);
            let (topic, payload) = self.wills[i].clone();
            self.publish(&topic, &payload);
            self.pump();
        }

        fn primary_of(&self, p: PartitionId) -> Vec<usize> {
            (0..self.aggs.len())
                .filter(|&i| self.up[i] && self.aggs[i].role(p) == Some(Role::Primary))
                .collect()
        }

        /// Everything published on `topic` so far, as an eavesdropper
        /// captured it.
        fn published_on(&self, topic: &str) -> Vec<Vec<u8>> {
            self.wire
                .iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| p.clone())
                .collect()
        }

        fn take_events(&mut self) -> Vec<(AggregatorId, Event)> {
            std::mem::take(&mut self.events)
        }
    }

    fn sample(node: u32, seq: u64, vitals: Vitals) -> Sample {
        Sample {
            node: NodeId(node),
            seq,
            time: T0 + Duration::from_secs(seq),
            vitals,
            battery_pct: 100,
            faults: FaultFlags::empty(),
            admission: 0,
        }
    }

    fn healthy() -> Vitals {
        Vitals {
            heart_rate: Some(72),
            resp_rate: Some(16),
            spo2: Some(98),
            temp_decicelsius: Some(370),
            systolic: Some(120),
            diastolic: Some(75),
            consciousness: Some(Acvpu::Alert),
            on_oxygen: false,
            spo2_scale: SpO2Scale::Scale1,
        }
    }

    fn uplink(node: u32, held_from: u64, seqs: &[u64], vitals: Vitals) -> (String, Vec<u8>) {
        let batch = Batch {
            presence: Presence::Monitoring,
            node: NodeId(node),
            held_from,
            samples: seqs.iter().map(|&s| sample(node, s, vitals)).collect(),
        };
        let p = Partitioning::default().partition_of(NodeId(node));
        (
            TopicScheme::default().data(p, NodeId(node)),
            seal_batch(batch),
        )
    }

    fn acks_for(bus_events: &[(String, Vec<u8>)], node: u32) -> Vec<u64> {
        bus_events
            .iter()
            .filter_map(|(topic, payload)| match decode(topic, payload, &keys()) {
                Ok(Body::Ack(a)) => a
                    .acks
                    .iter()
                    .find(|x| x.node == NodeId(node))
                    .map(|x| x.next_expected),
                _ => None,
            })
            .collect()
    }

    /// Captures what aggregators publish on ack topics.
    fn collect_acks(bus: &mut Bus) -> Vec<(String, Vec<u8>)> {
        let mut acks = Vec::new();
        for agg in &mut bus.aggs {
            let mut keep = VecDeque::new();
            while let Some(out) = agg.poll_output() {
                if let Output::Publish { topic, payload } = &out {
                    if topic.contains("/ack/") {
                        acks.push((topic.clone(), payload.clone()));
                    }
                }
                keep.push_back(out);
            }
            agg.outputs = keep;
        }
        acks
    }

    #[test]
    fn after_joining_each_partition_has_exactly_one_primary_and_one_standby() {
        let mut bus = Bus::new(4);
        assert!(
            bus.aggs.iter().all(|a| a.stats().primary_partitions == 0),
            "no claims during the join grace"
        );
        bus.advance(Duration::from_secs(3));
        for p in Partitioning::default().all() {
            assert_eq!(bus.primary_of(p).len(), 1, "{p}");
            let standbys = bus
                .aggs
                .iter()
                .filter(|a| a.role(p) == Some(Role::Standby))
                .count();
            assert_eq!(standbys, 1, "{p}");
        }
        for a in &bus.aggs {
            assert_eq!(a.live_view().len(), 4);
        }
    }

    #[test]
    fn a_killed_aggregators_partitions_move_to_their_standbys_at_once() {
        let mut bus = Bus::new(3);
        bus.advance(Duration::from_secs(3));
        let victim_parts: Vec<(PartitionId, usize)> = Partitioning::default()
            .all()
            .filter(|&p| bus.primary_of(p) == [1])
            .map(|p| {
                (
                    p,
                    (0..3)
                        .find(|&i| bus.aggs[i].role(p) == Some(Role::Standby))
                        .unwrap(),
                )
            })
            .collect();
        assert!(!victim_parts.is_empty());
        bus.take_events();
        bus.kill(1);
        for (p, standby) in &victim_parts {
            assert_eq!(
                bus.primary_of(*p),
                [*standby],
                "{p} went to its hot standby"
            );
        }
        let downs: Vec<_> = bus
            .take_events()
            .into_iter()
            .filter_map(|(by, e)| match e {
                Event::Alert(Alert {
                    kind: AlertKind::AggregatorDown { reason },
                    scope: Scope::Aggregator { aggregator },
                    cleared_at: None,
                    ..
                }) => Some((by, aggregator, reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            downs,
            [(AggregatorId(0), AggregatorId(1), DownReason::LastWill)],
            "reported once, by the lowest id"
        );
    }

    #[test]
    fn the_standby_has_shadowed_the_data_and_acknowledges_it_after_promotion() {
        let mut bus = Bus::new(2);
        bus.advance(Duration::from_secs(3));
        let node = 7;
        let p = Partitioning::default().partition_of(NodeId(node));
        let primary = bus.primary_of(p)[0];
        let (topic, payload) = uplink(node, 0, &[0, 1, 2, 3, 4], healthy());
        bus.publish(&topic, &payload);
        bus.pump();
        bus.take_events();
        // The primary dies before acknowledging anything: the standby cannot
        // know what it delivered, so on promotion it reports all five (the
        // observer counts any the old primary had delivered as duplicates).
        bus.kill(primary);
        let survivor = 1 - primary;
        assert_eq!(bus.aggs[survivor].role(p), Some(Role::Primary));
        // It acks all five without having to see them again.
        let (topic, payload) = uplink(node, 0, &[5], healthy());
        bus.publish(&topic, &payload);
        bus.aggs[survivor].handle_timeout(bus.now + Duration::from_secs(1));
        let acks = collect_acks(&mut bus);
        assert_eq!(acks_for(&acks, node), [6]);
        bus.pump();
        let delivered: Vec<u64> = bus
            .take_events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Delivered(d) => Some(d.seq),
                _ => None,
            })
            .collect();
        assert_eq!(delivered, [0, 1, 2, 3, 4, 5]);
        assert_eq!(
            bus.aggs[survivor].stats().duplicates,
            0,
            "nothing was re-sent"
        );
    }

    #[test]
    fn a_sample_only_the_standby_received_is_delivered_when_it_takes_over() {
        let mut bus = Bus::new(2);
        bus.advance(Duration::from_secs(3));
        let node = 21;
        let p = Partitioning::default().partition_of(NodeId(node));
        let primary = bus.primary_of(p)[0];
        let standby = 1 - primary;
        // Samples 0 and 1 reach both; the primary acks them.
        let (topic, payload) = uplink(node, 0, &[0, 1], healthy());
        bus.publish(&topic, &payload);
        bus.advance(Duration::from_millis(1100));
        // Sample 2 reaches only the standby: the primary dies in between.
        let (topic, payload) = uplink(node, 0, &[2], healthy());
        bus.aggs[standby].handle_message(&topic, &payload, bus.now);
        bus.pump();
        bus.take_events();
        bus.kill(primary);
        let delivered: Vec<u64> = bus
            .take_events()
            .into_iter()
            .filter_map(|(by, e)| match e {
                Event::Delivered(d) if by.0 as usize == standby => Some(d.seq),
                _ => None,
            })
            .collect();
        assert_eq!(
            delivered,
            [2],
            "only what the old primary had not confirmed"
        );
    }

    #[test]
    fn duplicates_are_dropped_and_held_from_skips_what_the_node_gave_up() {
        let mut bus = Bus::new(1);
        bus.advance(Duration::from_secs(3));
        for (held_from, seqs) in [
            (0, vec![0, 1, 2]),
            (0, vec![1, 2, 3]),
            (10, vec![10, 11]),
            (10, vec![12]),
        ] {
            let (topic, payload) = uplink(3, held_from, &seqs, healthy());
            bus.publish(&topic, &payload);
        }
        bus.aggs[0].handle_timeout(bus.now + Duration::from_secs(1));
        let acks = collect_acks(&mut bus);
        assert_eq!(acks_for(&acks, 3), [13], "4..10 were given up by the node");
        let stats = bus.aggs[0].stats();
        assert_eq!((stats.ingested, stats.duplicates), (7, 2));
    }

    #[test]
    fn forged_misdirected_and_garbage_messages_are_rejected_not_delivered() {
        let mut bus = Bus::new(1);
        bus.advance(Duration::from_secs(3));
        bus.take_events();
        // Node 4's batch signed with node 5's key.
        let batch = Batch {
            presence: Presence::Monitoring,
            node: NodeId(4),
            held_from: 0,
            samples: vec![sample(4, 0, healthy())],
        };
        let p4 = Partitioning::default().partition_of(NodeId(4));
        let forged = Sealer::new(
            keys().derive(Principal::Node(NodeId(5))),
            Principal::Node(NodeId(4)),
            0,
        )
        .seal_to_vec(
            &Body::Batch(batch),
            &WireTopic::Data {
                partition: p4,
                node: NodeId(4),
            },
        )
        .unwrap();
        bus.publish(&TopicScheme::default().data(p4, NodeId(4)), &forged);
        // Node 4's genuine batch published on node 9's topic.
        let (_, genuine) = uplink(4, 0, &[0], healthy());
        let p9 = Partitioning::default().partition_of(NodeId(9));
        bus.publish(&TopicScheme::default().data(p9, NodeId(9)), &genuine);
        // Garbage.
        bus.publish(
            &TopicScheme::default().data(p4, NodeId(4)),
            b"\x01garbage-bytes-here",
        );
        bus.pump();
        let events = bus.take_events();
        let rejected = events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Rejected { .. }))
            .count();
        let delivered = events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Delivered(_)))
            .count();
        assert_eq!((rejected, delivered), (3, 0), "{events:?}");
        assert!(events.iter().any(|(_, e)| matches!(
            e,
            Event::Rejected {
                why: Rejection::Wire(WireError::BadTag(_)),
                ..
            }
        )));
        assert!(events.iter().any(|(_, e)| matches!(
            e,
            Event::Rejected {
                why: Rejection::Wire(WireError::BadTag(Principal::Node(NodeId(4)))),
                ..
            }
        )));
    }

    #[test]
    fn a_huge_foreign_topic_is_refused_and_kept_short_and_printable() {
        let mut bus = Bus::new(1);
        bus.advance(Duration::from_secs(3));
        bus.take_events();
        let p4 = Partitioning::default().partition_of(NodeId(4));
        // The last level of a node topic, 60,000 bytes long, with an
        // escape sequence that would clear a terminal.
        let topic = format!(
            "{}\x1b[2J{}",
            TopicScheme::default().data(p4, NodeId(4)),
            "9".repeat(60_000)
        );
        bus.publish(&topic, b"x");
        bus.pump();
        let events = bus.take_events();
        let shown = events
            .iter()
            .find_map(|(_, e)| match e {
                Event::Rejected {
                    why: why @ Rejection::UnknownTopic { .. },
                    ..
                } => Some(why.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("not refused as unknown_topic: {events:?}"));
        assert!(shown.len() < 200, "{} bytes kept", shown.len());
        assert!(!shown.contains('\x1b'), "{shown}");
        assert!(shown.contains("\\u{1b}[2J"), "{shown}");
        assert!(
            shown.contains(&format!("({} bytes)", topic.len())),
            "{shown}"
        );
    }

    fn replayed(events: &[(AggregatorId, Event)]) -> usize {
        events
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    Event::Rejected {
                        why: Rejection::Replayed { .. },
                        ..
                    }
                )
            })
            .count()
    }

    fn delivered(events: &[(AggregatorId, Event)]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Delivered(d) => Some(d.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_replayed_batch_is_refused_and_a_redelivered_one_changes_nothing() {
        let mut bus = Bus::new(1);
        bus.advance(Duration::from_secs(3));
        bus.take_events();
        let node = NodeId(4);
        let p = Partitioning::default().partition_of(node);
        let topic = TopicScheme::default().data(p, node);
        let wire_topic = WireTopic::Data { partition: p, node };
        let mut sealer = keys().sealer(Principal::Node(node), 0);
        let send = |sealer: &mut Sealer, seq: u64| {
            let batch = Batch {
                presence: Presence::Monitoring,
                node,
                held_from: seq,
                samples: vec![sample(4, seq, healthy())],
            };
            sealer
                .seal_to_vec(&Body::Batch(batch), &wire_topic)
                .unwrap()
        };
        let first = send(&mut sealer, 0);
        bus.publish(&topic, &first);
        bus.pump();
        assert_eq!(delivered(&bus.take_events()), vec![0]);
        // The broker delivers it again (QoS 1): a duplicate, not an attack.
        bus.publish(&topic, &first);
        bus.pump();
        let events = bus.take_events();
        assert_eq!((delivered(&events).len(), replayed(&events)), (0, 0));
        // Seventy messages later, the capture is older than the window.
        for seq in 1..=70 {
            let bytes = send(&mut sealer, seq);
            bus.publish(&topic, &bytes);
        }
        let last_of_epoch = send(&mut sealer, 71);
        bus.publish(&topic, &last_of_epoch);
        bus.pump();
        assert_eq!(delivered(&bus.take_events()).len(), 71);
        bus.publish(&topic, &first);
        bus.pump();
        let events = bus.take_events();
        assert_eq!((delivered(&events).len(), replayed(&events)), (0, 1));
        // The node reboots: its old epoch is over.
        sealer.start_epoch(1);
        let rebooted = send(&mut sealer, 72);
        bus.publish(&topic, &rebooted);
        bus.publish(&topic, &last_of_epoch);
        bus.pump();
        let events = bus.take_events();
        assert_eq!((delivered(&events), replayed(&events)), (vec![72], 1));
    }

    #[test]
    fn a_replayed_heartbeat_never_brings_a_dead_aggregator_back() {
        let mut bus = Bus::new(3);
        bus.advance(Duration::from_secs(3));
        let status = TopicScheme::default().status(AggregatorId(2));
        let captured = bus.published_on(&status);
        assert!(captured.len() >= 2, "heartbeats were sent");
        bus.kill(2);
        bus.advance(Duration::from_secs(5));
        let alive = |bus: &Bus| -> Vec<BTreeSet<AggregatorId>> {
            (0..2).map(|i| bus.aggs[i].live_view()).collect()
        };
        let before = alive(&bus);
        assert!(before.iter().all(|v| !v.contains(&AggregatorId(2))));
        bus.take_events();
        // The attacker plays the captured heartbeats back, again and again.
        for _ in 0..20 {
            for payload in &captured {
                bus.publish(&status, payload);
            }
            bus.advance(Duration::from_millis(500));
        }
        assert_eq!(alive(&bus), before, "membership never changed");
        for p in 0..Partitioning::default().count() {
            assert!(!bus.primary_of(PartitionId(p)).contains(&2));
        }
        let events = bus.take_events();
        // Each replayed copy refused by each of the two live aggregators.
        assert_eq!(replayed(&events), 2 * 20 * captured.len());
        // A forged status (another aggregator's key) is refused too.
        let forged = Sealer::new(
            keys().derive(Principal::Aggregator(AggregatorId(0))),
            Principal::Aggregator(AggregatorId(2)),
            0,
        )
        .seal_to_vec(
            &Body::Status(AggregatorStatus {
                aggregator: AggregatorId(2),
                incarnation: 0,
                beat: 1_000,
                state: AggregatorState::Alive,
                weight: 1,
                sent_at: bus.now,
            }),
            &WireTopic::Status {
                aggregator: AggregatorId(2),
            },
        )
        .unwrap();
        bus.publish(&status, &forged);
        bus.advance(Duration::from_secs(1));
        assert_eq!(alive(&bus), before);
    }

    #[test]
    fn a_captured_heartbeat_played_to_a_newcomer_is_stale() {
        let mut bus = Bus::new(3);
        bus.advance(Duration::from_secs(3));
        let status = TopicScheme::default().status(AggregatorId(2));
        let captured = bus.published_on(&status);
        assert!(!captured.is_empty());
        bus.kill(2);
        bus.advance(MAX_STATUS_AGE + Duration::from_secs(2));
        // An aggregator started after the kill never heard aggregator 2:
        // it has no newer status to order a replay against.
        let mut fresh =
            Aggregator::new(AggregatorConfig::new(AggregatorId(5), population()), keys());
        let _ = fresh.last_will();
        fresh.handle_connected(bus.now);
        while fresh.poll_output().is_some() {}
        for payload in &captured {
            fresh.handle_message(&status, payload, bus.now);
        }
        let mut stale = 0;
        while let Some(e) = fresh.poll_event() {
            if matches!(
                e,
                Event::Rejected {
                    why: Rejection::Stale { .. },
                    ..
                }
            ) {
                stale += 1;
            }
        }
        assert_eq!(stale, captured.len(), "every captured heartbeat is stale");
        fresh.handle_timeout(bus.now + Duration::from_secs(1));
        assert!(!fresh.live_view().contains(&AggregatorId(2)));
        // A current heartbeat still counts: aggregator 0's next one.
        let before = bus.wire.len();
        bus.advance(Duration::from_secs(2));
        let current: Vec<(String, Vec<u8>)> = bus.wire[before..]
            .iter()
            .filter(|(t, _)| *t == TopicScheme::default().status(AggregatorId(0)))
            .cloned()
            .collect();
        assert!(!current.is_empty());
        for (topic, payload) in &current {
            fresh.handle_message(topic, payload, bus.now);
        }
        assert!(
            fresh.live_view().contains(&AggregatorId(0)),
            "{:?}",
            fresh.live_view()
        );
    }

    #[test]
    fn acks_are_spread_over_the_interval_not_sent_in_one_burst() {
        let mut bus = Bus::new(1);
        bus.advance(Duration::from_secs(3));
        collect_acks(&mut bus);
        // One live node in every partition.
        let partitioning = Partitioning::default();
        let mut nodes_per_partition = BTreeMap::new();
        for n in 0..2000u32 {
            nodes_per_partition
                .entry(partitioning.partition_of(NodeId(n)))
                .or_insert(n);
        }
        assert_eq!(nodes_per_partition.len(), 64);
        for &n in nodes_per_partition.values() {
            let (topic, payload) = uplink(n, 0, &[0], healthy());
            bus.publish(&topic, &payload);
        }
        // Over one ack interval, in 5 ms steps: each step sends at most one
        // partition's batch, and every partition is acknowledged.
        let mut batches_per_step = Vec::new();
        let mut partitions = BTreeSet::new();
        for _ in 0..220 {
            bus.now = bus.now + Duration::from_millis(5);
            bus.aggs[0].handle_timeout(bus.now);
            let mut acks = 0;
            while let Some(out) = bus.aggs[0].poll_output() {
                if let Output::Publish { topic, .. } = out {
                    if topic.contains("/ack/") {
                        acks += 1;
                        partitions.insert(topic);
                    }
                }
            }
            batches_per_step.push(acks);
        }
        assert_eq!(
            partitions.len(),
            64,
            "every partition acknowledged within the interval"
        );
        assert!(
            batches_per_step.iter().all(|&b| b <= 1),
            "{batches_per_step:?}"
        );
    }

    #[test]
    fn a_cut_off_aggregator_blames_itself_not_its_nodes_or_peers() {
        let mut bus = Bus::new(2);
        bus.advance(Duration::from_secs(3));
        let start = bus.now;
        for step in 0..100u64 {
            bus.now = start + Duration::from_millis(100 * step);
            if step % 10 == 0 {
                for n in 0..20 {
                    let (topic, payload) = uplink(n, 0, &[step / 10], healthy());
                    bus.publish(&topic, &payload);
                }
            }
            for i in 0..2 {
                bus.aggs[i].handle_timeout(bus.now);
            }
            bus.pump();
        }
        bus.take_events();
        // Aggregator 0 stops receiving anything (a partition): no messages,
        // not even its own heartbeats, reach it; it keeps its connection
        // (and the broker its subscriptions, restored when it heals).
        let subscribed = bus.subs[0].clone();
        bus.subs[0].clear();
        // The nodes carry on; aggregator 1 still hears them.
        let cut_at = bus.now;
        for step in 1..=200u64 {
            bus.now = cut_at + Duration::from_millis(100 * step);
            if step % 10 == 0 {
                for n in 0..20 {
                    let (topic, payload) = uplink(n, 0, &[10 + step / 10], healthy());
                    bus.publish(&topic, &payload);
                }
            }
            for i in 0..2 {
                bus.aggs[i].handle_timeout(bus.now);
            }
            // Aggregator 0 hears nothing: keep re-clearing what it re-subscribes.
            bus.pump();
            bus.subs[0].clear();
        }
        let alerts: Vec<(AggregatorId, AlertKind)> = bus
            .take_events()
            .into_iter()
            .filter_map(|(by, e)| match e {
                Event::Alert(a) => Some((by, a.kind)),
                _ => None,
            })
            .collect();
        // Aggregator 0 says it is cut off, once, and accuses no node or peer;
        // aggregator 1 sees its peer's heartbeats stop (that is true) but no
        // node, which all kept talking.
        let from_0: Vec<_> = alerts
            .iter()
            .filter(|(by, _)| *by == AggregatorId(0))
            .collect();
        assert_eq!(from_0.len(), 1, "{alerts:?}");
        assert!(matches!(from_0[0].1, AlertKind::AggregatorIsolated { .. }));
        assert!(
            !alerts
                .iter()
                .any(|(_, k)| matches!(k, AlertKind::NodeDown { .. })),
            "{alerts:?}"
        );
        // The partition heals: aggregator 0 hears itself again and says so,
        // clearing its isolation (its "up").
        bus.subs[0] = subscribed;
        let healed_at = bus.now;
        for step in 1..=30u64 {
            bus.now = healed_at + Duration::from_millis(100 * step);
            for i in 0..2 {
                bus.aggs[i].handle_timeout(bus.now);
            }
            bus.pump();
        }
        let cleared = bus.take_events().into_iter().any(|(by, e)| {
            by == AggregatorId(0)
                && matches!(
                    e,
                    Event::Alert(Alert {
                        kind: AlertKind::AggregatorIsolated { .. },
                        cleared_at: Some(_),
                        ..
                    })
                )
        });
        assert!(cleared, "a healed isolation raises its up");
    }

    fn batch_with(
        node: u32,
        held_from: u64,
        seqs: &[u64],
        presence: Presence,
    ) -> (String, Vec<u8>) {
        let batch = Batch {
            presence,
            node: NodeId(node),
            held_from,
            samples: seqs.iter().map(|&s| sample(node, s, healthy())).collect(),
        };
        let p = Partitioning::default().partition_of(NodeId(node));
        (
            TopicScheme::default().data(p, NodeId(node)),
            seal_batch(batch),
        )
    }

    fn kinds(events: &[(AggregatorId, Event)]) -> Vec<(&'static str, Option<u32>, bool)> {
        events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Alert(a) => {
                    Some((a.kind.name(), a.node().map(|n| n.0), a.cleared_at.is_some()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_node_that_says_goodbye_is_left_never_down_and_a_silent_one_is_down() {
        let mut bus = Bus::new(2);
        bus.advance(Duration::from_secs(3));
        let start = bus.now;
        for s in 0..10u64 {
            bus.now = start + Duration::from_secs(s);
            for node in [4, 5] {
                let (topic, payload) = uplink(node, 0, &[s], healthy());
                bus.publish(&topic, &payload);
            }
            bus.pump();
        }
        // Node 4 says goodbye; node 5 just stops.
        let (topic, payload) = batch_with(4, 10, &[], Presence::Leaving);
        bus.publish(&topic, &payload);
        bus.pump();
        bus.advance(Duration::from_secs(20));
        let seen = kinds(&bus.take_events());
        assert!(seen.contains(&("node_left", Some(4), false)), "{seen:?}");
        assert!(seen.contains(&("node_down", Some(5), false)), "{seen:?}");
        assert!(
            !seen
                .iter()
                .any(|(k, n, _)| *k == "node_down" && *n == Some(4)),
            "{seen:?}"
        );
        assert_eq!(
            seen.iter()
                .filter(|(k, _, c)| *k == "node_left" && !c)
                .count(),
            1,
            "once"
        );
        // An empty bed keeps its node alive with heartbeats: never down.
        let hb_start = bus.now;
        for s in 0..30u64 {
            bus.now = hb_start + Duration::from_secs(s);
            let (topic, payload) = batch_with(6, 0, &[], Presence::BedEmpty);
            bus.publish(&topic, &payload);
            for i in 0..2 {
                bus.aggs[i].handle_timeout(bus.now);
            }
            bus.pump();
        }
        let seen = kinds(&bus.take_events());
        assert!(!seen.iter().any(|(_, n, _)| *n == Some(6)), "{seen:?}");
    }

    #[test]
    fn every_alert_is_published_on_the_alerts_topic() {
        let mut bus = Bus::new(1);
        bus.advance(Duration::from_secs(3));
        for s in 0..5u64 {
            let (topic, payload) = uplink(9, 0, &[s], healthy());
            bus.publish(&topic, &payload);
        }
        bus.pump();
        bus.take_events();
        // Silence: node 9 goes down. Catch what the aggregator publishes.
        let mut notices = Vec::new();
        let end = bus.now + Duration::from_secs(10);
        while bus.now < end {
            bus.now = bus.now + Duration::from_millis(50);
            bus.aggs[0].handle_timeout(bus.now);
            let mut published = Vec::new();
            while let Some(out) = bus.aggs[0].poll_output() {
                if let Output::Publish { topic, payload } = out {
                    if topic == TopicScheme::default().alert(AggregatorId(0)) {
                        match decode(&topic, &payload, &keys()) {
                            Ok(Body::Alert(n)) => notices.push(n),
                            other => panic!("not an alert notice: {other:?}"),
                        }
                    }
                    published.push((topic, payload));
                }
            }
            for (topic, payload) in published {
                bus.publish(&topic, &payload);
            }
        }
        assert_eq!(notices.len(), 1, "{notices:?}");
        let n = &notices[0];
        assert_eq!(n.kind, "node_down");
        assert_eq!(
            n.scope,
            Scope::Node {
                node: NodeId(9),
                ward: 0
            }
        );
        assert!(
            n.statistic.unwrap() >= n.threshold.unwrap(),
            "φ over its threshold"
        );
        assert!(n.summary.contains("node 9"), "{}", n.summary);
    }

    #[test]
    fn every_aggregator_reports_a_ward_and_its_owner_alone_alerts() {
        let bus_config = |c: &mut AggregatorConfig| {
            c.detection.ward.bucket = Duration::from_secs(60);
            c.detection.ward.grace = Duration::from_secs(2);
            c.detection.ward.assemble = Duration::from_secs(2);
            c.detection.ward.detectors = vec![crate::detect::WardDetectorSpec::new(
                crate::detect::Method::C1,
                crate::detect::WardSeries::Febrile,
            )];
        };
        let mut bus = Bus::with(3, bus_config);
        bus.advance(Duration::from_secs(3));
        bus.take_events();
        // Ward 1 (nodes 25–49): calm, then ten patients run a fever that
        // climbs 0.2 °C a minute (as fevers climb: a jump would be a
        // sensor) from minute 4. Each node sends one sample a minute.
        let start = bus.now;
        for minute in 0..16u64 {
            for node in 25..50u32 {
                let mut v = healthy();
                if node < 35 && minute > 4 {
                    let t = (370 + 2 * (minute as i16 - 4)).min(392);
                    v.temp_decicelsius = Some(t);
                }
                let batch = Batch {
                    presence: Presence::Monitoring,
                    node: NodeId(node),
                    held_from: 0,
                    samples: vec![Sample {
                        time: start + Duration::from_secs(60 * minute),
                        ..sample(node, minute, v)
                    }],
                };
                let p = Partitioning::default().partition_of(NodeId(node));
                bus.publish(
                    &TopicScheme::default().data(p, NodeId(node)),
                    &seal_batch(batch),
                );
            }
            bus.advance(Duration::from_secs(60));
        }
        bus.advance(Duration::from_secs(10));
        let events = bus.take_events();
        let buckets: Vec<(AggregatorId, WardBucket)> = events
            .iter()
            .filter_map(|(by, e)| match e {
                Event::WardBucket(b) if b.ward == 1 => Some((*by, b.clone())),
                _ => None,
            })
            .collect();
        assert!(buckets.len() >= 12, "{}", buckets.len());
        let owner = buckets[0].0;
        assert!(
            buckets.iter().all(|(by, _)| *by == owner),
            "one owner tells the observer"
        );
        assert!(
            buckets
                .iter()
                .all(|(_, b)| b.complete && b.counts.unwrap().census == 25)
        );
        let febrile: Vec<u32> = buckets
            .iter()
            .map(|(_, b)| b.counts.unwrap().febrile)
            .collect();
        assert!(
            febrile.contains(&10),
            "ten febrile patients counted once each: {febrile:?}"
        );
        let ward_alerts: Vec<_> = events
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    Event::Alert(Alert {
                        kind: AlertKind::WardAnomaly { .. },
                        cleared_at: None,
                        ..
                    })
                )
            })
            .collect();
        assert_eq!(ward_alerts.len(), 1, "{ward_alerts:?}");
        assert_eq!(ward_alerts[0].0, owner);
    }

    #[test]
    fn a_silent_node_is_suspected_before_it_is_declared_down() {
        let mut bus = Bus::new(1);
        bus.advance(Duration::from_secs(3));
        let start = bus.now;
        for s in 0..20u64 {
            bus.now = start + Duration::from_secs(s);
            for node in [2, 3] {
                let (topic, payload) = uplink(node, 0, &[s], healthy());
                bus.publish(&topic, &payload);
            }
            bus.aggs[0].handle_timeout(bus.now);
            bus.pump();
        }
        let suspected = |bus: &Bus| bus.aggs[0].suspected_nodes(bus.now, 3.0);
        assert_eq!(suspected(&bus), [], "both talking: nobody suspected");
        // Node 3 carries on; node 2 falls silent.
        let mut first_suspected = None;
        let mut down_at = None;
        for s in 20..40u64 {
            bus.now = start + Duration::from_secs(s);
            let (topic, payload) = uplink(3, 0, &[s], healthy());
            bus.publish(&topic, &payload);
            bus.aggs[0].handle_timeout(bus.now);
            bus.pump();
            let now_suspected = suspected(&bus);
            assert!(
                !now_suspected.contains(&NodeId(3)),
                "a talking node is never suspected"
            );
            if now_suspected.contains(&NodeId(2)) && first_suspected.is_none() {
                first_suspected = Some(s);
                assert_eq!(
                    bus.aggs[0].stats().nodes_down,
                    0,
                    "suspected comes before down"
                );
            }
            if bus.aggs[0].stats().nodes_down == 1 && down_at.is_none() {
                down_at = Some(s);
            }
        }
        // Last heard at 19 s: suspected once a second sample is missing,
        // down once the acceptable pause (3 s) is spent too.
        assert_eq!(
            first_suspected,
            Some(21),
            "suspected after two missed samples"
        );
        assert_eq!(
            down_at,
            Some(24),
            "declared down after the acceptable pause"
        );
        assert_eq!(
            suspected(&bus),
            [],
            "a node declared down is no longer merely suspected"
        );
    }

    #[test]
    fn a_silent_node_is_reported_down_once_and_up_when_it_returns() {
        let mut bus = Bus::new(1);
        bus.advance(Duration::from_secs(3));
        let start = bus.now;
        for s in 0..20u64 {
            bus.now = start + Duration::from_secs(s);
            let (topic, payload) = uplink(2, 0, &[s], healthy());
            bus.publish(&topic, &payload);
            bus.aggs[0].handle_timeout(bus.now);
        }
        bus.take_events();
        bus.advance(Duration::from_secs(10));
        let down: Vec<_> = bus
            .take_events()
            .into_iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    Event::Alert(Alert {
                        kind: AlertKind::NodeDown { .. },
                        ..
                    })
                )
            })
            .collect();
        assert_eq!(down.len(), 1);
        let Event::Alert(alert) = &down[0].1 else {
            unreachable!()
        };
        let detected_after = alert
            .raised_at
            .saturating_duration_since(start + Duration::from_secs(19));
        assert!(
            detected_after >= Duration::from_secs(4) && detected_after <= Duration::from_secs(6),
            "{detected_after:?}"
        );
        let (topic, payload) = uplink(2, 0, &[20], healthy());
        bus.publish(&topic, &payload);
        bus.pump();
        // Heard again: the node-down alert clears.
        assert!(bus.take_events().iter().any(|(_, e)| matches!(
            e,
            Event::Alert(Alert {
                kind: AlertKind::NodeDown { .. },
                cleared_at: Some(_),
                ..
            })
        )));
    }

    #[test]
    fn patient_risk_alerts_need_persistence_and_fire_once_per_escalation() {
        // The vitals below jump between healthy and sick from one reading to
        // the next, which the sensor checks would rightly call spikes: this
        // test is about NEWS2 persistence, so they are turned off.
        let mut bus = Bus::with(1, |c| {
            c.detection.sensor.hampel_sigmas = 1e9;
            c.detection.sensor.max_step = [(1e9, 0.0); 6];
            c.detection.patient.risk_persistence = Duration::from_secs(60);
        });
        bus.advance(Duration::from_secs(3));
        bus.take_events();
        let mut sick = healthy();
        sick.resp_rate = Some(26);
        sick.systolic = Some(88);
        sick.consciousness = Some(Acvpu::Confusion);
        // Samples 20 s apart (sample time = seq seconds). One sick reading
        // between healthy ones: no alert; 60 s of sickness: one alert, not
        // repeated while it lasts, and not re-armed by one good reading.
        let h = healthy();
        let seq_vitals = [
            h, h, sick, h, sick, sick, sick, sick, sick, h, sick, sick, sick, sick,
        ];
        for (i, v) in seq_vitals.iter().enumerate() {
            let (topic, payload) = uplink(1, 0, &[20 * i as u64], *v);
            bus.publish(&topic, &payload);
        }
        bus.pump();
        let alerts: Vec<_> = bus
            .take_events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Alert(Alert {
                    kind: AlertKind::PatientRisk { band, news2 },
                    evidence: Some(evidence),
                    cleared_at: None,
                    ..
                }) => Some((band, news2, evidence.window.1)),
                _ => None,
            })
            .collect();
        // One band and a score in it: RR 26 (3) + SBP 88 (3) + confusion (3).
        assert_eq!(
            alerts,
            [(Risk::High, 9, T0 + Duration::from_secs(20 * 7))],
            "after 60 s of high scores, once"
        );
    }

    #[test]
    fn a_real_node_and_two_aggregators_lose_nothing_through_a_failover() {
        let mut bus = Bus::new(2);
        bus.advance(Duration::from_secs(3));
        let id = NodeId(11);
        let p = Partitioning::default().partition_of(id);
        let mut node = Node::new(
            id,
            p,
            NodeConfig::default(),
            9,
            keys().node_credentials(id),
            bus.now,
        );
        let topics = TopicScheme::default();
        let mut delivered = SeqSet::new();
        let end = bus.now + Duration::from_secs(60);
        let mut killed = false;
        while bus.now < end {
            bus.now = bus.now + Duration::from_millis(100);
            if !killed && bus.now > end - Duration::from_secs(30) {
                let primary = bus.primary_of(p)[0];
                bus.kill(primary);
                killed = true;
            }
            node.handle_timeout(bus.now);
            while let Some(a) = node.poll_link() {
                if a == LinkAction::Connect {
                    node.handle_connected(bus.now);
                }
            }
            while let Some(t) = node.poll_transmit(bus.now) {
                bus.publish(&topics.data(p, id), &t.payload);
            }
            for i in 0..bus.aggs.len() {
                if bus.up[i] {
                    bus.aggs[i].handle_timeout(bus.now);
                }
            }
            for (topic, payload) in collect_acks(&mut bus) {
                if topic == topics.ack(p) {
                    if let Ok(Body::Ack(a)) = decode(&topic, &payload, &keys()) {
                        if let Some(ack) = a.acks.iter().find(|x| x.node == id) {
                            node.handle_ack(ack, bus.now);
                        }
                    }
                }
            }
            bus.pump();
            for (_, e) in bus.take_events() {
                if let Event::Delivered(d) = e {
                    delivered.insert(d.seq);
                }
            }
        }
        let produced = node.next_seq();
        assert!(produced >= 59);
        let buffered: SeqSet = node.buffered().map(|s| s.seq).collect();
        // Every sample was delivered or is still held by the node: nothing
        // vanished in the failover.
        let mut accounted = delivered.clone();
        for s in buffered.iter() {
            accounted.insert(s);
        }
        assert_eq!(accounted.count_in(0..produced), produced);
        assert!(
            buffered.len() <= 2,
            "acks kept flowing after the failover: {} buffered",
            buffered.len()
        );
    }
}

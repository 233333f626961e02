//! Actions: what `[[load]]` and `[[event]]` entries, `vitalmesh inject` and
//! the dashboard's keys can do to a running mesh. One vocabulary, one
//! validator (`parse_entry`, reached through [`crate::load`] and
//! [`crate::parse_injection`]), so a file, a command line and a key press
//! mean exactly the same thing.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use vitalmesh_firmware::{FaultMode, VitalSign};

use crate::ScenarioError;
use crate::duration;
use crate::error::Source;
use crate::raw::RawEntry;

/// Which nodes an action applies to. Ward, then explicit ids, narrow the
/// scope; `pick` chooses among them (reproducibly, from the seed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSelector {
    /// Only this ward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ward: Option<u16>,
    /// Only these node ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<u32>>,
    /// How many of the scope.
    pub pick: Pick,
}

/// How many nodes of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    /// Every node in scope.
    All,
    /// This many, chosen at random.
    Count(u32),
    /// This share, chosen at random (at least one).
    Fraction(f64),
}

impl NodeSelector {
    /// Every node.
    pub const fn all() -> Self {
        Self {
            ward: None,
            nodes: None,
            pick: Pick::All,
        }
    }
}

impl fmt::Display for NodeSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pick {
            Pick::All => f.write_str("all nodes")?,
            Pick::Count(n) => write!(f, "{n} node{}", if n == 1 { "" } else { "s" })?,
            Pick::Fraction(x) => write!(f, "{:.0}% of nodes", x * 100.0)?,
        }
        if let Some(nodes) = &self.nodes {
            write!(f, " of {nodes:?}")?;
        }
        if let Some(w) = self.ward {
            write!(f, " in ward {w}")?;
        }
        Ok(())
    }
}

/// What a network fault applies to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Nodes.
    Nodes(NodeSelector),
    /// One aggregator's connection.
    Aggregator(u16),
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nodes(s) => s.fmt(f),
            Self::Aggregator(a) => write!(f, "aggregator {a}"),
        }
    }
}

/// Misbehaving clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RogueKind {
    /// Random bytes published on node topics.
    Garbage,
    /// Payloads larger than any valid message (and some beyond the broker's limit).
    Oversized,
    /// Well-formed batches claiming to be other nodes, without their keys.
    Impersonate,
    /// Genuine node messages captured and published again.
    Replay,
    /// Many connections at once: valid, invalid ids, and never-finished handshakes.
    ConnectFlood,
    /// Logins with wrong passwords under a real node's client id, in a loop.
    BadCredentials,
    /// Acks for real nodes, everything acknowledged, on their ack topics,
    /// without an aggregator's key or the nodes' ack keys.
    ForgedAcks,
    /// Garbage on node topics at QoS 1: the broker must acknowledge and
    /// route every one.
    Qos1Flood,
    /// Subscribers to every node topic that never read their sockets, held
    /// for 20 s (`connections` of them).
    SlowSubscriber,
    /// Connections that send half a packet and then nothing, held for 20 s
    /// (`connections` of them): half a CONNECT, or a login and then half a
    /// PUBLISH.
    HalfPackets,
    /// Publishes on node topics whose last level is thousands of bytes
    /// long, up to MQTT's 65,535-byte limit.
    OversizedTopics,
}

impl RogueKind {
    /// Every kind: its name in a scenario, and how a timeline line calls
    /// the client (one table, so a new kind is one line here and its code
    /// in the mesh's `rogue` module).
    const TABLE: &'static [(Self, &'static str, &'static str)] = &[
        (Self::Garbage, "garbage", "garbage"),
        (Self::Oversized, "oversized", "oversized"),
        (Self::Impersonate, "impersonate", "impersonating"),
        (Self::Replay, "replay", "replay"),
        (Self::ConnectFlood, "connect_flood", "connect-flood"),
        (Self::BadCredentials, "bad_credentials", "bad-credentials"),
        (Self::ForgedAcks, "forged_acks", "ack-forging"),
        (Self::Qos1Flood, "qos1_flood", "QoS 1 flooding"),
        (Self::SlowSubscriber, "slow_subscriber", "slow-subscriber"),
        (Self::HalfPackets, "half_packets", "half-packet"),
        (Self::OversizedTopics, "oversized_topics", "oversized-topic"),
    ];

    fn parse(s: &str) -> Option<Self> {
        Self::TABLE
            .iter()
            .find(|(_, name, _)| *name == s)
            .map(|(k, _, _)| *k)
    }

    /// The names a scenario may use, as an error message lists them.
    fn names() -> String {
        let names: Vec<String> = Self::TABLE
            .iter()
            .map(|(_, name, _)| format!("'{name}'"))
            .collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        }
    }

    /// How a timeline line calls a client of this kind.
    fn adjective(self) -> &'static str {
        Self::TABLE
            .iter()
            .find(|(k, _, _)| *k == self)
            .map_or("rogue", |(_, _, adjective)| adjective)
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&duration::format(*d))
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&duration::format(*d)),
        None => s.serialize_none(),
    }
}

/// Something done to the mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Start `count` more nodes (all remaining if `None`) over `over`.
    Ramp {
        /// How many.
        count: Option<u32>,
        /// Spread over this long.
        #[serde(serialize_with = "ser_duration")]
        over: Duration,
    },
    /// Nodes power off cleanly after delivering their backlog.
    Leave {
        /// Which.
        target: NodeSelector,
    },
    /// Nodes change their sample interval.
    SampleRate {
        /// Which.
        target: NodeSelector,
        /// New interval.
        #[serde(serialize_with = "ser_duration")]
        interval: Duration,
    },
    /// Nodes sample faster for a while.
    Burst {
        /// Which.
        target: NodeSelector,
        /// Interval during the burst.
        #[serde(serialize_with = "ser_duration")]
        interval: Duration,
        /// How long.
        #[serde(rename = "for", serialize_with = "ser_duration")]
        for_: Duration,
    },
    /// Nodes crash: RAM buffer lost, socket dropped.
    KillNodes {
        /// Which.
        target: NodeSelector,
    },
    /// Crashed (or flat) nodes power on with a new connection.
    RestartNodes {
        /// Which.
        target: NodeSelector,
    },
    /// Nodes reboot cleanly (buffer kept).
    RebootNodes {
        /// Which.
        target: NodeSelector,
    },
    /// Gateways crash: what they hold is lost, their nodes lose their
    /// association and buffer until the gateway is back. The selector
    /// picks gateways (`ward`, `count`, `fraction`), not nodes.
    KillGateways {
        /// Which gateways.
        target: NodeSelector,
    },
    /// Crashed gateways boot again; their nodes rejoin at once.
    RestartGateways {
        /// Which gateways (among those down).
        target: NodeSelector,
    },
    /// An aggregator dies; its last will fires.
    KillAggregator {
        /// Which.
        aggregator: u16,
    },
    /// A killed aggregator starts again.
    RestartAggregator {
        /// Which.
        aggregator: u16,
    },
    /// Aggregators join the running mesh (the lowest free slots), with a
    /// capacity weight; partitions move to them in proportion.
    AddAggregator {
        /// How many.
        count: u32,
        /// Capacity weight of each.
        weight: u16,
    },
    /// Aggregators leave gracefully: they hand their partitions over and
    /// go. `aggregator`, or the `count` highest-numbered running ones.
    RemoveAggregator {
        /// Which one, if named.
        aggregator: Option<u16>,
        /// Otherwise how many.
        count: u32,
    },
    /// The broker is killed and started again on the same ports.
    RestartBroker,
    /// Bytes stop in both directions.
    Partition {
        /// Which connections.
        group: Group,
        /// How long.
        #[serde(rename = "for", serialize_with = "ser_duration")]
        for_: Duration,
    },
    /// Extra one-way latency (each direction) with jitter.
    Latency {
        /// Which connections.
        group: Group,
        /// Added delay per direction.
        #[serde(serialize_with = "ser_duration")]
        latency: Duration,
        /// Uniform jitter (±).
        #[serde(serialize_with = "ser_duration")]
        jitter: Duration,
        /// How long.
        #[serde(rename = "for", serialize_with = "ser_duration")]
        for_: Duration,
    },
    /// A share of TCP segments is lost (seen by the application as
    /// retransmission delay).
    PacketLoss {
        /// Which connections.
        group: Group,
        /// Share lost, 0–1.
        share: f64,
        /// How long.
        #[serde(rename = "for", serialize_with = "ser_duration")]
        for_: Duration,
    },
    /// A sensor fault on some nodes.
    SensorFault {
        /// Which.
        target: NodeSelector,
        /// Which sign (all if `None`).
        sign: Option<VitalSign>,
        /// What goes wrong.
        mode: FaultMode,
        /// How long (until repaired if `None`).
        #[serde(rename = "for", serialize_with = "ser_opt_duration")]
        for_: Option<Duration>,
    },
    /// Fevers spread through a ward.
    Outbreak {
        /// Which ward.
        ward: u16,
        /// Share of the ward infected.
        attack_rate: f64,
        /// Median time from the event to a patient's onset.
        #[serde(serialize_with = "ser_duration")]
        onset_median: Duration,
        /// Lognormal σ of onset times (spread of the epidemic curve).
        onset_spread: f64,
    },
    /// Patients start to deteriorate.
    Deterioration {
        /// Which.
        target: NodeSelector,
    },
    /// A misbehaving client.
    Rogue {
        /// What it does.
        kind: RogueKind,
        /// Messages to send (message kinds).
        messages: u32,
        /// Connections to open (connect flood).
        connections: u32,
        /// Per second.
        rate: f64,
    },
}

impl Action {
    /// The action's name as written in files.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ramp { .. } => "ramp",
            Self::Leave { .. } => "leave",
            Self::SampleRate { .. } => "sample_rate",
            Self::Burst { .. } => "burst",
            Self::KillNodes { .. } => "kill_nodes",
            Self::RestartNodes { .. } => "restart_nodes",
            Self::RebootNodes { .. } => "reboot_nodes",
            Self::KillGateways { .. } => "kill_gateways",
            Self::RestartGateways { .. } => "restart_gateways",
            Self::KillAggregator { .. } => "kill_aggregator",
            Self::RestartAggregator { .. } => "restart_aggregator",
            Self::AddAggregator { .. } => "add_aggregator",
            Self::RemoveAggregator { .. } => "remove_aggregator",
            Self::RestartBroker => "restart_broker",
            Self::Partition { .. } => "partition",
            Self::Latency { .. } => "latency",
            Self::PacketLoss { .. } => "packet_loss",
            Self::SensorFault { .. } => "sensor_fault",
            Self::Outbreak { .. } => "outbreak",
            Self::Deterioration { .. } => "deterioration",
            Self::Rogue { .. } => "rogue",
        }
    }
}

impl Action {
    /// The ward an action names, if it names one (for the timeline and for
    /// scoring ward-level detectors).
    pub fn ward(&self) -> Option<u16> {
        match self {
            Self::Leave { target }
            | Self::SampleRate { target, .. }
            | Self::Burst { target, .. }
            | Self::KillNodes { target }
            | Self::RebootNodes { target }
            | Self::RestartNodes { target }
            | Self::KillGateways { target }
            | Self::RestartGateways { target }
            | Self::Deterioration { target }
            | Self::SensorFault { target, .. } => target.ward,
            Self::Partition {
                group: Group::Nodes(t),
                ..
            }
            | Self::Latency {
                group: Group::Nodes(t),
                ..
            }
            | Self::PacketLoss {
                group: Group::Nodes(t),
                ..
            } => t.ward,
            Self::Outbreak { ward, .. } => Some(*ward),
            _ => None,
        }
    }

    /// Whether the nodes this action touches may fall silent or lose their
    /// connection because of it: a node-down report for such a node is a
    /// true positive, for any other node a false alarm. This is the ground
    /// truth the node-down detector is scored against.
    ///
    /// Latency and packet loss count: a 300 ms link with 3.2 s
    /// retransmission stalls can look like a dead node to φ-accrual, and
    /// the alarm is then about the network the action degraded.
    pub fn silences_nodes(&self) -> bool {
        matches!(
            self,
            Self::Leave { .. }
                | Self::KillNodes { .. }
                | Self::RebootNodes { .. }
                | Self::KillGateways { .. }
                | Self::Partition {
                    group: Group::Nodes(_),
                    ..
                }
                | Self::Latency {
                    group: Group::Nodes(_),
                    ..
                }
                | Self::PacketLoss {
                    group: Group::Nodes(_),
                    ..
                }
                | Self::RestartBroker
        )
    }

    /// Why the virtual-time driver cannot model this action, if it cannot.
    /// Such an action is refused when a scenario is checked for a virtual
    /// run, never silently skipped.
    pub fn not_modelled_in_virtual_time(&self) -> Option<&'static str> {
        match self {
            Self::Rogue { .. } => Some(
                "rogue clients attack a real broker's sockets and parser, which virtual time does not model; run this scenario without --virtual",
            ),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: &Duration| duration::format(*d);
        match self {
            Self::Ramp {
                count: Some(n),
                over,
            } => write!(f, "start {n} nodes over {}", d(over)),
            Self::Ramp { count: None, over } => {
                write!(f, "start the remaining nodes over {}", d(over))
            }
            Self::Leave { target } => write!(f, "{target} leave"),
            Self::SampleRate { target, interval } => {
                write!(f, "{target} sample every {}", d(interval))
            }
            Self::Burst {
                target,
                interval,
                for_,
            } => write!(f, "{target} sample every {} for {}", d(interval), d(for_)),
            Self::KillNodes { target } => write!(f, "kill {target}"),
            Self::RestartNodes { target } => write!(f, "restart {target}"),
            Self::RebootNodes { target } => write!(f, "reboot {target}"),
            Self::KillGateways { target } => write!(f, "kill {}", GatewayPick(target)),
            Self::RestartGateways { target } => write!(f, "restart {}", GatewayPick(target)),
            Self::KillAggregator { aggregator } => write!(f, "kill aggregator {aggregator}"),
            Self::RestartAggregator { aggregator } => write!(f, "restart aggregator {aggregator}"),
            Self::AddAggregator { count, weight } => write!(
                f,
                "add {count} aggregator{} of weight {weight}",
                if *count == 1 { "" } else { "s" }
            ),
            Self::RemoveAggregator {
                aggregator: Some(a),
                ..
            } => write!(f, "remove aggregator {a}"),
            Self::RemoveAggregator { count, .. } => write!(
                f,
                "remove {count} aggregator{}",
                if *count == 1 { "" } else { "s" }
            ),
            Self::RestartBroker => f.write_str("restart the broker"),
            Self::Partition { group, for_ } => write!(f, "partition {group} for {}", d(for_)),
            Self::Latency {
                group,
                latency,
                jitter,
                for_,
            } => {
                write!(
                    f,
                    "add {} ±{} latency to {group} for {}",
                    d(latency),
                    d(jitter),
                    d(for_)
                )
            }
            Self::PacketLoss { group, share, for_ } => {
                write!(
                    f,
                    "lose {:.1}% of packets of {group} for {}",
                    share * 100.0,
                    d(for_)
                )
            }
            Self::SensorFault {
                target,
                sign,
                mode,
                for_,
            } => {
                let mode = match mode {
                    FaultMode::StuckAt { .. } => "stuck-at",
                    FaultMode::Drift { .. } => "drift",
                    FaultMode::Spike { .. } => "spike",
                    FaultMode::Dropout { .. } => "dropout",
                    FaultMode::Noise { .. } => "noise",
                };
                write!(
                    f,
                    "{mode} fault on {} of {target}",
                    sign.map_or("every sign", VitalSign::name)
                )?;
                if let Some(t) = for_ {
                    write!(f, " for {}", d(t))?;
                }
                Ok(())
            }
            Self::Outbreak {
                ward,
                attack_rate,
                onset_median,
                ..
            } => write!(
                f,
                "fever outbreak in ward {ward}: {:.0}% attack rate, median onset {}",
                attack_rate * 100.0,
                d(onset_median)
            ),
            Self::Deterioration { target } => write!(f, "{target} start to deteriorate"),
            Self::Rogue {
                kind,
                messages,
                connections,
                rate,
            } => match kind {
                RogueKind::ConnectFlood => write!(
                    f,
                    "rogue connect flood: {connections} connections at {rate}/s"
                ),
                RogueKind::BadCredentials => write!(
                    f,
                    "rogue logins with bad credentials: {connections} at {rate}/s"
                ),
                RogueKind::SlowSubscriber => write!(
                    f,
                    "rogue subscribers that never read: {connections}, for 20s"
                ),
                RogueKind::HalfPackets => write!(
                    f,
                    "rogue connections that send half a packet: {connections}, for 20s"
                ),
                other => write!(
                    f,
                    "rogue {} client: {messages} messages at {rate}/s",
                    other.adjective()
                ),
            },
        }
    }
}

/// A selector that picks gateways, as people say it.
struct GatewayPick<'a>(&'a NodeSelector);

impl fmt::Display for GatewayPick<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.pick {
            Pick::All => f.write_str("all gateways")?,
            Pick::Count(n) => write!(f, "{n} gateway{}", if n == 1 { "" } else { "s" })?,
            Pick::Fraction(x) => write!(f, "{:.0}% of gateways", x * 100.0)?,
        }
        if let Some(w) = self.0.ward {
            write!(f, " in ward {w}")?;
        }
        Ok(())
    }
}

/// What the validator knows about the mesh an action will run in.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wards.
    pub wards: u16,
    /// Nodes per ward.
    pub nodes_per_ward: u32,
    /// Aggregators.
    pub aggregators: u16,
    /// Whether the broker is external (cannot be restarted).
    pub external_broker: bool,
    /// Gateways per ward (0: every node is direct).
    pub gateways_per_ward: u32,
}

impl Limits {
    fn nodes(&self) -> u32 {
        u32::from(self.wards) * self.nodes_per_ward
    }
}

/// Where an entry comes from, which decides the actions it may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Load,
    Event,
    Inject,
}

const LOAD_ACTIONS: &[&str] = &["ramp", "leave", "sample_rate", "burst"];
const EVENT_ACTIONS: &[&str] = &[
    "kill_nodes",
    "restart_nodes",
    "reboot_nodes",
    "kill_gateways",
    "restart_gateways",
    "kill_aggregator",
    "restart_aggregator",
    "add_aggregator",
    "remove_aggregator",
    "restart_broker",
    "partition",
    "latency",
    "packet_loss",
    "sensor_fault",
    "outbreak",
    "deterioration",
    "rogue",
];

const SELECTOR: &[&str] = &["ward", "count", "fraction", "nodes"];

/// Fields each action may use (beyond `at` and `action`).
fn allowed(action: &str) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = match action {
        "ramp" => vec!["count", "over"],
        "leave" | "kill_nodes" | "restart_nodes" | "reboot_nodes" | "deterioration" => vec![],
        "sample_rate" => vec!["interval"],
        "burst" => vec!["interval", "for"],
        "kill_aggregator" | "restart_aggregator" => vec!["aggregator"],
        "add_aggregator" => vec!["count", "weight"],
        "remove_aggregator" => vec!["aggregator", "count"],
        "kill_gateways" | "restart_gateways" => vec!["ward", "count", "fraction"],
        "restart_broker" => vec![],
        "partition" => vec!["aggregator", "for"],
        "latency" => vec!["aggregator", "latency", "jitter", "for"],
        "packet_loss" => vec!["aggregator", "share", "for"],
        "sensor_fault" => vec![
            "sign",
            "mode",
            "value",
            "per_hour",
            "probability",
            "magnitude",
            "multiplier",
            "for",
        ],
        "outbreak" => vec!["ward", "attack_rate", "onset_median", "onset_spread"],
        "rogue" => vec!["kind", "messages", "connections", "rate"],
        _ => vec![],
    };
    if matches!(
        action,
        "leave"
            | "sample_rate"
            | "burst"
            | "kill_nodes"
            | "restart_nodes"
            | "reboot_nodes"
            | "deterioration"
            | "partition"
            | "latency"
            | "packet_loss"
            | "sensor_fault"
    ) {
        v.extend_from_slice(SELECTOR);
    }
    v
}

/// Checks one entry and builds its action. Problems go to `errors`.
pub(crate) struct EntryCheck<'a> {
    pub(crate) src: &'a Source,
    pub(crate) path: String,
    pub(crate) limits: &'a Limits,
    pub(crate) errors: &'a mut Vec<ScenarioError>,
    /// Where the entry starts, for problems with no field of their own.
    pub(crate) at: usize,
}

impl EntryCheck<'_> {
    fn err(&mut self, offset: usize, field: &str, message: impl Into<String>) {
        let path = format!("{}.{field}", self.path);
        self.errors.push(self.src.invalid(offset, path, message));
    }

    fn duration(&mut self, v: &toml::Spanned<String>, field: &str) -> Option<Duration> {
        match duration::parse(v.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(v.span().start, field, e);
                None
            }
        }
    }

    fn positive_duration(&mut self, v: &toml::Spanned<String>, field: &str) -> Option<Duration> {
        let d = self.duration(v, field)?;
        if d.is_zero() {
            self.err(
                v.span().start,
                field,
                format!("'{}' is zero; expected a positive duration", v.get_ref()),
            );
            return None;
        }
        Some(d)
    }

    fn required<'v, T>(&mut self, v: &'v Option<T>, field: &str, action: &str) -> Option<&'v T> {
        self.required_by(v, field, &format!("action '{action}'"))
    }

    /// `field` is required by `who` ("action 'partition'", "mode 'drift'").
    fn required_by<'v, T>(&mut self, v: &'v Option<T>, field: &str, who: &str) -> Option<&'v T> {
        if v.is_none() {
            let at = self.at;
            self.err(at, field, format!("missing; {who} needs it"));
        }
        v.as_ref()
    }

    fn req_positive_duration(
        &mut self,
        v: &Option<toml::Spanned<String>>,
        field: &str,
        action: &str,
    ) -> Option<Duration> {
        let v = self.required(v, field, action)?;
        self.positive_duration(v, field)
    }

    /// A sampling interval: no faster than [`crate::MIN_SAMPLE_INTERVAL`].
    fn req_sample_interval(
        &mut self,
        v: &Option<toml::Spanned<String>>,
        action: &str,
    ) -> Option<Duration> {
        let raw = self.required(v, "interval", action)?;
        let d = self.positive_duration(raw, "interval")?;
        if let Err(e) = crate::check_sample_interval(d, raw.get_ref()) {
            self.err(raw.span().start, "interval", e);
            return None;
        }
        Some(d)
    }

    fn req_share(
        &mut self,
        v: &Option<toml::Spanned<f64>>,
        field: &str,
        action: &str,
    ) -> Option<f64> {
        let v = self.required(v, field, action)?;
        self.share(v, field, false)
    }

    fn req_aggregator(&mut self, v: &Option<toml::Spanned<u16>>, action: &str) -> Option<u16> {
        let v = self.required(v, "aggregator", action)?;
        self.aggregator(v)
    }

    fn req_ward(&mut self, v: &Option<toml::Spanned<u16>>, action: &str) -> Option<u16> {
        let v = self.required(v, "ward", action)?;
        self.ward(v)
    }

    fn share(&mut self, v: &toml::Spanned<f64>, field: &str, zero_ok: bool) -> Option<f64> {
        let x = *v.get_ref();
        let ok = if zero_ok {
            (0.0..=1.0).contains(&x)
        } else {
            x > 0.0 && x <= 1.0
        };
        if ok {
            Some(x)
        } else {
            let range = if zero_ok {
                "from 0 to 1"
            } else {
                "above 0 and at most 1"
            };
            self.err(
                v.span().start,
                field,
                format!("'{x}' is not a share; expected a number {range}"),
            );
            None
        }
    }

    fn ward(&mut self, v: &toml::Spanned<u16>) -> Option<u16> {
        let w = *v.get_ref();
        if w >= self.limits.wards {
            self.err(
                v.span().start,
                "ward",
                format!(
                    "'{w}' does not exist; expected a ward from 0 to {}",
                    self.limits.wards.saturating_sub(1)
                ),
            );
            return None;
        }
        Some(w)
    }

    fn aggregator(&mut self, v: &toml::Spanned<u16>) -> Option<u16> {
        let a = *v.get_ref();
        if a >= self.limits.aggregators {
            self.err(
                v.span().start,
                "aggregator",
                format!(
                    "'{a}' does not exist; expected an aggregator from 0 to {}",
                    self.limits.aggregators.saturating_sub(1)
                ),
            );
            return None;
        }
        Some(a)
    }

    /// The node selector of an entry; `need` says whether one is required.
    fn selector(&mut self, e: &RawEntry, need: bool, action: &str) -> Option<NodeSelector> {
        let given =
            e.ward.is_some() || e.count.is_some() || e.fraction.is_some() || e.nodes.is_some();
        if !given {
            if need {
                let at = self.at;
                self.err(at, "ward", format!("missing; action '{action}' needs 'ward', 'count', 'fraction' or 'nodes' to say which nodes"));
                return None;
            }
            return Some(NodeSelector::all());
        }
        let ward = match &e.ward {
            Some(w) => self.ward(w).map(Some),
            None => Some(None),
        };
        let total = self.limits.nodes();
        let per_ward = self.limits.nodes_per_ward;
        let nodes = match &e.nodes {
            Some(list) => 'nodes: {
                if list.get_ref().is_empty() {
                    self.err(
                        list.span().start,
                        "nodes",
                        "'[]' is empty; expected at least one node id",
                    );
                    break 'nodes None;
                }
                let mut seen = std::collections::BTreeSet::new();
                for &n in list.get_ref() {
                    if !seen.insert(n) {
                        self.err(
                            list.span().start,
                            "nodes",
                            format!("'{n}' is listed twice; expected each node once"),
                        );
                        break 'nodes None;
                    }
                    if n >= total {
                        self.err(
                            list.span().start,
                            "nodes",
                            format!(
                                "'{n}' does not exist; expected node ids from 0 to {}",
                                total.saturating_sub(1)
                            ),
                        );
                        break 'nodes None;
                    }
                    if let Some(Some(w)) = ward {
                        if n / per_ward != u32::from(w) {
                            self.err(
                                list.span().start,
                                "nodes",
                                format!(
                                    "'{n}' is not in ward {w}; expected node ids from {} to {}",
                                    u32::from(w) * per_ward,
                                    (u32::from(w) + 1) * per_ward - 1
                                ),
                            );
                            break 'nodes None;
                        }
                    }
                }
                Some(Some(list.get_ref().clone()))
            }
            None => Some(None),
        };
        // A bad ward still scopes `count` to one ward's nodes, so a count
        // is judged as it would be with the ward corrected.
        let scope = match (&e.nodes, &e.ward) {
            (Some(n), _) => n.get_ref().len() as u32,
            (None, Some(_)) => per_ward,
            (None, None) => total,
        };
        let pick = self.pick(e, scope, "nodes");
        Some(NodeSelector {
            ward: ward?,
            nodes: nodes?,
            pick: pick?,
        })
    }

    /// `count` or `fraction` of `scope` things (`what`: "nodes",
    /// "gateways"); all of them if neither is given.
    fn pick(&mut self, e: &RawEntry, scope: u32, what: &str) -> Option<Pick> {
        Some(match (&e.count, &e.fraction) {
            (Some(c), Some(f)) => {
                self.err(
                    f.span().start,
                    "fraction",
                    format!(
                        "'{}' conflicts with count '{}'; give one of them",
                        f.get_ref(),
                        c.get_ref()
                    ),
                );
                return None;
            }
            (Some(c), None) => {
                let n = *c.get_ref();
                if n == 0 || n > scope {
                    self.err(
                        c.span().start,
                        "count",
                        format!(
                            "'{n}' is not possible here; expected 1 to {scope} (the {what} in scope)"
                        ),
                    );
                    return None;
                }
                Pick::Count(n)
            }
            (None, Some(f)) => Pick::Fraction(self.share(f, "fraction", false)?),
            (None, None) => Pick::All,
        })
    }

    /// Which gateways: `ward`, then `count` or `fraction` of them; all
    /// of them if none is given.
    fn gateway_selector(&mut self, e: &RawEntry, action: &str) -> Option<NodeSelector> {
        let per_ward = self.limits.gateways_per_ward;
        if per_ward == 0 {
            let at = self.at;
            self.err(
                at,
                "action",
                format!("'{action}' needs gateways; this population has none (set [gateways] nodes_per_gateway)"),
            );
            return None;
        }
        let ward = match &e.ward {
            Some(w) => self.ward(w).map(Some),
            None => Some(None),
        };
        let scope = if e.ward.is_some() {
            per_ward
        } else {
            per_ward * u32::from(self.limits.wards)
        };
        let pick = self.pick(e, scope, "gateways");
        Some(NodeSelector {
            ward: ward?,
            nodes: None,
            pick: pick?,
        })
    }

    fn group(&mut self, e: &RawEntry, action: &str) -> Option<Group> {
        let nodes_given =
            e.ward.is_some() || e.count.is_some() || e.fraction.is_some() || e.nodes.is_some();
        match (&e.aggregator, nodes_given) {
            (Some(a), true) => {
                self.err(a.span().start, "aggregator", format!("'{}' conflicts with the node selection; give either nodes or one aggregator", a.get_ref()));
                None
            }
            (Some(a), false) => Some(Group::Aggregator(self.aggregator(a)?)),
            (None, true) => Some(Group::Nodes(self.selector(e, true, action)?)),
            (None, false) => {
                let at = self.at;
                self.err(at, "ward", format!("missing; action '{action}' needs 'ward', 'count', 'fraction', 'nodes' or 'aggregator' to say whose connections"));
                None
            }
        }
    }
}

/// Stage two for one entry: the action name is known for its kind, only
/// the fields it uses are present, every value is meaningful.
pub(crate) fn parse_entry(c: &mut EntryCheck<'_>, e: &RawEntry, kind: EntryKind) -> Option<Action> {
    let Some(action) = &e.action else {
        let at = c.at;
        c.err(at, "action", "missing; expected the action to perform");
        return None;
    };
    let name = action.get_ref().as_str();
    let names: &[&str] = match kind {
        EntryKind::Load => LOAD_ACTIONS,
        EntryKind::Event => EVENT_ACTIONS,
        EntryKind::Inject => &[LOAD_ACTIONS, EVENT_ACTIONS].concat(),
    };
    if !names.contains(&name) {
        let other = match kind {
            EntryKind::Load if EVENT_ACTIONS.contains(&name) => " (it belongs in an [[event]])",
            EntryKind::Event if LOAD_ACTIONS.contains(&name) => " (it belongs in a [[load]] entry)",
            _ => "",
        };
        c.err(
            action.span().start,
            "action",
            format!(
                "'{name}' is not an action here{other}; expected one of {}",
                names.join(", ")
            ),
        );
        return None;
    }
    let allowed = allowed(name);
    let mut ok = true;
    for (field, offset) in e.present() {
        if !allowed.contains(&field) {
            c.err(
                offset,
                field,
                format!(
                    "not used by action '{name}'; it takes {}",
                    if allowed.is_empty() {
                        "no other fields".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ),
            );
            ok = false;
        }
    }
    // Every field is checked on its own, so an entry's problems are all
    // listed at once; the action is built only if none was found.
    let action = match name {
        "ramp" => {
            let over = c.req_positive_duration(&e.over, "over", name);
            let count = match &e.count {
                Some(n) if *n.get_ref() == 0 => {
                    c.err(
                        n.span().start,
                        "count",
                        "'0' starts nothing; expected at least 1",
                    );
                    None
                }
                Some(n) => Some(Some(*n.get_ref())),
                None => Some(None),
            };
            Action::Ramp {
                count: count?,
                over: over?,
            }
        }
        "leave" => Action::Leave {
            target: c.selector(e, true, name)?,
        },
        "sample_rate" => {
            let interval = c.req_sample_interval(&e.interval, name);
            let target = c.selector(e, false, name);
            Action::SampleRate {
                target: target?,
                interval: interval?,
            }
        }
        "burst" => {
            let interval = c.req_sample_interval(&e.interval, name);
            let for_ = c.req_positive_duration(&e.for_, "for", name);
            let target = c.selector(e, false, name);
            Action::Burst {
                target: target?,
                interval: interval?,
                for_: for_?,
            }
        }
        "kill_nodes" => Action::KillNodes {
            target: c.selector(e, true, name)?,
        },
        "restart_nodes" => Action::RestartNodes {
            target: c.selector(e, true, name)?,
        },
        "reboot_nodes" => Action::RebootNodes {
            target: c.selector(e, true, name)?,
        },
        "kill_gateways" => Action::KillGateways {
            target: c.gateway_selector(e, name)?,
        },
        "restart_gateways" => Action::RestartGateways {
            target: c.gateway_selector(e, name)?,
        },
        "deterioration" => Action::Deterioration {
            target: c.selector(e, true, name)?,
        },
        "kill_aggregator" => Action::KillAggregator {
            aggregator: c.req_aggregator(&e.aggregator, name)?,
        },
        "restart_aggregator" => Action::RestartAggregator {
            aggregator: c.req_aggregator(&e.aggregator, name)?,
        },
        "add_aggregator" => {
            let count = match &e.count {
                Some(n) if *n.get_ref() == 0 || *n.get_ref() > u32::from(c.limits.aggregators) => {
                    c.err(
                        n.span().start,
                        "count",
                        format!(
                            "'{}' is not possible; expected 1 to {} ([aggregators] max)",
                            n.get_ref(),
                            c.limits.aggregators
                        ),
                    );
                    None
                }
                Some(n) => Some(*n.get_ref()),
                None => Some(1),
            };
            let weight = match &e.weight {
                Some(w) if *w.get_ref() == 0 || *w.get_ref() > 100 => {
                    c.err(
                        w.span().start,
                        "weight",
                        format!("'{}' is out of range; expected 1 to 100", w.get_ref()),
                    );
                    None
                }
                Some(w) => Some(*w.get_ref()),
                None => Some(1),
            };
            Action::AddAggregator {
                count: count?,
                weight: weight?,
            }
        }
        "remove_aggregator" => match (&e.aggregator, &e.count) {
            (Some(a), None) => Action::RemoveAggregator {
                aggregator: Some(c.aggregator(a)?),
                count: 1,
            },
            (None, Some(n)) if *n.get_ref() >= 1 => Action::RemoveAggregator {
                aggregator: None,
                count: *n.get_ref(),
            },
            (Some(a), Some(_)) => {
                c.err(
                    a.span().start,
                    "aggregator",
                    format!("'{}' conflicts with count; give one of them", a.get_ref()),
                );
                return None;
            }
            _ => {
                let at = c.at;
                c.err(
                    at,
                    "aggregator",
                    "missing; action 'remove_aggregator' needs 'aggregator' or a 'count' of at least 1",
                );
                return None;
            }
        },
        "restart_broker" => {
            if c.limits.external_broker {
                let offset = action.span().start;
                c.err(offset, "action", "'restart_broker' needs the embedded broker; this scenario uses an external one ([broker] url)");
                return None;
            }
            Action::RestartBroker
        }
        "partition" => {
            let for_ = c.req_positive_duration(&e.for_, "for", name);
            let group = c.group(e, name);
            Action::Partition {
                group: group?,
                for_: for_?,
            }
        }
        "latency" => {
            let latency = c.req_positive_duration(&e.latency, "latency", name);
            let jitter = match &e.jitter {
                Some(j) => match (c.duration(j, "jitter"), latency) {
                    (Some(jitter), Some(latency)) if jitter > latency => {
                        c.err(j.span().start, "jitter", format!("'{}' exceeds the latency '{}'; expected at most the latency (a delay cannot be negative)", j.get_ref(), duration::format(latency)));
                        None
                    }
                    (jitter, _) => jitter,
                },
                None => Some(Duration::ZERO),
            };
            let for_ = c.req_positive_duration(&e.for_, "for", name);
            let group = c.group(e, name);
            Action::Latency {
                group: group?,
                latency: latency?,
                jitter: jitter?,
                for_: for_?,
            }
        }
        "packet_loss" => {
            let share = c.req_share(&e.share, "share", name);
            let for_ = c.req_positive_duration(&e.for_, "for", name);
            let group = c.group(e, name);
            Action::PacketLoss {
                group: group?,
                share: share?,
                for_: for_?,
            }
        }
        "sensor_fault" => parse_sensor_fault(c, e)?,
        "outbreak" => {
            let ward = c.req_ward(&e.ward, name);
            let attack_rate = c.req_share(&e.attack_rate, "attack_rate", name);
            let onset_median = match &e.onset_median {
                Some(m) => c.positive_duration(m, "onset_median"),
                None => Some(Duration::from_secs(3600)),
            };
            let onset_spread = match &e.onset_spread {
                // NaN fails `contains` too: it would put every onset at
                // the same second, and corrupt the ground truth.
                Some(s) if !(0.0..=3.0).contains(s.get_ref()) => {
                    let what = if s.get_ref().is_finite() {
                        "is not a spread"
                    } else {
                        "is not finite"
                    };
                    c.err(
                        s.span().start,
                        "onset_spread",
                        format!(
                            "'{}' {what}; expected a lognormal σ from 0 to 3",
                            s.get_ref()
                        ),
                    );
                    None
                }
                Some(s) => Some(*s.get_ref()),
                None => Some(0.5),
            };
            Action::Outbreak {
                ward: ward?,
                attack_rate: attack_rate?,
                onset_median: onset_median?,
                onset_spread: onset_spread?,
            }
        }
        "rogue" => {
            let kind = c_required(c, &e.kind, "kind", name).and_then(|k| {
                let kind = RogueKind::parse(k.get_ref());
                if kind.is_none() {
                    c.err(
                        k.span().start,
                        "kind",
                        format!(
                            "'{}' is not a rogue client; expected {}",
                            k.get_ref(),
                            RogueKind::names()
                        ),
                    );
                }
                kind
            });
            let rate = match &e.rate {
                Some(r) if !(*r.get_ref() > 0.0 && *r.get_ref() <= 10_000.0) => {
                    c.err(
                        r.span().start,
                        "rate",
                        format!(
                            "'{}' is not a rate; expected more than 0 and at most 10000 per second",
                            r.get_ref()
                        ),
                    );
                    None
                }
                Some(r) => Some(*r.get_ref()),
                None => Some(50.0),
            };
            let limit = |c: &mut EntryCheck<'_>,
                         v: &Option<toml::Spanned<u32>>,
                         field: &str,
                         max: u32,
                         default: u32|
             -> Option<u32> {
                match v {
                    Some(n) if *n.get_ref() == 0 || *n.get_ref() > max => {
                        c.err(
                            n.span().start,
                            field,
                            format!("'{}' is out of range; expected 1 to {max}", n.get_ref()),
                        );
                        None
                    }
                    Some(n) => Some(*n.get_ref()),
                    None => Some(default),
                }
            };
            let messages = limit(c, &e.messages, "messages", 1_000_000, 100);
            let connections = limit(c, &e.connections, "connections", 2000, 200);
            Action::Rogue {
                kind: kind?,
                messages: messages?,
                connections: connections?,
                rate: rate?,
            }
        }
        _ => unreachable!("checked against the action lists above"),
    };
    ok.then_some(action)
}

/// `EntryCheck::required` for fields whose borrow must outlive the check.
fn c_required<'v, T>(
    c: &mut EntryCheck<'_>,
    v: &'v Option<T>,
    field: &str,
    action: &str,
) -> Option<&'v T> {
    c.required(v, field, action)
}

/// A number as the user would write it: `1e300`, not 301 digits.
fn number(x: f64) -> String {
    if x.is_finite() && x != 0.0 && !(1e-6..1e9).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

fn parse_sensor_fault(c: &mut EntryCheck<'_>, e: &RawEntry) -> Option<Action> {
    let name = "sensor_fault";
    let m = c_required(c, &e.mode, "mode", name);
    let mode_fields: Option<&[&str]> = m.and_then(|m| match m.get_ref().as_str() {
        "stuck_at" => Some(&["value"][..]),
        "drift" => Some(&["per_hour"][..]),
        "spike" => Some(&["probability", "magnitude"][..]),
        "dropout" => Some(&["probability"][..]),
        "noise" => Some(&["multiplier"][..]),
        other => {
            c.err(m.span().start, "mode", format!("'{other}' is not a fault mode; expected 'stuck_at', 'drift', 'spike', 'dropout' or 'noise'"));
            None
        }
    });
    // A mode's parameters given to another mode: said, and that mode's
    // own fields are not judged on top.
    let mut mode_fields_ok = true;
    if let (Some(m), Some(mode_fields)) = (m, mode_fields) {
        for (field, offset) in e.present() {
            let param = [
                "value",
                "per_hour",
                "probability",
                "magnitude",
                "multiplier",
            ]
            .contains(&field);
            if param && !mode_fields.contains(&field) {
                c.err(
                    offset,
                    field,
                    format!(
                        "not used by mode '{}'; it takes {}",
                        m.get_ref(),
                        mode_fields.join(", ")
                    ),
                );
                mode_fields_ok = false;
            }
        }
    }
    let sign = match &e.sign {
        Some(s) => match VitalSign::ALL.into_iter().find(|v| v.name() == s.get_ref()) {
            Some(v) => Some(Some(v)),
            None => {
                let names: Vec<String> = VitalSign::ALL
                    .iter()
                    .map(|v| format!("'{}'", v.name()))
                    .collect();
                c.err(
                    s.span().start,
                    "sign",
                    format!(
                        "'{}' is not a vital sign; expected {}",
                        s.get_ref(),
                        names.join(", ")
                    ),
                );
                None
            }
        },
        None => Some(None),
    };
    // The signs the fault touches, for the device-range checks.
    let signs: Vec<VitalSign> = sign.flatten().map_or(VitalSign::ALL.to_vec(), |s| vec![s]);

    let mode = match (m, mode_fields) {
        (Some(m), Some(_)) if mode_fields_ok => fault_mode(c, e, m.get_ref(), &signs),
        _ => None,
    };
    let for_ = match &e.for_ {
        Some(f) => c.positive_duration(f, "for").map(Some),
        None => Some(None),
    };
    let target = c.selector(e, true, name);
    Some(Action::SensorFault {
        target: target?,
        sign: sign?,
        mode: mode?,
        for_: for_?,
    })
}

/// A required number above 0 for a fault mode's `field`.
fn positive(
    c: &mut EntryCheck<'_>,
    v: &Option<toml::Spanned<f64>>,
    field: &str,
    mode: &str,
) -> Option<f64> {
    let Some(v) = v else {
        let at = c.at;
        c.err(at, field, format!("missing; mode '{mode}' needs it"));
        return None;
    };
    let x = *v.get_ref();
    if !(x.is_finite() && x > 0.0) {
        let what = if x.is_finite() {
            "is not positive"
        } else {
            "is not finite"
        };
        c.err(
            v.span().start,
            field,
            format!("'{x}' {what}; expected a number above 0"),
        );
        return None;
    }
    Some(x)
}

/// A sensor fault's mode and its own fields (`signs`: the signs it
/// touches, for the device-range checks).
fn fault_mode(
    c: &mut EntryCheck<'_>,
    e: &RawEntry,
    mode: &str,
    signs: &[VitalSign],
) -> Option<FaultMode> {
    Some(match mode {
        "stuck_at" => {
            let value = match &e.value {
                Some(v) => {
                    let x = *v.get_ref();
                    if !x.is_finite() {
                        c.err(
                            v.span().start,
                            "value",
                            format!("'{x}' is not finite; expected a reading the device can show"),
                        );
                        return None;
                    }
                    if let Some(s) = signs.iter().find(|s| {
                        let (lo, hi) = s.device_range();
                        !(lo..=hi).contains(&x)
                    }) {
                        let (lo, hi) = s.device_range();
                        c.err(
                            v.span().start,
                            "value",
                            format!(
                                "'{}' is outside what a {} sensor reads; expected {lo} to {hi} {}",
                                number(x),
                                s.name(),
                                s.unit()
                            ),
                        );
                        return None;
                    }
                    Some(x)
                }
                None => None,
            };
            FaultMode::StuckAt { value }
        }
        "drift" => {
            let v = c.required_by(&e.per_hour, "per_hour", "mode 'drift'")?;
            let x = *v.get_ref();
            if x == 0.0 || !x.is_finite() {
                let what = if x == 0.0 {
                    "is no drift"
                } else {
                    "is not finite"
                };
                c.err(
                    v.span().start,
                    "per_hour",
                    format!("'{x}' {what}; expected a non-zero rate per hour"),
                );
                return None;
            }
            // Faster than crossing the device's whole range in an hour
            // reads as a broken number, not a drifting sensor.
            if let Some(s) = signs.iter().find(|s| {
                let (lo, hi) = s.device_range();
                x.abs() > hi - lo
            }) {
                let (lo, hi) = s.device_range();
                c.err(
                    v.span().start,
                    "per_hour",
                    format!(
                        "'{}' crosses a {} sensor's whole range more than once an hour; expected at most {} {} per hour either way",
                        number(x),
                        s.name(),
                        hi - lo,
                        s.unit()
                    ),
                );
                return None;
            }
            FaultMode::Drift { per_hour: x }
        }
        "spike" => {
            let probability = c
                .required_by(&e.probability, "probability", "mode 'spike'")
                .and_then(|v| c.share(v, "probability", false));
            let magnitude = positive(c, &e.magnitude, "magnitude", "spike");
            FaultMode::Spike {
                probability: probability?,
                magnitude: magnitude?,
            }
        }
        "dropout" => FaultMode::Dropout {
            probability: {
                let v = c.required_by(&e.probability, "probability", "mode 'dropout'")?;
                c.share(v, "probability", false)?
            },
        },
        "noise" => FaultMode::Noise {
            multiplier: positive(c, &e.multiplier, "multiplier", "noise")?,
        },
        _ => unreachable!("checked above"),
    })
}

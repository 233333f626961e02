//! Every MQTT topic and client id vitalmesh uses, in one place.
//!
//! | Topic                           | Publisher → subscriber        | Body            |
//! |---------------------------------|-------------------------------|-----------------|
//! | `{root}/v1/p/{partition}/{node}`| node → partition owners       | [`Batch`]       |
//! | `{root}/v1/p/{partition}/g{gateway}`| gateway → partition owners | [`Relay`] of its nodes' batches |
//! | `{root}/v1/ack/{partition}`     | primary aggregator → nodes    | [`AckBatch`]    |
//! | `{root}/v1/agg/{aggregator}`    | aggregator → aggregators      | [`AggregatorStatus`] (heartbeat, last will) |
//! | `{root}/v1/ward/{ward}`         | aggregator → aggregators      | [`WardReport`] (one bucket) |
//! | `{root}/v1/alert/{aggregator}`  | aggregator → anyone watching  | [`AlertNotice`] |
//!
//! `root` defaults to `vm`, so a node topic looks like `vm/v1/p/17/4242`
//! and a gateway's `vm/v1/p/17/g42`. Partition owners subscribe to
//! `{root}/v1/p/{partition}/+`, which covers both, so a gateway needs no
//! subscription of its own; nodes and gateways subscribe
//! to their partition's ack topic (one filter per partition, not per node, so
//! the broker keeps a handful of logs rather than one per node); aggregators
//! subscribe to `{root}/v1/agg/+` and `{root}/v1/ward/+`. The `v1` level is
//! the version of this topic scheme; the payload's own version is the
//! envelope's first byte ([`crate::WIRE_VERSION`]).
//!
//! Client ids are `{root}-n{node}`, `{root}-g{gateway}` and `{root}-a{aggregator}`: short, unique
//! per run and free of `/ + # $`, which some brokers refuse (and which make
//! rumqttd 0.20 drop the connection without a CONNACK). After a connection
//! attempt fails, the next attempt adds a generation, `{root}-n{node}.{g}`:
//! rumqttd 0.20 leaves a stale will handler behind for an id whose handshake
//! failed, and a retry with that same id poisons the whole listener
//! (`rumqtt.md` §6). An id that failed is therefore never used again.
//!
//! [`Batch`]: crate::Batch
//! [`Relay`]: crate::Relay
//! [`AckBatch`]: crate::AckBatch
//! [`AggregatorStatus`]: crate::AggregatorStatus
//! [`WardReport`]: crate::WardReport
//! [`AlertNotice`]: crate::AlertNotice

use crate::{AggregatorId, GatewayId, NodeId, PartitionId, WireError};

/// A parsed vitalmesh topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireTopic {
    /// A node's uplink.
    Data {
        /// Partition level of the topic.
        partition: PartitionId,
        /// Node level of the topic.
        node: NodeId,
    },
    /// A gateway's relay of its nodes' uplinks.
    Relay {
        /// Partition level of the topic.
        partition: PartitionId,
        /// Gateway level of the topic (after its `g`).
        gateway: GatewayId,
    },
    /// A partition's acknowledgements.
    Ack {
        /// Partition level of the topic.
        partition: PartitionId,
    },
    /// An aggregator's status.
    Status {
        /// Aggregator level of the topic.
        aggregator: AggregatorId,
    },
    /// Alerts an aggregator raised or cleared, for anyone watching.
    Alert {
        /// The publishing aggregator.
        aggregator: AggregatorId,
    },
    /// Aggregators' per-bucket reports on one ward.
    Ward {
        /// The ward.
        ward: u16,
    },
}

/// The topic names of one mesh, under one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicScheme {
    root: String,
}

impl Default for TopicScheme {
    fn default() -> Self {
        Self { root: "vm".into() }
    }
}

impl TopicScheme {
    /// A scheme under `root`: 1–32 characters from `[A-Za-z0-9_-]`.
    pub fn new(root: &str) -> Result<Self, WireError> {
        let ok = !root.is_empty()
            && root.len() <= 32
            && root
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self { root: root.into() })
        } else {
            Err(WireError::invalid(
                "topic root",
                format!("'{root}' must be 1 to 32 characters from A-Z, a-z, 0-9, '_' and '-'"),
            ))
        }
    }

    /// The root level.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Where `node` in `partition` publishes.
    pub fn data(&self, partition: PartitionId, node: NodeId) -> String {
        format!("{}/v1/p/{}/{}", self.root, partition.0, node.0)
    }

    /// The filter a partition owner subscribes to.
    pub fn data_filter(&self, partition: PartitionId) -> String {
        format!("{}/v1/p/{}/+", self.root, partition.0)
    }

    /// Whether a subscription to `filter` asks for QoS 1: only the data
    /// filters, whose messages nodes and gateways publish at QoS 1.
    /// Everything else (heartbeats, acknowledgements, alerts, ward reports)
    /// is published at QoS 0, so a QoS 1 subscription would be delivered at
    /// QoS 0 anyway — and a broker that keeps state per QoS 1 subscription
    /// (nats-server makes each a JetStream consumer) would keep it for
    /// nothing, and must create it again when a client moves.
    pub fn subscribe_at_least_once(&self, filter: &str) -> bool {
        filter
            .strip_prefix(self.root.as_str())
            .is_some_and(|rest| rest.starts_with("/v1/p/"))
    }

    /// Where acknowledgements for `partition` are published.
    pub fn ack(&self, partition: PartitionId) -> String {
        format!("{}/v1/ack/{}", self.root, partition.0)
    }

    /// Where `aggregator` publishes heartbeats and its last will.
    pub fn status(&self, aggregator: AggregatorId) -> String {
        format!("{}/v1/agg/{}", self.root, aggregator.0)
    }

    /// The filter for every aggregator's status.
    pub fn status_filter(&self) -> String {
        format!("{}/v1/agg/+", self.root)
    }

    /// Where `aggregator` publishes its alerts.
    pub fn alert(&self, aggregator: AggregatorId) -> String {
        format!("{}/v1/alert/{}", self.root, aggregator.0)
    }

    /// Every aggregator's alerts.
    pub fn alert_filter(&self) -> String {
        format!("{}/v1/alert/+", self.root)
    }

    /// Where ward reports for `ward` go.
    pub fn ward(&self, ward: u16) -> String {
        format!("{}/v1/ward/{ward}", self.root)
    }

    /// Every ward's reports.
    pub fn ward_filter(&self) -> String {
        format!("{}/v1/ward/+", self.root)
    }

    /// Where shard `index` of a sharded run says it is ready and how it
    /// goes (`vitalmesh run --shard`).
    pub fn shard(&self, index: u32) -> String {
        format!("{}/v1/shard/{index}", self.root)
    }

    /// Every shard's status.
    pub fn shard_filter(&self) -> String {
        format!("{}/v1/shard/+", self.root)
    }

    /// MQTT client id of a shard's status link.
    pub fn shard_client_id(&self, index: u32, generation: u32) -> String {
        with_generation(format!("{}-s{index}", self.root), generation)
    }

    /// MQTT client id of a node; `generation` counts its failed attempts.
    pub fn node_client_id(&self, node: NodeId, generation: u32) -> String {
        with_generation(format!("{}-n{}", self.root, node.0), generation)
    }

    /// A gateway's uplink topic: its partition's data level, so the
    /// partition owners' one filter covers it.
    pub fn relay(&self, partition: PartitionId, gateway: GatewayId) -> String {
        format!("{}/v1/p/{}/g{}", self.root, partition.0, gateway.0)
    }

    /// MQTT client id of a gateway; `generation` counts failed attempts.
    pub fn gateway_client_id(&self, gateway: GatewayId, generation: u32) -> String {
        with_generation(format!("{}-g{}", self.root, gateway.0), generation)
    }

    /// MQTT client id of an aggregator; `generation` counts failed attempts.
    pub fn aggregator_client_id(&self, aggregator: AggregatorId, generation: u32) -> String {
        with_generation(format!("{}-a{}", self.root, aggregator.0), generation)
    }

    /// The device a client id belongs to (`{root}-n{node}`, with or
    /// without a `.{generation}`), whatever its root; `None` for any other
    /// id. A broker checks it against the user name, so a device cannot log
    /// in under another's client id.
    pub fn client_id_principal(client_id: &str) -> Option<crate::envelope::Principal> {
        use crate::envelope::Principal;
        let base = match client_id.rsplit_once('.') {
            Some((base, g)) if !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()) => base,
            _ => client_id,
        };
        let (_, tail) = base.rsplit_once('-')?;
        let (kind, id) = tail.split_at_checked(1)?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let id: u32 = id.parse().ok()?;
        match kind {
            "n" => Some(Principal::Node(NodeId(id))),
            "g" => Some(Principal::Gateway(GatewayId(id))),
            "a" => u16::try_from(id)
                .ok()
                .map(|a| Principal::Aggregator(AggregatorId(a))),
            _ => None,
        }
    }

    /// Parses a topic of this scheme; `None` for anything else.
    pub fn parse(&self, topic: &str) -> Option<WireTopic> {
        let rest = topic
            .strip_prefix(self.root.as_str())?
            .strip_prefix("/v1/")?;
        let mut levels = rest.split('/');
        let kind = levels.next()?;
        let parsed = match kind {
            "p" => {
                let partition = PartitionId(parse_number(levels.next()?)?);
                let sender = levels.next()?;
                match sender.strip_prefix('g') {
                    Some(gateway) => WireTopic::Relay {
                        partition,
                        gateway: GatewayId(parse_number(gateway)?),
                    },
                    None => WireTopic::Data {
                        partition,
                        node: NodeId(parse_number(sender)?),
                    },
                }
            }
            "ack" => WireTopic::Ack {
                partition: PartitionId(parse_number(levels.next()?)?),
            },
            "agg" => WireTopic::Status {
                aggregator: AggregatorId(parse_number(levels.next()?)?),
            },
            "alert" => WireTopic::Alert {
                aggregator: AggregatorId(parse_number(levels.next()?)?),
            },
            "ward" => WireTopic::Ward {
                ward: parse_number(levels.next()?)?,
            },
            _ => return None,
        };
        levels.next().is_none().then_some(parsed)
    }
}

fn with_generation(id: String, generation: u32) -> String {
    if generation == 0 {
        id
    } else {
        format!("{id}.{generation}")
    }
}

/// A canonical decimal number: no sign, no leading zeros, no overflow.
fn parse_number<T: std::str::FromStr>(level: &str) -> Option<T> {
    let canonical = !level.is_empty()
        && level.bytes().all(|b| b.is_ascii_digit())
        && (level == "0" || !level.starts_with('0'));
    if canonical { level.parse().ok() } else { None }
}

/// MQTT 3.1.1 topic-filter matching (§4.7): `+` one level, `#` the rest.
/// For drivers and tools that route without a broker (the virtual-time
/// broker, benchmarks, tests).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn only_data_is_subscribed_at_qos_1() {
        let t = TopicScheme::new("vm").unwrap();
        assert!(t.subscribe_at_least_once(&t.data_filter(PartitionId(3))));
        for control in [
            t.ack(PartitionId(3)),
            t.status_filter(),
            t.alert_filter(),
            t.ward_filter(),
            t.shard_filter(),
        ] {
            assert!(!t.subscribe_at_least_once(&control), "{control}");
        }
        // Another root's data is not ours.
        assert!(!t.subscribe_at_least_once("vmx/v1/p/3/+"));
    }

    #[test]
    fn client_ids_name_their_device_with_or_without_a_generation() {
        use crate::envelope::Principal;
        let t = TopicScheme::default();
        for (id, p) in [
            (t.node_client_id(NodeId(42), 0), Principal::Node(NodeId(42))),
            (t.node_client_id(NodeId(42), 3), Principal::Node(NodeId(42))),
            (
                t.gateway_client_id(GatewayId(7), 1),
                Principal::Gateway(GatewayId(7)),
            ),
            (
                t.aggregator_client_id(AggregatorId(2), 0),
                Principal::Aggregator(AggregatorId(2)),
            ),
        ] {
            assert_eq!(TopicScheme::client_id_principal(&id), Some(p), "{id}");
        }
        for other in [
            "vm-canary-1883-4",
            "rogue",
            "vm-x42",
            "vm-n",
            "vm-a70000",
            "vm-n4.x",
        ] {
            assert_eq!(TopicScheme::client_id_principal(other), None, "{other}");
        }
    }

    #[test]
    fn topics_have_the_documented_shape() {
        let t = TopicScheme::default();
        assert_eq!(t.data(PartitionId(17), NodeId(4242)), "vm/v1/p/17/4242");
        assert_eq!(t.data_filter(PartitionId(17)), "vm/v1/p/17/+");
        assert_eq!(t.relay(PartitionId(17), GatewayId(42)), "vm/v1/p/17/g42");
        assert!(filter_matches(
            &t.data_filter(PartitionId(17)),
            &t.relay(PartitionId(17), GatewayId(42))
        ));
        assert_eq!(
            t.parse("vm/v1/p/17/g42"),
            Some(WireTopic::Relay {
                partition: PartitionId(17),
                gateway: GatewayId(42)
            })
        );
        assert_eq!(t.parse("vm/v1/p/17/g"), None);
        assert_eq!(t.parse("vm/v1/p/17/g042"), None);
        assert_eq!(t.gateway_client_id(GatewayId(3), 0), "vm-g3");
        assert_eq!(t.ack(PartitionId(3)), "vm/v1/ack/3");
        assert_eq!(t.status(AggregatorId(2)), "vm/v1/agg/2");
        assert_eq!(t.status_filter(), "vm/v1/agg/+");
        assert_eq!(t.alert(AggregatorId(2)), "vm/v1/alert/2");
        assert_eq!(t.ward(7), "vm/v1/ward/7");
        assert_eq!(t.parse("vm/v1/ward/7"), Some(WireTopic::Ward { ward: 7 }));
        assert_eq!(
            t.parse("vm/v1/alert/3"),
            Some(WireTopic::Alert {
                aggregator: AggregatorId(3)
            })
        );
        assert_eq!(t.node_client_id(NodeId(9), 0), "vm-n9");
        assert_eq!(t.node_client_id(NodeId(9), 2), "vm-n9.2");
        assert_eq!(t.aggregator_client_id(AggregatorId(1), 0), "vm-a1");
    }

    #[test]
    fn non_canonical_or_foreign_topics_do_not_parse() {
        let t = TopicScheme::default();
        for bad in [
            "vm/v1/p/17",
            "vm/v1/p/17/42/extra",
            "vm/v1/p/017/42",
            "vm/v1/p/-1/42",
            "vm/v1/p/70000/42",
            "vm/v2/p/1/2",
            "other/v1/p/1/2",
            "vm/v1/x/1",
            "vm/v1/ack/",
            "",
        ] {
            assert_eq!(t.parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn roots_with_topic_wildcards_are_refused() {
        for bad in ["", "a/b", "a+", "#", "$sys", &"x".repeat(33)] {
            assert!(TopicScheme::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TopicScheme::new("ward_7-test").unwrap().root(),
            "ward_7-test"
        );
    }

    proptest! {
        #[test]
        fn generated_topics_parse_back(p in any::<u16>(), n in any::<u32>(), a in any::<u16>()) {
            let t = TopicScheme::new("mesh-1").unwrap();
            prop_assert_eq!(t.parse(&t.data(PartitionId(p), NodeId(n))), Some(WireTopic::Data { partition: PartitionId(p), node: NodeId(n) }));
            prop_assert_eq!(t.parse(&t.ack(PartitionId(p))), Some(WireTopic::Ack { partition: PartitionId(p) }));
            prop_assert_eq!(t.parse(&t.status(AggregatorId(a))), Some(WireTopic::Status { aggregator: AggregatorId(a) }));
        }

        #[test]
        fn arbitrary_topics_never_panic(s in ".{0,64}") {
            let _ = TopicScheme::default().parse(&s);
        }
    }

    #[test]
    fn topic_filters_match_as_mqtt_says() {
        assert!(filter_matches("vm/v1/p/3/+", "vm/v1/p/3/17"));
        assert!(!filter_matches("vm/v1/p/3/+", "vm/v1/p/4/17"));
        assert!(filter_matches("vm/#", "vm/v1/agg/2"));
        assert!(filter_matches("#", "anything/at/all"));
        assert!(!filter_matches("vm/v1/ack/1", "vm/v1/ack/10"));
        assert!(!filter_matches("vm/+", "vm/v1/x"));
    }
}

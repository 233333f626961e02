//! Identifiers and the partition function.
//!
//! Partitions split the node population so that aggregators can own slices of
//! it. The mapping must be identical on every machine and in every run, so it
//! uses [`stable_hash64`] (xxh3 with a fixed seed), never `std`'s randomly
//! keyed `RandomState`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A sensor node. Unique within a run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub u32);

/// An aggregator. Unique within a run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct AggregatorId(pub u16);

/// A gateway: a bedside or ward hub that relays its nodes' short-range
/// frames over one MQTT connection. Unique within a run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct GatewayId(pub u32);

/// A slice of the node population, `0 .. Partitioning::count`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct PartitionId(pub u16);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

impl fmt::Display for AggregatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "aggregator {}", self.0)
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gateway {}", self.0)
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partition {}", self.0)
    }
}

/// Domain separators for [`stable_hash64`], so that hashes computed for
/// different purposes never collide by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum HashDomain {
    /// Node id → partition.
    Partition = 0x7669_7461_6c70_6172, // "vitalpar"
    /// (partition, aggregator) → rendezvous score.
    Rendezvous = 0x7669_7461_6c68_7277, // "vitalhrw"
    /// Gateway id → partition (every node behind a gateway shares it).
    GatewayPartition = 0x7669_7461_6c67_7770, // "vitalgwp"
}

/// A 64-bit hash with a fixed key: the same value on every machine, build and
/// run. xxh3 is used for its speed and its published, stable algorithm.
pub fn stable_hash64(domain: HashDomain, bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, domain as u64)
}

/// How the node population is split into partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partitioning {
    count: u16,
}

impl Partitioning {
    /// Default partition count: enough for even spreading over a few dozen
    /// aggregators, few enough that the broker keeps one small log per
    /// partition (see `rumqtt.md`, segment memory).
    pub const DEFAULT_COUNT: u16 = 64;

    /// `count` partitions; `None` if `count` is zero.
    pub const fn new(count: u16) -> Option<Self> {
        if count == 0 {
            None
        } else {
            Some(Self { count })
        }
    }

    /// Number of partitions.
    pub const fn count(self) -> u16 {
        self.count
    }

    /// The partition that owns `node`: a fixed-key hash of the node id.
    pub fn partition_of(self, node: NodeId) -> PartitionId {
        let h = stable_hash64(HashDomain::Partition, &node.0.to_le_bytes());
        // `count` fits in u16, so the remainder does too.
        PartitionId((h % u64::from(self.count)) as u16)
    }

    /// The partition of every node behind `gateway`: one partition per
    /// gateway, so that its relays carry many nodes on one topic instead
    /// of a few on each of dozens.
    pub fn partition_of_gateway(self, gateway: GatewayId) -> PartitionId {
        let h = stable_hash64(HashDomain::GatewayPartition, &gateway.0.to_le_bytes());
        PartitionId((h % u64::from(self.count)) as u16)
    }

    /// Every partition, in order.
    pub fn all(self) -> impl Iterator<Item = PartitionId> {
        (0..self.count).map(PartitionId)
    }

    /// Whether `p` is a valid partition under this scheme.
    pub const fn contains(self, p: PartitionId) -> bool {
        p.0 < self.count
    }
}

impl Default for Partitioning {
    fn default() -> Self {
        Self {
            count: Self::DEFAULT_COUNT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_function_is_pinned() {
        // These values are part of the wire protocol: every node and aggregator,
        // on every machine, must compute the same partition. If this test fails
        // the partition function changed, which needs a new wire version.
        let p = Partitioning::new(64).unwrap();
        let got: Vec<u16> = (0..8).map(|n| p.partition_of(NodeId(n)).0).collect();
        assert_eq!(got, PINNED_PARTITIONS_0_TO_7);
    }

    const PINNED_PARTITIONS_0_TO_7: [u16; 8] = [43, 3, 39, 12, 25, 46, 41, 40];

    #[test]
    fn gateway_partitions_spread_and_are_their_own_function() {
        let p = Partitioning::new(64).unwrap();
        let mut counts = [0u32; 64];
        let mut same_as_node = 0;
        for g in 0..6_400 {
            let gp = p.partition_of_gateway(GatewayId(g));
            counts[usize::from(gp.0)] += 1;
            same_as_node += u32::from(gp == p.partition_of(NodeId(g)));
        }
        // Mean 100, sd ~10.
        assert!(counts.iter().all(|&c| (60..140).contains(&c)), "{counts:?}");
        // Separate hash domains: agreement only by chance (1 in 64).
        assert!(same_as_node < 200, "{same_as_node}");
    }

    #[test]
    fn partitions_spread_evenly() {
        let p = Partitioning::new(64).unwrap();
        let mut counts = [0u32; 64];
        for n in 0..64_000 {
            counts[p.partition_of(NodeId(n)).0 as usize] += 1;
        }
        // Mean 1000, binomial sd ~31: ±20% is far outside chance.
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn zero_partitions_is_rejected() {
        assert!(Partitioning::new(0).is_none());
    }
}

//! Sharded runs, the pure part: which devices and aggregators shard `I` of
//! `N` runs, and how the shards' ledgers merge into the whole run's.
//!
//! A shard owns the nodes, gateways and aggregators whose id is `I` modulo
//! `N`: every shard computes the same split from the same scenario, with
//! no coordination. What a shard knows at the end is a [`LedgerPart`]:
//! the finals of the nodes it ran, and the sequence numbers its
//! aggregators ingested from any node (a node's partition may be led by
//! another shard's aggregator). Parts merge by union: node finals are
//! disjoint between shards, delivered sets are unions, ingest counts add.
//! So [`LedgerPart::merge`] is associative and commutative, and the merged
//! part's ledger is the ledger the unsharded run would compute from the
//! same finals and deliveries.

use std::collections::BTreeMap;

use vitalmesh_core::Population;
use vitalmesh_wire::{AggregatorId, GatewayId, NodeId, SeqSet};

use crate::ledger::{self, Ledger, NodeFinal};

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which one, from 0.
    pub index: u32,
    /// How many.
    pub count: u32,
}

impl Shard {
    /// The whole run: one shard.
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// Parses `I/N` (`0/3`, `2/3`), as `--shard` takes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = "expected 'I/N' with 0 <= I < N, e.g. '0/3'";
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("'{text}' is not a shard; {expected}"))?;
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("'{s}' in '{text}' is not a number; {expected}"))
        };
        let (index, count) = (number(i)?, number(n)?);
        if count == 0 || index >= count {
            return Err(format!("'{text}' is not a shard; {expected}"));
        }
        Ok(Self { index, count })
    }

    fn owns(self, id: u32) -> bool {
        id % self.count == self.index
    }

    /// Whether this shard runs node `id`.
    pub fn owns_node(self, id: NodeId) -> bool {
        self.owns(id.0)
    }

    /// Whether this shard runs gateway `id` (and so the nodes behind it).
    pub fn owns_gateway(self, id: GatewayId) -> bool {
        self.owns(id.0)
    }

    /// Whether this shard runs aggregator `id`.
    pub fn owns_aggregator(self, id: AggregatorId) -> bool {
        self.owns(u32::from(id.0))
    }
}

/// What one shard knows of the ledger at the end of its run.
#[derive(Debug, Clone, Default)]
pub struct LedgerPart {
    /// The finals of the nodes this shard ran, by id.
    pub nodes: BTreeMap<u32, NodeFinal>,
    /// Sequence numbers this shard's aggregators ingested, by node.
    pub delivered: BTreeMap<u32, SeqSet>,
    /// Ingests, duplicates included, by node.
    pub ingests: BTreeMap<u32, u64>,
}

impl LedgerPart {
    /// This part and `other` as one: node finals joined (a node runs in
    /// one shard only; should two parts both hold one, the first is kept),
    /// delivered sets united, ingests added.
    pub fn merge(mut self, other: Self) -> Self {
        for (id, node) in other.nodes {
            self.nodes.entry(id).or_insert(node);
        }
        for (id, set) in other.delivered {
            let mine = self.delivered.entry(id).or_default();
            for range in set.ranges() {
                mine.insert_range(range.clone());
            }
        }
        for (id, n) in other.ingests {
            *self.ingests.entry(id).or_default() += n;
        }
        self
    }

    /// The ledger of the nodes this part holds: duplicates are ingests
    /// beyond the distinct samples delivered.
    pub fn ledger(&self, population: &Population) -> Ledger {
        let finals: Vec<NodeFinal> = self.nodes.values().cloned().collect();
        let size = finals
            .iter()
            .map(|f| f.id.0 as usize + 1)
            .max()
            .unwrap_or(0);
        let mut delivered = vec![SeqSet::new(); size];
        let mut duplicates = vec![0u64; size];
        for f in &finals {
            let i = f.id.0 as usize;
            if let Some(set) = self.delivered.get(&f.id.0) {
                delivered[i] = set.clone();
            }
            let distinct = delivered[i].len();
            duplicates[i] = self
                .ingests
                .get(&f.id.0)
                .copied()
                .unwrap_or(0)
                .saturating_sub(distinct);
        }
        ledger::compute(&finals, &delivered, &duplicates, population)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use vitalmesh_firmware::ledger::NodeLedger;

    use super::*;

    #[test]
    fn shards_parse_or_say_what_is_expected() {
        assert_eq!(Shard::parse("2/3"), Ok(Shard { index: 2, count: 3 }));
        assert!(
            Shard::parse("3/3")
                .unwrap_err()
                .contains("expected 'I/N' with 0 <= I < N")
        );
        assert!(Shard::parse("0/0").is_err());
        assert!(
            Shard::parse("a/3")
                .unwrap_err()
                .contains("'a' in 'a/3' is not a number")
        );
        assert!(
            Shard::parse("3")
                .unwrap_err()
                .contains("'3' is not a shard")
        );
    }

    proptest! {
        /// Every device and aggregator is run by exactly one shard.
        #[test]
        fn every_id_belongs_to_exactly_one_shard(count in 1u32..16, id in 0u32..100_000) {
            let owners = (0..count)
                .map(|index| Shard { index, count })
                .filter(|s| s.owns_node(NodeId(id)))
                .count();
            prop_assert_eq!(owners, 1);
            let owners = (0..count)
                .map(|index| Shard { index, count })
                .filter(|s| s.owns_gateway(GatewayId(id)))
                .count();
            prop_assert_eq!(owners, 1);
        }
    }

    /// A population's outcome split as `count` shards would know it.
    fn parts(finals: &[NodeFinal], delivered: &[(u32, u64, u64)], count: u32) -> Vec<LedgerPart> {
        (0..count)
            .map(|index| {
                let shard = Shard { index, count };
                let mut part = LedgerPart::default();
                for f in finals.iter().filter(|f| shard.owns_node(f.id)) {
                    part.nodes.insert(f.id.0, f.clone());
                }
                // (node, seq, aggregator): ingested by that aggregator's shard.
                for &(node, seq, agg) in delivered {
                    if shard.owns_aggregator(AggregatorId(agg as u16)) {
                        part.delivered.entry(node).or_default().insert(seq);
                        *part.ingests.entry(node).or_default() += 1;
                    }
                }
                part
            })
            .collect()
    }

    fn arb_run() -> impl Strategy<Value = (Vec<NodeFinal>, Vec<(u32, u64, u64)>)> {
        let node = (0u64..40, 0u64..40, 0u64..40).prop_map(|(produced, a, b)| (produced, a, b));
        (
            prop::collection::vec(node, 1..12),
            prop::collection::vec((0u32..12, 0u64..40, 0u64..6), 0..200),
        )
            .prop_map(|(nodes, delivered)| {
                let finals = nodes
                    .iter()
                    .enumerate()
                    .map(|(i, &(produced, a, b))| {
                        let (lo, hi) = (a.min(b).min(produced), a.max(b).min(produced));
                        NodeFinal {
                            id: NodeId(i as u32),
                            produced,
                            ledger: NodeLedger {
                                produced,
                                dropped_overflow: (lo..hi).collect(),
                                ..NodeLedger::default()
                            },
                            buffered: (hi..produced).collect(),
                        }
                    })
                    .collect::<Vec<_>>();
                let delivered = delivered
                    .into_iter()
                    .filter(|(n, s, _)| finals.get(*n as usize).is_some_and(|f| *s < f.produced))
                    .collect();
                (finals, delivered)
            })
    }

    fn population() -> Population {
        Population {
            wards: 3,
            nodes_per_ward: 4,
            nodes_per_gateway: 0,
        }
    }

    proptest! {
        /// Merging is associative and commutative, and the merged ledger
        /// is the unsharded run's, whatever the shard count.
        #[test]
        fn merged_shards_give_the_unsharded_ledger((finals, delivered) in arb_run(), count in 1u32..5) {
            let whole = parts(&finals, &delivered, 1).pop().unwrap();
            let split = parts(&finals, &delivered, count);
            let forward = split.iter().cloned().fold(LedgerPart::default(), LedgerPart::merge);
            let backward = split.iter().rev().cloned().fold(LedgerPart::default(), LedgerPart::merge);
            let p = population();
            let ledger = |part: &LedgerPart| serde_json::to_value(part.ledger(&p)).expect("a ledger serialises");
            prop_assert_eq!(ledger(&forward), ledger(&whole));
            prop_assert_eq!(ledger(&backward), ledger(&whole));
            if split.len() >= 3 {
                let (a, b, c) = (split[0].clone(), split[1].clone(), split[2].clone());
                let left = a.clone().merge(b.clone()).merge(c.clone());
                let right = a.merge(b.merge(c));
                prop_assert_eq!(ledger(&left), ledger(&right));
            }
        }
    }
}

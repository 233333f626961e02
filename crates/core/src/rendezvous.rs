//! Rendezvous (highest-random-weight) hashing of partitions onto the live
//! aggregators (Thaler & Ravishankar 1998; `domain-science.md` §6.1).
//!
//! Every aggregator computes the same ranking from the same view, without
//! talking to the others: the partition's primary is the live aggregator
//! with the highest `H(partition ‖ aggregator)`, its hot standby the second.
//! Removing an aggregator moves only its own partitions, spread evenly over
//! the survivors; adding one takes about `1/(n+1)` of the partitions.

use std::collections::BTreeSet;

use vitalmesh_wire::ids::{HashDomain, stable_hash64};
use vitalmesh_wire::{AggregatorId, PartitionId, Partitioning};

/// The score of `aggregator` for `partition`.
pub fn score(partition: PartitionId, aggregator: AggregatorId) -> u64 {
    let mut key = [0u8; 4];
    key[..2].copy_from_slice(&partition.0.to_le_bytes());
    key[2..].copy_from_slice(&aggregator.0.to_le_bytes());
    stable_hash64(HashDomain::Rendezvous, &key)
}

/// The top two of `live` for `partition`: (primary, standby).
pub fn top_two(
    partition: PartitionId,
    live: &BTreeSet<AggregatorId>,
) -> (Option<AggregatorId>, Option<AggregatorId>) {
    let mut best: Option<(u64, AggregatorId)> = None;
    let mut second: Option<(u64, AggregatorId)> = None;
    for &a in live {
        // Ties (vanishingly rare) go to the lower id, so the order is total.
        let candidate = (score(partition, a), AggregatorId(u16::MAX - a.0));
        if best.is_none_or(|b| candidate > b) {
            second = best;
            best = Some(candidate);
        } else if second.is_none_or(|s| candidate > s) {
            second = Some(candidate);
        }
    }
    let id = |x: Option<(u64, AggregatorId)>| x.map(|(_, inv)| AggregatorId(u16::MAX - inv.0));
    (id(best), id(second))
}

/// Primary and standby of every partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Indexed by partition.
    pub primary: Vec<Option<AggregatorId>>,
    /// Indexed by partition.
    pub standby: Vec<Option<AggregatorId>>,
}

/// Assigns every partition given the live set.
pub fn assign(partitioning: Partitioning, live: &BTreeSet<AggregatorId>) -> Assignment {
    let (primary, standby) = partitioning.all().map(|p| top_two(p, live)).unzip();
    Assignment { primary, standby }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(ids: &[u16]) -> BTreeSet<AggregatorId> {
        ids.iter().copied().map(AggregatorId).collect()
    }

    #[test]
    fn every_partition_has_a_distinct_primary_and_standby() {
        let a = assign(Partitioning::default(), &live(&[0, 1, 2, 3]));
        for (p, s) in a.primary.iter().zip(&a.standby) {
            assert!(p.is_some() && s.is_some() && p != s);
        }
        let alone = assign(Partitioning::default(), &live(&[2]));
        assert!(alone.primary.iter().all(|p| *p == Some(AggregatorId(2))));
        assert!(alone.standby.iter().all(Option::is_none));
    }

    #[test]
    fn removing_an_aggregator_moves_only_its_partitions_to_their_standby() {
        let p = Partitioning::new(256).unwrap();
        let before = assign(p, &live(&[0, 1, 2, 3, 4]));
        let after = assign(p, &live(&[0, 1, 3, 4]));
        let mut moved_to = std::collections::BTreeMap::new();
        for i in 0..256 {
            if before.primary[i] == Some(AggregatorId(2)) {
                // The hot standby takes over: no other choice is consistent.
                assert_eq!(after.primary[i], before.standby[i]);
                *moved_to.entry(after.primary[i]).or_insert(0) += 1;
            } else {
                assert_eq!(
                    after.primary[i], before.primary[i],
                    "partition {i} moved needlessly"
                );
            }
        }
        // Spread over all four survivors, no hot spot.
        assert_eq!(moved_to.len(), 4, "{moved_to:?}");
    }

    #[test]
    fn partitions_spread_evenly() {
        let p = Partitioning::new(1024).unwrap();
        let a = assign(p, &live(&[0, 1, 2, 3]));
        for id in 0..4 {
            let n = a
                .primary
                .iter()
                .filter(|x| **x == Some(AggregatorId(id)))
                .count();
            assert!((200..=312).contains(&n), "aggregator {id} has {n}/1024");
        }
    }

    #[test]
    fn a_returning_aggregator_gets_its_partitions_back() {
        let p = Partitioning::default();
        let full = live(&[0, 1, 2, 3]);
        let mut without = full.clone();
        without.remove(&AggregatorId(1));
        assert_ne!(assign(p, &without), assign(p, &full));
        assert_eq!(
            assign(p, &full),
            assign(p, &full.iter().rev().copied().collect())
        );
    }
}

//! Rendezvous (highest-random-weight) hashing of partitions onto the live
//! aggregators (Thaler & Ravishankar 1998; `domain-science.md` §6.1).
//!
//! Every aggregator computes the same ranking from the same view, without
//! talking to the others: the partition's primary is the live aggregator
//! with the highest `H(partition ‖ aggregator)`, its hot standby the second.
//! Removing an aggregator moves only its own partitions, spread evenly over
//! the survivors; adding one takes about `1/(n+1)` of the partitions.
//!
//! Aggregators may have capacity weights: weighted rendezvous (Schindelhauer
//! & Schomaker 2005, the logarithmic method) scores `w / −ln(u)` with `u` the
//! hash mapped into (0, 1), so an aggregator holds a share of partitions
//! proportional to its weight, and the minimal-disruption property holds as
//! before. With equal weights the order is the hash's order: the unweighted
//! assignment is unchanged.

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

/// The weighted score of `aggregator` with capacity `weight` for
/// `partition`: `weight / −ln(u)`, `u` the hash in (0, 1).
pub fn weighted_score(partition: PartitionId, aggregator: AggregatorId, weight: u16) -> f64 {
    // The top 53 bits, centred in their interval: never 0 or 1.
    let u = ((score(partition, aggregator) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight.max(1)) / -u.ln()
}

/// The top two of `live` for `partition`: (primary, standby).
pub fn top_two(
    partition: PartitionId,
    live: &BTreeSet<AggregatorId>,
) -> (Option<AggregatorId>, Option<AggregatorId>) {
    top_two_weighted(partition, live, |_| 1)
}

/// The top two of `live` for `partition` under capacity weights.
pub fn top_two_weighted(
    partition: PartitionId,
    live: &BTreeSet<AggregatorId>,
    weight: impl Fn(AggregatorId) -> u16,
) -> (Option<AggregatorId>, Option<AggregatorId>) {
    let mut best: Option<(f64, u16)> = None;
    let mut second: Option<(f64, u16)> = None;
    // Ties (vanishingly rare) go to the lower id, so the order is total.
    let beats = |a: (f64, u16), b: (f64, u16)| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)).is_gt();
    for &a in live {
        let candidate = (weighted_score(partition, a, weight(a)), a.0);
        if best.is_none_or(|b| beats(candidate, b)) {
            second = best;
            best = Some(candidate);
        } else if second.is_none_or(|s| beats(candidate, s)) {
            second = Some(candidate);
        }
    }
    let id = |x: Option<(f64, u16)>| x.map(|(_, a)| AggregatorId(a));
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

/// Assigns every partition given the live set, all of equal weight.
pub fn assign(partitioning: Partitioning, live: &BTreeSet<AggregatorId>) -> Assignment {
    assign_weighted(partitioning, live, |_| 1)
}

/// Assigns every partition given the live set and capacity weights.
pub fn assign_weighted(
    partitioning: Partitioning,
    live: &BTreeSet<AggregatorId>,
    weight: impl Fn(AggregatorId) -> u16,
) -> Assignment {
    let (primary, standby) = partitioning
        .all()
        .map(|p| top_two_weighted(p, live, &weight))
        .unzip();
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
    fn weights_give_each_aggregator_its_share_and_equal_weights_change_nothing() {
        let p = Partitioning::new(4096).unwrap();
        let four = live(&[0, 1, 2, 3]);
        // Equal weights: the same assignment as the unweighted one.
        assert_eq!(assign_weighted(p, &four, |_| 3), assign(p, &four));
        // Weights 1, 1, 2, 4 of 8: shares 1/8, 1/8, 2/8, 4/8.
        let w = |a: AggregatorId| [1, 1, 2, 4][usize::from(a.0)];
        let a = assign_weighted(p, &four, w);
        for id in 0..4u16 {
            let n = a
                .primary
                .iter()
                .filter(|x| **x == Some(AggregatorId(id)))
                .count() as f64;
            let want = 4096.0 * f64::from(w(AggregatorId(id))) / 8.0;
            assert!(
                (n - want).abs() < 0.12 * want,
                "aggregator {id}: {n} partitions, want about {want}"
            );
        }
        // Removing one still moves only its own partitions.
        let three = live(&[0, 1, 3]);
        let after = assign_weighted(p, &three, w);
        for i in 0..4096 {
            if a.primary[i] != Some(AggregatorId(2)) {
                assert_eq!(after.primary[i], a.primary[i], "partition {i}");
            }
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

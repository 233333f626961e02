//! Sets of per-node sequence numbers, stored as sorted disjoint ranges.
//!
//! Sequence numbers from one node are almost always contiguous, so a set of
//! a million delivered samples is usually a single range. The exact ledger
//! (what was delivered, dropped, lost) and the aggregators' de-duplication
//! both rest on this type.

use std::ops::Range;

/// A set of `u64` sequence numbers kept as sorted, disjoint, non-adjacent
/// half-open ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    ranges: Vec<Range<u64>>,
}

impl SeqSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self { ranges: Vec::new() }
    }

    /// Number of members.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Smallest member.
    pub fn first(&self) -> Option<u64> {
        self.ranges.first().map(|r| r.start)
    }

    /// Whether `seq` is a member.
    pub fn contains(&self, seq: u64) -> bool {
        // The first range whose end is beyond `seq` is the only candidate.
        let i = self.ranges.partition_point(|r| r.end <= seq);
        self.ranges.get(i).is_some_and(|r| r.start <= seq)
    }

    /// Adds `seq`; returns whether it was new.
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq == u64::MAX {
            // Not representable in a half-open range; never produced in practice.
            return false;
        }
        self.insert_range(seq..seq + 1) == 1
    }

    /// Adds every member of `range`; returns how many were new.
    pub fn insert_range(&mut self, range: Range<u64>) -> u64 {
        if range.start >= range.end {
            return 0;
        }
        // Fast path: appending at or after the end, the common case.
        if let Some(last) = self.ranges.last_mut() {
            if range.start >= last.start && range.start <= last.end {
                let added = range.end.saturating_sub(last.end);
                last.end = last.end.max(range.end);
                return added;
            }
        }
        // Ranges that touch or overlap `range` form the span [lo, hi).
        let lo = self.ranges.partition_point(|r| r.end < range.start);
        let hi = self.ranges.partition_point(|r| r.start <= range.end);
        let mut merged = range.clone();
        let mut already = 0;
        for r in &self.ranges[lo..hi] {
            already += r
                .end
                .min(range.end)
                .saturating_sub(r.start.max(range.start));
            merged.start = merged.start.min(r.start);
            merged.end = merged.end.max(r.end);
        }
        self.ranges.splice(lo..hi, std::iter::once(merged));
        (range.end - range.start) - already
    }

    /// Removes every member below `bound`.
    pub fn remove_below(&mut self, bound: u64) {
        let keep_from = self.ranges.partition_point(|r| r.end <= bound);
        self.ranges.drain(..keep_from);
        if let Some(first) = self.ranges.first_mut() {
            first.start = first.start.max(bound);
        }
    }

    /// Members of `self` in `range`.
    pub fn count_in(&self, range: Range<u64>) -> u64 {
        self.ranges
            .iter()
            .map(|r| {
                r.end
                    .min(range.end)
                    .saturating_sub(r.start.max(range.start))
            })
            .sum()
    }

    /// Number of members of `self` that are not in `other`.
    pub fn count_not_in(&self, other: &Self) -> u64 {
        self.ranges
            .iter()
            .map(|r| (r.end - r.start) - other.count_in(r.clone()))
            .sum()
    }

    /// Iterates over the members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(Clone::clone)
    }
}

impl FromIterator<u64> for SeqSet {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let mut s = Self::new();
        for x in iter {
            s.insert(x);
        }
        s
    }
}

/// As a list of `[start, end)` pairs, so a part file of a sharded run
/// carries a million contiguous sequence numbers as one pair. Reading one
/// back accepts pairs in any order and overlapping (they are united);
/// a pair whose end is before its start is refused.
impl serde::Serialize for SeqSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.ranges.len()))?;
        for r in &self.ranges {
            seq.serialize_element(&[r.start, r.end])?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for SeqSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<[u64; 2]>::deserialize(d)?;
        let mut set = Self::new();
        for [start, end] in pairs {
            if end < start {
                return Err(serde::de::Error::custom(format!(
                    "'[{start}, {end}]' is not a range of sequence numbers; expected [start, end] with start <= end"
                )));
            }
            set.insert_range(start..end);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn contiguous_inserts_stay_one_range() {
        let mut s = SeqSet::new();
        for i in 0..1000 {
            assert!(s.insert(i));
        }
        assert!(!s.insert(500));
        assert_eq!((s.ranges().len(), s.ranges()[0].clone()), (1, 0..1000));
        assert_eq!(s.len(), 1000);
    }

    #[test]
    fn gap_filling_merges_neighbours() {
        let mut s: SeqSet = [1, 2, 5, 6].into_iter().collect();
        assert_eq!(s.ranges(), &[1..3, 5..7]);
        assert_eq!(s.insert_range(3..5), 2);
        assert_eq!((s.ranges().len(), s.ranges()[0].clone()), (1, 1..7));
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreeset(ops in prop::collection::vec((0u64..200, 0u64..20, any::<bool>()), 0..200)) {
            let mut model = BTreeSet::new();
            let mut s = SeqSet::new();
            for (start, len, is_remove) in ops {
                if is_remove {
                    model.retain(|&x| x >= start);
                    s.remove_below(start);
                } else {
                    let new = (start..start + len).filter(|x| model.insert(*x)).count() as u64;
                    prop_assert_eq!(s.insert_range(start..start + len), new);
                }
                prop_assert_eq!(s.len(), model.len() as u64);
                prop_assert!(s.iter().eq(model.iter().copied()));
                // Invariant: sorted, disjoint and non-adjacent.
                for w in s.ranges().windows(2) {
                    prop_assert!(w[0].end < w[1].start);
                }
                for x in 0..230 {
                    prop_assert_eq!(s.contains(x), model.contains(&x));
                }
            }
        }

        #[test]
        fn count_not_in_matches_set_difference(a in prop::collection::btree_set(0u64..100, 0..60), b in prop::collection::btree_set(0u64..100, 0..60)) {
            let sa: SeqSet = a.iter().copied().collect();
            let sb: SeqSet = b.iter().copied().collect();
            prop_assert_eq!(sa.count_not_in(&sb), a.difference(&b).count() as u64);
        }
    }
}

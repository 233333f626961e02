//! The store-and-forward buffer: samples stay here until the aggregator
//! acknowledges them end to end.
//!
//! Its size is set in bytes, like the RAM a real MCU can spare, and each
//! sample takes [`RECORD_BYTES`] (a packed record: sequence number, time,
//! six readings, flags, battery). When it is full, the [`DropPolicy`] decides
//! which sample goes.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use vitalmesh_wire::Sample;

/// Bytes one buffered sample occupies on the device.
pub const RECORD_BYTES: u32 = 32;

/// What to do when a new sample arrives and the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Evict the oldest unacknowledged sample (the default): after a long
    /// outage the freshest vitals are the ones a clinician needs.
    #[default]
    DropOldest,
    /// Keep the backlog and discard the new sample.
    DropNewest,
}

/// The outcome of storing a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored; nothing lost.
    Kept,
    /// Stored by evicting this (older) sample.
    Evicted(Sample),
    /// Not stored: the buffer was full under [`DropPolicy::DropNewest`].
    Refused(Sample),
}

/// Samples in increasing sequence order, bounded in records.
#[derive(Debug, Clone)]
pub struct SampleBuffer {
    samples: VecDeque<Sample>,
    capacity: usize,
    policy: DropPolicy,
}

impl SampleBuffer {
    /// A buffer of `bytes` bytes (at least one record).
    pub fn new(bytes: u32, policy: DropPolicy) -> Self {
        Self {
            samples: VecDeque::new(),
            capacity: (bytes / RECORD_BYTES).max(1) as usize,
            policy,
        }
    }

    /// Capacity in samples.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Oldest sequence number held.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.samples.front().map(|s| s.seq)
    }

    /// Stores `sample`, which must have a higher `seq` than any held.
    pub fn push(&mut self, sample: Sample) -> Stored {
        debug_assert!(self.samples.back().is_none_or(|b| b.seq < sample.seq));
        if self.samples.len() < self.capacity {
            self.samples.push_back(sample);
            return Stored::Kept;
        }
        match self.policy {
            DropPolicy::DropOldest => {
                let evicted = self.samples.pop_front().expect("capacity is at least one");
                self.samples.push_back(sample);
                Stored::Evicted(evicted)
            }
            DropPolicy::DropNewest => Stored::Refused(sample),
        }
    }

    /// Removes and yields every sample with `seq < next_expected`.
    pub fn acknowledge_below(&mut self, next_expected: u64) -> impl Iterator<Item = Sample> + '_ {
        let n = self.index_of(next_expected);
        self.samples.drain(..n)
    }

    /// Held samples with `seq >= from`, in order.
    pub fn from_seq(&self, from: u64) -> impl Iterator<Item = &Sample> {
        let start = self.index_of(from);
        self.samples.range(start..)
    }

    /// How many held samples have `seq < seq`. Held sequence numbers are
    /// usually consecutive (only a refused sample under `DropNewest` leaves
    /// a gap), so the index is a subtraction; a binary search is the
    /// fallback. This runs on every transmit and acknowledgement: the
    /// search showed up at 3.6 % of a saturated run's CPU.
    fn index_of(&self, seq: u64) -> usize {
        let Some(oldest) = self.samples.front().map(|s| s.seq) else {
            return 0;
        };
        let guess = seq.saturating_sub(oldest);
        match usize::try_from(guess) {
            Ok(i)
                if i >= self.samples.len() && self.samples.back().is_some_and(|s| s.seq < seq) =>
            {
                return self.samples.len();
            }
            // Sequence numbers strictly increase: the match is the index.
            Ok(i) if self.samples.get(i).is_some_and(|s| s.seq == seq) => return i,
            _ => {}
        }
        self.samples.partition_point(|s| s.seq < seq)
    }

    /// Empties the buffer (a crash wipes RAM), returning what was held.
    pub fn take_all(&mut self) -> VecDeque<Sample> {
        std::mem::take(&mut self.samples)
    }

    /// Every held sample, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vitalmesh_wire::{FaultFlags, NodeId, Timestamp, Vitals};

    fn sample(seq: u64) -> Sample {
        Sample {
            node: NodeId(1),
            seq,
            time: Timestamp::from_micros(seq),
            vitals: Vitals::default(),
            battery_pct: 100,
            faults: FaultFlags::default(),
            admission: 0,
        }
    }

    proptest! {
        /// The subtraction shortcut finds what a search would, with or
        /// without gaps in the held sequence numbers.
        #[test]
        fn lookups_by_sequence_number_match_a_search(
            steps in prop::collection::vec(1u64..4, 0..60),
            probes in prop::collection::vec(0u64..200, 1..20),
        ) {
            let mut buffer = SampleBuffer::new(64 * RECORD_BYTES, DropPolicy::DropOldest);
            let mut seq = 5;
            for step in steps {
                let _ = buffer.push(sample(seq));
                seq += step;
            }
            let held: Vec<u64> = buffer.iter().map(|s| s.seq).collect();
            for from in probes {
                let expected: Vec<u64> = held.iter().copied().filter(|s| *s >= from).collect();
                let got: Vec<u64> = buffer.from_seq(from).map(|s| s.seq).collect();
                prop_assert_eq!(got, expected);
            }
            let cut = held.get(held.len() / 2).copied().unwrap_or(0);
            let acked: Vec<u64> = buffer.acknowledge_below(cut).map(|s| s.seq).collect();
            prop_assert_eq!(acked, held.iter().copied().filter(|s| *s < cut).collect::<Vec<_>>());
        }
    }
}

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
        let n = self.samples.partition_point(|s| s.seq < next_expected);
        self.samples.drain(..n)
    }

    /// Held samples with `seq >= from`, in order.
    pub fn from_seq(&self, from: u64) -> impl Iterator<Item = &Sample> {
        let start = self.samples.partition_point(|s| s.seq < from);
        self.samples.range(start..)
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

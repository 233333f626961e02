//! The discrete-event queue: events ordered by time, ties broken by
//! insertion order so a run is deterministic.
//!
//! Heap entries are 24 bytes — time, sequence number, slab slot — and the
//! payloads wait in a slab with a free list: the heap is the hottest
//! structure of a virtual run, and sifting small entries is cheap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A time-ordered queue of `T`.
#[derive(Debug)]
pub(crate) struct EventQueue<T> {
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slab: Vec<Option<T>>,
    free: Vec<u32>,
    seq: u64,
    popped: u64,
}

impl<T> EventQueue<T> {
    pub(crate) fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            seq: 0,
            popped: 0,
        }
    }

    /// Queues `event` at `at` (µs), after everything already queued then.
    pub(crate) fn push(&mut self, at: u64, event: T) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(event);
                slot
            }
            None => {
                self.slab.push(Some(event));
                (self.slab.len() - 1) as u32
            }
        };
        self.heap.push(Reverse((at, self.seq, slot)));
    }

    /// The earliest event if it is due by `until`, with its time.
    pub(crate) fn pop_due(&mut self, until: u64) -> Option<(u64, T)> {
        let &Reverse((at, _, _)) = self.heap.peek()?;
        if at > until {
            return None;
        }
        let Reverse((at, _, slot)) = self.heap.pop().expect("peeked");
        let event = self.slab[slot as usize]
            .take()
            .expect("a queued slot holds its event");
        self.free.push(slot);
        self.popped += 1;
        Some((at, event))
    }

    /// Events taken out so far.
    pub(crate) fn popped(&self) -> u64 {
        self.popped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_by_time_then_in_the_order_they_went_in() {
        let mut q = EventQueue::new();
        q.push(20, "c");
        q.push(10, "a");
        q.push(10, "b");
        q.push(30, "d");
        let mut out = Vec::new();
        while let Some((at, e)) = q.pop_due(25) {
            out.push((at, e));
            // A slot freed is reused without disturbing the order.
            if e == "a" {
                q.push(10, "a2");
            }
        }
        assert_eq!(out, [(10, "a"), (10, "b"), (10, "a2"), (20, "c")]);
        assert_eq!(q.pop_due(30), Some((30, "d")));
        assert_eq!(q.popped(), 5);
    }
}

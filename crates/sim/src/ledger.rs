//! The run's exact ledger: every sample produced, and where it ended up.
//!
//! Per node, sequence numbers `0..produced` are classified, in this order:
//! **delivered** (ingested by a primary aggregator; a re-delivery is a
//! duplicate, not a second sample), else **still buffered** at the node,
//! else **dropped** on buffer overflow, else **lost** in a node crash, else
//! **unexplained**. Unexplained must be zero unless something is broken:
//! a sample the node let go of that no aggregator ingested.

use serde::Serialize;
use vitalmesh_core::{Population, WardId};
use vitalmesh_firmware::Node;
use vitalmesh_firmware::ledger::NodeLedger;
use vitalmesh_wire::{NodeId, SeqSet};

/// What a node leaves behind when a run ends.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeFinal {
    /// The node.
    pub id: NodeId,
    /// Samples produced: sequence numbers `0..produced`.
    pub produced: u64,
    /// Its own accounting.
    pub ledger: NodeLedger,
    /// Sequence numbers still in its buffer.
    pub buffered: SeqSet,
}

impl NodeFinal {
    /// What `node` holds now.
    pub fn of(node: &Node) -> Self {
        Self {
            id: node.id(),
            produced: node.next_seq(),
            ledger: node.ledger().clone(),
            buffered: node.buffered().map(|s| s.seq).collect(),
        }
    }
}

/// What a node has already added to a driver's running totals: its own
/// counts only grow (but for the buffer), so each update reports how far
/// they moved. Both drivers keep one per node.
#[derive(Debug, Default, Clone)]
pub struct NodeTally {
    produced: u64,
    acked: u64,
    dropped: u64,
    lost: u64,
    buffered: i64,
    flat: bool,
}

/// How far a node's counts moved since its last [`NodeTally::update`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TallyDelta {
    /// Samples produced.
    pub produced: u64,
    /// Samples acknowledged end to end.
    pub acked: u64,
    /// Samples evicted from the full buffer.
    pub dropped: u64,
    /// Samples lost in crashes.
    pub lost: u64,
    /// Change in samples held (may be negative).
    pub buffered: i64,
    /// The battery ran flat since the last update (the run must know, so
    /// that a restart targets it).
    pub went_flat: bool,
}

impl NodeTally {
    /// Reads `node` and returns what changed.
    pub fn update(&mut self, node: &Node) -> TallyDelta {
        let ledger = node.ledger();
        let moved = |now: u64, last: &mut u64| {
            let d = now - *last;
            *last = now;
            d
        };
        let mut delta = TallyDelta {
            produced: moved(node.next_seq(), &mut self.produced),
            acked: moved(ledger.acked.len(), &mut self.acked),
            dropped: moved(ledger.dropped_overflow.len(), &mut self.dropped),
            lost: moved(ledger.lost_on_crash.len(), &mut self.lost),
            buffered: node.buffered_len() as i64 - self.buffered,
            went_flat: false,
        };
        self.buffered += delta.buffered;
        let flat = node.power() == vitalmesh_firmware::Power::Flat;
        delta.went_flat = flat && !self.flat;
        self.flat = flat;
        delta
    }

    /// Samples held at the last update (what a stopping node takes away
    /// from the running total).
    pub fn buffered(&self) -> i64 {
        self.buffered
    }
}

/// One line of the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
    /// Samples taken.
    pub produced: u64,
    /// Distinct samples ingested by an aggregator.
    pub delivered: u64,
    /// Extra deliveries of samples already delivered.
    pub duplicates: u64,
    /// Evicted from a full node buffer, never delivered.
    pub dropped_overflow: u64,
    /// Wiped by a node crash, never delivered.
    pub lost_on_crash: u64,
    /// Still in a node buffer when the run ended.
    pub still_buffered: u64,
    /// None of the above: a bug or a loss vitalmesh cannot explain.
    pub unexplained: u64,
    /// Ack entries the nodes refused because their tag did not verify
    /// (forged or altered): acks that would have made a node drop samples
    /// no aggregator had.
    pub forged_acks_refused: u64,
}

impl LedgerRow {
    /// One line for people: whether every sample is accounted for.
    pub fn verdict(&self) -> &'static str {
        if self.unexplained == 0 {
            "every sample accounted for"
        } else {
            "SAMPLES UNACCOUNTED FOR"
        }
    }

    fn add(&mut self, o: &Self) {
        self.produced += o.produced;
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
        self.dropped_overflow += o.dropped_overflow;
        self.lost_on_crash += o.lost_on_crash;
        self.still_buffered += o.still_buffered;
        self.unexplained += o.unexplained;
        self.forged_acks_refused += o.forged_acks_refused;
    }
}

/// The ledger of the whole run and of each ward.
#[derive(Debug, Clone, Serialize)]
pub struct Ledger {
    /// All nodes.
    pub total: LedgerRow,
    /// Per ward, in ward order.
    pub wards: Vec<WardLedger>,
}

/// One ward's ledger.
#[derive(Debug, Clone, Serialize)]
pub struct WardLedger {
    /// The ward.
    pub ward: WardId,
    /// Its figures.
    #[serde(flatten)]
    pub row: LedgerRow,
}

/// Classifies one node's samples.
pub fn node_row(outcome: &NodeFinal, delivered: &SeqSet) -> LedgerRow {
    let produced = outcome.produced;
    let delivered_n = delivered.count_in(0..produced);
    let still_buffered = outcome.buffered.count_not_in(delivered);
    let dropped = outcome.ledger.dropped_overflow.count_not_in(delivered);
    let lost = outcome.ledger.lost_on_crash.count_not_in(delivered);
    let accounted = delivered_n + still_buffered + dropped + lost;
    LedgerRow {
        produced,
        delivered: delivered_n,
        duplicates: 0,
        dropped_overflow: dropped,
        lost_on_crash: lost,
        still_buffered,
        unexplained: produced.saturating_sub(accounted),
        forged_acks_refused: outcome.ledger.forged_acks,
    }
}

/// The whole ledger. `duplicates` per node come from the observer.
pub fn compute(
    outcomes: &[NodeFinal],
    delivered: &[SeqSet],
    duplicates: &[u64],
    population: &Population,
) -> Ledger {
    let mut wards: Vec<WardLedger> = (0..population.wards)
        .map(|w| WardLedger {
            ward: WardId(w),
            row: LedgerRow::default(),
        })
        .collect();
    let mut total = LedgerRow::default();
    let empty = SeqSet::new();
    for o in outcomes {
        let i = o.id.0 as usize;
        let mut row = node_row(o, delivered.get(i).unwrap_or(&empty));
        row.duplicates = duplicates.get(i).copied().unwrap_or(0);
        total.add(&row);
        if let Some(w) = wards.get_mut(usize::from(population.ward_of(o.id).0)) {
            w.row.add(&row);
        }
    }
    Ledger { total, wards }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(produced: u64, buffered: &[u64], dropped: &[u64], lost: &[u64]) -> NodeFinal {
        NodeFinal {
            id: NodeId(0),
            produced,
            ledger: NodeLedger {
                produced,
                dropped_overflow: dropped.iter().copied().collect(),
                lost_on_crash: lost.iter().copied().collect(),
                ..NodeLedger::default()
            },
            buffered: buffered.iter().copied().collect(),
        }
    }

    #[test]
    fn every_sample_lands_in_exactly_one_column() {
        // 0..4 delivered; 4,5 lost in a crash; 6 dropped; 7,8 buffered; 9 nowhere.
        let delivered: SeqSet = (0..4).collect();
        let row = node_row(&outcome(10, &[7, 8], &[6], &[4, 5]), &delivered);
        assert_eq!(
            row,
            LedgerRow {
                produced: 10,
                delivered: 4,
                duplicates: 0,
                dropped_overflow: 1,
                lost_on_crash: 2,
                still_buffered: 2,
                unexplained: 1,
                forged_acks_refused: 0,
            }
        );
    }

    #[test]
    fn a_delivered_sample_the_node_later_lost_counts_as_delivered() {
        // The aggregator ingested 3 but its ack never arrived; then the node crashed.
        let delivered: SeqSet = (0..4).collect();
        let row = node_row(&outcome(4, &[], &[], &[3]), &delivered);
        assert_eq!(
            (row.delivered, row.lost_on_crash, row.unexplained),
            (4, 0, 0)
        );
    }
}

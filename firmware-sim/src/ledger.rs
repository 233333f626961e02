//! Every sample a node produces is accounted for.
//!
//! A sample leaves the node's buffer exactly once: acknowledged end to end,
//! evicted on overflow, or lost when the node crashes. So at every moment
//!
//! ```text
//! produced = acked + buffered + dropped_overflow + lost_on_crash
//! ```
//!
//! The sets of dropped and lost sequence numbers are kept (as ranges, so they
//! stay small) because the run's exact ledger needs to know *which* samples
//! never reached an aggregator and why.

use vitalmesh_wire::SeqSet;

/// One node's accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeLedger {
    /// Samples taken.
    pub produced: u64,
    /// Sequence numbers acknowledged end to end.
    pub acked: SeqSet,
    /// Sequence numbers evicted or refused because the buffer was full.
    pub dropped_overflow: SeqSet,
    /// Sequence numbers wiped from RAM by a crash.
    pub lost_on_crash: SeqSet,
    /// Batches handed to the network.
    pub transmissions: u64,
    /// Samples handed to the network, counting each re-send.
    pub samples_sent: u64,
    /// Times the node gave up waiting for an acknowledgement and re-sent
    /// everything unacknowledged.
    pub retransmission_rounds: u64,
    /// Successful connections.
    pub connects: u64,
    /// Connections lost or refused.
    pub disconnects: u64,
    /// Ack entries for this node that did not verify under its ack key
    /// (forged or altered), and so changed nothing.
    pub forged_acks: u64,
}

impl NodeLedger {
    /// Checks `produced = acked + buffered + dropped + lost`, and that no
    /// sample is in two outcomes.
    pub fn balances(&self, buffered: u64) -> bool {
        let (a, d, l) = (&self.acked, &self.dropped_overflow, &self.lost_on_crash);
        self.produced == a.len() + buffered + d.len() + l.len()
            && a.count_not_in(d) == a.len()
            && a.count_not_in(l) == a.len()
            && d.count_not_in(l) == d.len()
    }
}

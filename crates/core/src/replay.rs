//! The anti-replay window: has this sender's message been seen before?
//!
//! Every envelope carries its sender's (epoch, counter), unique and rising
//! (see `vitalmesh_wire::envelope`). A receiver keeps, per sender, the
//! highest pair seen and a bitmap of the [`WINDOW`] counters below it — the
//! sliding window of IPsec (RFC 4303 §3.4.3) and DTLS (RFC 9147 §4.5.1) —
//! so it needs 24 bytes per sender however long the run.
//!
//! A message inside the window that was seen already is a [`Freshness::Duplicate`]:
//! MQTT's at-least-once delivery and a gateway's re-relay make those
//! honestly, and processing one again is harmless (samples are
//! deduplicated by sequence number, acks are cumulative). A message from
//! an earlier epoch or below the window is [`Freshness::Replayed`]: nobody
//! honest sends that, so it is refused.

/// How many counters below the highest the window remembers.
pub const WINDOW: u64 = 64;

/// What the window says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Never seen: process it.
    New,
    /// Seen before, recently: an honest redelivery or a pointless replay.
    Duplicate,
    /// From an earlier epoch, or too old for the window: refuse it.
    Replayed,
}

/// One sender's window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// `None` until the first message.
    top: Option<(u32, u64)>,
    /// Bit `i`: counter `top - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    /// Checks `(epoch, counter)` and, unless it is replayed, records it.
    pub fn check(&mut self, (epoch, counter): (u32, u64)) -> Freshness {
        let Some((top_epoch, top)) = self.top else {
            self.top = Some((epoch, counter));
            self.seen = 1;
            return Freshness::New;
        };
        if epoch > top_epoch || (epoch == top_epoch && counter > top) {
            let shift = if epoch > top_epoch {
                WINDOW
            } else {
                counter - top
            };
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            } | 1;
            self.top = Some((epoch, counter));
            return Freshness::New;
        }
        if epoch < top_epoch || top - counter >= WINDOW {
            return Freshness::Replayed;
        }
        let bit = 1u64 << (top - counter);
        if self.seen & bit != 0 {
            Freshness::Duplicate
        } else {
            self.seen |= bit;
            Freshness::New
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn new_duplicate_and_replayed() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check((0, 5)), Freshness::New);
        assert_eq!(w.check((0, 5)), Freshness::Duplicate);
        // Out of order inside the window is fine, once.
        assert_eq!(w.check((0, 3)), Freshness::New);
        assert_eq!(w.check((0, 3)), Freshness::Duplicate);
        assert_eq!(w.check((0, 100)), Freshness::New);
        assert_eq!(w.check((0, 36)), Freshness::Replayed, "below the window");
        assert_eq!(w.check((0, 37)), Freshness::New, "the window's last slot");
        // A reboot: the old epoch is over.
        assert_eq!(w.check((1, 0)), Freshness::New);
        assert_eq!(w.check((0, 101)), Freshness::Replayed);
        assert_eq!(w.check((1, 0)), Freshness::Duplicate);
    }

    proptest! {
        /// Against a model that remembers everything: the window never calls
        /// a message new twice, and within reach it agrees exactly.
        #[test]
        fn agrees_with_a_perfect_memory(msgs in prop::collection::vec((0u32..3, 0u64..300), 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            let mut top: Option<(u32, u64)> = None;
            for m in msgs {
                let verdict = w.check(m);
                let fresh = !seen.contains(&m);
                let reachable = top.is_none_or(|(e, c)| m.0 > e || (m.0 == e && m.1 + WINDOW > c));
                match verdict {
                    Freshness::New => prop_assert!(fresh && reachable),
                    Freshness::Duplicate => prop_assert!(!fresh && reachable),
                    Freshness::Replayed => prop_assert!(!reachable),
                }
                if verdict == Freshness::New {
                    seen.insert(m);
                    top = Some(top.map_or(m, |t| t.max(m)));
                }
            }
        }
    }
}

//! Which aggregators are alive, from each aggregator's own point of view.
//!
//! Evidence, fastest first: a peer that leaves cleanly says so
//! ([`AggregatorState::Leaving`]); a peer whose connection drops has its last
//! will published by the broker ([`AggregatorState::Offline`]); a peer that
//! silently stops (hung process, partitioned link) is caught by φ-accrual on
//! its heartbeats. Incarnation numbers keep a stale will from an earlier life
//! from killing a restarted peer. A peer that announces itself
//! [`AggregatorState::Joining`] is heard but not yet up: it owns nothing
//! until it says `Alive`, so its partitions stay where they are meanwhile.

use std::collections::BTreeMap;

use vitalmesh_wire::{AggregatorId, AggregatorState, AggregatorStatus, Timestamp};

use crate::phi::{PhiConfig, PhiDetector};

/// Why a peer is considered down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownReason {
    /// It said goodbye.
    Leaving,
    /// Its last will arrived: its connection dropped.
    LastWill,
    /// Its heartbeats stopped (φ over the threshold).
    Silent,
}

impl DownReason {
    /// A short word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leaving => "left",
            Self::LastWill => "last will",
            Self::Silent => "silent",
        }
    }
}

/// A change in the live set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerChange {
    /// A peer is (back) up.
    Up(AggregatorId),
    /// A peer is down.
    Down(AggregatorId, DownReason),
}

#[derive(Debug, Clone)]
struct Peer {
    incarnation: u64,
    detector: PhiDetector,
    up: bool,
    /// Announced `Joining` and not `Alive` since.
    joining: bool,
    /// Its capacity weight, as it last announced.
    weight: u16,
}

/// The peers one aggregator knows about.
#[derive(Debug, Clone)]
pub struct Membership {
    me: AggregatorId,
    config: PhiConfig,
    peers: BTreeMap<AggregatorId, Peer>,
}

impl Membership {
    /// Membership as seen by `me`.
    pub fn new(me: AggregatorId, config: PhiConfig) -> Self {
        Self {
            me,
            config,
            peers: BTreeMap::new(),
        }
    }

    /// Applies a status message (heartbeat, goodbye or last will).
    pub fn handle_status(
        &mut self,
        status: &AggregatorStatus,
        now: Timestamp,
    ) -> Option<PeerChange> {
        if status.aggregator == self.me {
            return None;
        }
        let config = self.config;
        let peer = self.peers.entry(status.aggregator).or_insert_with(|| Peer {
            incarnation: status.incarnation,
            detector: PhiDetector::new(&config),
            up: false,
            joining: false,
            weight: status.weight,
        });
        if status.incarnation < peer.incarnation {
            return None; // from an earlier life
        }
        if status.incarnation > peer.incarnation {
            peer.incarnation = status.incarnation;
            peer.detector = PhiDetector::new(&config);
        }
        if status.state != AggregatorState::Offline {
            // A will is registered at connect; a heartbeat is current.
            peer.weight = status.weight;
        }
        match status.state {
            AggregatorState::Joining => {
                // Heard, owning nothing yet. One already up (it only
                // reconnected) stays up: it keeps its state and resumes.
                peer.detector.heartbeat(now, &config);
                peer.joining = !peer.up;
                None
            }
            AggregatorState::Alive => {
                peer.detector.heartbeat(now, &config);
                peer.joining = false;
                (!peer.up).then(|| {
                    peer.up = true;
                    PeerChange::Up(status.aggregator)
                })
            }
            AggregatorState::Leaving | AggregatorState::Offline => peer.up.then(|| {
                peer.up = false;
                peer.joining = false;
                let reason = if status.state == AggregatorState::Leaving {
                    DownReason::Leaving
                } else {
                    DownReason::LastWill
                };
                PeerChange::Down(status.aggregator, reason)
            }),
        }
    }

    /// Peers whose heartbeats have stopped since the last check.
    pub fn check(&mut self, now: Timestamp) -> Vec<PeerChange> {
        let config = self.config;
        self.peers
            .iter_mut()
            .filter(|(_, p)| p.up && !p.detector.is_available(now, &config))
            .map(|(&id, p)| {
                p.up = false;
                PeerChange::Down(id, DownReason::Silent)
            })
            .collect()
    }

    /// Peers currently considered up (not including `me`).
    pub fn live_peers(&self) -> impl Iterator<Item = AggregatorId> + '_ {
        self.peers.iter().filter(|(_, p)| p.up).map(|(&id, _)| id)
    }

    /// A peer's capacity weight (1 if never heard).
    pub fn weight_of(&self, peer: AggregatorId) -> u16 {
        self.peers.get(&peer).map_or(1, |p| p.weight.max(1))
    }

    /// Peers joining now, heard within their φ window: they will be up in
    /// a moment (a mesh starting together, where everyone joins at once).
    pub fn joining_peers(&self, now: Timestamp) -> impl Iterator<Item = AggregatorId> + '_ {
        let config = self.config;
        self.peers
            .iter()
            .filter(move |(_, p)| p.joining && p.detector.is_available(now, &config))
            .map(|(&id, _)| id)
    }

    /// Measures every peer's silence from `now`: after we were cut off,
    /// their quiet was ours.
    pub fn restart_clocks(&mut self, now: Timestamp) {
        let config = self.config;
        for peer in self.peers.values_mut() {
            peer.detector = PhiDetector::new(&config);
            peer.detector.heartbeat(now, &config);
        }
    }

    /// Forgets every peer: after our own reconnect we rebuild the view from
    /// fresh heartbeats rather than trust a stale one.
    pub fn reset(&mut self) {
        self.peers.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1000);

    fn status(a: u16, incarnation: u64, state: AggregatorState) -> AggregatorStatus {
        AggregatorStatus {
            aggregator: AggregatorId(a),
            incarnation,
            beat: 0,
            state,
            weight: 1,
            sent_at: Timestamp::EPOCH,
        }
    }

    #[test]
    fn a_last_will_takes_a_peer_down_at_once_and_a_heartbeat_brings_it_back() {
        let mut m = Membership::new(AggregatorId(0), PhiConfig::default());
        assert_eq!(
            m.handle_status(&status(1, 5, AggregatorState::Alive), T0),
            Some(PeerChange::Up(AggregatorId(1)))
        );
        assert_eq!(
            m.handle_status(
                &status(1, 5, AggregatorState::Alive),
                T0 + Duration::from_secs(1)
            ),
            None
        );
        assert_eq!(
            m.handle_status(
                &status(1, 5, AggregatorState::Offline),
                T0 + Duration::from_secs(2)
            ),
            Some(PeerChange::Down(AggregatorId(1), DownReason::LastWill))
        );
        assert_eq!(m.live_peers().count(), 0);
        assert_eq!(
            m.handle_status(
                &status(1, 6, AggregatorState::Alive),
                T0 + Duration::from_secs(3)
            ),
            Some(PeerChange::Up(AggregatorId(1)))
        );
    }

    #[test]
    fn a_joining_peer_is_heard_but_owns_nothing_until_it_says_alive() {
        let mut m = Membership::new(AggregatorId(0), PhiConfig::default());
        let mut joining = status(1, 5, AggregatorState::Joining);
        joining.weight = 3;
        assert_eq!(m.handle_status(&joining, T0), None);
        assert_eq!(m.live_peers().count(), 0, "not an owner yet");
        assert_eq!(
            m.joining_peers(T0 + Duration::from_millis(100))
                .collect::<Vec<_>>(),
            [AggregatorId(1)]
        );
        assert_eq!(m.weight_of(AggregatorId(1)), 3, "its weight is heard");
        assert_eq!(
            m.handle_status(
                &status(1, 5, AggregatorState::Alive),
                T0 + Duration::from_secs(2)
            ),
            Some(PeerChange::Up(AggregatorId(1)))
        );
        assert_eq!(m.joining_peers(T0 + Duration::from_secs(2)).count(), 0);
        // A peer that only reconnected and rejoins stays up meanwhile.
        assert_eq!(
            m.handle_status(
                &status(1, 5, AggregatorState::Joining),
                T0 + Duration::from_secs(3)
            ),
            None
        );
        assert_eq!(m.live_peers().collect::<Vec<_>>(), [AggregatorId(1)]);
    }

    #[test]
    fn a_stale_will_from_an_earlier_life_is_ignored() {
        let mut m = Membership::new(AggregatorId(0), PhiConfig::default());
        m.handle_status(&status(1, 7, AggregatorState::Alive), T0);
        assert_eq!(
            m.handle_status(&status(1, 6, AggregatorState::Offline), T0),
            None
        );
        assert_eq!(m.live_peers().collect::<Vec<_>>(), [AggregatorId(1)]);
    }

    #[test]
    fn silence_is_detected_by_phi() {
        let mut m = Membership::new(AggregatorId(0), PhiConfig::default());
        for s in 0..30 {
            m.handle_status(
                &status(2, 1, AggregatorState::Alive),
                T0 + Duration::from_secs(s),
            );
        }
        let last = T0 + Duration::from_secs(29);
        assert!(m.check(last + Duration::from_secs(3)).is_empty());
        assert_eq!(
            m.check(last + Duration::from_secs(6)),
            [PeerChange::Down(AggregatorId(2), DownReason::Silent)]
        );
        assert!(
            m.check(last + Duration::from_secs(7)).is_empty(),
            "reported once"
        );
    }

    #[test]
    fn our_own_heartbeats_are_not_a_peer() {
        let mut m = Membership::new(AggregatorId(3), PhiConfig::default());
        assert_eq!(
            m.handle_status(&status(3, 1, AggregatorState::Alive), T0),
            None
        );
        assert_eq!(m.live_peers().count(), 0);
    }
}

//! One client's modelled link to the broker: base delay with jitter, and
//! the faults of a scenario acting on it — partitions (bytes held until the
//! partition heals), extra latency, packet loss (TCP turns it into
//! retransmission delay). The same delay maths as the real-time shaper
//! (`vitalmesh-mesh`'s `mqtt/link.rs`), so a fault means the same thing in
//! both modes.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use vitalmesh_firmware::rng::{Draw, splitmix64};

/// Linux's minimum TCP retransmission timeout: a lost segment arrives this
/// much later, doubling for consecutive losses (up to 16×).
pub const MIN_RTO: Duration = Duration::from_millis(200);

/// Direction of travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Client to broker.
    Up = 0,
    /// Broker to client.
    Down = 1,
}

/// The delay one message suffers on a link: `latency ± jitter`, plus an
/// RTO when it is lost (`lost_in_a_row` counts consecutive losses).
pub fn shaped_delay(
    latency: Duration,
    jitter: Duration,
    loss: f64,
    unit: &mut impl FnMut() -> f64,
    lost_in_a_row: &mut u32,
) -> Duration {
    let latency_us = latency.as_micros() as f64;
    let jitter_us = jitter.min(latency).as_micros() as f64;
    let mut us = latency_us;
    if jitter_us > 0.0 {
        us += jitter_us * (2.0 * unit() - 1.0);
    }
    if loss > 0.0 && unit() < loss {
        us += MIN_RTO.as_micros() as f64 * f64::from(1u32 << (*lost_in_a_row).min(4));
        *lost_in_a_row += 1;
    } else {
        *lost_in_a_row = 0;
    }
    Duration::from_micros(us.max(0.0) as u64)
}

/// A link's state.
#[derive(Debug)]
pub(crate) struct Link {
    /// Partitions in force (they nest).
    pub(crate) partitions: u32,
    /// Bumped when a partition starts, so a keep-alive check can tell
    /// whether the partition it was set for is still the one in force.
    pub(crate) partition_epoch: u32,
    base: Duration,
    base_jitter: Duration,
    extra: Duration,
    extra_jitter: Duration,
    loss: f64,
    lost_in_a_row: [u32; 2],
    /// Latest arrival scheduled per direction: TCP keeps order.
    last_arrival_us: [u64; 2],
    rng: ChaCha8Rng,
    /// SplitMix64 state for the base jitter, seeded from `rng`: drawn for
    /// every message, so it must be cheap; faults draw from `rng`.
    jitter_state: u64,
}

impl Link {
    pub(crate) fn new(base: Duration, base_jitter: Duration, mut rng: ChaCha8Rng) -> Self {
        let jitter_state = rand_chacha::rand_core::RngCore::next_u64(&mut rng);
        Self {
            jitter_state,
            partitions: 0,
            partition_epoch: 0,
            base,
            base_jitter,
            extra: Duration::ZERO,
            extra_jitter: Duration::ZERO,
            loss: 0.0,
            lost_in_a_row: [0; 2],
            last_arrival_us: [0; 2],
            rng,
        }
    }

    pub(crate) fn is_partitioned(&self) -> bool {
        self.partitions > 0
    }

    pub(crate) fn set_latency(&mut self, latency: Duration, jitter: Duration) {
        self.extra = latency;
        self.extra_jitter = jitter.min(latency);
    }

    pub(crate) fn set_loss(&mut self, share: f64) {
        self.loss = share.clamp(0.0, 1.0);
    }

    /// When a message sent at `now_us` arrives (never before an earlier one
    /// in the same direction).
    pub(crate) fn arrival(&mut self, now_us: u64, dir: Dir) -> u64 {
        let d = dir as usize;
        if self.extra.is_zero() && self.loss == 0.0 {
            // No fault on the link: base delay ± base jitter, integer maths.
            let base = self.base.as_micros() as u64;
            let jitter = self.base_jitter.as_micros() as u64;
            let delay = if jitter == 0 {
                base
            } else {
                base - jitter + splitmix64(&mut self.jitter_state) % (2 * jitter + 1)
            };
            let at = (now_us + delay).max(self.last_arrival_us[d]);
            self.last_arrival_us[d] = at;
            return at;
        }
        let rng = &mut self.rng;
        let mut unit = || rng.unit();
        let mut delay = shaped_delay(
            self.base,
            self.base_jitter,
            0.0,
            &mut unit,
            &mut self.lost_in_a_row[d],
        );
        if !self.extra.is_zero() || self.loss > 0.0 {
            delay += shaped_delay(
                self.extra,
                self.extra_jitter,
                self.loss,
                &mut unit,
                &mut self.lost_in_a_row[d],
            );
        }
        let at = (now_us + delay.as_micros() as u64).max(self.last_arrival_us[d]);
        self.last_arrival_us[d] = at;
        at
    }
}

#[cfg(test)]
mod tests {
    use vitalmesh_firmware::rng::{Purpose, stream};
    use vitalmesh_wire::NodeId;

    use super::*;

    fn link() -> Link {
        Link::new(
            Duration::from_millis(2),
            Duration::from_millis(1),
            stream(1, NodeId(0), Purpose::Link),
        )
    }

    #[test]
    fn delays_stay_within_base_and_jitter_and_keep_order() {
        let mut l = link();
        let mut last = 0;
        for i in 0..1000u64 {
            let now = i * 100;
            let at = l.arrival(now, Dir::Up);
            assert!(at >= last, "order kept");
            assert!(
                at >= now + 1000 && at <= now.max(last) + 3000 + 100,
                "{at} at {now}"
            );
            last = at;
        }
    }

    #[test]
    fn loss_becomes_retransmission_delay_in_the_right_share() {
        let mut l = link();
        l.set_loss(0.1);
        let mut delayed = 0;
        let mut now = 0;
        for _ in 0..10_000 {
            now += 10_000_000;
            if l.arrival(now, Dir::Down) - now >= 200_000 {
                delayed += 1;
            }
        }
        assert!((900..1100).contains(&delayed), "{delayed}");
    }
}

//! Network conditions on one client's link to the broker, applied to its
//! real bytes at the socket.
//!
//! - **Partition:** no byte moves in either direction. The client's
//!   keep-alive then fails and so does the broker's (which publishes an
//!   aggregator's last will); a new connection cannot be opened until the
//!   partition heals, as if SYNs were dropped. Bytes the broker wrote just
//!   before stay in the kernel buffer and arrive after a short partition,
//!   as TCP would deliver them after retransmission.
//! - **Latency:** bytes in each direction are held for `latency ± jitter`
//!   (uniform), keeping their order.
//! - **Packet loss:** TCP hides loss from the application and turns it into
//!   delay: a lost segment arrives after a retransmission timeout. A share
//!   of reads and writes is therefore delayed by an RTO of 200 ms (Linux's
//!   minimum), doubling for consecutive losses up to 3.2 s.
//!
//! One `LinkConditions` is shared between a fault injector (which sets it)
//! and the connections of one client (which read it).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Settable conditions of one link.
#[derive(Debug, Default)]
pub struct LinkConditions {
    /// Partitions in force (they nest).
    partitions: AtomicU32,
    latency_us: AtomicU64,
    jitter_us: AtomicU64,
    /// Loss share in parts per million.
    loss_ppm: AtomicU32,
}

impl LinkConditions {
    /// Starts a partition.
    pub fn partition(&self) {
        self.partitions.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends one partition.
    pub fn heal(&self) {
        let _ = self
            .partitions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1));
    }

    /// Whether bytes are blocked.
    pub fn is_partitioned(&self) -> bool {
        self.partitions.load(Ordering::Relaxed) > 0
    }

    /// Sets latency and jitter (replacing earlier values).
    pub fn set_latency(&self, latency: Duration, jitter: Duration) {
        self.latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
        self.jitter_us
            .store(jitter.min(latency).as_micros() as u64, Ordering::Relaxed);
    }

    /// Sets the loss share, 0–1 (replacing an earlier value).
    pub fn set_loss(&self, share: f64) {
        self.loss_ppm
            .store((share.clamp(0.0, 1.0) * 1e6) as u32, Ordering::Relaxed);
    }

    /// Whether bytes are delayed at all.
    pub fn is_shaping(&self) -> bool {
        self.latency_us.load(Ordering::Relaxed) > 0 || self.loss_ppm.load(Ordering::Relaxed) > 0
    }

    /// The delay for one chunk of bytes; `lost_in_a_row` tracks consecutive
    /// losses for the doubling RTO.
    pub(crate) fn delay(&self, rng: &mut u64, lost_in_a_row: &mut u32) -> Duration {
        let latency = self.latency_us.load(Ordering::Relaxed) as f64;
        let jitter = self.jitter_us.load(Ordering::Relaxed) as f64;
        let mut us = latency + jitter * (2.0 * unit(rng) - 1.0);
        let loss = f64::from(self.loss_ppm.load(Ordering::Relaxed)) / 1e6;
        if loss > 0.0 && unit(rng) < loss {
            us += 200_000.0 * f64::from(1u32 << (*lost_in_a_row).min(4));
            *lost_in_a_row += 1;
        } else {
            *lost_in_a_row = 0;
        }
        Duration::from_micros(us.max(0.0) as u64)
    }
}

/// SplitMix64 to `[0, 1)`: jitter needs no stronger randomness.
fn unit(state: &mut u64) -> f64 {
    (vitalmesh_firmware::rng::splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_nest() {
        let l = LinkConditions::default();
        l.partition();
        l.partition();
        l.heal();
        assert!(l.is_partitioned());
        l.heal();
        l.heal();
        assert!(!l.is_partitioned());
    }

    #[test]
    fn delays_stay_within_latency_and_jitter() {
        let l = LinkConditions::default();
        l.set_latency(Duration::from_millis(50), Duration::from_millis(10));
        let (mut rng, mut lost) = (1, 0);
        let d: Vec<Duration> = (0..1000).map(|_| l.delay(&mut rng, &mut lost)).collect();
        assert!(
            d.iter()
                .all(|d| (Duration::from_millis(40)..=Duration::from_millis(60)).contains(d))
        );
        let mean = d.iter().sum::<Duration>() / 1000;
        assert!(
            (Duration::from_millis(49)..=Duration::from_millis(51)).contains(&mean),
            "{mean:?}"
        );
    }

    #[test]
    fn loss_becomes_retransmission_delay_in_the_right_share() {
        let l = LinkConditions::default();
        l.set_loss(0.1);
        let (mut rng, mut lost) = (7, 0);
        let delayed = (0..10_000)
            .filter(|_| l.delay(&mut rng, &mut lost) >= Duration::from_millis(200))
            .count();
        assert!((900..1100).contains(&delayed), "{delayed}");
    }
}

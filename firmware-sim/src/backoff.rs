//! Reconnect backoff: exponential, capped, with jitter.
//!
//! Thousands of nodes that lose the broker at the same moment must not all
//! come back at the same moment. Each attempt waits a random time in
//! `[d/2, d]` where `d = min(max, initial · 2^attempt)` ("equal jitter"): the
//! wait is never zero (no hot loop) and never above `max`.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;

use crate::rng::Draw;

/// Backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first wait.
    pub initial: Duration,
    /// Largest wait.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// Backoff state for one connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    /// Fresh state.
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0 }
    }

    /// Failed attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self, rng: &mut ChaCha8Rng) -> Duration {
        let ceiling = self
            .config
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.config.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(rng.unit())
    }

    /// Call after a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use vitalmesh_wire::NodeId;

    use super::*;
    use crate::rng::{Purpose, stream};

    proptest! {
        #[test]
        fn delays_are_bounded_and_grow(seed in any::<u64>(), initial_ms in 1u64..2000, max_ms in 1u64..120_000, attempts in 1usize..40) {
            let config = BackoffConfig { initial: Duration::from_millis(initial_ms), max: Duration::from_millis(max_ms.max(initial_ms)) };
            let mut b = Backoff::new(config);
            let mut rng = stream(seed, NodeId(0), Purpose::Network);
            for k in 0..attempts {
                let ceiling = config.initial.saturating_mul(1 << k.min(20)).min(config.max);
                let d = b.next_delay(&mut rng);
                prop_assert!(d >= ceiling / 2 && d <= ceiling, "attempt {k}: {d:?} outside [{:?}, {:?}]", ceiling / 2, ceiling);
            }
        }
    }

    #[test]
    fn delays_are_jittered_across_nodes() {
        let config = BackoffConfig::default();
        let delays: std::collections::HashSet<Duration> = (0..100)
            .map(|n| {
                let mut b = Backoff::new(config);
                let mut rng = stream(1, NodeId(n), Purpose::Network);
                b.next_delay(&mut rng);
                b.next_delay(&mut rng)
            })
            .collect();
        assert!(delays.len() > 90, "only {} distinct delays", delays.len());
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut rng = stream(1, NodeId(1), Purpose::Network);
        for _ in 0..10 {
            b.next_delay(&mut rng);
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(500));
    }
}

//! The φ-accrual failure detector (Hayashibara et al. 2004), in Akka's
//! formulation (`domain-science.md` §4.2).
//!
//! `φ(Δt) = −log₁₀(1 − F(Δt))` where Δt is the time since the last heartbeat
//! and F the CDF of a normal distribution with mean `μ + acceptable_pause` and
//! SD `max(σ, min_std)`, μ and σ estimated from a sliding window of
//! inter-arrival times; F is approximated with Akka's logistic formula. A peer
//! is suspected when φ ≥ the threshold: at Φ = 8 the chance of a wrong
//! suspicion is about 10⁻⁸ under the model. With 1 s heartbeats, σ' = 100 ms
//! and a 3 s pause, φ crosses 8 about 4.5 s after the last heartbeat.

use std::time::Duration;

use vitalmesh_wire::Timestamp;

/// Detector parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiConfig {
    /// Suspect at φ ≥ this.
    pub threshold: f64,
    /// Lower bound on the SD, so perfectly regular heartbeats do not make the
    /// detector hair-triggered.
    pub min_std: Duration,
    /// Added to the mean: a pause this long is considered normal.
    pub acceptable_pause: Duration,
    /// The expected interval, used to bootstrap the window with `μ₀ ± μ₀/4`.
    pub first_interval: Duration,
}

impl Default for PhiConfig {
    /// Akka cluster defaults: threshold 8, min SD 100 ms, acceptable pause
    /// 3 s, heartbeat interval 1 s.
    fn default() -> Self {
        Self {
            threshold: 8.0,
            min_std: Duration::from_millis(100),
            acceptable_pause: Duration::from_secs(3),
            first_interval: Duration::from_secs(1),
        }
    }
}

/// Inter-arrival intervals kept. A short window (the domain notes suggest
/// 100 or fewer for sensors) keeps 10,000 detectors small and adapts quickly
/// when a node's sample rate changes.
const WINDOW: usize = 32;

/// One monitored peer.
#[derive(Debug, Clone)]
pub struct PhiDetector {
    /// Intervals in milliseconds, a ring.
    intervals: [u32; WINDOW],
    len: u8,
    next: u8,
    sum_ms: f64,
    sum_sq_ms: f64,
    last: Option<Timestamp>,
}

impl PhiDetector {
    /// A detector bootstrapped with two intervals `μ₀ ± μ₀/4`.
    pub fn new(config: &PhiConfig) -> Self {
        let mut d = Self {
            intervals: [0; WINDOW],
            len: 0,
            next: 0,
            sum_ms: 0.0,
            sum_sq_ms: 0.0,
            last: None,
        };
        let mu = config.first_interval.as_millis().min(u128::from(u32::MAX)) as u32;
        d.push(mu - mu / 4);
        d.push(mu + mu / 4);
        d
    }

    fn push(&mut self, interval_ms: u32) {
        if usize::from(self.len) == WINDOW {
            let old = f64::from(self.intervals[usize::from(self.next)]);
            self.sum_ms -= old;
            self.sum_sq_ms -= old * old;
        } else {
            self.len += 1;
        }
        self.intervals[usize::from(self.next)] = interval_ms;
        self.next = ((usize::from(self.next) + 1) % WINDOW) as u8;
        let x = f64::from(interval_ms);
        self.sum_ms += x;
        self.sum_sq_ms += x * x;
    }

    /// Records a heartbeat at `now`. As in Akka, the interval is not learnt
    /// if the peer was already suspected: an outage is not a normal interval.
    pub fn heartbeat(&mut self, now: Timestamp, config: &PhiConfig) {
        if let Some(last) = self.last {
            if now > last && self.phi(now, config) < config.threshold {
                let ms = now.saturating_duration_since(last).as_millis();
                self.push(ms.min(u128::from(u32::MAX)) as u32);
            }
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    /// Time of the last heartbeat.
    pub fn last_heartbeat(&self) -> Option<Timestamp> {
        self.last
    }

    /// Mean inter-arrival time of the window.
    pub fn mean_interval(&self) -> Duration {
        Duration::from_secs_f64(self.sum_ms / f64::from(self.len.max(1)) / 1000.0)
    }

    /// Suspicion level at `now` (0 before the first heartbeat).
    pub fn phi(&self, now: Timestamp, config: &PhiConfig) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let n = f64::from(self.len.max(1));
        let mean = self.sum_ms / n;
        let variance = (self.sum_sq_ms / n - mean * mean).max(0.0);
        let sd = variance.sqrt().max(config.min_std.as_secs_f64() * 1000.0);
        let mean = mean + config.acceptable_pause.as_secs_f64() * 1000.0;
        let elapsed = now.saturating_duration_since(last).as_secs_f64() * 1000.0;
        phi(elapsed, mean, sd)
    }

    /// Until when the peer cannot be suspected: the last heartbeat plus the
    /// mean interval and the acceptable pause, before which φ is at most
    /// −log₁₀(½) (see [`Self::is_available`]). `Timestamp::MAX` before the
    /// first heartbeat.
    pub fn quiet_until(&self, config: &PhiConfig) -> Timestamp {
        match self.last {
            None => Timestamp::MAX,
            Some(last) => {
                let n = f64::from(self.len.max(1));
                let mean_us = self.sum_ms / n * 1000.0;
                last + Duration::from_micros(mean_us.max(0.0) as u64) + config.acceptable_pause
            }
        }
    }

    /// Whether the peer is considered up at `now`.
    ///
    /// Until the expected interval (plus the acceptable pause) has passed,
    /// φ is at most −log₁₀(½) ≈ 0.30, below any sensible threshold, so the
    /// answer is known without the `exp` and `log10` of [`Self::phi`]: an
    /// aggregator checks every node four times a second, and nearly every
    /// check falls here. The result is the same either way.
    pub fn is_available(&self, now: Timestamp, config: &PhiConfig) -> bool {
        const MAX_PHI_BEFORE_MEAN: f64 = std::f64::consts::LOG10_2;
        if let Some(last) = self.last {
            if config.threshold > MAX_PHI_BEFORE_MEAN {
                let n = f64::from(self.len.max(1));
                let mean_ms = self.sum_ms / n + config.acceptable_pause.as_secs_f64() * 1000.0;
                let elapsed_ms = now.saturating_duration_since(last).as_secs_f64() * 1000.0;
                if elapsed_ms <= mean_ms {
                    return true;
                }
            }
        }
        self.phi(now, config) < config.threshold
    }
}

/// Akka's logistic approximation of `−log₁₀(1 − F(elapsed))`.
fn phi(elapsed: f64, mean: f64, sd: f64) -> f64 {
    let y = (elapsed - mean) / sd;
    let e = (-y * (1.5976 + 0.070_566 * y * y)).exp();
    if elapsed > mean {
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

#[cfg(test)]
mod short_circuit_tests {
    use super::*;

    #[test]
    fn availability_agrees_with_phi_at_every_elapsed_time() {
        let config = PhiConfig::default();
        let mut d = PhiDetector::new(&config);
        let t0 = Timestamp::from_secs(1_000);
        for i in 0..20u64 {
            assert!(d.is_available(d.quiet_until(&config), &config));
            d.heartbeat(
                t0 + Duration::from_millis(i * 1000 + (i * 37) % 200),
                &config,
            );
        }
        let last = t0 + Duration::from_millis(19 * 1000 + (19 * 37) % 200);
        for ms in (0..15_000u64).step_by(7) {
            let now = last + Duration::from_millis(ms);
            assert_eq!(
                d.is_available(now, &config),
                d.phi(now, &config) < config.threshold,
                "at {ms} ms"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_000_000);

    fn regular(config: &PhiConfig, beats: u64, every: Duration) -> (PhiDetector, Timestamp) {
        let mut d = PhiDetector::new(config);
        let mut t = T0;
        for _ in 0..beats {
            d.heartbeat(t, config);
            t = t + every;
        }
        (d, t - every)
    }

    /// The first moment φ reaches the threshold, to 10 ms.
    fn detection_time(d: &PhiDetector, last: Timestamp, config: &PhiConfig) -> Duration {
        (0..100_000u64)
            .map(|ms| Duration::from_millis(ms * 10))
            .find(|&after| !d.is_available(last + after, config))
            .expect("φ eventually crosses any threshold")
    }

    #[test]
    fn akka_defaults_detect_a_silent_1hz_peer_in_about_4_5_seconds() {
        let config = PhiConfig::default();
        let (d, last) = regular(&config, 200, Duration::from_secs(1));
        let t = detection_time(&d, last, &config);
        // domain-science.md §4.2: ≈ 4.52 s with σ' = 100 ms.
        assert!(
            (Duration::from_millis(4400)..=Duration::from_millis(4600)).contains(&t),
            "{t:?}"
        );
    }

    #[test]
    fn jittery_heartbeats_widen_the_window() {
        let config = PhiConfig::default();
        let mut d = PhiDetector::new(&config);
        let mut t = T0;
        for k in 0..200u64 {
            d.heartbeat(t, &config);
            // Alternate 0.6 s and 1.4 s: mean 1 s, SD 400 ms.
            t = t + Duration::from_millis(if k % 2 == 0 { 600 } else { 1400 });
        }
        let last = d.last_heartbeat().unwrap();
        let slow = detection_time(&d, last, &config);
        let (steady, steady_last) = regular(&config, 200, Duration::from_secs(1));
        assert!(slow > detection_time(&steady, steady_last, &config) + Duration::from_millis(500));
    }

    #[test]
    fn phi_grows_with_silence_and_resets_on_a_heartbeat() {
        let config = PhiConfig::default();
        let (mut d, last) = regular(&config, 50, Duration::from_secs(1));
        let p1 = d.phi(last + Duration::from_secs(2), &config);
        let p2 = d.phi(last + Duration::from_secs(4), &config);
        let p3 = d.phi(last + Duration::from_secs(6), &config);
        assert!(p1 < p2 && p2 < p3, "{p1} {p2} {p3}");
        let back = last + Duration::from_secs(30);
        d.heartbeat(back, &config);
        assert!(d.is_available(back + Duration::from_millis(500), &config));
        // The 30 s outage was not learnt as a normal interval.
        assert!(d.mean_interval() < Duration::from_millis(1100));
    }

    #[test]
    fn the_rate_is_learnt() {
        let config = PhiConfig::default();
        let (d, last) = regular(&config, 100, Duration::from_secs(5));
        assert!(d.is_available(last + Duration::from_secs(7), &config));
        assert!(!d.is_available(last + Duration::from_secs(12), &config));
    }
}

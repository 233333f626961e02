//! Latency histograms and their summaries, shared by both drivers.
//!
//! Histograms record microseconds from 1 µs to one hour with 3 significant
//! digits, so a stalled node's hour-old sample is measured, not clipped.
//! Per-ward histograms keep 2 digits: one per ward at 3 digits would cost
//! about 180 KB each.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency recorded, µs (one hour); larger values are clamped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A fresh latency histogram.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static bounds are valid")
}

/// A fresh, coarser histogram for one ward.
pub fn ward_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("static bounds are valid")
}

/// Records `d` into `h`, clamped to the histogram's range.
pub fn record_latency(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, MAX_LATENCY_US);
    h.record(us).expect("clamped into range");
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Smallest.
    pub min_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p99_9_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Reads a microsecond histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Log-spaced latency buckets for display: upper bounds 0.1 ms … ~6.5 s.
pub fn buckets(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    let mut out = Vec::new();
    let mut lower = 0u64;
    let mut upper = 100u64; // µs
    while upper <= 6_553_600 {
        let n = h.count_between(lower, upper.saturating_sub(1));
        out.push((upper as f64 / 1000.0, n));
        lower = upper;
        upper *= 2;
    }
    let rest = h.count_between(lower, u64::MAX);
    if let Some(last) = out.last_mut() {
        last.1 += rest;
    }
    out
}

/// How many values of `h` lie within each bound (seconds), cumulative:
/// (bound, count), as a Prometheus histogram's buckets are.
pub fn cumulative(h: &Histogram<u64>, bounds_s: &[f64]) -> Vec<(f64, u64)> {
    bounds_s
        .iter()
        .map(|&b| (b, h.count_between(0, (b * 1e6) as u64)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_read_microseconds_as_milliseconds() {
        let mut h = latency_histogram();
        for us in 1..=1000 {
            h.record(us * 10).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99_ms - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.max_ms - 10.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn buckets_hold_every_value_once() {
        let mut h = latency_histogram();
        for us in [50, 150, 3_000, 10_000_000] {
            h.record(us).unwrap();
        }
        let b = buckets(&h);
        assert_eq!(b.iter().map(|(_, n)| n).sum::<u64>(), 4);
        assert_eq!(b[0], (0.1, 1));
    }
}

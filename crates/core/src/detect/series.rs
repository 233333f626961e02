//! Population detectors as streaming state machines: one observation (a
//! bucket's count, and its census) in, one [`Step`] out.
//!
//! Definitions (`domain-science.md` §2):
//!
//! - **EARS C1/C2** (Hutwagner et al. 2003): `C = (y − ȳ)/max(s, σmin)`
//!   with ȳ and s (n − 1) over the `baseline` buckets before the guard band
//!   (none for C1, two for C2); alarm when `C > z(1 − α)`.
//! - **EARS C3**: `C3 = Σ_{i=0..2} max(0, C2_{t−i} − 1)`, alarm when
//!   `C3 > z(1 − α)`. This is the published definition, and what R
//!   `surveillance::earsC`'s documentation describes; its code (1.20.3)
//!   leaves the current bucket's C2 out of the sum. DETECTION.md shows the
//!   difference on the committed fixtures.
//! - **CUSUM** (standardised): `S = max(0, S + (y − μ)/σ − k)`, alarm when
//!   `S ≥ h` (R `algo.cusum` compares with `≥`), then `S = 0` if `reset`.
//! - **Poisson CUSUM**: `S = max(0, S + y − K)` with
//!   `K = (λ₁ − λ₀)/(ln λ₁ − ln λ₀)` (R `findK`); with a census, λ₀ is the
//!   baseline's rate per patient times this bucket's census.
//! - **EWMA** of standardised residuals: `z = λe + (1 − λ)z`, alarm when
//!   `z > L·√(λ/(2 − λ)·[1 − (1 − λ)^{2t}])`.
//!
//! μ and σ come from the parameters (`mu0`, `sigma`) or from a baseline
//! window of past buckets: moving (the `baseline` buckets before the
//! `guard` band) or fixed (the series' first `baseline` buckets, as R's
//! `algo.cusum` takes its training period). Until the window is full the
//! detector is warming up and says so: no statistic, no alarm.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::detect::method::{Measure, Method, MethodConfig, Scale, WindowKind};

/// One bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Observation {
    /// The count (febrile patients, say).
    pub count: f64,
    /// Patients at risk in the bucket, if known.
    pub census: Option<f64>,
}

impl Observation {
    /// A count without a census.
    pub const fn count(count: f64) -> Self {
        Self {
            count,
            census: None,
        }
    }
}

/// What a detector concluded about one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Step {
    /// The statistic (`None` while warming up, or for a bucket that cannot
    /// be judged: a proportion with no census).
    pub statistic: Option<f64>,
    /// What the statistic is compared with.
    pub threshold: Option<f64>,
    /// The value expected in control, in the series' units.
    pub expected: Option<f64>,
    /// Whether this bucket raises an alarm.
    pub alarm: bool,
}

/// A bucket as the detector keeps it.
#[derive(Debug, Clone, Copy)]
struct Past {
    /// In the detector's units (count, or count / census).
    value: f64,
    count: f64,
    census: f64,
}

/// μ and σ (or λ₀) estimated from a window.
#[derive(Debug, Clone, Copy)]
struct Reference {
    mean: f64,
    sd: f64,
    /// Σ count / Σ census over the window (Poisson rate per patient).
    rate: f64,
}

/// One population detector.
#[derive(Debug, Clone)]
pub struct Detector {
    config: MethodConfig,
    /// Past buckets, newest last; no more than the window needs.
    history: VecDeque<Past>,
    /// The fixed window's reference, once it is full.
    fixed: Option<Reference>,
    fixed_window: Vec<Past>,
    /// C3: the last two C2 values (`None` while C2 warms up).
    c2_lags: [Option<f64>; 2],
    /// CUSUM sum or EWMA value.
    s: f64,
    /// EWMA steps since its start or last reset.
    ewma_steps: i32,
}

impl Detector {
    /// A detector with `config`, before its first bucket.
    pub fn new(config: MethodConfig) -> Self {
        Self {
            config,
            history: VecDeque::new(),
            fixed: None,
            fixed_window: Vec::new(),
            c2_lags: [None; 2],
            s: 0.0,
            ewma_steps: 0,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &MethodConfig {
        &self.config
    }

    /// Judges the next bucket.
    pub fn step(&mut self, obs: Observation) -> Step {
        let census = obs.census.unwrap_or(f64::NAN);
        let value = match self.config.measure {
            Measure::Count => obs.count,
            Measure::Proportion if census > 0.0 => obs.count / census,
            // No patients, no proportion: the bucket is skipped entirely.
            Measure::Proportion => return Step::default(),
        };
        let past = Past {
            value,
            count: obs.count,
            census,
        };
        let step = match self.config.method {
            Method::C1 | Method::C2 => self.ears(past),
            Method::C3 => self.c3(past),
            Method::Cusum => self.cusum(past),
            Method::PoissonCusum => self.poisson_cusum(past),
            Method::Ewma => self.ewma(past),
        };
        self.remember(past);
        step
    }

    /// Runs the detector over a whole series.
    pub fn run(config: MethodConfig, series: &[Observation]) -> Vec<Step> {
        let mut d = Self::new(config);
        series.iter().map(|o| d.step(*o)).collect()
    }

    fn remember(&mut self, past: Past) {
        let c = &self.config;
        if c.window == WindowKind::Fixed && self.fixed.is_none() {
            self.fixed_window.push(past);
            if self.fixed_window.len() == c.baseline {
                self.fixed = Some(reference(&self.fixed_window, c.scale));
            }
        }
        self.history.push_back(past);
        let keep = c.baseline + c.guard;
        while self.history.len() > keep {
            self.history.pop_front();
        }
    }

    /// The reference for the current bucket, if the window is full.
    fn reference(&self) -> Option<Reference> {
        let c = &self.config;
        if c.window == WindowKind::Fixed
            && !matches!(c.method, Method::C1 | Method::C2 | Method::C3)
        {
            return self.fixed;
        }
        let need = c.baseline + c.guard;
        if self.history.len() < need {
            return None;
        }
        let window: Vec<Past> = self.history.iter().take(c.baseline).copied().collect();
        Some(reference(&window, c.scale))
    }

    /// The SD floor in the series' units: `min_sigma` counts, so half a
    /// patient whatever the census.
    fn sigma_floor(&self, past: Past) -> f64 {
        match self.config.measure {
            Measure::Count => self.config.min_sigma,
            Measure::Proportion => self.config.min_sigma / past.census,
        }
    }

    /// C1 or C2 of `past` given the history, without the alarm.
    fn ears_z(&self, past: Past) -> Option<(Option<f64>, f64)> {
        let r = self.reference()?;
        let sd = r.sd.max(self.sigma_floor(past));
        // A flat baseline with no SD floor: the z-score is undefined; R's
        // bound is then the mean itself, so any rise alarms.
        let z = (sd > 0.0).then(|| (past.value - r.mean) / sd);
        Some((z, r.mean))
    }

    fn ears(&mut self, past: Past) -> Step {
        let threshold = self.config.threshold;
        match self.ears_z(past) {
            None => Step::default(),
            Some((z, mean)) => Step {
                statistic: z,
                threshold: Some(threshold),
                expected: Some(mean),
                alarm: z.map_or(past.value > mean, |z| z > threshold),
            },
        }
    }

    fn c3(&mut self, past: Past) -> Step {
        let threshold = self.config.threshold;
        let now = self.ears_z(past);
        let c2 = now.and_then(|(z, _)| z);
        let step = match (now, self.c2_lags) {
            (Some((Some(c2), mean)), [Some(lag2), Some(lag1)]) => {
                let c3 = [lag2, lag1, c2]
                    .iter()
                    .map(|c| (c - 1.0).max(0.0))
                    .sum::<f64>();
                Step {
                    statistic: Some(c3),
                    threshold: Some(threshold),
                    expected: Some(mean),
                    alarm: c3 > threshold,
                }
            }
            _ => Step::default(),
        };
        self.c2_lags = [self.c2_lags[1], if now.is_some() { c2 } else { None }];
        step
    }

    /// (μ, σ) for the standardised charts.
    fn mu_sigma(&self, past: Past) -> Option<(f64, f64)> {
        let c = &self.config;
        let (mean, sd) = match (c.mu0, c.sigma) {
            (Some(m), Some(s)) => (m, s),
            (mu0, sigma) => {
                let r = self.reference()?;
                let mean = mu0.unwrap_or(r.mean);
                let sd = sigma.unwrap_or(match c.scale {
                    Scale::Sd => r.sd,
                    Scale::Poisson => mean.max(0.0).sqrt(),
                });
                (mean, sd)
            }
        };
        let sd = sd.max(self.sigma_floor(past));
        (sd > 0.0).then_some((mean, sd))
    }

    fn cusum(&mut self, past: Past) -> Step {
        let Some((mu, sigma)) = self.mu_sigma(past) else {
            return Step::default();
        };
        let h = self.config.threshold;
        self.s = (self.s + (past.value - mu) / sigma - self.config.k).max(0.0);
        let step = Step {
            statistic: Some(self.s),
            threshold: Some(h),
            expected: Some(mu),
            alarm: self.s >= h,
        };
        if step.alarm && self.config.reset {
            self.s = 0.0;
        }
        step
    }

    fn poisson_cusum(&mut self, past: Past) -> Step {
        let c = &self.config;
        let lambda0 = match c.lambda0 {
            Some(l) => l,
            None => {
                let Some(r) = self.reference() else {
                    return Step::default();
                };
                match c.measure {
                    Measure::Count => r.mean,
                    Measure::Proportion => r.rate * past.census,
                }
            }
        };
        let lambda0 = lambda0.max(c.min_lambda);
        let lambda1 = c
            .lambda1
            .filter(|l1| *l1 > lambda0)
            .unwrap_or(c.ratio * lambda0);
        let k = (lambda1 - lambda0) / (lambda1.ln() - lambda0.ln());
        let h = c.threshold;
        self.s = (self.s + past.count - k).max(0.0);
        let step = Step {
            statistic: Some(self.s),
            threshold: Some(h),
            expected: Some(lambda0),
            alarm: self.s >= h,
        };
        if step.alarm && c.reset {
            self.s = 0.0;
        }
        step
    }

    fn ewma(&mut self, past: Past) -> Step {
        let Some((mu, sigma)) = self.mu_sigma(past) else {
            return Step::default();
        };
        let (lambda, l) = (self.config.lambda, self.config.threshold);
        self.ewma_steps = self.ewma_steps.saturating_add(1);
        self.s = lambda * (past.value - mu) / sigma + (1.0 - lambda) * self.s;
        let width =
            (lambda / (2.0 - lambda) * (1.0 - (1.0 - lambda).powi(2 * self.ewma_steps))).sqrt();
        let limit = l * width;
        let step = Step {
            statistic: Some(self.s),
            threshold: Some(limit),
            expected: Some(mu),
            alarm: self.s > limit,
        };
        if step.alarm && self.config.reset {
            self.s = 0.0;
            self.ewma_steps = 0;
        }
        step
    }
}

fn reference(window: &[Past], scale: Scale) -> Reference {
    let n = window.len() as f64;
    let mean = window.iter().map(|p| p.value).sum::<f64>() / n;
    let sd = match scale {
        Scale::Sd if window.len() > 1 => {
            (window.iter().map(|p| (p.value - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        }
        Scale::Sd => 0.0,
        Scale::Poisson => mean.max(0.0).sqrt(),
    };
    let census: f64 = window
        .iter()
        .map(|p| p.census)
        .filter(|c| c.is_finite())
        .sum();
    let count: f64 = window.iter().map(|p| p.count).sum();
    Reference {
        mean,
        sd,
        rate: if census > 0.0 { count / census } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[f64]) -> Vec<Observation> {
        v.iter().map(|&c| Observation::count(c)).collect()
    }

    fn config(method: Method, params: &[(&str, &str)]) -> MethodConfig {
        let mut c = MethodConfig::new(method);
        for (k, v) in params {
            c.set(k, v).unwrap();
        }
        c
    }

    // Hand-worked: baseline 1..7 has mean 4 and SD √(28/6) = 2.1602.
    const RAMP: [f64; 8] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 14.0];

    #[test]
    fn c1_is_the_z_score_against_the_last_seven_buckets() {
        let steps = Detector::run(config(Method::C1, &[]), &counts(&RAMP));
        assert!(steps[..7].iter().all(|s| s.statistic.is_none() && !s.alarm));
        let c1 = steps[7].statistic.unwrap();
        assert!((c1 - 10.0 / (28.0f64 / 6.0).sqrt()).abs() < 1e-12, "{c1}");
        assert_eq!(steps[7].expected, Some(4.0));
        assert!(steps[7].alarm, "4.63 > 3.09");
    }

    #[test]
    fn c2_skips_the_two_buckets_before_the_current_one() {
        let series = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 50.0, 50.0, 14.0];
        let steps = Detector::run(config(Method::C2, &[]), &counts(&series));
        assert!(steps[..9].iter().all(|s| s.statistic.is_none()));
        // The two 50s are in the guard band, not the baseline.
        let c2 = steps[9].statistic.unwrap();
        assert!((c2 - 10.0 / (28.0f64 / 6.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn c3_sums_the_last_three_c2_excesses_over_one() {
        // Flat baseline of 2 with min_sigma 0.5: C2 = (y − 2)/0.5.
        let mut series = vec![2.0; 9];
        series.extend([2.5, 3.0, 2.25]); // C2 = 1, 2, 0.5
        let steps = Detector::run(config(Method::C3, &[]), &counts(&series));
        assert!(steps[..11].iter().all(|s| s.statistic.is_none()));
        // max(0, 1−1) + max(0, 2−1) + max(0, 0.5−1) = 1.
        assert_eq!(steps[11].statistic, Some(1.0));
        assert!(!steps[11].alarm, "1 < 1.96");
    }

    #[test]
    fn ears_with_no_sd_floor_alarms_on_any_rise_over_a_flat_baseline_as_r_does() {
        let c = config(Method::C1, &[("min_sigma", "0")]);
        let mut series = vec![3.0; 7];
        series.push(4.0);
        let s = Detector::run(c, &counts(&series))[7];
        assert_eq!((s.statistic, s.alarm), (None, true));
    }

    #[test]
    fn cusum_accumulates_excess_and_resets_after_an_alarm() {
        // μ = 0, σ = 1, k = 0.5, h = 4: increments of z − 0.5.
        let c = config(Method::Cusum, &[("mu0", "0"), ("sigma", "1")]);
        let z = [1.0, 2.0, -3.0, 1.5, 2.5, 1.0];
        let steps = Detector::run(c, &counts(&z));
        let s: Vec<f64> = steps.iter().map(|s| s.statistic.unwrap()).collect();
        assert_eq!(s, [0.5, 2.0, 0.0, 1.0, 3.0, 3.5]);
        let steps = Detector::run(c, &counts(&[3.0, 2.0, 1.0]));
        // 2.5, then 4.0 ≥ 4 alarms and resets, then 0 + 0.5.
        let s: Vec<(f64, bool)> = steps
            .iter()
            .map(|s| (s.statistic.unwrap(), s.alarm))
            .collect();
        assert_eq!(s, [(2.5, false), (4.0, true), (0.5, false)]);
    }

    #[test]
    fn poisson_cusum_uses_the_optimal_reference_value() {
        // λ₀ = 2, λ₁ = 4: K = 2/ln 2 = 2.885 (domain-science.md §2.2).
        let c = config(Method::PoissonCusum, &[("lambda0", "2"), ("lambda1", "4")]);
        let steps = Detector::run(c, &counts(&[5.0, 5.0]));
        let k = 2.0 / 2f64.ln();
        assert!((steps[0].statistic.unwrap() - (5.0 - k)).abs() < 1e-12);
        assert!((steps[1].statistic.unwrap() - (10.0 - 2.0 * k)).abs() < 1e-12);
        assert!(steps[1].alarm, "4.23 ≥ 4");
    }

    #[test]
    fn poisson_cusum_with_census_scales_the_expected_count() {
        // Baseline rate 0.1 per patient; a bucket with 40 patients expects 4.
        let mut c = config(Method::PoissonCusum, &[("baseline", "3"), ("guard", "0")]);
        c.measure = Measure::Proportion;
        let obs = |count, census| Observation {
            count,
            census: Some(census),
        };
        let mut d = Detector::new(c);
        for _ in 0..3 {
            d.step(obs(2.0, 20.0));
        }
        let s = d.step(obs(4.0, 40.0));
        assert_eq!(s.expected, Some(4.0));
        let k = 4.0 / 2f64.ln();
        assert!((s.statistic.unwrap() - (4.0 - k).max(0.0)).abs() < 1e-12);
    }

    #[test]
    fn ewma_limits_widen_to_their_asymptote() {
        // NIST: λ = 0.2, L = 3; the first limit is L·λ = 0.6 (in σ units).
        let c = config(Method::Ewma, &[("mu0", "10"), ("sigma", "2")]);
        let steps = Detector::run(c, &counts(&[12.0, 12.0, 10.0]));
        assert!((steps[0].statistic.unwrap() - 0.2).abs() < 1e-12);
        assert!((steps[0].threshold.unwrap() - 0.6).abs() < 1e-12);
        assert!((steps[1].statistic.unwrap() - 0.36).abs() < 1e-12);
        let w2 = (0.2f64 / 1.8 * (1.0 - 0.8f64.powi(4))).sqrt() * 3.0;
        assert!((steps[1].threshold.unwrap() - w2).abs() < 1e-12);
        let mut d = Detector::new(c);
        let last = (0..200)
            .map(|_| d.step(Observation::count(10.0)))
            .last()
            .unwrap();
        assert!((last.threshold.unwrap() - 3.0 * (0.2f64 / 1.8).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn a_proportion_without_census_is_skipped_not_judged() {
        let c = config(Method::C1, &[("measure", "proportion")]);
        let mut d = Detector::new(c);
        for _ in 0..7 {
            d.step(Observation {
                count: 1.0,
                census: Some(10.0),
            });
        }
        let gap = d.step(Observation {
            count: 5.0,
            census: Some(0.0),
        });
        assert_eq!(gap, Step::default());
        let s = d.step(Observation {
            count: 1.0,
            census: Some(10.0),
        });
        // The empty bucket did not enter the baseline: still flat at 0.1.
        assert!((s.expected.unwrap() - 0.1).abs() < 1e-12);
        assert!(s.statistic.unwrap().abs() < 1e-12);
    }
}

//! Pooling detection scores over many seeds: one run is an anecdote, twenty
//! are a measurement. Each seed's [`DetectionScores`] go in; per detector,
//! the counts are summed (outbreaks, detections, true and false alarms,
//! ward-days) and the times to detect pooled before taking the median and
//! the 90th percentile, so a seed with three outbreaks weighs three times
//! one with one. Pure: the CLI runs the seeds and prints the tables.

use std::fmt::Write as _;

use serde::Serialize;

use crate::score::{DetectionScores, DetectorScore, quantile};

/// One seed's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct SeedResult {
    /// The seed.
    pub seed: u64,
    /// Samples the ledger could not explain (must be 0).
    pub unexplained: u64,
    /// Its scores.
    pub scores: DetectionScores,
}

/// One population detector over every seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PooledDetector {
    /// Name (`any`: all together).
    pub name: String,
    /// Method.
    pub method: String,
    /// Series.
    pub series: String,
    /// Outbreaks over all seeds.
    pub outbreaks: u32,
    /// Detected.
    pub detected: u32,
    /// detected / outbreaks.
    pub recall: Option<f64>,
    /// Alarms inside outbreak windows.
    pub true_alarms: u32,
    /// Alarms outside.
    pub false_alarms: u32,
    /// true / all.
    pub precision: Option<f64>,
    /// Ward-days monitored outside outbreaks.
    pub ward_days: f64,
    /// False alarms per ward-week.
    pub false_alarms_per_ward_week: f64,
    /// Time to detect, median, hours.
    pub ttd_median_h: Option<f64>,
    /// Time to detect, 90th percentile, hours.
    pub ttd_p90_h: Option<f64>,
    /// Median in buckets.
    pub ttd_median_buckets: Option<f64>,
    /// 90th percentile in buckets.
    pub ttd_p90_buckets: Option<f64>,
}

/// Deterioration over every seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PooledPatient {
    /// Deteriorations.
    pub deteriorations: u32,
    /// Flagged.
    pub flagged: u32,
    /// Flagged before NEWS2 reached 5.
    pub before_news2_five: u32,
    /// Deteriorations that could be early (NEWS2 below 5 at onset).
    pub eligible: u32,
    /// before / eligible.
    pub early_share: Option<f64>,
    /// From onset to alert, median, hours.
    pub ttd_median_h: Option<f64>,
    /// … 90th percentile.
    pub ttd_p90_h: Option<f64>,
    /// Alerts on patients with neither a deterioration nor a fever.
    pub false_alarms: u32,
    /// Per patient-day.
    pub false_alarms_per_patient_day: f64,
}

/// Sensor faults over every seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PooledSensor {
    /// Injected faults.
    pub faults: u32,
    /// Flagged.
    pub flagged: u32,
    /// flagged / faults.
    pub recall: Option<f64>,
    /// Per mode: (faults, flagged).
    pub by_mode: std::collections::BTreeMap<&'static str, (u32, u32)>,
    /// From fault to alert, median, minutes.
    pub time_to_flag_median_min: Option<f64>,
    /// … 90th percentile.
    pub time_to_flag_p90_min: Option<f64>,
    /// Real fevers.
    pub fevers: u32,
    /// Called sensor faults.
    pub fevers_misflagged: u32,
    /// misflagged / fevers.
    pub misflagged_share: Option<f64>,
    /// Check-sensor alerts with no fault behind them.
    pub false_alarms: u32,
    /// Per node-day.
    pub false_alarms_per_node_day: f64,
}

/// Everything, pooled.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pooled {
    /// The seeds, in order.
    pub seeds: Vec<u64>,
    /// Bucket length, seconds.
    pub bucket_s: f64,
    /// Per ward detector.
    pub detectors: Vec<PooledDetector>,
    /// All together.
    pub any: PooledDetector,
    /// Deterioration.
    pub patient: PooledPatient,
    /// Sensors.
    pub sensor: PooledSensor,
}

fn share(a: u32, b: u32) -> Option<f64> {
    (b > 0).then(|| f64::from(a) / f64::from(b))
}

fn pool_detector(name: &str, scores: &[(&DetectorScore, f64)], bucket_s: f64) -> PooledDetector {
    let mut p = PooledDetector {
        name: name.into(),
        ..PooledDetector::default()
    };
    let mut ttd = Vec::new();
    for (s, ward_days) in scores {
        p.method.clone_from(&s.method);
        p.series.clone_from(&s.series);
        p.outbreaks += s.outbreaks;
        p.detected += s.detected;
        p.true_alarms += s.true_alarms;
        p.false_alarms += s.false_alarms;
        p.ward_days += ward_days;
        ttd.extend_from_slice(&s.ttd_s);
    }
    p.recall = share(p.detected, p.outbreaks);
    p.precision = share(p.true_alarms, p.true_alarms + p.false_alarms);
    p.false_alarms_per_ward_week = if p.ward_days > 0.0 {
        f64::from(p.false_alarms) / p.ward_days * 7.0
    } else {
        0.0
    };
    p.ttd_median_h = quantile(&ttd, 0.5).map(|s| s / 3600.0);
    p.ttd_p90_h = quantile(&ttd, 0.9).map(|s| s / 3600.0);
    p.ttd_median_buckets = quantile(&ttd, 0.5).map(|s| s / bucket_s);
    p.ttd_p90_buckets = quantile(&ttd, 0.9).map(|s| s / bucket_s);
    p
}

/// Pools every seed's scores (borrowed: a caller may pool the seeds done
/// so far without copying them).
pub fn pool(results: &[&SeedResult]) -> Pooled {
    let Some(first) = results.first() else {
        return Pooled::default();
    };
    let bucket_s = first.scores.bucket_s;
    let detectors = (0..first.scores.ward.len())
        .map(|d| {
            let per_seed: Vec<(&DetectorScore, f64)> = results
                .iter()
                .filter_map(|r| Some((r.scores.ward.get(d)?, r.scores.ward_days)))
                .collect();
            pool_detector(&first.scores.ward[d].name, &per_seed, bucket_s)
        })
        .collect();
    let any: Vec<(&DetectorScore, f64)> = results
        .iter()
        .map(|r| (&r.scores.any, r.scores.ward_days))
        .collect();
    let mut patient = PooledPatient::default();
    let mut patient_days = 0.0;
    let mut ttd = Vec::new();
    let mut sensor = PooledSensor::default();
    let mut node_days = 0.0;
    let mut ttf = Vec::new();
    for r in results {
        let p = &r.scores.patient;
        patient.deteriorations += p.deteriorations;
        patient.flagged += p.flagged;
        patient.before_news2_five += p.before_news2_five;
        patient.eligible += p.deteriorations - p.already_at_five;
        patient.false_alarms += p.false_alarms;
        patient_days += p.patient_days;
        ttd.extend_from_slice(&p.ttd_s);
        let z = &r.scores.sensor;
        sensor.faults += z.faults;
        sensor.flagged += z.flagged;
        sensor.fevers += z.fevers;
        sensor.fevers_misflagged += z.fevers_misflagged;
        sensor.false_alarms += z.false_alarms;
        node_days += z.node_days;
        ttf.extend_from_slice(&z.time_to_flag_s);
        for (mode, (n, f)) in &z.by_mode {
            let e = sensor.by_mode.entry(*mode).or_default();
            e.0 += n;
            e.1 += f;
        }
    }
    patient.early_share = share(patient.before_news2_five, patient.eligible);
    patient.ttd_median_h = quantile(&ttd, 0.5).map(|s| s / 3600.0);
    patient.ttd_p90_h = quantile(&ttd, 0.9).map(|s| s / 3600.0);
    patient.false_alarms_per_patient_day = if patient_days > 0.0 {
        f64::from(patient.false_alarms) / patient_days
    } else {
        0.0
    };
    sensor.recall = share(sensor.flagged, sensor.faults);
    sensor.misflagged_share = share(sensor.fevers_misflagged, sensor.fevers);
    sensor.time_to_flag_median_min = quantile(&ttf, 0.5).map(|s| s / 60.0);
    sensor.time_to_flag_p90_min = quantile(&ttf, 0.9).map(|s| s / 60.0);
    sensor.false_alarms_per_node_day = if node_days > 0.0 {
        f64::from(sensor.false_alarms) / node_days
    } else {
        0.0
    };
    Pooled {
        seeds: results.iter().map(|r| r.seed).collect(),
        bucket_s,
        detectors,
        any: pool_detector("any", &any, bucket_s),
        patient,
        sensor,
    }
}

impl Pooled {
    /// The tables, in Markdown (they read as plain text too).
    pub fn markdown(&self) -> String {
        let pct = |x: Option<f64>| x.map_or("—".into(), |x| format!("{:.0} %", 100.0 * x));
        let num = |x: Option<f64>, unit: &str| x.map_or("—".into(), |x| format!("{x:.1}{unit}"));
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Seeds ({}): {}",
            self.seeds.len(),
            self.seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        if self.any.outbreaks > 0 || self.any.false_alarms > 0 {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "Population detectors ({:.0}-minute buckets, {} outbreaks, {:.0} ward-days outside them):",
                self.bucket_s / 60.0,
                self.any.outbreaks,
                self.any.ward_days
            );
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "| detector | method | series | recall | precision | false alarms / ward-week | time to detect, median | p90 |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
            for d in self.detectors.iter().chain(std::iter::once(&self.any)) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} ({}/{}) | {} | {:.2} | {} ({}) | {} ({}) |",
                    d.name,
                    d.method,
                    d.series,
                    pct(d.recall),
                    d.detected,
                    d.outbreaks,
                    pct(d.precision),
                    d.false_alarms_per_ward_week,
                    num(d.ttd_median_h, " h"),
                    num(d.ttd_median_buckets, " buckets"),
                    num(d.ttd_p90_h, " h"),
                    num(d.ttd_p90_buckets, " buckets"),
                );
            }
        }
        let p = &self.patient;
        if p.deteriorations > 0 || p.false_alarms > 0 {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "Deterioration: {} of {} flagged ({}); {} of {} eligible before NEWS2 reached 5 ({}); time to detect median {}, p90 {}; {} false alarms ({:.4} per patient-day)",
                p.flagged,
                p.deteriorations,
                pct(share(p.flagged, p.deteriorations)),
                p.before_news2_five,
                p.eligible,
                pct(p.early_share),
                num(p.ttd_median_h, " h"),
                num(p.ttd_p90_h, " h"),
                p.false_alarms,
                p.false_alarms_per_patient_day
            );
        }
        let z = &self.sensor;
        if z.faults > 0 || z.fevers > 0 || z.false_alarms > 0 {
            let _ = writeln!(s);
            let modes: Vec<String> = z
                .by_mode
                .iter()
                .map(|(m, (n, f))| format!("{m} {f}/{n}"))
                .collect();
            let _ = writeln!(
                s,
                "Sensor faults: {} of {} flagged ({}; {}), median {} after the fault, p90 {}; fevers misflagged as faults {} of {} ({}); {} false check-sensor alerts ({:.4} per node-day)",
                z.flagged,
                z.faults,
                pct(z.recall),
                modes.join(", "),
                num(z.time_to_flag_median_min, " min"),
                num(z.time_to_flag_p90_min, " min"),
                z.fevers_misflagged,
                z.fevers,
                pct(z.misflagged_share),
                z.false_alarms,
                z.false_alarms_per_node_day
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::DetectorScore;

    fn seed(seed: u64, detected: u32, false_alarms: u32, ttd: &[f64]) -> SeedResult {
        let d = DetectorScore {
            name: "cusum".into(),
            method: "cusum".into(),
            series: "new_febrile".into(),
            outbreaks: 1,
            detected,
            true_alarms: detected,
            false_alarms,
            ttd_s: ttd.to_vec(),
            ..DetectorScore::default()
        };
        SeedResult {
            seed,
            unexplained: 0,
            scores: DetectionScores {
                bucket_s: 3600.0,
                ward_days: 140.0,
                ward: vec![d.clone()],
                any: d,
                ..DetectionScores::default()
            },
        }
    }

    #[test]
    fn counts_are_summed_and_times_pooled_before_the_median() {
        let p = pool(&[
            &seed(1, 1, 2, &[3600.0]),
            &seed(2, 0, 0, &[]),
            &seed(3, 1, 1, &[10_800.0]),
        ]);
        let d = &p.detectors[0];
        assert_eq!((d.outbreaks, d.detected, d.false_alarms), (3, 2, 3));
        assert_eq!(d.recall, Some(2.0 / 3.0));
        assert!((d.false_alarms_per_ward_week - 3.0 / 420.0 * 7.0).abs() < 1e-12);
        assert_eq!(d.ttd_median_h, Some(1.0), "nearest rank of [1 h, 3 h]");
        assert_eq!(d.ttd_p90_buckets, Some(3.0));
        assert_eq!(p.seeds, [1, 2, 3]);
        let table = p.markdown();
        assert!(
            table.contains("| cusum | cusum | new_febrile | 67 % (2/3) |"),
            "{table}"
        );
    }
}

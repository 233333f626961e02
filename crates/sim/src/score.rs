//! Scoring every detector against what really happened.
//!
//! vitalmesh injects the outbreaks, deteriorations and sensor faults
//! itself ([`crate::truth`]), so it can say of every alert whether it was
//! right. Pure: the alerts the observer kept and the ground truth in, the
//! scores out.
//!
//! **Ward detectors.** An outbreak's window runs from its first case's
//! onset to the end of its last case's fever (or the run). A ward alert
//! raised in that ward inside the window is a true positive; any other
//! ward alert is a false alarm. An outbreak is detected if a true positive
//! fell in its window; time to detect runs from the first onset to the
//! first true positive (also given in buckets). False alarms are counted
//! per ward-day of monitoring outside outbreak windows. Each detector is
//! scored on its own, and `any` scores what the mesh as a whole alerted
//! on: every detector's alerts together, overlapping ones merged.
//!
//! **Deterioration.** A deterioration is flagged by a deterioration alert
//! on its patient after its onset, and *early* if that alert came before
//! the patient's NEWS2 first held at 5 or more (a medium or high
//! escalation: a band held for the persistence time, not one noisy
//! reading; deteriorations whose patient was already there before the
//! onset cannot be early and are left out of that share). An alert on a
//! patient with no deterioration and no fever going on is a false alarm,
//! counted per patient-day.
//!
//! **Sensor faults.** An injected fault is flagged if a check-sensor alert
//! for its device (and its sign, for a one-sign fault) held at some point
//! between its start and 30 minutes after its end. A fever is
//! *misflagged* if a check-sensor alert on its patient's temperature was
//! raised during it while no injected fault could explain one.

use std::collections::BTreeMap;

use serde::Serialize;
use vitalmesh_core::detect::WardConfig;
use vitalmesh_core::{Alert, AlertKind};
use vitalmesh_wire::{Timestamp, VitalSign};

use crate::truth::{EpisodeKind, GroundTruth};

/// How one population detector (or all of them) did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DetectorScore {
    /// Its name (`any` for all of them together).
    pub name: String,
    /// Its method (empty for `any`).
    pub method: String,
    /// The series it watched (empty for `any`).
    pub series: String,
    /// Outbreaks in the run.
    pub outbreaks: u32,
    /// Of those, detected.
    pub detected: u32,
    /// Detected / outbreaks (`null` without outbreaks).
    pub recall: Option<f64>,
    /// Alerts inside an outbreak window of their ward.
    pub true_alarms: u32,
    /// Other alerts.
    pub false_alarms: u32,
    /// True / all alerts (`null` without alerts).
    pub precision: Option<f64>,
    /// False alarms per ward-day of monitoring outside outbreaks.
    pub false_alarms_per_ward_day: f64,
    /// The same per ward-week.
    pub false_alarms_per_ward_week: f64,
    /// Time to detect, median over detected outbreaks, seconds.
    pub ttd_median_s: Option<f64>,
    /// Time to detect, 90th percentile, seconds.
    pub ttd_p90_s: Option<f64>,
    /// Median time to detect in buckets.
    pub ttd_median_buckets: Option<f64>,
    /// Time to detect of each detected outbreak, seconds (for pooling
    /// over runs).
    pub ttd_s: Vec<f64>,
}

/// Per-patient deterioration detection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PatientScore {
    /// Deteriorations in the run.
    pub deteriorations: u32,
    /// Flagged by a deterioration alert.
    pub flagged: u32,
    /// Those whose NEWS2 was already 5 or more before the onset.
    pub already_at_five: u32,
    /// Flagged before NEWS2 first reached 5.
    pub before_news2_five: u32,
    /// before_news2_five / (deteriorations − already_at_five).
    pub early_share: Option<f64>,
    /// From onset to the alert, median, seconds.
    pub ttd_median_s: Option<f64>,
    /// … 90th percentile.
    pub ttd_p90_s: Option<f64>,
    /// Lead over NEWS2 ≥ 5 (positive: the alert came first), median, s.
    pub lead_median_s: Option<f64>,
    /// Deterioration alerts on patients with a fever (explained, not
    /// counted as false).
    pub alerts_during_fever: u32,
    /// Deterioration alerts on patients with neither.
    pub false_alarms: u32,
    /// Per patient-day.
    pub false_alarms_per_patient_day: f64,
    /// Patient-days monitored.
    pub patient_days: f64,
    /// Time to detect of each flagged deterioration, seconds.
    pub ttd_s: Vec<f64>,
}

/// Sensor-fault detection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SensorScore {
    /// Injected faults.
    pub faults: u32,
    /// Flagged.
    pub flagged: u32,
    /// flagged / faults.
    pub recall: Option<f64>,
    /// Per fault mode: (faults, flagged).
    pub by_mode: BTreeMap<&'static str, (u32, u32)>,
    /// From the fault's start to its first alert, median, seconds.
    pub time_to_flag_median_s: Option<f64>,
    /// … 90th percentile.
    pub time_to_flag_p90_s: Option<f64>,
    /// Real fevers.
    pub fevers: u32,
    /// Fevers whose temperature sensor was called faulty.
    pub fevers_misflagged: u32,
    /// fevers_misflagged / fevers.
    pub misflagged_share: Option<f64>,
    /// Check-sensor alerts with no injected fault behind them.
    pub false_alarms: u32,
    /// Per node-day.
    pub false_alarms_per_node_day: f64,
    /// Node-days monitored.
    pub node_days: f64,
    /// Time to flag of each flagged fault, seconds.
    pub time_to_flag_s: Vec<f64>,
    /// Alerts by the check that raised them.
    pub by_check: BTreeMap<&'static str, u32>,
}

/// Everything scored.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DetectionScores {
    /// Ward bucket length, seconds.
    pub bucket_s: f64,
    /// Ward-days of monitoring outside outbreak windows.
    pub ward_days: f64,
    /// Per ward detector, in configuration order.
    pub ward: Vec<DetectorScore>,
    /// All ward detectors together.
    pub any: DetectorScore,
    /// Deterioration.
    pub patient: PatientScore,
    /// Sensors.
    pub sensor: SensorScore,
}

/// What scoring needs besides the truth and the alerts.
#[derive(Debug, Clone, Copy)]
pub struct ScoreInputs<'a> {
    /// When the nodes started.
    pub origin: Timestamp,
    /// How long the run lasted, seconds.
    pub ran_for_s: f64,
    /// Wards.
    pub wards: u16,
    /// Nodes.
    pub nodes: u32,
    /// The ward detectors.
    pub ward: &'a WardConfig,
    /// Every alert raised, with clearing times.
    pub alerts: &'a [Alert],
    /// When each (node, admission) first held NEWS2 ≥ 5.
    pub news2_five: &'a BTreeMap<(u32, u32), Timestamp>,
}

/// Slack after a sensor fault ends within which its alert still counts.
const SENSOR_SLACK_S: f64 = 1800.0;

/// Scores every detector.
pub fn score(truth: &GroundTruth, inputs: ScoreInputs<'_>) -> DetectionScores {
    let rel = |t: Timestamp| (t.as_micros() as f64 - inputs.origin.as_micros() as f64) / 1e6;
    let bucket_s = inputs.ward.bucket.as_secs_f64();
    let run_end = inputs.ran_for_s;

    // Outbreak windows per ward.
    let windows: Vec<(u16, f64, f64)> = truth
        .outbreaks
        .iter()
        .enumerate()
        .filter(|(_, o)| o.onset_s.is_finite() && o.onset_s < run_end)
        .map(|(i, o)| {
            let end = truth
                .episodes
                .iter()
                .filter(|e| e.outbreak == Some(i) && e.happened())
                .map(|e| e.end_s.unwrap_or(run_end))
                .fold(o.onset_s, f64::max)
                .min(run_end);
            (o.ward, o.onset_s, end)
        })
        .collect();
    let outbreak_s: f64 = windows.iter().map(|(_, a, b)| b - a).sum();
    let ward_days = ((f64::from(inputs.wards) * run_end - outbreak_s) / 86_400.0).max(0.0);

    // Ward alerts per detector: (ward, raised_s, cleared_s).
    let mut per_detector: Vec<Vec<(u16, f64, f64)>> = vec![Vec::new(); inputs.ward.detectors.len()];
    for a in inputs.alerts {
        if let AlertKind::WardAnomaly { detector, .. } = a.kind {
            let ward = a.scope.ward().unwrap_or(0);
            let cleared = a.cleared_at.map_or(run_end, rel);
            if let Some(list) = per_detector.get_mut(usize::from(detector)) {
                list.push((ward, rel(a.raised_at), cleared));
            }
        }
    }
    let ward: Vec<DetectorScore> = inputs
        .ward
        .detectors
        .iter()
        .zip(&per_detector)
        .map(|(spec, alarms)| {
            let mut s = score_ward(alarms, &windows, ward_days, bucket_s);
            s.name = spec.name.clone();
            s.method = spec.method.method.name().into();
            s.series = spec.series.name().into();
            s
        })
        .collect();
    // All detectors together. A raise while another detector's alarm on the
    // same ward still holds, and of the same verdict (both inside an
    // outbreak window, or both outside), is the same alarm; detection time
    // is the first raise of any detector in the window.
    let mut all: Vec<(u16, f64, f64)> = per_detector.concat();
    all.sort_by(|a, b| (a.0, a.1).partial_cmp(&(b.0, b.1)).expect("finite times"));
    let inside = |(w, at, _): &(u16, f64, f64)| {
        windows
            .iter()
            .any(|&(ow, a, b)| ow == *w && *at >= a && *at <= b)
    };
    let mut merged: Vec<(u16, f64, f64)> = Vec::new();
    for a in &all {
        match merged.last_mut() {
            Some(m) if m.0 == a.0 && a.1 <= m.2 && inside(m) == inside(a) => m.2 = m.2.max(a.2),
            _ => merged.push(*a),
        }
    }
    let mut any = score_ward(&merged, &windows, ward_days, bucket_s);
    let first = score_ward(&all, &windows, ward_days, bucket_s);
    any.detected = first.detected;
    any.recall = first.recall;
    any.ttd_median_s = first.ttd_median_s;
    any.ttd_p90_s = first.ttd_p90_s;
    any.ttd_median_buckets = first.ttd_median_buckets;
    any.ttd_s = first.ttd_s;
    any.name = "any".into();

    DetectionScores {
        bucket_s,
        ward_days,
        ward,
        any,
        patient: score_patients(truth, &inputs, &rel),
        sensor: score_sensors(truth, &inputs, &rel),
    }
}

fn score_ward(
    alarms: &[(u16, f64, f64)],
    windows: &[(u16, f64, f64)],
    ward_days: f64,
    bucket_s: f64,
) -> DetectorScore {
    let mut true_alarms = 0;
    let mut false_alarms = 0;
    for &(ward, at, _) in alarms {
        if windows
            .iter()
            .any(|&(w, a, b)| w == ward && at >= a && at <= b)
        {
            true_alarms += 1;
        } else {
            false_alarms += 1;
        }
    }
    let mut ttd = Vec::new();
    for &(w, a, b) in windows {
        if let Some(first) = alarms
            .iter()
            .filter(|&&(ward, at, _)| ward == w && at >= a && at <= b)
            .map(|&(_, at, _)| at)
            .reduce(f64::min)
        {
            ttd.push(first - a);
        }
    }
    let outbreaks = windows.len() as u32;
    let per_day = if ward_days > 0.0 {
        f64::from(false_alarms) / ward_days
    } else {
        0.0
    };
    let median = quantile(&ttd, 0.5);
    DetectorScore {
        outbreaks,
        detected: ttd.len() as u32,
        recall: (outbreaks > 0).then(|| ttd.len() as f64 / f64::from(outbreaks)),
        true_alarms,
        false_alarms,
        precision: (true_alarms + false_alarms > 0)
            .then(|| f64::from(true_alarms) / f64::from(true_alarms + false_alarms)),
        false_alarms_per_ward_day: per_day,
        false_alarms_per_ward_week: per_day * 7.0,
        ttd_median_s: median,
        ttd_p90_s: quantile(&ttd, 0.9),
        ttd_median_buckets: median.map(|m| m / bucket_s),
        ttd_s: ttd,
        ..DetectorScore::default()
    }
}

fn score_patients(
    truth: &GroundTruth,
    inputs: &ScoreInputs<'_>,
    rel: &dyn Fn(Timestamp) -> f64,
) -> PatientScore {
    let alerts: Vec<(u32, f64)> = inputs
        .alerts
        .iter()
        .filter(|a| matches!(a.kind, AlertKind::Deterioration))
        .filter_map(|a| Some((a.node()?.0, rel(a.raised_at))))
        .collect();
    let mut s = PatientScore::default();
    let mut ttd = Vec::new();
    let mut leads = Vec::new();
    let mut explained = vec![false; alerts.len()];
    for e in truth.of(EpisodeKind::Deterioration) {
        s.deteriorations += 1;
        let end = e.end_s.unwrap_or(f64::INFINITY);
        let first = alerts
            .iter()
            .enumerate()
            .filter(|(_, (n, at))| *n == e.node && *at >= e.onset_s && *at <= end)
            .map(|(i, (_, at))| (i, *at))
            .reduce(|a, b| if b.1 < a.1 { b } else { a });
        for (i, (n, at)) in alerts.iter().enumerate() {
            if *n == e.node && *at >= e.onset_s && *at <= end {
                explained[i] = true;
            }
        }
        let five = inputs
            .news2_five
            .get(&(e.node, e.admission))
            .map(|t| rel(*t));
        let already = five.is_some_and(|f| f < e.onset_s);
        s.already_at_five += u32::from(already);
        if let Some((_, at)) = first {
            s.flagged += 1;
            ttd.push(at - e.onset_s);
            if !already {
                match five {
                    Some(f) => {
                        leads.push(f - at);
                        s.before_news2_five += u32::from(at < f);
                    }
                    // NEWS2 never reached 5 in the run: the alert was first.
                    None => s.before_news2_five += 1,
                }
            }
        }
    }
    for (i, (n, at)) in alerts.iter().enumerate() {
        if explained[i] {
            continue;
        }
        let febrile = truth
            .of(EpisodeKind::Fever)
            .any(|f| f.node == *n && f.covers(*at));
        if febrile {
            s.alerts_during_fever += 1;
        } else {
            s.false_alarms += 1;
        }
    }
    let eligible = s.deteriorations - s.already_at_five;
    s.early_share = (eligible > 0).then(|| f64::from(s.before_news2_five) / f64::from(eligible));
    s.ttd_median_s = quantile(&ttd, 0.5);
    s.ttd_p90_s = quantile(&ttd, 0.9);
    s.lead_median_s = quantile(&leads, 0.5);
    s.ttd_s = ttd;
    let days = truth.patient_days();
    s.patient_days = days;
    s.false_alarms_per_patient_day = if days > 0.0 {
        f64::from(s.false_alarms) / days
    } else {
        0.0
    };
    s
}

fn score_sensors(
    truth: &GroundTruth,
    inputs: &ScoreInputs<'_>,
    rel: &dyn Fn(Timestamp) -> f64,
) -> SensorScore {
    // (node, sign, raised, cleared, check)
    let alerts: Vec<(u32, VitalSign, f64, f64, &'static str)> = inputs
        .alerts
        .iter()
        .filter_map(|a| match a.kind {
            AlertKind::CheckSensor { sign, check } => Some((
                a.node()?.0,
                sign,
                rel(a.raised_at),
                a.cleared_at.map_or(f64::INFINITY, rel),
                check.name(),
            )),
            _ => None,
        })
        .collect();
    let mut s = SensorScore::default();
    for a in &alerts {
        *s.by_check.entry(a.4).or_default() += 1;
    }
    let faults: Vec<_> = truth.of(EpisodeKind::SensorFault).collect();
    let mut explained = vec![false; alerts.len()];
    let mut ttf = Vec::new();
    for f in &faults {
        s.faults += 1;
        let end = f.end_s.unwrap_or(f64::INFINITY) + SENSOR_SLACK_S;
        let matches = |(n, sign, raised, cleared, _): &(u32, VitalSign, f64, f64, &str)| {
            *n == f.node
                && f.sign.is_none_or(|s| s == *sign)
                && *raised <= end
                && *cleared >= f.onset_s
        };
        let mut first: Option<f64> = None;
        for (i, a) in alerts.iter().enumerate() {
            if matches(a) {
                explained[i] = true;
                first = Some(first.map_or(a.2, |x: f64| x.min(a.2)));
            }
        }
        let entry = s.by_mode.entry(f.mode.unwrap_or("unknown")).or_default();
        entry.0 += 1;
        if let Some(at) = first {
            s.flagged += 1;
            entry.1 += 1;
            ttf.push((at - f.onset_s).max(0.0));
        }
    }
    s.recall = (s.faults > 0).then(|| f64::from(s.flagged) / f64::from(s.faults));
    s.time_to_flag_median_s = quantile(&ttf, 0.5);
    s.time_to_flag_p90_s = quantile(&ttf, 0.9);
    s.time_to_flag_s = ttf;
    for fever in truth.of(EpisodeKind::Fever) {
        if fever.onset_s >= inputs.ran_for_s {
            continue;
        }
        s.fevers += 1;
        let end = fever.end_s.unwrap_or(f64::INFINITY);
        let misflagged = alerts.iter().enumerate().any(|(i, a)| {
            a.0 == fever.node
                && a.1 == VitalSign::Temperature
                && a.2 >= fever.onset_s
                && a.2 <= end
                && !explained[i]
        });
        s.fevers_misflagged += u32::from(misflagged);
    }
    s.misflagged_share =
        (s.fevers > 0).then(|| f64::from(s.fevers_misflagged) / f64::from(s.fevers));
    s.false_alarms = explained.iter().filter(|e| !**e).count() as u32;
    let node_days = f64::from(inputs.nodes) * inputs.ran_for_s / 86_400.0;
    s.node_days = node_days;
    s.false_alarms_per_node_day = if node_days > 0.0 {
        f64::from(s.false_alarms) / node_days
    } else {
        0.0
    };
    s
}

/// The `q` quantile (nearest rank) of `xs`.
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vitalmesh_core::detect::{Method, WardDetectorSpec, WardSeries};
    use vitalmesh_core::{AlertKind, Scope, SensorCheck};
    use vitalmesh_wire::{AggregatorId, NodeId};

    use super::*;
    use crate::truth::{Episode, Outbreak};

    const ORIGIN: Timestamp = Timestamp::from_secs(1_767_225_600);

    fn at(s: f64) -> Timestamp {
        ORIGIN + Duration::from_secs_f64(s)
    }

    fn ward_alert(detector: u8, ward: u16, raised: f64) -> Alert {
        Alert::raise(
            AlertKind::WardAnomaly {
                detector,
                method: Method::C1,
                series: WardSeries::NewFebrile,
            },
            Scope::Ward { ward },
            at(raised),
            AggregatorId(0),
        )
    }

    fn fever(node: u32, ward: u16, onset: f64, end: f64, outbreak: Option<usize>) -> Episode {
        Episode {
            kind: EpisodeKind::Fever,
            node,
            ward,
            admission: 0,
            onset_s: onset,
            end_s: Some(end),
            source: "test".into(),
            outbreak,
            sign: None,
            mode: None,
        }
    }

    #[test]
    fn ward_alarms_are_judged_against_outbreak_windows() {
        let truth = GroundTruth {
            episodes: vec![
                fever(10, 1, 7200.0, 90_000.0, Some(0)),
                fever(11, 1, 9000.0, 80_000.0, Some(0)),
            ],
            outbreaks: vec![Outbreak {
                ward: 1,
                source: "event[0]".into(),
                at_s: 3600.0,
                onset_s: 7200.0,
                end_s: None,
                cases: 2,
            }],
            ..GroundTruth::default()
        };
        let ward = WardConfig {
            detectors: vec![
                WardDetectorSpec::new(Method::C1, WardSeries::NewFebrile),
                WardDetectorSpec::new(Method::Cusum, WardSeries::NewFebrile),
            ],
            ..WardConfig::default()
        };
        let alerts = [
            ward_alert(0, 1, 14_400.0), // 2 h after onset: detected
            ward_alert(0, 2, 20_000.0), // another ward: false
            ward_alert(1, 1, 5_000.0),  // before the first onset: false
            ward_alert(1, 1, 10_800.0), // 1 h after onset
        ];
        let five = BTreeMap::new();
        let s = score(
            &truth,
            ScoreInputs {
                origin: ORIGIN,
                ran_for_s: 4.0 * 86_400.0,
                wards: 4,
                nodes: 40,
                ward: &ward,
                alerts: &alerts,
                news2_five: &five,
            },
        );
        let c1 = &s.ward[0];
        assert_eq!((c1.detected, c1.true_alarms, c1.false_alarms), (1, 1, 1));
        assert_eq!(c1.ttd_median_s, Some(7200.0));
        assert_eq!(c1.ttd_median_buckets, Some(2.0));
        let window_days = (90_000.0 - 7200.0) / 86_400.0;
        assert!((s.ward_days - (16.0 - window_days)).abs() < 1e-9);
        assert!((c1.false_alarms_per_ward_day - 1.0 / s.ward_days).abs() < 1e-12);
        let cusum = &s.ward[1];
        assert_eq!((cusum.true_alarms, cusum.false_alarms), (1, 1));
        assert_eq!(cusum.ttd_median_s, Some(3600.0));
        // Together: the earliest true alarm; the true ones in ward 1 are one
        // alarm, the false ones (different wards) two.
        assert_eq!(s.any.ttd_median_s, Some(3600.0));
        assert_eq!((s.any.true_alarms, s.any.false_alarms), (1, 2));
        assert_eq!(s.any.recall, Some(1.0));
    }

    #[test]
    fn sensor_faults_and_fevers_are_told_apart() {
        let mut faults = vec![
            Episode {
                kind: EpisodeKind::SensorFault,
                node: 3,
                ward: 0,
                admission: 0,
                onset_s: 100.0,
                end_s: None,
                source: "event[0]".into(),
                outbreak: None,
                sign: Some(VitalSign::Temperature),
                mode: Some("stuck_at"),
            },
            fever(5, 0, 1000.0, 50_000.0, None),
            fever(6, 0, 1000.0, 50_000.0, None),
        ];
        faults.push(Episode {
            node: 4,
            onset_s: 200.0,
            mode: Some("drift"),
            sign: Some(VitalSign::SpO2),
            ..faults[0].clone()
        });
        let truth = GroundTruth {
            episodes: faults,
            ..GroundTruth::default()
        };
        let sensor = |node: u32, sign: VitalSign, t: f64| {
            Alert::raise(
                AlertKind::CheckSensor {
                    sign,
                    check: SensorCheck::RateOfChange,
                },
                Scope::Node {
                    node: NodeId(node),
                    ward: 0,
                },
                at(t),
                AggregatorId(0),
            )
        };
        let alerts = [
            sensor(3, VitalSign::Temperature, 160.0),
            sensor(6, VitalSign::Temperature, 3000.0), // a fever called a fault
            sensor(9, VitalSign::HeartRate, 500.0),    // nothing there
        ];
        let five = BTreeMap::new();
        let ward = WardConfig::default();
        let s = score(
            &truth,
            ScoreInputs {
                origin: ORIGIN,
                ran_for_s: 86_400.0,
                wards: 1,
                nodes: 10,
                ward: &ward,
                alerts: &alerts,
                news2_five: &five,
            },
        );
        let s = s.sensor;
        assert_eq!((s.faults, s.flagged), (2, 1));
        assert_eq!(s.by_mode["stuck_at"], (1, 1));
        assert_eq!(s.by_mode["drift"], (1, 0));
        assert_eq!(s.time_to_flag_median_s, Some(60.0));
        assert_eq!((s.fevers, s.fevers_misflagged), (2, 1));
        assert_eq!(s.false_alarms, 2, "the fever's and node 9's");
    }
}

//! Pass/fail thresholds on a run's figures, so CI can gate on a scenario.

use serde::Serialize;

/// A figure a threshold applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SloMetric {
    /// Unexplained samples, at most.
    MaxUnexplained,
    /// Delivered / produced, at least.
    MinDeliveredShare,
    /// End-to-end p50 latency (ms), at most.
    MaxLatencyP50Ms,
    /// End-to-end p99 latency (ms), at most.
    MaxLatencyP99Ms,
    /// End-to-end p99.9 latency (ms), at most.
    MaxLatencyP999Ms,
    /// Largest end-to-end latency (ms), at most.
    MaxLatencyMaxMs,
    /// Samples dropped on buffer overflow, at most.
    MaxDroppedOverflow,
    /// Samples lost in node crashes, at most.
    MaxLostOnCrash,
    /// Duplicate deliveries, at most.
    MaxDuplicates,
    /// Failed connection attempts, at most.
    MaxConnectFailures,
    /// Nodes reported down that no fault touched, at most.
    MaxFalseNodeDown,
    /// Messages refused by aggregators, at most.
    MaxRejected,
    /// Messages refused by aggregators, at least (rogue scenarios).
    MinRejected,
    /// Broker restarts nobody asked for, at most.
    MaxUnplannedBrokerRestarts,
    /// Outbreaks alerted on in their ward, as a share of outbreaks, at
    /// least (any ward detector).
    MinOutbreakRecall,
    /// Ward alerts with no outbreak behind them, per ward-day, at most.
    MaxFalseAlarmsPerWardDay,
    /// Seconds from an outbreak's first onset to its first ward alert
    /// (median over outbreaks), at most. Written as a duration.
    MaxTimeToDetect,
    /// Injected sensor faults flagged by a check-sensor alert, as a share,
    /// at least.
    MinSensorFaultRecall,
    /// Real fever episodes whose temperature sensor was called faulty, as
    /// a share, at most.
    MaxFeversMisflagged,
    /// Deteriorations alerted before their NEWS2 reached 5, as a share, at
    /// least.
    MinDeteriorationEarly,
}

impl SloMetric {
    /// The key in the `[slo]` table.
    pub fn name(self) -> &'static str {
        match self {
            Self::MaxUnexplained => "max_unexplained",
            Self::MinDeliveredShare => "min_delivered_share",
            Self::MaxLatencyP50Ms => "max_latency_p50_ms",
            Self::MaxLatencyP99Ms => "max_latency_p99_ms",
            Self::MaxLatencyP999Ms => "max_latency_p999_ms",
            Self::MaxLatencyMaxMs => "max_latency_max_ms",
            Self::MaxDroppedOverflow => "max_dropped_overflow",
            Self::MaxLostOnCrash => "max_lost_on_crash",
            Self::MaxDuplicates => "max_duplicates",
            Self::MaxConnectFailures => "max_connect_failures",
            Self::MaxFalseNodeDown => "max_false_node_down",
            Self::MaxRejected => "max_rejected",
            Self::MinRejected => "min_rejected",
            Self::MaxUnplannedBrokerRestarts => "max_unplanned_broker_restarts",
            Self::MinOutbreakRecall => "min_outbreak_recall",
            Self::MaxFalseAlarmsPerWardDay => "max_false_alarms_per_ward_day",
            Self::MaxTimeToDetect => "max_time_to_detect",
            Self::MinSensorFaultRecall => "min_sensor_fault_recall",
            Self::MaxFeversMisflagged => "max_fevers_misflagged",
            Self::MinDeteriorationEarly => "min_deterioration_early",
        }
    }

    fn is_minimum(self) -> bool {
        matches!(
            self,
            Self::MinDeliveredShare
                | Self::MinRejected
                | Self::MinOutbreakRecall
                | Self::MinSensorFaultRecall
                | Self::MinDeteriorationEarly
        )
    }

    /// Whether the threshold is a share from 0 to 1.
    pub fn is_share(self) -> bool {
        matches!(
            self,
            Self::MinDeliveredShare
                | Self::MinOutbreakRecall
                | Self::MinSensorFaultRecall
                | Self::MaxFeversMisflagged
                | Self::MinDeteriorationEarly
        )
    }
}

/// One threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Slo {
    /// What.
    pub metric: SloMetric,
    /// The bound.
    pub limit: f64,
}

/// The figures thresholds are checked against (filled from the report).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SloFigures {
    /// Unexplained samples.
    pub unexplained: u64,
    /// Delivered / produced.
    pub delivered_share: f64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// p99, ms.
    pub p99_ms: f64,
    /// p99.9, ms.
    pub p999_ms: f64,
    /// Max, ms.
    pub max_ms: f64,
    /// Dropped on overflow.
    pub dropped_overflow: u64,
    /// Lost in crashes.
    pub lost_on_crash: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Failed connects.
    pub connect_failures: u64,
    /// False node-down reports.
    pub false_node_down: u64,
    /// Rejected messages.
    pub rejected: u64,
    /// Unplanned broker restarts.
    pub unplanned_broker_restarts: u64,
    /// Detection figures; NaN where the run had nothing to measure them on
    /// (no outbreak, no injected fault): a threshold on those fails.
    pub outbreak_recall: f64,
    /// Ward false alarms per ward-day.
    pub false_alarms_per_ward_day: f64,
    /// Median time to detect an outbreak, seconds.
    pub time_to_detect_s: f64,
    /// Sensor faults flagged.
    pub sensor_fault_recall: f64,
    /// Fevers misflagged as sensor faults.
    pub fevers_misflagged: f64,
    /// Deteriorations alerted before NEWS2 ≥ 5.
    pub deterioration_early: f64,
}

impl Default for SloFigures {
    fn default() -> Self {
        Self {
            unexplained: 0,
            delivered_share: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            max_ms: 0.0,
            dropped_overflow: 0,
            lost_on_crash: 0,
            duplicates: 0,
            connect_failures: 0,
            false_node_down: 0,
            rejected: 0,
            unplanned_broker_restarts: 0,
            outbreak_recall: f64::NAN,
            false_alarms_per_ward_day: f64::NAN,
            time_to_detect_s: f64::NAN,
            sensor_fault_recall: f64::NAN,
            fevers_misflagged: f64::NAN,
            deterioration_early: f64::NAN,
        }
    }
}

/// The verdict on one threshold.
#[derive(Debug, Clone, Serialize)]
pub struct SloResult {
    /// Which threshold (the JSON carries its `name`).
    #[serde(skip)]
    pub metric: SloMetric,
    /// The key.
    pub name: &'static str,
    /// `<=` or `>=`.
    pub comparison: &'static str,
    /// The bound.
    pub limit: f64,
    /// What the run reached (`null` in JSON where the run had nothing to
    /// measure it on).
    pub actual: f64,
    /// Whether it held.
    pub passed: bool,
}

impl SloResult {
    /// A figure of this threshold as a person reads it: a time to detect
    /// as a duration (`2h27m10s`), a count whole, anything else with at
    /// most four decimals; `n/a` where the run had nothing to measure.
    pub fn show(&self, x: f64) -> String {
        if x.is_nan() {
            return "n/a".into();
        }
        if self.metric == SloMetric::MaxTimeToDetect && x >= 0.0 {
            // Whole seconds: milliseconds of a time to detect mean nothing.
            return crate::duration::format(std::time::Duration::from_secs(x.round() as u64));
        }
        if x.fract() == 0.0 && x.abs() < 1e15 {
            format!("{x:.0}")
        } else {
            format!("{x:.4}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned()
        }
    }
}

/// Checks every threshold.
pub fn evaluate(slos: &[Slo], f: &SloFigures) -> Vec<SloResult> {
    slos.iter()
        .map(|s| {
            let actual = match s.metric {
                SloMetric::MaxUnexplained => f.unexplained as f64,
                SloMetric::MinDeliveredShare => f.delivered_share,
                SloMetric::MaxLatencyP50Ms => f.p50_ms,
                SloMetric::MaxLatencyP99Ms => f.p99_ms,
                SloMetric::MaxLatencyP999Ms => f.p999_ms,
                SloMetric::MaxLatencyMaxMs => f.max_ms,
                SloMetric::MaxDroppedOverflow => f.dropped_overflow as f64,
                SloMetric::MaxLostOnCrash => f.lost_on_crash as f64,
                SloMetric::MaxDuplicates => f.duplicates as f64,
                SloMetric::MaxConnectFailures => f.connect_failures as f64,
                SloMetric::MaxFalseNodeDown => f.false_node_down as f64,
                SloMetric::MaxRejected | SloMetric::MinRejected => f.rejected as f64,
                SloMetric::MaxUnplannedBrokerRestarts => f.unplanned_broker_restarts as f64,
                SloMetric::MinOutbreakRecall => f.outbreak_recall,
                SloMetric::MaxFalseAlarmsPerWardDay => f.false_alarms_per_ward_day,
                SloMetric::MaxTimeToDetect => f.time_to_detect_s,
                SloMetric::MinSensorFaultRecall => f.sensor_fault_recall,
                SloMetric::MaxFeversMisflagged => f.fevers_misflagged,
                SloMetric::MinDeteriorationEarly => f.deterioration_early,
            };
            let minimum = s.metric.is_minimum();
            SloResult {
                metric: s.metric,
                name: s.metric.name(),
                comparison: if minimum { ">=" } else { "<=" },
                limit: s.limit,
                actual,
                // NaN (nothing measured) fails either way.
                passed: if minimum {
                    actual >= s.limit
                } else {
                    actual <= s.limit
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxima_and_minima_compare_the_right_way() {
        let slos = [
            Slo {
                metric: SloMetric::MaxUnexplained,
                limit: 0.0,
            },
            Slo {
                metric: SloMetric::MaxLatencyP99Ms,
                limit: 20.0,
            },
            Slo {
                metric: SloMetric::MinDeliveredShare,
                limit: 0.999,
            },
        ];
        let good = SloFigures {
            unexplained: 0,
            p99_ms: 19.9,
            delivered_share: 0.9995,
            ..Default::default()
        };
        assert!(evaluate(&slos, &good).iter().all(|r| r.passed));
        let bad = SloFigures {
            unexplained: 1,
            p99_ms: 20.1,
            delivered_share: 0.998,
            ..Default::default()
        };
        assert!(evaluate(&slos, &bad).iter().all(|r| !r.passed));
    }

    #[test]
    fn figures_show_as_a_person_reads_them() {
        let slos = [
            Slo {
                metric: SloMetric::MaxTimeToDetect,
                limit: 43_200.0,
            },
            Slo {
                metric: SloMetric::MaxFalseAlarmsPerWardDay,
                limit: 0.5,
            },
        ];
        let f = SloFigures {
            time_to_detect_s: 8830.257,
            false_alarms_per_ward_day: 0.142_857_1,
            ..Default::default()
        };
        let r = evaluate(&slos, &f);
        assert_eq!(r[0].show(r[0].actual), "2h27m10s");
        assert_eq!(r[0].show(r[0].limit), "12h");
        assert_eq!(r[1].show(r[1].actual), "0.1429");
        assert_eq!(r[1].show(r[1].limit), "0.5");
        assert_eq!(r[1].show(f64::NAN), "n/a");
    }

    #[test]
    fn a_detection_threshold_with_nothing_to_measure_fails() {
        let slos = [
            Slo {
                metric: SloMetric::MinOutbreakRecall,
                limit: 0.9,
            },
            Slo {
                metric: SloMetric::MaxFalseAlarmsPerWardDay,
                limit: 1.0,
            },
        ];
        let none = SloFigures::default();
        assert!(evaluate(&slos, &none).iter().all(|r| !r.passed));
        let good = SloFigures {
            outbreak_recall: 1.0,
            false_alarms_per_ward_day: 0.1,
            ..SloFigures::default()
        };
        assert!(evaluate(&slos, &good).iter().all(|r| r.passed));
    }
}

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
        }
    }

    fn is_minimum(self) -> bool {
        matches!(self, Self::MinDeliveredShare | Self::MinRejected)
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
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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
}

/// The verdict on one threshold.
#[derive(Debug, Clone, Serialize)]
pub struct SloResult {
    /// The key.
    pub name: &'static str,
    /// `<=` or `>=`.
    pub comparison: &'static str,
    /// The bound.
    pub limit: f64,
    /// What the run reached.
    pub actual: f64,
    /// Whether it held.
    pub passed: bool,
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
            };
            let minimum = s.metric.is_minimum();
            SloResult {
                name: s.metric.name(),
                comparison: if minimum { ">=" } else { "<=" },
                limit: s.limit,
                actual,
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
}

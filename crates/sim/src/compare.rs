//! Two run reports side by side: the figures that matter, how each
//! changed, whether the change is for the better, and thresholds
//! (`latency.p99 > +10%`) that fail a comparison, for gating CI on "is
//! this run worse than the last one".
//!
//! Reports are read as JSON values rather than as [`crate::Report`]: a
//! baseline written by an older vitalmesh still compares, and a figure one
//! report lacks (a virtual run has no CPU or memory) is shown as missing,
//! not an error — unless a threshold needs it.
//!
//! Every figure is one row of [`METRICS`] (a name, how to read it, its
//! unit and which way is better), and detectors add theirs from the
//! report's scores, so a new figure is one line.

use std::fmt;

use serde_json::Value;

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Larger is better (goodput, recall).
    Higher,
    /// Smaller is better (latency, loss, memory).
    Lower,
    /// Neither: shown, never judged (samples produced).
    Neither,
}

/// How a figure is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count.
    Count,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
    /// Bytes.
    Bytes,
    /// Per second.
    PerS,
    /// A share from 0 to 1, shown as a percentage.
    Share,
    /// CPU cores.
    Cores,
}

/// One figure of a report.
pub struct Metric {
    /// Its name in tables and thresholds (`latency.p99`).
    pub name: &'static str,
    /// What it means.
    pub about: &'static str,
    /// Its unit.
    pub unit: Unit,
    /// Which way is better.
    pub better: Better,
    read: fn(&Value) -> Option<f64>,
}

fn at(report: &Value, pointer: &str) -> Option<f64> {
    report.pointer(pointer).and_then(Value::as_f64)
}

fn mean(report: &Value, pointer: &str) -> Option<f64> {
    let series = report.pointer(pointer)?.as_array()?;
    let values: Vec<f64> = series.iter().filter_map(Value::as_f64).collect();
    // The first and last seconds are the ramp and the drain.
    let steady = if values.len() > 4 {
        &values[1..values.len() - 1]
    } else {
        &values[..]
    };
    (!steady.is_empty()).then(|| steady.iter().sum::<f64>() / steady.len() as f64)
}

/// The fixed figures, in table order.
pub const METRICS: &[Metric] = &[
    Metric {
        name: "ledger.produced",
        about: "samples the nodes took",
        unit: Unit::Count,
        better: Better::Neither,
        read: |r| at(r, "/ledger/total/produced"),
    },
    Metric {
        name: "ledger.delivered_share",
        about: "distinct samples delivered, of those produced",
        unit: Unit::Share,
        better: Better::Higher,
        read: |r| {
            let produced = at(r, "/ledger/total/produced")?;
            (produced > 0.0).then(|| at(r, "/ledger/total/delivered").unwrap_or(0.0) / produced)
        },
    },
    Metric {
        name: "ledger.dropped",
        about: "samples evicted from full node buffers",
        unit: Unit::Count,
        better: Better::Lower,
        read: |r| at(r, "/ledger/total/dropped_overflow"),
    },
    Metric {
        name: "ledger.lost",
        about: "samples lost with a crashed node's memory",
        unit: Unit::Count,
        better: Better::Lower,
        read: |r| at(r, "/ledger/total/lost_on_crash"),
    },
    Metric {
        name: "ledger.unexplained",
        about: "samples nobody can account for",
        unit: Unit::Count,
        better: Better::Lower,
        read: |r| at(r, "/ledger/total/unexplained"),
    },
    Metric {
        name: "ledger.duplicates",
        about: "samples delivered more than once",
        unit: Unit::Count,
        better: Better::Lower,
        read: |r| at(r, "/ledger/total/duplicates"),
    },
    Metric {
        name: "latency.p50",
        about: "end-to-end latency, median",
        unit: Unit::Ms,
        better: Better::Lower,
        read: |r| at(r, "/latency/end_to_end/p50_ms"),
    },
    Metric {
        name: "latency.p90",
        about: "end-to-end latency, 90th percentile",
        unit: Unit::Ms,
        better: Better::Lower,
        read: |r| at(r, "/latency/end_to_end/p90_ms"),
    },
    Metric {
        name: "latency.p99",
        about: "end-to-end latency, 99th percentile",
        unit: Unit::Ms,
        better: Better::Lower,
        read: |r| at(r, "/latency/end_to_end/p99_ms"),
    },
    Metric {
        name: "latency.p99_9",
        about: "end-to-end latency, 99.9th percentile",
        unit: Unit::Ms,
        better: Better::Lower,
        read: |r| at(r, "/latency/end_to_end/p99_9_ms"),
    },
    Metric {
        name: "latency.max",
        about: "end-to-end latency, worst",
        unit: Unit::Ms,
        better: Better::Lower,
        read: |r| at(r, "/latency/end_to_end/max_ms"),
    },
    Metric {
        name: "latency.puback_p99",
        about: "publish to PUBACK, 99th percentile",
        unit: Unit::Ms,
        better: Better::Lower,
        read: |r| at(r, "/latency/publish_ack/p99_ms"),
    },
    Metric {
        name: "throughput.delivered",
        about: "samples delivered per second, ramp and drain left out",
        unit: Unit::PerS,
        better: Better::Higher,
        read: |r| mean(r, "/throughput/delivered"),
    },
    Metric {
        name: "throughput.published",
        about: "samples published per second, re-sends included",
        unit: Unit::PerS,
        better: Better::Neither,
        read: |r| mean(r, "/throughput/published"),
    },
    Metric {
        name: "connections.failures",
        about: "connection attempts that failed",
        unit: Unit::Count,
        better: Better::Lower,
        read: |r| at(r, "/connections/failures"),
    },
    Metric {
        name: "connections.all_after",
        about: "seconds until every node had connected",
        unit: Unit::S,
        better: Better::Lower,
        read: |r| at(r, "/connections/all_connected_after_s"),
    },
    Metric {
        name: "memory.per_node",
        about: "peak memory of simulator and broker per node",
        unit: Unit::Bytes,
        better: Better::Lower,
        read: |r| at(r, "/memory/per_node_bytes"),
    },
    Metric {
        name: "cpu.cores",
        about: "CPU of simulator and broker per second of the run",
        unit: Unit::Cores,
        better: Better::Lower,
        read: |r| {
            let cpu = at(r, "/cpu/process_s")? + at(r, "/cpu/broker_s").unwrap_or(0.0);
            let ran = at(r, "/ran_for_s")?;
            (ran > 0.0).then(|| cpu / ran)
        },
    },
    Metric {
        name: "broker.restarts",
        about: "broker process and listener restarts",
        unit: Unit::Count,
        better: Better::Lower,
        read: |r| Some(at(r, "/broker/process_restarts")? + at(r, "/broker/listener_restarts")?),
    },
    Metric {
        name: "alerts.false_node_down",
        about: "nodes reported down that were not",
        unit: Unit::Count,
        better: Better::Lower,
        read: |r| Some(r.pointer("/alerts/false_node_down")?.as_array()?.len() as f64),
    },
    Metric {
        name: "rejected",
        about: "messages the aggregators refused",
        unit: Unit::Count,
        better: Better::Neither,
        // A fold from +0: an empty f64 sum is -0.
        read: |r| {
            Some(
                r.get("rejected")?
                    .as_object()?
                    .values()
                    .filter_map(Value::as_f64)
                    .fold(0.0, |a, b| a + b),
            )
        },
    },
];

/// A detector's scores that are compared, with the unit and direction.
const DETECTOR_FIGURES: &[(&str, Unit, Better)] = &[
    ("recall", Unit::Share, Better::Higher),
    ("precision", Unit::Share, Better::Higher),
    ("false_alarms_per_ward_week", Unit::Count, Better::Lower),
    ("ttd_median_s", Unit::S, Better::Lower),
];

/// One compared figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its name (`latency.p99`, `detector.c2.recall`).
    pub name: String,
    /// Its unit.
    pub unit: Unit,
    /// Which way is better.
    pub better: Better,
    /// In the baseline, if there.
    pub base: Option<f64>,
    /// In the new run, if there.
    pub new: Option<f64>,
}

/// How a figure moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Moved the good way.
    Better,
    /// Moved the bad way.
    Worse,
    /// Within [`SAME_WITHIN`] of the baseline, or a figure not judged.
    Same,
    /// Missing in one of the reports.
    Missing,
}

/// A relative change smaller than this is "same": run-to-run noise.
pub const SAME_WITHIN: f64 = 0.01;

impl Row {
    /// New minus base.
    pub fn change(&self) -> Option<f64> {
        Some(self.new? - self.base?)
    }

    /// The change as a share of the base (`None` for a zero base).
    pub fn relative(&self) -> Option<f64> {
        let base = self.base?;
        (base != 0.0).then(|| self.change().map(|c| c / base.abs()))?
    }

    /// Better, worse or the same.
    pub fn verdict(&self) -> Verdict {
        let Some(change) = self.change() else {
            return Verdict::Missing;
        };
        let small = match self.relative() {
            Some(rel) => rel.abs() < SAME_WITHIN,
            None => change == 0.0,
        };
        match (self.better, small) {
            (Better::Neither, _) | (_, true) => Verdict::Same,
            (Better::Higher, false) if change > 0.0 => Verdict::Better,
            (Better::Lower, false) if change < 0.0 => Verdict::Better,
            _ => Verdict::Worse,
        }
    }
}

/// Every figure of both reports, fixed ones first, then each detector's.
pub fn rows(base: &Value, new: &Value) -> Vec<Row> {
    let mut rows: Vec<Row> = METRICS
        .iter()
        .map(|m| Row {
            name: m.name.to_owned(),
            unit: m.unit,
            better: m.better,
            base: (m.read)(base),
            new: (m.read)(new),
        })
        .collect();
    let mut detectors: Vec<String> = Vec::new();
    for report in [base, new] {
        for name in detector_names(report) {
            if !detectors.contains(&name) {
                detectors.push(name);
            }
        }
    }
    for detector in detectors {
        for &(figure, unit, better) in DETECTOR_FIGURES {
            rows.push(Row {
                name: format!("detector.{detector}.{figure}"),
                unit,
                better,
                base: detector_figure(base, &detector, figure),
                new: detector_figure(new, &detector, figure),
            });
        }
    }
    rows
}

/// The ward-scope detectors a report scored.
fn detector_names(report: &Value) -> Vec<String> {
    report
        .pointer("/detection/scores/ward")
        .and_then(Value::as_array)
        .map(|scores| {
            scores
                .iter()
                .filter_map(|s| s.get("name")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn detector_figure(report: &Value, detector: &str, figure: &str) -> Option<f64> {
    report
        .pointer("/detection/scores/ward")?
        .as_array()?
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(detector))?
        .get(figure)?
        .as_f64()
}

/// The comparison operator of a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl Op {
    fn holds(self, x: f64, limit: f64) -> bool {
        match self {
            Self::Gt => x > limit,
            Self::Ge => x >= limit,
            Self::Lt => x < limit,
            Self::Le => x <= limit,
        }
    }
}

/// What a threshold compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// The new value itself (`latency.p99 > 250`).
    Value(f64),
    /// New minus base (`ledger.lost > +0`).
    Change(f64),
    /// The change as a percentage of the base (`latency.p99 > +10%`).
    Percent(f64),
}

/// A `--fail-if` threshold: the comparison fails if it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The figure.
    pub metric: String,
    /// How it is compared.
    pub op: Op,
    /// With what.
    pub limit: Limit,
    text: String,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The names thresholds may use: the fixed figures, and the detectors'
/// as `detector.NAME.FIGURE`.
pub fn metric_names() -> String {
    let mut names: Vec<String> = METRICS.iter().map(|m| m.name.to_owned()).collect();
    let figures: Vec<&str> = DETECTOR_FIGURES.iter().map(|(f, _, _)| *f).collect();
    names.push(format!("detector.NAME.{{{}}}", figures.join(",")));
    names.join(", ")
}

impl Threshold {
    /// Parses `METRIC OP LIMIT`: `latency.p99 > +10%` (relative change),
    /// `ledger.lost > +0` (change), `latency.p99 > 250` (value), with `>`,
    /// `>=`, `<` or `<=`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = "expected 'METRIC OP LIMIT', e.g. 'latency.p99 > +10%', 'ledger.lost > +0' or 'latency.p99 > 250'";
        let (at, op) = ["<=", ">=", "<", ">"]
            .into_iter()
            .find_map(|sym| text.find(sym).map(|at| (at, sym)))
            .ok_or_else(|| {
                format!("'{text}' has no comparison ('>', '>=', '<', '<='); {expected}")
            })?;
        let metric = text[..at].trim();
        let limit = text[at + op.len()..].trim();
        let shown = format!("{metric} {op} {limit}");
        let op = match op {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            _ => Op::Le,
        };
        let known = METRICS.iter().any(|m| m.name == metric)
            || metric
                .strip_prefix("detector.")
                .and_then(|rest| rest.rsplit_once('.'))
                .is_some_and(|(name, figure)| {
                    !name.is_empty() && DETECTOR_FIGURES.iter().any(|(f, _, _)| *f == figure)
                });
        if !known {
            return Err(format!(
                "'{metric}' in '{text}' is not a figure; expected one of {}",
                metric_names()
            ));
        }
        let number = |s: &str| -> Result<f64, String> {
            s.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("'{limit}' in '{text}' is not a number; {expected}"))
        };
        let limit = if let Some(pct) = limit.strip_suffix('%') {
            if !pct.starts_with(['+', '-']) {
                return Err(format!(
                    "'{limit}' in '{text}' is a percentage without a sign; expected a change such as '+10%' or '-5%'"
                ));
            }
            Limit::Percent(number(pct)?)
        } else if limit.starts_with(['+', '-']) {
            Limit::Change(number(limit)?)
        } else {
            Limit::Value(number(limit)?)
        };
        Ok(Self {
            metric: metric.to_owned(),
            op,
            limit,
            text: shown,
        })
    }

    /// Whether this threshold fails the comparison, judged on `rows`; an
    /// error if a report lacks what it needs.
    pub fn fails(&self, rows: &[Row]) -> Result<bool, String> {
        let row = rows
            .iter()
            .find(|r| r.name == self.metric)
            .ok_or_else(|| format!("'{}': neither report has this figure", self.metric))?;
        let need = |v: Option<f64>, which: &str| {
            v.ok_or_else(|| format!("'{}': {which} report has no '{}'", self.text, self.metric))
        };
        let x = match self.limit {
            Limit::Value(_) => need(row.new, "the new")?,
            Limit::Change(_) => need(row.new, "the new")? - need(row.base, "the base")?,
            Limit::Percent(_) => {
                let base = need(row.base, "the base")?;
                let new = need(row.new, "the new")?;
                if base == 0.0 {
                    return Err(format!(
                        "'{}': the base's '{}' is 0, so a change in percent means nothing; expected a change such as '+1'",
                        self.text, self.metric
                    ));
                }
                (new - base) / base.abs() * 100.0
            }
        };
        let limit = match self.limit {
            Limit::Value(v) | Limit::Change(v) | Limit::Percent(v) => v,
        };
        Ok(self.op.holds(x, limit))
    }
}

/// A figure as people read it.
pub fn show(unit: Unit, v: Option<f64>) -> String {
    let Some(v) = v else {
        return "—".into();
    };
    match unit {
        Unit::Count => format!("{v:.0}"),
        Unit::Ms => format!("{v:.3} ms"),
        Unit::S => format!("{v:.1} s"),
        Unit::Bytes => format!("{:.1} KB", v / 1024.0),
        Unit::PerS => format!("{v:.1}/s"),
        Unit::Share => format!("{:.3} %", v * 100.0),
        Unit::Cores => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(p99: f64, delivered: u64, recall: f64) -> Value {
        json!({
            "ran_for_s": 60.0,
            "ledger": {"total": {"produced": 1000, "delivered": delivered, "dropped_overflow": 0,
                       "lost_on_crash": 0, "unexplained": 0, "duplicates": 0}},
            "latency": {"end_to_end": {"p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": p99, "p99_9_ms": 9.0, "max_ms": 20.0},
                        "publish_ack": {"p99_ms": 0.5}},
            "throughput": {"delivered": [0, 100, 100, 100, 100, 50], "published": [0, 100, 100, 100, 100, 50]},
            "connections": {"failures": 0, "all_connected_after_s": 1.5},
            "broker": {"process_restarts": 0, "listener_restarts": 0},
            "alerts": {"false_node_down": []},
            "rejected": {"bad_tag": 3},
            "detection": {"scores": {"ward": [{"name": "c2", "recall": recall, "precision": 1.0,
                           "false_alarms_per_ward_week": 0.5, "ttd_median_s": 3600.0}]}}
        })
    }

    fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
        rows.iter().find(|r| r.name == name).unwrap()
    }

    #[test]
    fn figures_are_read_judged_and_missing_ones_said() {
        let rows = rows(&report(10.0, 1000, 0.8), &report(12.0, 990, 0.9));
        let p99 = row(&rows, "latency.p99");
        assert_eq!((p99.base, p99.new), (Some(10.0), Some(12.0)));
        assert_eq!(p99.verdict(), Verdict::Worse);
        assert!((p99.relative().unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(
            row(&rows, "ledger.delivered_share").verdict(),
            Verdict::Worse
        );
        assert_eq!(row(&rows, "detector.c2.recall").verdict(), Verdict::Better);
        assert_eq!(row(&rows, "ledger.produced").verdict(), Verdict::Same);
        // Ramp and drain seconds are left out of the rate.
        assert_eq!(row(&rows, "throughput.delivered").new, Some(100.0));
        // A virtual report has no CPU figures: missing, not zero.
        assert_eq!(row(&rows, "cpu.cores").verdict(), Verdict::Missing);
        assert_eq!(show(Unit::Ms, None), "—");
        let none_refused = super::rows(&json!({"rejected": {}}), &json!({"rejected": {}}));
        assert_eq!(show(Unit::Count, row(&none_refused, "rejected").new), "0");
    }

    #[test]
    fn thresholds_parse_and_judge_values_changes_and_percentages() {
        let rows = rows(&report(10.0, 1000, 0.8), &report(12.0, 990, 0.8));
        let fails = |t: &str| Threshold::parse(t).unwrap().fails(&rows).unwrap();
        assert!(fails("latency.p99 > +10%"));
        assert!(!fails("latency.p99 > +25%"));
        assert!(fails("latency.p99 >= 12"));
        assert!(!fails("latency.p99 > 12"));
        assert!(fails("ledger.delivered_share < -0.5%"));
        assert!(!fails("detector.c2.recall < -0.01"));
        assert!(fails("latency.p99 > +1.5"));
        assert_eq!(
            Threshold::parse("latency.p99>+10%").unwrap().to_string(),
            "latency.p99 > +10%"
        );
    }

    #[test]
    fn bad_thresholds_say_what_is_expected() {
        let err = |t: &str| Threshold::parse(t).unwrap_err();
        assert!(
            err("latency.p99 +10%").contains("has no comparison"),
            "{}",
            err("latency.p99 +10%")
        );
        let e = err("latency.p98 > +10%");
        assert!(e.contains("'latency.p98' in 'latency.p98 > +10%' is not a figure; expected one of ledger.produced"), "{e}");
        assert!(err("latency.p99 > 10%").contains("without a sign"));
        assert!(
            err("latency.p99 > fast").contains("'fast' in 'latency.p99 > fast' is not a number")
        );
        assert!(err("latency.p99 > nan").contains("is not a number"));
        assert!(err("detector.c2.speed > 1").contains("is not a figure"));
        // A figure a report lacks, or a zero base for a percentage.
        let rows = rows(&report(10.0, 1000, 0.8), &report(12.0, 990, 0.8));
        let t = Threshold::parse("cpu.cores > +10%").unwrap();
        assert!(
            t.fails(&rows)
                .unwrap_err()
                .contains("report has no 'cpu.cores'")
        );
        let t = Threshold::parse("ledger.lost > +10%").unwrap();
        assert!(
            t.fails(&rows)
                .unwrap_err()
                .contains("is 0, so a change in percent means nothing")
        );
    }
}

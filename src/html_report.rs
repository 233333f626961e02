//! A run report as one self-contained HTML page: `vitalmesh report RUN.json
//! --html OUT.html`, or `vitalmesh run --html OUT.html` at the end of a run.
//!
//! Every chart is an inline SVG drawn by plotters from the report's own
//! figures; the page loads no script, style sheet, font or image from
//! anywhere, so it opens offline and can be attached to a ticket. The
//! report is read as JSON (not as `Report`), so a report written by an
//! earlier vitalmesh renders too, with what it has.
//!
//! Sections: the header and verdicts; throughput over time with the
//! injected events marked; end-to-end latency as a percentile spectrum (the
//! HdrHistogram plot, log scale), per ward and over time; the ledger per ward as
//! stacked bars; injected faults beside the ground truth, the detectors'
//! alarms and the incidents they opened, with each detector's scores and
//! time to detect; and partition ownership over time.

use std::fmt::Write as _;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use serde_json::Value;

const WIDTH: u32 = 960;

/// Text for HTML: `& < > " '` escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn num(r: &Value, pointer: &str) -> Option<f64> {
    r.pointer(pointer).and_then(Value::as_f64)
}

fn text<'a>(r: &'a Value, pointer: &str) -> &'a str {
    r.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn array<'a>(r: &'a Value, pointer: &str) -> &'a [Value] {
    r.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn series(r: &Value, pointer: &str) -> Vec<f64> {
    array(r, pointer).iter().filter_map(Value::as_f64).collect()
}

/// Seconds or hours on a time axis, by the run's length.
struct TimeAxis {
    scale: f64,
    unit: &'static str,
}

impl TimeAxis {
    fn for_run(ran_for_s: f64) -> Self {
        if ran_for_s > 3.0 * 3600.0 {
            Self {
                scale: 3600.0,
                unit: "h",
            }
        } else if ran_for_s > 600.0 {
            Self {
                scale: 60.0,
                unit: "min",
            }
        } else {
            Self {
                scale: 1.0,
                unit: "s",
            }
        }
    }

    fn at(&self, s: f64) -> f64 {
        s / self.scale
    }
}

/// At most about `max` points of `values` (taken every `step` seconds),
/// keeping each bucket's lowest and highest so spikes and dips survive: a
/// week at one point a second would be megabytes of SVG.
fn downsample(values: &[f64], step: f64, max: usize) -> Vec<(f64, f64)> {
    let per = values.len().div_ceil(max.max(1) / 2).max(1);
    if per == 1 {
        return values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 * step, *v))
            .collect();
    }
    let mut out = Vec::with_capacity(2 * values.len() / per + 2);
    for (b, chunk) in values.chunks(per).enumerate() {
        let at = |k: usize| (b * per + k) as f64 * step;
        let (lo, hi) =
            chunk
                .iter()
                .enumerate()
                .fold(((0, f64::MAX), (0, f64::MIN)), |(lo, hi), (k, &v)| {
                    (
                        if v < lo.1 { (k, v) } else { lo },
                        if v > hi.1 { (k, v) } else { hi },
                    )
                });
        let (first, second) = if lo.0 <= hi.0 { (lo, hi) } else { (hi, lo) };
        out.push((at(first.0), first.1));
        if second.0 != first.0 {
            out.push((at(second.0), second.1));
        }
    }
    out
}

/// Points per line.
const MAX_POINTS: usize = 1600;

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Produced, published and delivered per step, with the timeline's events
/// as numbered vertical marks.
fn throughput_chart(r: &Value, axis: &TimeAxis) -> Result<String> {
    let step = num(r, "/throughput/step_s").unwrap_or(1.0).max(1e-9);
    let lines = [
        ("produced", series(r, "/throughput/produced")),
        ("published", series(r, "/throughput/published")),
        ("delivered", series(r, "/throughput/delivered")),
    ];
    let len = lines.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let x_max = axis.at(len as f64 * step).max(1e-9);
    let y_max = lines
        .iter()
        .flat_map(|(_, v)| v.iter())
        .fold(0.0f64, |a, &b| a.max(b / step))
        .max(1.0)
        // Headroom for the legend above the lines.
        * 1.45;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(format!("time ({})", axis.unit))
            .y_desc("samples per second")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(plot_err)?;
        for (i, ev) in array(r, "/timeline").iter().enumerate() {
            let x = axis.at(ev["at_s"].as_f64().unwrap_or(0.0));
            chart
                .draw_series(LineSeries::new(
                    [(x, 0.0), (x, y_max)],
                    RGBColor(200, 80, 80).mix(0.5).stroke_width(1),
                ))
                .map_err(plot_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{}", i + 1),
                    (x, y_max * 0.97),
                    ("sans-serif", 12).into_font().color(&RGBColor(180, 40, 40)),
                )))
                .map_err(plot_err)?;
        }
        for (i, (name, values)) in lines.iter().enumerate() {
            let color = PALETTE[i];
            chart
                .draw_series(LineSeries::new(
                    downsample(values, step, MAX_POINTS)
                        .into_iter()
                        .map(|(t, v)| (axis.at(t), v / step)),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// A point of the spectrum: x, latency (ms), and its name (`p99`).
type SpectrumPoint = (f64, f64, &'static str);

/// The percentile spectrum, as HdrHistogram plots it: latency (log scale)
/// against log10(1 / (1 - percentile)), so 90 %, 99 % and 99.9 % are evenly
/// spaced; end to end and publish to PUBACK.
fn latency_spectrum(r: &Value) -> Result<String> {
    const MARKS: [(&str, &str, f64); 6] = [
        ("min_ms", "min", 0.0),
        ("p50_ms", "p50", 0.301),
        ("p90_ms", "p90", 1.0),
        ("p99_ms", "p99", 2.0),
        ("p99_9_ms", "p99.9", 3.0),
        ("max_ms", "max", 4.0),
    ];
    let curves: Vec<(&str, Vec<SpectrumPoint>)> = [
        ("end to end", "/latency/end_to_end"),
        ("publish → PUBACK", "/latency/publish_ack"),
    ]
    .into_iter()
    .map(|(name, at)| {
        let points = MARKS
            .iter()
            .filter_map(|(k, label, x)| {
                num(r, &format!("{at}/{k}")).map(|ms| (*x, ms.max(0.001), *label))
            })
            .collect();
        (name, points)
    })
    .collect();
    let (lo, hi) = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y, _)| *y))
        .fold((f64::MAX, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (lo, hi) = if hi > 0.0 {
        (lo / 2.0, hi * 3.0)
    } else {
        (0.01, 10.0)
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH / 2 - 10, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.2f64..4.6, (lo..hi).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_labels(5)
            .x_label_formatter(&|x| match x.round() as i64 {
                _ if (x - x.round()).abs() > 1e-6 => String::new(),
                0 => "min".into(),
                1 => "90%".into(),
                2 => "99%".into(),
                3 => "99.9%".into(),
                4 => "max".into(),
                _ => String::new(),
            })
            .draw()
            .map_err(plot_err)?;
        for (i, (name, points)) in curves.into_iter().enumerate() {
            let color = PALETTE[i];
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|(x, y, _)| (*x, *y)),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|(x, y, _)| Circle::new((*x, *y), 3, color.filled())),
                )
                .map_err(plot_err)?;
            if i == 0 {
                // The end-to-end figures, written beside their points.
                chart
                    .draw_series(points.iter().map(|(x, y, label)| {
                        Text::new(
                            format!("{label} {y:.2}"),
                            (*x + 0.05, *y * 1.25),
                            ("sans-serif", 11).into_font().color(&color),
                        )
                    }))
                    .map_err(plot_err)?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// End-to-end latency over time: each step's median, p99 and largest.
fn latency_over_time(r: &Value, axis: &TimeAxis) -> Result<String> {
    let step = num(r, "/throughput/step_s").unwrap_or(1.0).max(1e-9);
    let lines: Vec<(&str, Vec<Option<f64>>)> = [
        ("p50", "/throughput/latency_p50_ms"),
        ("p99", "/throughput/latency_p99_ms"),
        ("max", "/throughput/latency_max_ms"),
    ]
    .into_iter()
    .map(|(name, at)| (name, array(r, at).iter().map(Value::as_f64).collect()))
    .collect();
    let len = lines.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    if len == 0 {
        return Ok(String::new());
    }
    let values = || lines.iter().flat_map(|(_, v)| v.iter().flatten().copied());
    let hi = values().fold(1.0f64, f64::max) * 2.0;
    let lo = values().fold(f64::MAX, f64::min).min(hi / 10.0).max(1e-3) / 2.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(
                0.0..axis.at(len as f64 * step).max(1e-9),
                (lo..hi).log_scale(),
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(format!("time ({})", axis.unit))
            .y_desc("latency (ms)")
            .draw()
            .map_err(plot_err)?;
        for (i, ev) in array(r, "/timeline").iter().enumerate() {
            let x = axis.at(ev["at_s"].as_f64().unwrap_or(0.0));
            chart
                .draw_series(LineSeries::new(
                    [(x, lo), (x, hi)],
                    RGBColor(200, 80, 80).mix(0.5).stroke_width(1),
                ))
                .map_err(plot_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{}", i + 1),
                    (x, hi / 1.3),
                    ("sans-serif", 12).into_font().color(&RGBColor(180, 40, 40)),
                )))
                .map_err(plot_err)?;
        }
        for (i, (name, values)) in lines.iter().enumerate() {
            let color = PALETTE[i];
            // A step that delivered nothing breaks the line there.
            let mut runs: Vec<Vec<f64>> = vec![Vec::new()];
            let mut starts = vec![0usize];
            for (k, v) in values.iter().enumerate() {
                match v {
                    Some(v) => runs.last_mut().expect("one run at least").push(*v),
                    None if !runs.last().expect("one run at least").is_empty() => {
                        runs.push(Vec::new());
                        starts.push(k + 1);
                    }
                    None => *starts.last_mut().expect("one start at least") = k + 1,
                }
            }
            for (j, (run, start)) in runs.iter().zip(&starts).enumerate() {
                let drawn = chart
                    .draw_series(LineSeries::new(
                        downsample(run, step, MAX_POINTS)
                            .into_iter()
                            .map(|(t, v)| (axis.at(t + *start as f64 * step), v)),
                        color.stroke_width(2),
                    ))
                    .map_err(plot_err)?;
                if j == 0 {
                    drawn.label(*name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                }
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// p50, p99 and max end-to-end latency for each ward.
fn latency_per_ward(r: &Value) -> Result<String> {
    let wards = array(r, "/latency/per_ward");
    let rows: Vec<(f64, [f64; 3])> = wards
        .iter()
        .map(|w| {
            let f = |k: &str| w[k].as_f64().unwrap_or(0.0).max(0.001);
            (
                w["ward"].as_f64().unwrap_or(0.0),
                [f("p50_ms"), f("p99_ms"), f("max_ms")],
            )
        })
        .collect();
    let hi = rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0f64, f64::max)
        * 2.0;
    let lo = rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(f64::MAX, f64::min)
        .min(hi / 10.0)
        / 2.0;
    let x_max = rows.len().max(1) as f64 - 0.5;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH / 2 - 10, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5..x_max, (lo..hi).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("ward")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 && *x >= 0.0 {
                    format!("{}", x.round() as i64)
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(plot_err)?;
        for (k, name) in ["p50", "p99", "max"].into_iter().enumerate() {
            let color = PALETTE[k];
            chart
                .draw_series(
                    rows.iter()
                        .enumerate()
                        .map(|(i, (_, v))| Circle::new((i as f64, v[k]), 4, color.filled())),
                )
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Where each ward's samples ended up, as stacked bars.
const LEDGER_PARTS: [(&str, &str, RGBColor); 5] = [
    ("delivered", "delivered", RGBColor(44, 160, 44)),
    ("still_buffered", "still buffered", RGBColor(31, 119, 180)),
    (
        "dropped_overflow",
        "dropped (overflow)",
        RGBColor(255, 127, 14),
    ),
    ("lost_on_crash", "lost (node crash)", RGBColor(140, 86, 75)),
    ("unexplained", "unexplained", RGBColor(214, 39, 40)),
];

fn ledger_chart(r: &Value) -> Result<String> {
    let wards = array(r, "/ledger/wards");
    let y_max = wards
        .iter()
        .map(|w| w["produced"].as_f64().unwrap_or(0.0))
        .fold(1.0f64, f64::max)
        // Headroom for the five-line legend above the bars.
        * 1.8;
    let x_max = wards.len().max(1) as f64 - 0.5;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(72)
            .build_cartesian_2d(-0.5..x_max, 0.0..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("ward")
            .y_desc("samples")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 && *x >= 0.0 {
                    format!("{}", x.round() as i64)
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(plot_err)?;
        for (k, (field, label, color)) in LEDGER_PARTS.into_iter().enumerate() {
            let bars: Vec<Rectangle<(f64, f64)>> = wards
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let below: f64 = LEDGER_PARTS[..k]
                        .iter()
                        .map(|(f, _, _)| w[*f].as_f64().unwrap_or(0.0))
                        .sum();
                    let v = w[field].as_f64().unwrap_or(0.0);
                    let x = i as f64;
                    Rectangle::new([(x - 0.35, below), (x + 0.35, below + v)], color.filled())
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// One row of the fault timeline: a label and its spans (start, end,
/// seconds into the run; a zero-length span is drawn as a tick).
struct Lane {
    label: String,
    color: RGBColor,
    spans: Vec<(f64, f64)>,
}

fn lanes(r: &Value) -> Vec<Lane> {
    let end = num(r, "/ran_for_s").unwrap_or(0.0);
    let origin = num(r, "/started_at_unix_s").unwrap_or(0.0);
    let mut lanes = Vec::new();
    let injected: Vec<(f64, f64)> = array(r, "/timeline")
        .iter()
        .map(|e| {
            let at = e["at_s"].as_f64().unwrap_or(0.0);
            let d = e["detail"]["for"]
                .as_str()
                .and_then(|d| vitalmesh_scenario::duration::parse(d).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            (at, (at + d).min(end.max(at)))
        })
        .collect();
    lanes.push(Lane {
        label: "injected (timeline)".into(),
        color: RGBColor(180, 40, 40),
        spans: injected,
    });
    let outbreaks: Vec<(f64, f64)> = array(r, "/ground_truth/outbreaks")
        .iter()
        .map(|o| {
            let on = o["onset_s"].as_f64().or(o["at_s"].as_f64()).unwrap_or(0.0);
            (on, o["end_s"].as_f64().unwrap_or(end))
        })
        .collect();
    if !outbreaks.is_empty() {
        lanes.push(Lane {
            label: "outbreaks (truth)".into(),
            color: RGBColor(255, 127, 14),
            spans: outbreaks,
        });
    }
    let episodes: Vec<(f64, f64)> = array(r, "/ground_truth/episodes")
        .iter()
        .filter(|e| e["kind"].as_str() != Some("fever") || e["outbreak"].is_number())
        .map(|e| {
            let on = e["onset_s"].as_f64().unwrap_or(0.0);
            (on, e["end_s"].as_f64().unwrap_or(end))
        })
        .collect();
    if !episodes.is_empty() {
        lanes.push(Lane {
            label: "episodes (truth)".into(),
            color: RGBColor(227, 119, 194),
            spans: episodes,
        });
    }
    // Each ward detector's alarms, at the buckets where it alarmed.
    let detectors: Vec<String> = array(r, "/detection/detectors")
        .iter()
        .filter_map(|d| d["name"].as_str().map(str::to_owned))
        .collect();
    let bucket = num(r, "/detection/scores/bucket_s").unwrap_or(3600.0);
    for (k, name) in detectors.iter().enumerate() {
        let spans: Vec<(f64, f64)> = array(r, "/detection/wards")
            .iter()
            .flat_map(|w| array(w, "/buckets").iter())
            .filter(|b| b["steps"][k]["alarm"].as_bool() == Some(true))
            .filter_map(|b| b["at_s"].as_f64())
            .filter(|at| *at >= 0.0)
            .map(|at| (at, at + bucket))
            .collect();
        lanes.push(Lane {
            label: format!("{name} alarms"),
            color: PALETTE[k % PALETTE.len()],
            spans,
        });
    }
    for category in ["ward", "sensor", "aggregator"] {
        let spans: Vec<(f64, f64)> = array(r, "/incidents/list")
            .iter()
            .filter(|i| i["category"].as_str() == Some(category))
            .map(|i| {
                let at = |k: &str| i[k].as_f64().map(|us| us / 1e6 - origin);
                (
                    at("opened_at").unwrap_or(0.0),
                    at("closed_at").unwrap_or(end),
                )
            })
            .collect();
        if !spans.is_empty() {
            lanes.push(Lane {
                label: format!("{category} incidents"),
                color: RGBColor(127, 127, 127),
                spans,
            });
        }
    }
    lanes
}

fn timeline_chart(r: &Value, axis: &TimeAxis) -> Result<String> {
    let lanes = lanes(r);
    let end = axis.at(num(r, "/ran_for_s").unwrap_or(1.0)).max(1e-9);
    let height = 60 + 28 * lanes.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let n = lanes.len().max(1) as f64;
        let labels: Vec<String> = lanes.iter().map(|l| l.label.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(150)
            .build_cartesian_2d(0.0..end, -0.5..n - 0.5)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(lanes.len().max(1))
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 {
                    labels
                        .get(labels.len().saturating_sub(1 + i as usize))
                        .cloned()
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_desc(format!("time ({})", axis.unit))
            .draw()
            .map_err(plot_err)?;
        let min_width = end / 400.0;
        for (i, lane) in lanes.iter().enumerate() {
            let y = n - 1.0 - i as f64;
            chart
                .draw_series(lane.spans.iter().map(|(a, b)| {
                    let (a, b) = (axis.at(*a), axis.at(*b));
                    Rectangle::new(
                        [(a, y - 0.32), (b.max(a + min_width), y + 0.32)],
                        lane.color.mix(0.75).filled(),
                    )
                }))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Partitions each aggregator led, over time.
fn ownership_chart(r: &Value, axis: &TimeAxis) -> Result<String> {
    let Some(per) = r
        .pointer("/ownership/primary_per_second")
        .and_then(Value::as_object)
    else {
        return Ok(String::new());
    };
    let mut owners: Vec<(u64, Vec<f64>)> = per
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.parse().ok()?,
                v.as_array()?.iter().filter_map(Value::as_f64).collect(),
            ))
        })
        .collect();
    owners.sort_by_key(|(k, _)| *k);
    let len = owners.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let ran = num(r, "/ran_for_s").unwrap_or(len as f64);
    let step = if len > 0 { ran / len as f64 } else { 1.0 };
    let y_max = owners
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0f64, f64::max)
        // Headroom for the legend above the lines.
        * (1.3 + 0.1 * owners.len() as f64);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 280)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..axis.at(ran).max(1e-9), 0.0..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(format!("time ({})", axis.unit))
            .y_desc("partitions led")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(plot_err)?;
        for (i, (id, values)) in owners.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    downsample(values, step, MAX_POINTS)
                        .into_iter()
                        .map(|(t, v)| (axis.at(t), v)),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(format!("aggregator {id}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn fmt_count(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) => {
            let s = format!("{:.0}", v.abs());
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            if v < 0.0 { format!("-{out}") } else { out }
        }
    }
}

fn fmt_opt(v: &Value, digits: usize, scale: f64, suffix: &str) -> String {
    v.as_f64().map_or("—".into(), |x| {
        format!("{:.*}{suffix}", digits, x * scale)
    })
}

fn detector_table(r: &Value) -> String {
    let mut t = String::from(
        "<table><thead><tr><th>detector</th><th>series</th><th>outbreaks</th><th>detected</th><th>recall</th><th>precision</th><th>false alarms / ward-week</th><th>time to detect (median)</th><th>(p90)</th></tr></thead><tbody>",
    );
    for s in array(r, "/detection/scores/ward") {
        let hours = |k: &str| fmt_opt(&s[k], 1, 1.0 / 3600.0, " h");
        let _ = write!(
            t,
            "<tr><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(s["name"].as_str().unwrap_or("?")),
            esc(s["series"].as_str().unwrap_or("")),
            fmt_count(s["outbreaks"].as_f64()),
            fmt_count(s["detected"].as_f64()),
            fmt_opt(&s["recall"], 2, 1.0, ""),
            fmt_opt(&s["precision"], 2, 1.0, ""),
            fmt_opt(&s["false_alarms_per_ward_week"], 2, 1.0, ""),
            hours("ttd_median_s"),
            hours("ttd_p90_s"),
        );
    }
    t.push_str("</tbody></table>");
    let p = r.pointer("/detection/scores/patient");
    if let Some(p) = p.filter(|p| p["deteriorations"].as_u64().unwrap_or(0) > 0) {
        let _ = write!(
            t,
            "<p>Patients: {} deteriorations, {} flagged; flagged before NEWS2 reached 5: {}; median time to flag {}; false alarms per patient-day {}.</p>",
            fmt_count(p["deteriorations"].as_f64()),
            fmt_count(p["flagged"].as_f64()),
            fmt_opt(&p["early_share"], 1, 100.0, " %"),
            fmt_opt(&p["ttd_median_s"], 1, 1.0 / 60.0, " min"),
            fmt_opt(&p["false_alarms_per_patient_day"], 3, 1.0, ""),
        );
    }
    if let Some(s) = r
        .pointer("/detection/scores/sensor")
        .filter(|s| s["faults"].as_u64().unwrap_or(0) > 0)
    {
        let _ = write!(
            t,
            "<p>Sensors: {} faults, {} flagged (recall {}); median time to flag {}; fevers misflagged as sensor faults: {}.</p>",
            fmt_count(s["faults"].as_f64()),
            fmt_count(s["flagged"].as_f64()),
            fmt_opt(&s["recall"], 2, 1.0, ""),
            fmt_opt(&s["time_to_flag_median_s"], 1, 1.0 / 60.0, " min"),
            fmt_opt(&s["misflagged_share"], 1, 100.0, " %"),
        );
    }
    t
}

fn ledger_table(r: &Value) -> String {
    let mut t = String::from("<table><thead><tr><th>ward</th><th>produced</th>");
    for (_, label, _) in LEDGER_PARTS {
        let _ = write!(t, "<th>{label}</th>");
    }
    t.push_str("</tr></thead><tbody>");
    let total = r.pointer("/ledger/total").cloned().unwrap_or(Value::Null);
    let wards = array(r, "/ledger/wards");
    for (name, row) in wards
        .iter()
        .map(|w| (fmt_count(w["ward"].as_f64()), w))
        .chain(std::iter::once(("all".to_owned(), &total)))
    {
        let _ = write!(
            t,
            "<tr><td>{name}</td><td>{}</td>",
            fmt_count(row["produced"].as_f64())
        );
        for (field, _, _) in LEDGER_PARTS {
            let _ = write!(t, "<td>{}</td>", fmt_count(row[field].as_f64()));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

fn events_table(r: &Value) -> String {
    let events = array(r, "/timeline");
    if events.is_empty() {
        return "<p>Nothing was injected.</p>".into();
    }
    let mut t = String::from(
        "<table><thead><tr><th>#</th><th>at</th><th>from</th><th>what</th></tr></thead><tbody>",
    );
    for (i, e) in events.iter().enumerate() {
        let refused = e["error"]
            .as_str()
            .map(|why| format!(" <b>refused</b>: {}", esc(why)))
            .unwrap_or_default();
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{:.1} s</td><td class=\"l\">{}</td><td class=\"l\">{}{refused}</td></tr>",
            i + 1,
            e["at_s"].as_f64().unwrap_or(0.0),
            esc(e["source"].as_str().unwrap_or("")),
            esc(e["description"].as_str().unwrap_or("")),
        );
    }
    t.push_str("</tbody></table>");
    t
}

/// The verdicts at the top: the ledger's, and each SLO's.
fn verdicts(r: &Value) -> String {
    let mut v = String::from("<ul class=\"verdicts\">");
    let unexplained = num(r, "/ledger/total/unexplained").unwrap_or(0.0);
    let (class, text) = if unexplained == 0.0 {
        ("pass", "every sample accounted for".to_owned())
    } else {
        (
            "fail",
            format!("{} samples unexplained", fmt_count(Some(unexplained))),
        )
    };
    let _ = write!(v, "<li class=\"{class}\">{}</li>", esc(&text));
    if r["interrupted"].as_bool() == Some(true) {
        v.push_str("<li class=\"fail\">interrupted: the report covers part of the run</li>");
    }
    for slo in array(r, "/slo") {
        let passed = slo["passed"].as_bool() == Some(true);
        let _ = write!(
            v,
            "<li class=\"{}\">{} {} — {} {} {}</li>",
            if passed { "pass" } else { "fail" },
            if passed { "pass" } else { "FAIL" },
            esc(slo["name"].as_str().unwrap_or("")),
            fmt_opt(&slo["actual"], 3, 1.0, ""),
            esc(slo["comparison"].as_str().unwrap_or("")),
            fmt_opt(&slo["limit"], 3, 1.0, ""),
        );
    }
    v.push_str("</ul>");
    v
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1000px;color:#222}\
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}\
.meta{color:#555;font-size:13px}.charts{display:flex;gap:20px;flex-wrap:wrap}\
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}\
td:first-child,th:first-child,td.l{text-align:left}th{background:#f4f4f4}\
ul.verdicts{list-style:none;padding:0}ul.verdicts li{display:inline-block;margin:2px 6px 2px 0;padding:3px 10px;border-radius:4px;font-size:13px}\
li.pass{background:#e3f4e3;color:#185c18}li.fail{background:#fbe3e3;color:#8a1414}figure{margin:0}svg{display:block}";

/// The page for report `r`.
pub(crate) fn render(r: &Value) -> Result<String> {
    let ran = num(r, "/ran_for_s").unwrap_or(0.0);
    let axis = TimeAxis::for_run(ran);
    let mut p = String::with_capacity(256 * 1024);
    let scenario = esc(text(r, "/scenario"));
    let _ = write!(
        p,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>vitalmesh — {scenario}</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        p,
        "<h1>{scenario}</h1><p class=\"meta\">seed {} · {} time · {:.1} s{} · {} nodes in {} wards, {} aggregators · broker {} · vitalmesh {} · {}</p>",
        r["seed"].as_u64().map_or("?".into(), |s| s.to_string()),
        esc(text(r, "/mode")),
        ran,
        if axis.unit != "s" {
            format!(" ({:.1} {})", axis.at(ran), axis.unit)
        } else {
            String::new()
        },
        fmt_count(num(r, "/config/nodes")),
        fmt_count(num(r, "/config/wards")),
        fmt_count(num(r, "/config/aggregators")),
        esc(text(r, "/broker/url")),
        esc(text(r, "/vitalmesh_version")),
        esc(text(r, "/schema")),
    );
    if let Some(m) = r.get("machine").filter(|m| m.is_object()) {
        let _ = write!(
            p,
            "<p class=\"meta\">on {} ({} cores, {:.0} GiB), Linux {}</p>",
            esc(m["cpu"].as_str().unwrap_or("?")),
            m["cores"].as_u64().unwrap_or(0),
            m["memory_gib"].as_f64().unwrap_or(0.0),
            esc(m["kernel"].as_str().unwrap_or("?")),
        );
    }
    p.push_str(&verdicts(r));
    let e2e = |k: &str| fmt_opt(&r["latency"]["end_to_end"][k], 2, 1.0, " ms");
    let _ = write!(
        p,
        "<p class=\"meta\">end to end: p50 {} · p99 {} · p99.9 {} · max {} — produced {} · delivered {}</p>",
        e2e("p50_ms"),
        e2e("p99_ms"),
        e2e("p99_9_ms"),
        e2e("max_ms"),
        fmt_count(num(r, "/ledger/total/produced")),
        fmt_count(num(r, "/ledger/total/delivered")),
    );
    let _ = write!(
        p,
        "<h2>Throughput</h2><figure id=\"throughput\">{}</figure>{}",
        throughput_chart(r, &axis)?,
        events_table(r)
    );
    let _ = write!(
        p,
        "<h2>Latency</h2><div class=\"charts\"><figure id=\"latency-spectrum\">{}</figure><figure id=\"latency-wards\">{}</figure></div><figure id=\"latency-time\">{}</figure>",
        latency_spectrum(r)?,
        latency_per_ward(r)?,
        latency_over_time(r, &axis)?
    );
    let _ = write!(
        p,
        "<h2>Ledger</h2><figure id=\"ledger\">{}</figure>{}",
        ledger_chart(r)?,
        ledger_table(r)
    );
    let _ = write!(
        p,
        "<h2>Faults, ground truth and detection</h2><figure id=\"timeline\">{}</figure>{}",
        timeline_chart(r, &axis)?,
        detector_table(r)
    );
    let ownership = ownership_chart(r, &axis)?;
    if !ownership.is_empty() {
        let moves = array(r, "/ownership/moves").len();
        let _ = write!(
            p,
            "<h2>Partition ownership</h2><figure id=\"ownership\">{ownership}</figure><p class=\"meta\">{moves} moves of a partition's primary.</p>"
        );
    }
    p.push_str("</body></html>\n");
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_keeps_spikes_and_dips_and_bounds_the_points() {
        let mut week = vec![10.0; 604_800];
        week[300_000] = 99.0;
        week[400_000] = 0.0;
        let points = downsample(&week, 1.0, MAX_POINTS);
        assert!(points.len() <= MAX_POINTS + 2, "{} points", points.len());
        assert!(points.contains(&(300_000.0, 99.0)));
        assert!(points.contains(&(400_000.0, 0.0)));
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0), "in time order");
        let short = downsample(&[1.0, 2.0, 3.0], 2.0, MAX_POINTS);
        assert_eq!(short, [(0.0, 1.0), (2.0, 2.0), (4.0, 3.0)]);
    }

    #[test]
    fn text_from_the_report_is_escaped() {
        assert_eq!(
            esc("<script>'a' & \"b\"</script>"),
            "&lt;script&gt;&#39;a&#39; &amp; &quot;b&quot;&lt;/script&gt;"
        );
    }
}

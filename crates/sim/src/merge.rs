//! A sharded run's parts, and the merge that turns them into one report.
//!
//! Each shard writes a [`ShardPart`]: not percentiles but what percentiles
//! are made from — its nodes' finals, the sequence numbers its aggregators
//! ingested, its latency histograms (HdrHistogram V2, base64), its alerts,
//! its ward buckets, and how long status messages from the other shards
//! took to arrive (for the clock offsets). [`merge`] replays the
//! scenario's schedule in the pure [`Run`] (so the timeline and ground
//! truth are the unsharded run's), folds the parts into one [`Observer`]
//! — delivered sets united, histograms added, alerts fed in time order so
//! incidents, counts and scores are formed over the whole mesh — and asks
//! [`Run::report`] for the report, exactly as a single process would. What
//! only a host measures (connections, CPU, memory) is summed afterwards.
//!
//! A part missing from the set does not fail the merge: the report says
//! which shards are missing and the run is *incomplete* (the CLI's own
//! exit code) — never "unexplained".

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vitalmesh_core::Alert;
use vitalmesh_scenario::{MeshFlags, Scenario, ScenarioErrors};
use vitalmesh_wire::{SeqSet, Timestamp, WireError};

use crate::latency::latency_histogram;
use crate::ledger::NodeFinal;
use crate::observe::{AggregatorView, OwnershipReport, WardPoint};
use crate::report::{BrokerReport, ConnectionsReport, Throughput};
use crate::shard::Shard;
use crate::{Observer, Percentiles, ReportInputs, Run, RunMode};

/// The format of a part file.
pub const PART_FORMAT: &str = "vitalmesh-part/1";

/// What went wrong reading or merging parts.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// No part to merge.
    #[error("no part files; expected the part-*.json files the shards wrote")]
    Empty,
    /// A part is not a part, or not this version's.
    #[error("{file}: {reason}")]
    Part {
        /// Which file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// Two parts that do not belong to the same run.
    #[error(
        "{file}: {field} is '{value}' but {first} has '{expected}'; expected the parts of one run"
    )]
    Mismatch {
        /// The file that differs.
        file: String,
        /// The field.
        field: &'static str,
        /// Its value there.
        value: String,
        /// The first part's file.
        first: String,
        /// Its value in the first part.
        expected: String,
    },
    /// The scenario the parts carry no longer validates.
    #[error("{file}: the scenario it carries: {source}")]
    Scenario {
        /// Which file.
        file: String,
        /// Why.
        source: ScenarioErrors,
    },
}

/// How to build the run's scenario again: the scenario file's text (or
/// the flags that stood for one) and the overrides given on the command
/// line. Every shard and the merge build the scenario from this, so they
/// cannot disagree about what ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// The scenario file's name, as given.
    pub file: Option<String>,
    /// Its text.
    pub text: Option<String>,
    /// `--nodes`, `--wards`, … (without a file).
    pub flags: MeshFlags,
    /// `--duration`, ms.
    pub duration_ms: Option<u64>,
    /// `--connect-rate`.
    pub connect_rate: Option<u32>,
}

impl Recipe {
    /// The validated scenario, without a broker choice (that is the
    /// caller's).
    pub fn scenario(&self) -> Result<Scenario, ScenarioErrors> {
        let duration = self.duration_ms.map(Duration::from_millis);
        let flags = &self.flags;
        let mut scenario = match (&self.file, &self.text) {
            (Some(file), Some(text)) => {
                flags.refuse_with_file(file)?;
                let s = vitalmesh_scenario::parse(file, text)?;
                match duration {
                    Some(d) => s.with_duration(d)?,
                    None => s,
                }
            }
            _ => vitalmesh_scenario::from_flags(flags, duration)?,
        };
        if let Some(rate) = self.connect_rate {
            scenario = scenario.with_connect_rate(rate)?;
        }
        Ok(scenario)
    }
}

/// An HdrHistogram as V2-serialised base64, the form parts carry.
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("a histogram serialises into memory");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The histogram [`encode_histogram`] wrote.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("a histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("a histogram does not decode: {e:?}"))
}

/// A shard's latency histograms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartLatency {
    /// End to end, the whole run.
    pub end_to_end: String,
    /// End to end, per ward.
    pub per_ward: Vec<String>,
    /// Publish to PUBACK.
    pub publish_ack: String,
    /// End to end, one histogram per second: (second, histogram).
    pub per_second: Vec<(f64, String)>,
}

/// What one shard saw of the others' clocks: for each peer, the least
/// `receive time here − send time there` over its status messages, µs.
/// With the same figure from the other side, the pair's offset and a
/// bound on its error follow (see [`clock_offsets`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartClock {
    /// Peer shard → least apparent transit time, µs (may be negative: the
    /// peer's clock is ahead).
    pub min_transit_us: BTreeMap<u32, i64>,
}

/// Everything one shard leaves for the merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardPart {
    /// [`PART_FORMAT`].
    pub format: String,
    /// The run the shard belonged to (shards of one run share it).
    pub run_id: String,
    /// Which shard.
    pub shard: ShardSpec,
    /// The scenario.
    pub recipe: Recipe,
    /// Master seed.
    pub seed: u64,
    /// Time zero of the schedule, µs since the Unix epoch (shards agree on
    /// it through the broker before they start).
    pub origin_us: u64,
    /// When the shard's process started, Unix seconds.
    pub started_at_unix_s: f64,
    /// How long the nodes ran.
    pub ran_for_s: f64,
    /// Stopped early.
    pub interrupted: bool,
    /// The finals of the nodes it ran.
    pub nodes: Vec<NodeFinal>,
    /// Per node (any shard's): sequence numbers its aggregators ingested.
    pub delivered: BTreeMap<u32, SeqSet>,
    /// Distinct samples its aggregators ingested.
    pub delivered_total: u64,
    /// Ingests beyond those.
    pub duplicates: u64,
    /// Latency histograms.
    pub latency: PartLatency,
    /// Alerts its aggregators raised (with their clear times).
    pub alerts: Vec<Alert>,
    /// When each patient's NEWS2 first held at 5: (node, admission, time).
    pub news2_five: Vec<(u32, u32, Timestamp)>,
    /// Ward buckets its aggregators judged.
    pub wards: Vec<Vec<WardPoint>>,
    /// Messages its aggregators refused, by kind.
    pub rejected: BTreeMap<String, u64>,
    /// Its aggregators at the end.
    pub aggregators: Vec<AggregatorView>,
    /// Their partition ownership over time.
    pub ownership: OwnershipReport,
    /// The other shards' clocks as seen from here.
    pub clock: PartClock,
    /// The shard's own report (its host figures: connections, broker,
    /// machine, CPU, memory).
    pub report: Value,
}

/// Shard `index` of `count`, as a part records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSpec {
    /// Which one.
    pub index: u32,
    /// Of how many.
    pub count: u32,
}

impl From<Shard> for ShardSpec {
    fn from(s: Shard) -> Self {
        Self {
            index: s.index,
            count: s.count,
        }
    }
}

impl ShardPart {
    /// Reads a part file's text; `file` names it in errors.
    pub fn from_json(file: &str, text: &[u8]) -> Result<Self, MergeError> {
        let part: Self = serde_json::from_slice(text).map_err(|e| MergeError::Part {
            file: file.into(),
            reason: if serde_json::from_slice::<Value>(text)
                .ok()
                .and_then(|v| v.get("schema").cloned())
                .is_some()
            {
                "is a run report, not a shard's part; expected the file `vitalmesh run --shard I/N --report FILE` wrote".into()
            } else {
                format!("is not a shard's part ({e}); expected the file `vitalmesh run --shard I/N --report FILE` wrote")
            },
        })?;
        if part.format != PART_FORMAT {
            return Err(MergeError::Part {
                file: file.into(),
                reason: format!(
                    "format '{}' is not supported; expected '{PART_FORMAT}'",
                    part.format
                ),
            });
        }
        if part.shard.count == 0 || part.shard.index >= part.shard.count {
            return Err(MergeError::Part {
                file: file.into(),
                reason: format!(
                    "shard '{}/{}' is not a shard; expected I/N with I < N",
                    part.shard.index, part.shard.count
                ),
            });
        }
        Ok(part)
    }
}

/// One shard's clock against shard `reference`'s: `offset_ms` is how far
/// ahead its clock runs, within ± `bound_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClockOffset {
    /// The shard.
    pub shard: u32,
    /// Its clock minus the reference's, ms.
    pub offset_ms: f64,
    /// The most the estimate can be off, ms (half the round trip).
    pub bound_ms: f64,
}

/// Each part's clock offset against the lowest shard present, from the
/// least apparent transit times both ways (NTP's estimate: with transits
/// `a` (reference → shard, on the shard's clock) and `b` (shard →
/// reference, on the reference's), the offset is `(a − b) / 2` and the
/// error at most `(a + b) / 2`, since no message arrives before it is
/// sent). `None` for a shard whose messages were not seen both ways.
pub fn clock_offsets(parts: &[&ShardPart]) -> Vec<(u32, Option<ClockOffset>)> {
    let Some(reference) = parts.iter().map(|p| p.shard.index).min() else {
        return Vec::new();
    };
    let seen = |at: u32, from: u32| {
        parts
            .iter()
            .find(|p| p.shard.index == at)
            .and_then(|p| p.clock.min_transit_us.get(&from).copied())
    };
    parts
        .iter()
        .map(|p| {
            let i = p.shard.index;
            if i == reference {
                return (
                    i,
                    Some(ClockOffset {
                        shard: i,
                        offset_ms: 0.0,
                        bound_ms: 0.0,
                    }),
                );
            }
            let offset = seen(i, reference)
                .zip(seen(reference, i))
                .map(|(a, b)| ClockOffset {
                    shard: i,
                    offset_ms: (a - b) as f64 / 2000.0,
                    bound_ms: ((a + b) as f64 / 2000.0).max(0.0),
                });
            (i, offset)
        })
        .collect()
}

/// The merge's result.
#[derive(Debug)]
pub struct Merged {
    /// The report (`vitalmesh-report/3`, with a `shards` section).
    pub report: Value,
    /// Shards that sent no part.
    pub missing: Vec<u32>,
    /// Samples never accounted for.
    pub unexplained: u64,
    /// Whether an SLO failed.
    pub slo_failed: Vec<String>,
    /// Whether a shard stopped early.
    pub interrupted: bool,
}

fn mismatch(
    file: &str,
    field: &'static str,
    value: impl ToString,
    first: &str,
    expected: impl ToString,
) -> MergeError {
    MergeError::Mismatch {
        file: file.into(),
        field,
        value: value.to_string(),
        first: first.into(),
        expected: expected.to_string(),
    }
}

/// Merges the parts of one run (`(file name, part)`, in any order).
pub fn merge(parts: &[(String, ShardPart)]) -> Result<Merged, MergeError> {
    let ((first_file, first), rest) = parts.split_first().ok_or(MergeError::Empty)?;
    let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
    seen.insert(first.shard.index, first_file);
    for (file, p) in rest {
        if p.run_id != first.run_id {
            return Err(mismatch(
                file,
                "run_id",
                &p.run_id,
                first_file,
                &first.run_id,
            ));
        }
        if p.seed != first.seed {
            return Err(mismatch(file, "seed", p.seed, first_file, first.seed));
        }
        if p.shard.count != first.shard.count {
            return Err(mismatch(
                file,
                "shard count",
                p.shard.count,
                first_file,
                first.shard.count,
            ));
        }
        if p.recipe != first.recipe {
            return Err(mismatch(
                file,
                "scenario",
                p.recipe.file.as_deref().unwrap_or("(flags)"),
                first_file,
                first.recipe.file.as_deref().unwrap_or("(flags)"),
            ));
        }
        if let Some(other) = seen.insert(p.shard.index, file) {
            return Err(MergeError::Part {
                file: file.clone(),
                reason: format!(
                    "is shard {}/{} again ({other} is too); expected each shard once",
                    p.shard.index, p.shard.count
                ),
            });
        }
    }
    let count = first.shard.count;
    let missing: Vec<u32> = (0..count).filter(|i| !seen.contains_key(i)).collect();
    let scenario = first
        .recipe
        .scenario()
        .map_err(|source| MergeError::Scenario {
            file: first_file.clone(),
            source,
        })?;
    let decode = |file: &str, text: &str| {
        decode_histogram(text).map_err(|reason| MergeError::Part {
            file: file.into(),
            reason,
        })
    };
    let population = scenario.population;
    let ran_for_s = parts.iter().map(|(_, p)| p.ran_for_s).fold(0.0, f64::max);
    let ran_for = Duration::from_secs_f64(ran_for_s);
    let origin = Timestamp::from_micros(first.origin_us);

    // The schedule, as every shard applied it.
    let mut run = Run::new(&scenario, first.seed);
    run.begin(first.origin_us / 1_000_000);
    while let Some(t) = run.poll_timeout().filter(|t| *t <= ran_for) {
        run.handle_timeout(t);
        while run.poll_command().is_some() {}
    }
    run.handle_timeout(ran_for);
    while run.poll_command().is_some() {}

    let mut observer = Observer::new(population, true);
    observer.origin = Some(origin);
    let mut ingests = 0u64;
    let mut publish_ack = latency_histogram();
    let mut per_second: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    let mut alerts: Vec<Alert> = Vec::new();
    let mut wards: Vec<Vec<WardPoint>> = vec![Vec::new(); usize::from(population.wards)];
    for (file, p) in parts {
        for (node, set) in &p.delivered {
            if let Some(mine) = observer.delivered.get_mut(*node as usize) {
                for r in set.ranges() {
                    mine.insert_range(r.clone());
                }
            }
        }
        ingests += p.delivered_total + p.duplicates;
        observer
            .e2e_total
            .add(decode(file, &p.latency.end_to_end)?)
            .map_err(|e| MergeError::Part {
                file: file.clone(),
                reason: format!("end-to-end histogram: {e:?}"),
            })?;
        for (w, text) in p.latency.per_ward.iter().enumerate() {
            if let Some(h) = observer.e2e_ward.get_mut(w) {
                let _ = h.add(decode(file, text)?);
            }
        }
        let _ = publish_ack.add(decode(file, &p.latency.publish_ack)?);
        for (at_s, text) in &p.latency.per_second {
            let h = decode(file, text)?;
            let slot = per_second
                .entry(at_s.max(0.0).round() as u64)
                .or_insert_with(latency_histogram);
            let _ = slot.add(h);
        }
        alerts.extend(p.alerts.iter().copied());
        for &(node, admission, at) in &p.news2_five {
            let t = observer.news2_five.entry((node, admission)).or_insert(at);
            *t = (*t).min(at);
        }
        for (w, points) in p.wards.iter().enumerate() {
            if let Some(series) = wards.get_mut(w) {
                series.extend(points.iter().cloned());
            }
        }
        for (kind, n) in &p.rejected {
            if let Some(k) = WireError::KINDS.iter().find(|k| **k == kind.as_str()) {
                *observer.rejected.entry(k).or_default() += n;
            }
        }
        for view in &p.aggregators {
            observer.aggregators.insert(view.id, view.clone());
        }
        for (id, series) in &p.ownership.primary_per_second {
            observer
                .ownership
                .primary_per_second
                .insert(*id, series.clone());
        }
        observer
            .ownership
            .moves
            .extend(p.ownership.moves.iter().cloned());
    }
    observer.delivered_total = observer.delivered.iter().map(SeqSet::len).sum();
    observer.duplicates = ingests.saturating_sub(observer.delivered_total);
    observer
        .ownership
        .moves
        .sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    // The first verdict on a bucket stands, as one observer would keep it.
    for series in &mut wards {
        series.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        series.dedup_by(|later, earlier| later.at_s <= earlier.at_s);
    }
    observer.wards = wards;
    let seconds =
        (ran_for_s.ceil() as usize).max(per_second.keys().last().map_or(0, |s| *s as usize + 1));
    observer.latency_per_second = (0..seconds)
        .map(|s| {
            per_second
                .get(&(s as u64))
                .filter(|h| !h.is_empty())
                .map(|h| {
                    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
                    [ms(0.5), ms(0.99), h.max() as f64 / 1000.0]
                })
        })
        .collect();
    observer.intervals = Some(per_second.into_iter().map(|(s, h)| (s as f64, h)).collect());
    replay_alerts(&mut observer, alerts, origin + ran_for);

    let mut finals: Vec<NodeFinal> = parts
        .iter()
        .flat_map(|(_, p)| p.nodes.iter().cloned())
        .collect();
    finals.sort_by_key(|f| f.id);
    finals.dedup_by_key(|f| f.id);

    let reports: Vec<&Value> = parts.iter().map(|(_, p)| &p.report).collect();
    let number = |v: &Value, ptr: &str| v.pointer(ptr).and_then(Value::as_u64).unwrap_or(0);
    let sum = |ptr: &str| reports.iter().map(|r| number(r, ptr)).sum::<u64>();
    let connections = ConnectionsReport {
        attempts: sum("/connections/attempts"),
        failures: sum("/connections/failures"),
        disconnects: sum("/connections/disconnects"),
        disconnect_reasons: BTreeMap::new(),
        peak_connected: sum("/connections/peak_connected") as i64,
        all_connected_after_s: reports
            .iter()
            .map(|r| {
                r.pointer("/connections/all_connected_after_s")
                    .and_then(Value::as_f64)
            })
            .try_fold(0.0f64, |worst, s| s.map(|s| worst.max(s))),
    };
    let broker = BrokerReport {
        kind: "external",
        url: first
            .report
            .pointer("/broker/url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        ..BrokerReport::default()
    };
    let report = run.report(ReportInputs {
        mode: RunMode::Real,
        started_at_unix_s: parts
            .iter()
            .map(|(_, p)| p.started_at_unix_s)
            .fold(f64::INFINITY, f64::min),
        origin,
        ran_for,
        interrupted: parts.iter().any(|(_, p)| p.interrupted),
        finals: &finals,
        observer: &observer,
        publish_ack: Percentiles::of(&publish_ack),
        throughput: summed_throughput(&reports, &observer.latency_per_second),
        connections,
        gateways: None,
        broker,
        machine: None,
        cpu: None,
        memory: None,
        rogue: Vec::new(),
    });
    let unexplained = report.ledger.total.unexplained;
    let slo_failed = report
        .slo
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.name.to_string())
        .collect();
    let interrupted = report.interrupted;
    let mut value = serde_json::to_value(&report).expect("a report always serialises");
    host_figures(&mut value, &reports, population.nodes());
    let present: Vec<&ShardPart> = parts.iter().map(|(_, p)| p).collect();
    value["shards"] = shards_section(&present, &missing, parts);
    // A sample two shards' aggregators both ingested (its partition moved
    // between shards while it was in flight) is in both shards'
    // histograms: the latency of each shard's first ingest. Said, not
    // hidden: they are among the ledger's duplicates.
    value["shards"]["latency_counted_twice"] = json!(
        observer
            .e2e_total
            .len()
            .saturating_sub(observer.delivered_total)
    );
    Ok(Merged {
        report: value,
        missing,
        unexplained,
        slo_failed,
        interrupted,
    })
}

/// Feeds every raise and clear to the observer in time order, closing
/// incident groups as time passes, as one observer of the whole mesh
/// would have seen them.
fn replay_alerts(observer: &mut Observer, alerts: Vec<Alert>, end: Timestamp) {
    let mut events: Vec<(Timestamp, bool, Alert)> = Vec::with_capacity(alerts.len() * 2);
    for a in alerts {
        events.push((
            a.raised_at,
            false,
            Alert {
                cleared_at: None,
                ..a
            },
        ));
        if let Some(at) = a.cleared_at {
            events.push((at, true, a));
        }
    }
    events.sort_by_key(|(at, clear, _)| (*at, *clear));
    for (at, _, alert) in events {
        observer.incidents.handle_timeout(at);
        observer.alert(alert);
    }
    observer.incidents.handle_timeout(end);
}

/// Per-second series summed over the shards; latency per second from the
/// summed histograms.
fn summed_throughput(reports: &[&Value], latency: &[Option<[f64; 3]>]) -> Throughput {
    let series = |name: &str| -> Vec<i64> {
        let mut out: Vec<i64> = Vec::new();
        for r in reports {
            let values = r
                .pointer(&format!("/throughput/{name}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if out.len() < values.len() {
                out.resize(values.len(), 0);
            }
            for (o, v) in out.iter_mut().zip(&values) {
                *o += v.as_i64().unwrap_or(0);
            }
        }
        out
    };
    let unsigned = |name: &str| series(name).into_iter().map(|v| v.max(0) as u64).collect();
    let at = |i: usize| move |p: &Option<[f64; 3]>| p.map(|p| p[i]);
    Throughput {
        step_s: 1,
        produced: unsigned("produced"),
        published: unsigned("published"),
        delivered: unsigned("delivered"),
        acked: unsigned("acked"),
        connected: series("connected"),
        latency_p50_ms: latency.iter().map(at(0)).collect(),
        latency_p99_ms: latency.iter().map(at(1)).collect(),
        latency_max_ms: latency.iter().map(at(2)).collect(),
    }
}

/// Adds `b` into `a`: numbers summed, objects merged key by key.
fn add_json(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(mine) => add_json(mine, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (a @ Value::Number(_), Value::Number(b)) => {
            *a = match (a.as_u64(), b.as_u64()) {
                (Some(x), Some(y)) => json!(x + y),
                _ => json!(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)),
            };
        }
        _ => {}
    }
}

/// What only a host measures, summed over the shards' hosts: connection
/// drop reasons, gateways, CPU, memory; the broker as the first shard saw
/// it, with every shard's broker events; rogue clients and refused
/// messages from every shard.
fn host_figures(report: &mut Value, reports: &[&Value], nodes: u32) {
    let summed = |key: &str| {
        let mut total: Option<Value> = None;
        for r in reports {
            if let Some(v) = r.get(key) {
                match &mut total {
                    Some(t) => add_json(t, v),
                    None => total = Some(v.clone()),
                }
            }
        }
        total
    };
    if let Some(reasons) = summed("connections").and_then(|c| c.get("disconnect_reasons").cloned())
    {
        report["connections"]["disconnect_reasons"] = reasons;
    }
    for key in ["gateways", "cpu"] {
        if let Some(v) = summed(key) {
            report[key] = v;
        }
    }
    if let Some(mut memory) = summed("memory") {
        let total = memory["process_peak_bytes"].as_u64().unwrap_or(0);
        let broker = memory["broker_peak_bytes"].as_u64().unwrap_or(0);
        let nodes = u64::from(nodes.max(1));
        memory["per_node_bytes"] = json!((total + broker) / nodes);
        memory["per_node_bytes_excluding_broker"] = json!(total / nodes);
        report["memory"] = memory;
    }
    if let Some(machine) = reports.iter().find_map(|r| r.get("machine")) {
        report["machine"] = machine.clone();
    }
    if let Some(broker) = reports.first().and_then(|r| r.get("broker")) {
        let mut broker = broker.clone();
        let events: Vec<Value> = reports
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                r.pointer("/broker/events")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |mut e| {
                        if let Some(detail) = e.get("detail").and_then(Value::as_str) {
                            e["detail"] = json!(format!("part {i}: {detail}"));
                        }
                        e
                    })
            })
            .collect();
        broker["events"] = Value::Array(events);
        for key in [
            "process_restarts",
            "listener_restarts",
            "canary_failures",
            "auth_refused",
        ] {
            broker[key] = json!(
                reports
                    .iter()
                    .map(|r| r
                        .pointer(&format!("/broker/{key}"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0))
                    .sum::<u64>()
            );
        }
        report["broker"] = broker;
    }
    report["rogue"] = Value::Array(
        reports
            .iter()
            .flat_map(|r| {
                r.get("rogue")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .collect(),
    );
    if let Some(rejected) = summed("rejected") {
        report["rejected"] = rejected;
    }
    let mut examples = serde_json::Map::new();
    for r in reports {
        if let Some(Value::Object(by_kind)) = r.get("rejected_examples") {
            for (kind, list) in by_kind {
                let mine = examples
                    .entry(kind.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let (Value::Array(mine), Value::Array(list)) = (mine, list) {
                    for e in list {
                        if mine.len() < 3 {
                            mine.push(e.clone());
                        }
                    }
                }
            }
        }
    }
    report["rejected_examples"] = Value::Object(examples);
}

/// The report's `shards` section: who ran what, their clocks, what is
/// missing.
fn shards_section(present: &[&ShardPart], missing: &[u32], parts: &[(String, ShardPart)]) -> Value {
    let offsets = clock_offsets(present);
    let count = present.first().map_or(0, |p| p.shard.count);
    let known: Vec<ClockOffset> = offsets.iter().filter_map(|(_, o)| *o).collect();
    // Two shards' clocks differ by their offsets' difference, give or take
    // both bounds: the most a cross-shard latency can be off.
    let mut error_bound_ms: Option<f64> = None;
    if known.len() == present.len() {
        let mut worst = 0.0f64;
        for a in &known {
            for b in &known {
                worst = worst.max((a.offset_ms - b.offset_ms).abs() + a.bound_ms + b.bound_ms);
            }
        }
        error_bound_ms = Some(worst);
    }
    let part_rows: Vec<Value> = parts
        .iter()
        .map(|(file, p)| {
            let offset = offsets
                .iter()
                .find(|(i, _)| *i == p.shard.index)
                .and_then(|(_, o)| *o);
            let aggregators: BTreeSet<u16> = p.aggregators.iter().map(|a| a.id).collect();
            json!({
                "index": p.shard.index,
                "file": file,
                "nodes": p.nodes.len(),
                "aggregators": aggregators,
                "ran_for_s": p.ran_for_s,
                "interrupted": p.interrupted,
                "origin_unix_s": p.origin_us as f64 / 1e6,
                "clock_offset_ms": offset.map(|o| o.offset_ms),
                "clock_offset_bound_ms": offset.map(|o| o.bound_ms),
            })
        })
        .collect();
    json!({
        "count": count,
        "complete": missing.is_empty(),
        "missing": missing,
        "latency_clock_error_bound_ms": error_bound_ms,
        "parts": part_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::ward_histogram;

    #[test]
    fn histograms_survive_a_part_file() {
        let mut h = latency_histogram();
        for us in [120, 4_500, 4_500, 900_000] {
            h.record(us).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&h)).unwrap();
        assert_eq!(back, h);
        let mut w = ward_histogram();
        w.record(77).unwrap();
        assert_eq!(decode_histogram(&encode_histogram(&w)).unwrap(), w);
        assert!(
            decode_histogram("not base64!")
                .unwrap_err()
                .contains("base64")
        );
    }

    fn part_with_transits(index: u32, transits: &[(u32, i64)]) -> ShardPart {
        ShardPart {
            format: PART_FORMAT.into(),
            run_id: "r".into(),
            shard: ShardSpec { index, count: 3 },
            recipe: Recipe::default(),
            seed: 1,
            origin_us: 0,
            started_at_unix_s: 0.0,
            ran_for_s: 0.0,
            interrupted: false,
            nodes: Vec::new(),
            delivered: BTreeMap::new(),
            delivered_total: 0,
            duplicates: 0,
            latency: PartLatency::default(),
            alerts: Vec::new(),
            news2_five: Vec::new(),
            wards: Vec::new(),
            rejected: BTreeMap::new(),
            aggregators: Vec::new(),
            ownership: OwnershipReport::default(),
            clock: PartClock {
                min_transit_us: transits.iter().copied().collect(),
            },
            report: Value::Null,
        }
    }

    #[test]
    fn clock_offsets_follow_from_transits_both_ways() {
        // Shard 1's clock runs 5 ms ahead of shard 0's; messages take
        // 1 ms one way and 3 ms the other. Seen at 1 from 0: 1 + 5 = 6 ms;
        // at 0 from 1: 3 − 5 = −2 ms. Offset (6 − (−2)) / 2 = 4 ms, within
        // ± (6 − 2) / 2 = 2 ms, which holds the true 5.
        let p0 = part_with_transits(0, &[(1, -2_000)]);
        let p1 = part_with_transits(1, &[(0, 6_000)]);
        let p2 = part_with_transits(2, &[]);
        let offsets = clock_offsets(&[&p0, &p1, &p2]);
        assert_eq!(offsets[0].1.unwrap().offset_ms, 0.0);
        let o = offsets[1].1.unwrap();
        assert_eq!((o.offset_ms, o.bound_ms), (4.0, 2.0));
        assert!((o.offset_ms - 5.0).abs() <= o.bound_ms);
        assert_eq!(offsets[2].1, None, "never heard both ways");
    }

    #[test]
    fn parts_of_different_runs_or_the_same_shard_twice_are_refused() {
        let a = part_with_transits(0, &[]);
        let mut b = part_with_transits(1, &[]);
        b.seed = 2;
        let err = merge(&[("a.json".into(), a.clone()), ("b.json".into(), b)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "b.json: seed is '2' but a.json has '1'; expected the parts of one run"
        );
        let err = merge(&[("a.json".into(), a.clone()), ("c.json".into(), a)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("c.json: is shard 0/3 again (a.json is too)")
        );
        assert!(matches!(merge(&[]), Err(MergeError::Empty)));
    }

    #[test]
    fn a_report_is_not_taken_for_a_part() {
        let err = ShardPart::from_json("run.json", br#"{"schema": "vitalmesh-report/3"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("run.json: is a run report, not a shard's part"),
            "{err}"
        );
        let err = ShardPart::from_json("x.json", b"[1")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.json: is not a shard's part"), "{err}");
    }
}

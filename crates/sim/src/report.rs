//! The end-of-run report: JSON for machines (schema in the README) and a
//! summary for people, assembled from pure inputs by [`crate::Run::report`].
//! Writing files is the caller's business: [`Report::to_json`] gives the
//! bytes, [`hdr_log`] the latency log's bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use serde::Serialize;
use vitalmesh_core::Alert;
use vitalmesh_core::detect::WardDetectorSpec;
use vitalmesh_core::incident::{Category, Incident};
use vitalmesh_scenario::RogueKind;
use vitalmesh_scenario::slo::SloResult;

pub use crate::latency::Percentiles;
use crate::ledger::Ledger;
use crate::observe::{AggregatorView, OwnershipReport, WardPoint};
use crate::score::{DetectionScores, DetectorScore};
use crate::timeline::TimelineEntry;
use crate::truth::GroundTruth;

/// Identifies the JSON layout; bumped on incompatible changes.
pub const REPORT_SCHEMA: &str = "vitalmesh-report/3";

/// The JSON Schema (draft 2020-12) of [`REPORT_SCHEMA`] reports, as
/// shipped in `crates/sim/schema/` and printed by `vitalmesh report
/// --schema`. Every report the tests write is checked against it.
pub const REPORT_JSON_SCHEMA: &str = include_str!("../schema/vitalmesh-report-3.schema.json");

/// Most incidents a report lists (counts cover them all).
pub const INCIDENTS_KEPT: usize = 5000;

/// Which driver ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// Real time over real MQTT and TCP.
    #[default]
    Real,
    /// Virtual time: a discrete-event clock, a modelled broker and network.
    Virtual,
}

impl RunMode {
    /// As shown to people.
    pub fn label(self) -> &'static str {
        match self {
            Self::Real => "real time",
            Self::Virtual => "virtual time",
        }
    }
}

/// Something that happened to the broker.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerEvent {
    /// Seconds since the run started.
    pub at_s: f64,
    /// `started`, `crashed`, `restarted`, `listener_restart`, `canary_failed`.
    pub kind: &'static str,
    /// Details.
    pub detail: String,
}

/// Broker figures for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BrokerReport {
    /// `embedded`, `external` or `modelled`.
    pub kind: &'static str,
    /// Where clients connect (`virtual://` for the modelled one).
    pub url: String,
    /// Broker process restarts (crash, unresponsive or injected).
    pub process_restarts: u64,
    /// Listeners restarted by the canary inside the broker.
    pub listener_restarts: u64,
    /// Canary probes from the runtime that failed.
    pub canary_failures: u64,
    /// Clients the broker refused for missing or wrong credentials (the
    /// embedded broker with authentication on; 0 otherwise).
    pub auth_refused: u64,
    /// What happened, in order.
    pub events: Vec<BrokerEvent>,
    /// Longest a publish waited in the queue of a modelled broker with
    /// finite capacity (`[virtual] broker_capacity`), seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_queue_s: Option<f64>,
}

/// A rogue client and what it sent.
#[derive(Debug, Clone, Serialize)]
pub struct RogueReport {
    /// What kind.
    pub kind: RogueKind,
    /// Seconds into the run it started.
    pub started_at_s: f64,
    /// Messages published.
    pub messages_sent: u64,
    /// Connections opened.
    pub connections_opened: u64,
    /// Times the broker closed its connection.
    pub dropped_by_broker: u64,
}

/// Both latencies.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// `wall` (measured) or `simulated` (virtual time: modelled delays).
    pub clock: &'static str,
    /// From a sample's *intended* time to ingest by its primary aggregator.
    pub end_to_end: Percentiles,
    /// From a node queueing a QoS 1 publish to the broker's PUBACK.
    pub publish_ack: Percentiles,
    /// End-to-end, per ward.
    pub per_ward: Vec<WardLatency>,
}

/// One ward's end-to-end latency.
#[derive(Debug, Clone, Serialize)]
pub struct WardLatency {
    /// The ward.
    pub ward: u16,
    /// Its percentiles (2 significant digits).
    #[serde(flatten)]
    pub latency: Percentiles,
}

/// Series over the run, one point per `step_s` seconds (1 for runs up to
/// three hours; longer runs are summed into coarser steps so a week stays
/// a few thousand points), index 0 = the start of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    /// Seconds per point.
    pub step_s: u64,
    /// Samples taken per second.
    pub produced: Vec<u64>,
    /// Samples published per second (re-sends included).
    pub published: Vec<u64>,
    /// Distinct samples delivered per second.
    pub delivered: Vec<u64>,
    /// Samples acknowledged end to end per second.
    pub acked: Vec<u64>,
    /// Nodes connected at the end of each step.
    pub connected: Vec<i64>,
    /// End-to-end latency of the samples delivered in each step, ms: the
    /// median (in a step of several seconds, the median of the seconds'
    /// medians); `null` for a step that delivered nothing.
    pub latency_p50_ms: Vec<Option<f64>>,
    /// The same, 99th percentile (a step of several seconds: its worst
    /// second's).
    pub latency_p99_ms: Vec<Option<f64>>,
    /// The same, the largest.
    pub latency_max_ms: Vec<Option<f64>>,
}

/// One second's end-to-end latencies (µs, reordered in place) as median,
/// 99th percentile and largest, ms; `None` without any.
pub fn second_percentiles(us: &mut [u64]) -> Option<[f64; 3]> {
    if us.is_empty() {
        return None;
    }
    let mut at = |q: f64| {
        let k = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
        *us.select_nth_unstable(k).1 as f64 / 1000.0
    };
    Some([at(0.5), at(0.99), at(1.0)])
}

impl Throughput {
    /// Sums per-second series into steps of `step_s` (the last value of
    /// each step for `connected`).
    pub fn coarsened(&self, step_s: u64) -> Self {
        let step = step_s.max(1) as usize;
        let sum = |v: &[u64]| v.chunks(step).map(|c| c.iter().sum()).collect();
        let worst = |v: &[Option<f64>]| {
            v.chunks(step)
                .map(|c| c.iter().flatten().copied().reduce(f64::max))
                .collect()
        };
        let median = |v: &[Option<f64>]| {
            v.chunks(step)
                .map(|c| {
                    let mut s: Vec<f64> = c.iter().flatten().copied().collect();
                    s.sort_by(f64::total_cmp);
                    s.get(s.len() / 2).copied()
                })
                .collect()
        };
        Self {
            step_s: step as u64,
            produced: sum(&self.produced),
            published: sum(&self.published),
            delivered: sum(&self.delivered),
            acked: sum(&self.acked),
            connected: self
                .connected
                .chunks(step)
                .filter_map(|c| c.last().copied())
                .collect(),
            latency_p50_ms: median(&self.latency_p50_ms),
            latency_p99_ms: worst(&self.latency_p99_ms),
            latency_max_ms: worst(&self.latency_max_ms),
        }
    }

    /// The step a run of `seconds` gets: 1 s up to three hours, then
    /// whole minutes, enough for at most about 10,000 points.
    pub fn step_for(seconds: usize) -> u64 {
        if seconds <= 3 * 3600 {
            1
        } else {
            (seconds as u64).div_ceil(10_000).div_ceil(60) * 60
        }
    }
}

/// Connection figures.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsReport {
    /// Attempts.
    pub attempts: u64,
    /// Attempts that failed (refused, timed out, reset).
    pub failures: u64,
    /// Established connections that dropped.
    pub disconnects: u64,
    /// Why they dropped.
    pub disconnect_reasons: BTreeMap<&'static str, u64>,
    /// Most nodes connected at once.
    pub peak_connected: i64,
    /// Seconds from the first node start until every node was connected.
    pub all_connected_after_s: Option<f64>,
}

/// The machine a real-time run ran on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineReport {
    /// CPU model.
    pub cpu: String,
    /// Cores this process may use.
    pub cores: usize,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
}

/// CPU time (user + system).
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// User + system seconds of this process (nodes, aggregators, runtime,
    /// dashboard), from its start to the report.
    pub process_s: f64,
    /// Seconds of the embedded broker's processes, restarts included,
    /// sampled each second (0 for an external broker).
    pub broker_s: f64,
    /// This process's seconds by thread name, for the threads alive at the
    /// end (`vitalmesh` are the runtime's workers, `dashboard` draws).
    pub threads_s: BTreeMap<String, f64>,
}

/// Memory figures (resident set size).
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Peak RSS of this process (nodes, aggregators, runtime).
    pub process_peak_bytes: u64,
    /// Peak RSS of the embedded broker process (0 for an external broker).
    pub broker_peak_bytes: u64,
    /// (process + broker) / nodes.
    pub per_node_bytes: u64,
    /// process / nodes: the simulator's own cost per node.
    pub per_node_bytes_excluding_broker: u64,
}

/// The configuration that ran.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigSummary {
    /// Nodes.
    pub nodes: u32,
    /// Wards.
    pub wards: u16,
    /// Aggregators.
    pub aggregators: u16,
    /// Partitions.
    pub partitions: u16,
    /// Sample interval, ms.
    pub sample_interval_ms: u64,
    /// Node buffer, bytes.
    pub buffer_bytes: u32,
    /// Connection ramp, per second.
    pub connect_rate: u32,
    /// Planned duration, seconds.
    pub duration_s: f64,
}

/// Alerts.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsReport {
    /// Raised, per kind.
    pub counts: BTreeMap<&'static str, u64>,
    /// Cleared, per kind.
    pub cleared: BTreeMap<&'static str, u64>,
    /// Still holding at the end.
    pub active_at_end: u64,
    /// Nodes reported down at least once.
    pub nodes_reported_down: Vec<u32>,
    /// Of those, nodes no fault had touched: false alarms.
    pub false_node_down: Vec<u32>,
    /// The most recent alert events (raises and clears), oldest first.
    pub recent: Vec<Alert>,
}

/// Incidents.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentsReport {
    /// Opened, per category.
    pub counts: BTreeMap<Category, u64>,
    /// Still open at the end.
    pub open_at_end: u64,
    /// The incidents (the first [`INCIDENTS_KEPT`]), with their members.
    pub list: Vec<Incident>,
}

/// One ward's series as its detectors saw it.
#[derive(Debug, Clone, Serialize)]
pub struct WardSeriesReport {
    /// The ward.
    pub ward: u16,
    /// Its judged buckets.
    pub buckets: Vec<WardPoint>,
}

/// What the detectors concluded and how right they were.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionReport {
    /// The ward detectors, in order (alert `detector` indices point here).
    pub detectors: Vec<WardDetectorSpec>,
    /// Scores against the ground truth.
    pub scores: DetectionScores,
    /// Each ward's series.
    pub wards: Vec<WardSeriesReport>,
}

impl AlertsReport {
    /// How many alerts of `kind` (`node_down`, `aggregator_down`, …) were
    /// raised; 0 for a kind never seen.
    pub fn count(&self, kind: &str) -> u64 {
        self.counts.get(kind).copied().unwrap_or(0)
    }
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: &'static str,
    /// vitalmesh version.
    pub vitalmesh_version: &'static str,
    /// Scenario name.
    pub scenario: String,
    /// Master seed: pass it back to repeat the run.
    pub seed: u64,
    /// `real` or `virtual`.
    pub mode: RunMode,
    /// Report sections whose figures come from a model, not a measurement
    /// (virtual time: latency, connections and the broker are modelled).
    pub modelled: Vec<&'static str>,
    /// Start, seconds since the Unix epoch (virtual time: the scenario's
    /// `start`).
    pub started_at_unix_s: f64,
    /// Seconds the nodes ran (first start to stop; simulated seconds in
    /// virtual time).
    pub ran_for_s: f64,
    /// Whether the run was stopped early (Ctrl-C, `q`).
    pub interrupted: bool,
    /// What ran.
    pub config: ConfigSummary,
    /// The broker and its restarts.
    pub broker: BrokerReport,
    /// Where every sample ended up.
    pub ledger: Ledger,
    /// Latency percentiles.
    pub latency: LatencyReport,
    /// Per-second series.
    pub throughput: Throughput,
    /// Connections.
    pub connections: ConnectionsReport,
    /// What the gateways relayed and lost (runs with `[gateways]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateways: Option<GatewaysReport>,
    /// The machine (real time only, as CPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineReport>,
    /// CPU time (real time only: host figures vary by run, so a virtual
    /// report leaves them out to stay byte-identical for a seed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuReport>,
    /// Memory (real time only, as CPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryReport>,
    /// Aggregators at the end.
    pub aggregators: Vec<AggregatorView>,
    /// Partition ownership over time, and every move with its cause.
    pub ownership: OwnershipReport,
    /// Alerts.
    pub alerts: AlertsReport,
    /// Alerts grouped into incidents.
    pub incidents: IncidentsReport,
    /// Detection: detectors, scores, ward series.
    pub detection: DetectionReport,
    /// What really happened to patients and devices.
    pub ground_truth: GroundTruth,
    /// Messages the aggregators refused, by kind (`bad_tag`, `too_large`,
    /// `malformed`, `wrong_topic`, …).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Up to three refused messages of each kind, as the aggregators saw them.
    pub rejected_examples: BTreeMap<&'static str, Vec<String>>,
    /// Pass/fail thresholds and their verdicts.
    pub slo: Vec<SloResult>,
    /// Everything done to the mesh on purpose, in order: the ground truth.
    pub timeline: Vec<TimelineEntry>,
    /// Rogue clients and what they sent.
    pub rogue: Vec<RogueReport>,
}

/// Totals over every gateway of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewaysReport {
    /// Gateways in the population.
    pub gateways: u32,
    /// Mean node frames per relay message.
    pub frames_per_relay: f64,
    /// The counts, summed.
    #[serde(flatten)]
    pub totals: vitalmesh_firmware::GatewayLedger,
}

impl GatewaysReport {
    /// The totals of `ledgers`, one per gateway.
    pub fn of<'a>(
        ledgers: impl IntoIterator<Item = &'a vitalmesh_firmware::GatewayLedger>,
    ) -> Self {
        let mut totals = vitalmesh_firmware::GatewayLedger::default();
        let mut gateways = 0;
        for l in ledgers {
            totals.add(l);
            gateways += 1;
        }
        Self {
            gateways,
            frames_per_relay: totals.frames_relayed as f64 / totals.relays.max(1) as f64,
            totals,
        }
    }
}

/// `12345` as `12,345`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl Report {
    /// The JSON report, pretty-printed, with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("a report always serialises");
        json.push(b'\n');
        json
    }

    /// A summary for a terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let l = &self.ledger.total;
        let pct = |n: u64| {
            if l.produced == 0 {
                0.0
            } else {
                100.0 * n as f64 / l.produced as f64
            }
        };
        let _ = writeln!(
            s,
            "vitalmesh run '{}' — seed {}, {:.1} s of {}{}, {} nodes in {} wards, {} aggregators, {} broker",
            self.scenario,
            self.seed,
            self.ran_for_s,
            self.mode.label(),
            if self.interrupted {
                " (stopped early)"
            } else {
                ""
            },
            thousands(u64::from(self.config.nodes)),
            self.config.wards,
            self.config.aggregators,
            self.broker.kind
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "Ledger");
        let rows = [
            ("produced", l.produced, None),
            ("delivered", l.delivered, Some(pct(l.delivered))),
            (
                "still buffered",
                l.still_buffered,
                Some(pct(l.still_buffered)),
            ),
            (
                "dropped (overflow)",
                l.dropped_overflow,
                Some(pct(l.dropped_overflow)),
            ),
            (
                "lost (node crash)",
                l.lost_on_crash,
                Some(pct(l.lost_on_crash)),
            ),
            ("unexplained", l.unexplained, Some(pct(l.unexplained))),
            ("duplicates", l.duplicates, None),
        ];
        for (name, n, p) in rows {
            match p {
                Some(p) => {
                    let _ = writeln!(s, "  {name:<20}{:>14}  {p:>8.3} %", thousands(n));
                }
                None => {
                    let _ = writeln!(s, "  {name:<20}{:>14}", thousands(n));
                }
            }
        }
        if l.forged_acks_refused > 0 {
            let _ = writeln!(
                s,
                "  {:<20}{:>14}  (forged or altered; nothing let go)",
                "acks refused",
                thousands(l.forged_acks_refused)
            );
        }
        let _ = writeln!(s, "  {}", l.verdict());
        let _ = writeln!(s);
        let secs =
            (self.throughput.delivered.len() as u64 * self.throughput.step_s.max(1)).max(1) as f64;
        let rate = |v: &[u64]| v.iter().sum::<u64>() as f64 / secs;
        let _ = writeln!(
            s,
            "Throughput  produced {:.0}/s  published {:.0}/s  delivered {:.0}/s  acked {:.0}/s",
            rate(&self.throughput.produced),
            rate(&self.throughput.published),
            rate(&self.throughput.delivered),
            rate(&self.throughput.acked)
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Latency (ms, {})  p50      p90      p99    p99.9      max      count",
            if self.latency.clock == "simulated" {
                "sim."
            } else {
                "wall"
            }
        );
        for (name, p) in [
            ("end-to-end", self.latency.end_to_end),
            ("publish → PUBACK", self.latency.publish_ack),
        ] {
            let _ = writeln!(
                s,
                "  {name:<17}{:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10}",
                p.p50_ms,
                p.p90_ms,
                p.p99_ms,
                p.p99_9_ms,
                p.max_ms,
                thousands(p.count)
            );
        }
        let _ = writeln!(s);
        let c = &self.connections;
        let reasons = if c.disconnect_reasons.is_empty() {
            String::new()
        } else {
            let r: Vec<String> = c
                .disconnect_reasons
                .iter()
                .map(|(k, v)| format!("{v} {}", k.replace('_', " ")))
                .collect();
            format!(" ({})", r.join(", "))
        };
        let _ = writeln!(
            s,
            "Connections  {} attempts, {} failed, {} dropped{reasons}, peak {} connected{}",
            thousands(c.attempts),
            thousands(c.failures),
            thousands(c.disconnects),
            thousands(c.peak_connected.max(0) as u64),
            c.all_connected_after_s
                .map(|t| format!(", all connected after {t:.1} s"))
                .unwrap_or_else(|| ", not all nodes were connected at once".into())
        );
        if let Some(g) = &self.gateways {
            let t = &g.totals;
            let _ = writeln!(
                s,
                "Gateways     {} gateways: {} relays ({:.1} frames each), {} frames re-relayed; radio lost {} frames and {} acks, {} drop-outs; {} crashes lost {} frames (their nodes re-sent them)",
                thousands(u64::from(g.gateways)),
                thousands(t.relays),
                g.frames_per_relay,
                thousands(t.frames_rerelayed),
                thousands(t.frames_lost_in_air),
                thousands(t.acks_lost_in_air),
                thousands(t.dropouts),
                t.crashes,
                thousands(t.frames_lost_in_crash),
            );
        }
        let b = &self.broker;
        let _ = writeln!(
            s,
            "Broker       {} ({}): {} process restarts, {} listener restarts, {} canary failures, {} logins refused",
            b.kind,
            b.url,
            b.process_restarts,
            b.listener_restarts,
            b.canary_failures,
            b.auth_refused
        );
        if let Some(m) = &self.memory {
            let _ = writeln!(
                s,
                "Memory       vitalmesh {} + broker {} = {:.1} KB per node ({:.1} KB without the broker)",
                mb(m.process_peak_bytes),
                mb(m.broker_peak_bytes),
                m.per_node_bytes as f64 / 1024.0,
                m.per_node_bytes_excluding_broker as f64 / 1024.0
            );
        }
        if let Some(cpu) = &self.cpu {
            let _ = writeln!(
                s,
                "CPU          vitalmesh {:.1} s + broker {:.1} s = {:.2} cores over {:.1} s",
                cpu.process_s,
                cpu.broker_s,
                (cpu.process_s + cpu.broker_s) / self.ran_for_s.max(1e-3),
                self.ran_for_s
            );
        }
        if !self.modelled.is_empty() {
            let _ = writeln!(
                s,
                "Modelled     {} (virtual time)",
                self.modelled.join(", ")
            );
        }
        let counts: Vec<String> = self
            .alerts
            .counts
            .iter()
            .map(|(k, v)| format!("{v} {}", k.replace('_', " ")))
            .collect();
        let _ = writeln!(
            s,
            "Alerts       {}",
            if counts.is_empty() {
                "none".into()
            } else {
                counts.join(", ")
            }
        );
        if !self.alerts.false_node_down.is_empty() {
            let _ = writeln!(
                s,
                "             {} node-down reports for nodes no fault touched",
                self.alerts.false_node_down.len()
            );
        }
        if !self.incidents.counts.is_empty() {
            let c: Vec<String> = self
                .incidents
                .counts
                .iter()
                .map(|(k, v)| format!("{v} {}", format!("{k:?}").to_lowercase()))
                .collect();
            let _ = writeln!(
                s,
                "Incidents    {} ({} open at the end)",
                c.join(", "),
                self.incidents.open_at_end
            );
        }
        self.detection_summary(&mut s);
        if !self.rejected.is_empty() {
            let r: Vec<String> = self
                .rejected
                .iter()
                .map(|(k, v)| format!("{v} {}", k.replace('_', " ")))
                .collect();
            let _ = writeln!(s, "Rejected     {}", r.join(", "));
        }
        for r in &self.rogue {
            let _ = writeln!(
                s,
                "Rogue        {:?} at {:.0} s: {} messages, {} connections, dropped by the broker {} times",
                r.kind, r.started_at_s, r.messages_sent, r.connections_opened, r.dropped_by_broker
            );
        }
        if !self.timeline.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "Timeline");
            for e in self.timeline.iter().take(40) {
                let failed = e
                    .error
                    .as_deref()
                    .map(|x| format!("  [failed: {x}]"))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  {:>8.1} s  {:<14} {}{failed}",
                    e.at_s, e.source, e.description
                );
            }
            if self.timeline.len() > 40 {
                let _ = writeln!(s, "  … {} more in the report", self.timeline.len() - 40);
            }
        }
        if !self.slo.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "SLO");
            for r in &self.slo {
                let _ = writeln!(
                    s,
                    "  {} {:<32} {:>12} {} {:<12}",
                    if r.passed { "pass" } else { "FAIL" },
                    r.name,
                    r.show(r.actual),
                    r.comparison,
                    r.show(r.limit)
                );
            }
        }
        s
    }

    /// The detection lines of the summary: only what the run could score.
    fn detection_summary(&self, s: &mut String) {
        let d = &self.detection.scores;
        let pct = |x: Option<f64>| x.map_or("—".into(), |x| format!("{:.0} %", 100.0 * x));
        let hours = |x: Option<f64>| x.map_or("—".into(), |x| format!("{:.1} h", x / 3600.0));
        let ward_alarms = d.ward.iter().any(|w| w.true_alarms + w.false_alarms > 0);
        if d.any.outbreaks > 0 || ward_alarms {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "Outbreak detection ({} outbreaks, {:.0} ward-days outside them, {:.0} min buckets)",
                d.any.outbreaks,
                d.ward_days,
                d.bucket_s / 60.0
            );
            let _ = writeln!(
                s,
                "  {:<16} {:>7} {:>9} {:>11} {:>12} {:>11}",
                "detector", "recall", "precision", "false/wk", "ttd median", "ttd p90"
            );
            let row = |s: &mut String, w: &DetectorScore| {
                let _ = writeln!(
                    s,
                    "  {:<16} {:>7} {:>9} {:>11.2} {:>12} {:>11}",
                    w.name,
                    pct(w.recall),
                    pct(w.precision),
                    w.false_alarms_per_ward_week,
                    hours(w.ttd_median_s),
                    hours(w.ttd_p90_s)
                );
            };
            for w in &d.ward {
                row(s, w);
            }
            row(s, &d.any);
        }
        let p = &d.patient;
        if p.deteriorations > 0 || p.false_alarms > 0 {
            let _ = writeln!(
                s,
                "Deterioration {} of {} flagged, {} before NEWS2 reached 5 ({} eligible), median {} after onset; {} false alarms ({:.3} per patient-day)",
                p.flagged,
                p.deteriorations,
                p.before_news2_five,
                p.deteriorations - p.already_at_five,
                hours(p.ttd_median_s),
                p.false_alarms,
                p.false_alarms_per_patient_day
            );
        }
        let z = &d.sensor;
        if z.faults > 0 || z.false_alarms > 0 {
            let _ = writeln!(
                s,
                "Sensors      {} of {} faults flagged ({}), median {:.0} min after onset; {} of {} fevers misflagged; {} false alarms",
                z.flagged,
                z.faults,
                pct(z.recall),
                z.time_to_flag_median_s.unwrap_or(0.0) / 60.0,
                z.fevers_misflagged,
                z.fevers,
                z.false_alarms
            );
        }
    }

    /// Whether every threshold held.
    pub fn slo_passed(&self) -> bool {
        self.slo.iter().all(|r| r.passed)
    }
}

/// Per-second end-to-end latency histograms (microseconds) as an
/// HdrHistogram interval log (V2, compressed), readable by
/// HistogramLogProcessor, HistogramLogAnalyzer and hdr-plot.
pub fn hdr_log(
    started: SystemTime,
    intervals: &[(f64, Histogram<u64>)],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment("vitalmesh end-to-end latency, microseconds (intended sample time to aggregator ingest)")
        .with_start_time(started)
        .with_base_time(started)
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| e.to_string())?;
    let tag = Tag::new("e2e");
    for (start_s, h) in intervals {
        writer
            .write_histogram(
                h,
                Duration::from_secs_f64(*start_s),
                Duration::from_secs(1),
                tag,
            )
            .map_err(|e| e.to_string())?;
    }
    drop(writer);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_seconds_latency_is_summarised_and_steps_keep_their_worst() {
        let mut us: Vec<u64> = (1..=1000).map(|k| k * 1000).collect();
        us.reverse();
        assert_eq!(second_percentiles(&mut us), Some([500.0, 990.0, 1000.0]));
        assert_eq!(second_percentiles(&mut []), None);
        let t = Throughput {
            produced: vec![1; 4],
            latency_p50_ms: vec![Some(1.0), Some(3.0), None, Some(2.0)],
            latency_p99_ms: vec![Some(5.0), Some(9.0), None, None],
            latency_max_ms: vec![Some(6.0), Some(12.0), None, None],
            ..Throughput::default()
        };
        let c = t.coarsened(2);
        assert_eq!(c.latency_p50_ms, [Some(3.0), Some(2.0)]);
        assert_eq!(c.latency_p99_ms, [Some(9.0), None]);
        assert_eq!(c.latency_max_ms, [Some(12.0), None]);
    }

    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    use super::*;
    use crate::latency::latency_histogram;

    #[test]
    fn the_hdr_log_reads_back_with_the_reference_parser() {
        let mut a = latency_histogram();
        a.record(1500).unwrap();
        let mut b = latency_histogram();
        b.record(2500).unwrap();
        b.record(3500).unwrap();
        let bytes = hdr_log(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            &[(0.0, a), (1.0, b)],
        )
        .unwrap();
        let intervals: Vec<_> = IntervalLogIterator::new(&bytes)
            .filter_map(|e| match e.unwrap() {
                LogEntry::Interval(h) => Some((h.start_timestamp(), h.max())),
                _ => None,
            })
            .collect();
        assert_eq!(intervals.len(), 2);
        assert_eq!(intervals[1].0, Duration::from_secs(1));
        assert!(
            (intervals[1].1 - 3.5).abs() < 0.01,
            "max in ms: {:?}",
            intervals[1]
        );
    }

    #[test]
    fn big_numbers_get_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}

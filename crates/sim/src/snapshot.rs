//! The state of a run at one moment, for progress lines and dashboards,
//! and the per-second series both drivers keep. A leaf module: the
//! dashboard reads it without knowing which driver runs.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use vitalmesh_core::incident::Incident;
use vitalmesh_core::{Alert, AlertKind, Population};
use vitalmesh_scenario::Scenario;
use vitalmesh_wire::Timestamp;

use crate::health::NodeHealth;
use crate::latency::Percentiles;
use crate::observe::AggregatorView;
use crate::report::{BrokerReport, RunMode, Throughput};
use crate::timeline::TimelineEntry;

/// What a run is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Broker and aggregators coming up.
    #[default]
    Starting,
    /// Nodes connecting.
    Ramping,
    /// All nodes started.
    Running,
    /// Sampling stopped; buffers draining.
    Draining,
    /// Finished.
    Done,
}

impl Phase {
    /// Its name, as reports and status messages spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ramping => "ramping",
            Self::Running => "running",
            Self::Draining => "draining",
            Self::Done => "done",
        }
    }
}

/// One second of throughput (or totals so far).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RatePoint {
    /// Samples taken.
    pub produced: u64,
    /// Samples published (re-sends included).
    pub published: u64,
    /// Distinct samples delivered.
    pub delivered: u64,
    /// Samples acknowledged end to end.
    pub acked: u64,
}

/// The per-second series of a run: fed the running totals once a second,
/// it keeps the report's throughput and the dashboard's two minutes.
#[derive(Debug, Clone, Default)]
pub struct Seconds {
    last: RatePoint,
    /// The report's series.
    pub throughput: Throughput,
    /// The last two minutes, oldest first.
    pub history: VecDeque<RatePoint>,
    /// The last closed second.
    pub rate: RatePoint,
}

impl Seconds {
    /// Closes a second given the totals at its end and the nodes connected.
    pub fn close(&mut self, totals: RatePoint, connected: i64) {
        let last = self.last;
        let rate = RatePoint {
            produced: totals.produced - last.produced,
            published: totals.published - last.published,
            delivered: totals.delivered - last.delivered,
            acked: totals.acked - last.acked,
        };
        self.last = totals;
        self.rate = rate;
        let t = &mut self.throughput;
        t.produced.push(rate.produced);
        t.published.push(rate.published);
        t.delivered.push(rate.delivered);
        t.acked.push(rate.acked);
        t.connected.push(connected);
        if self.history.len() == 120 {
            self.history.pop_front();
        }
        self.history.push_back(rate);
    }

    /// Seconds closed so far.
    pub fn count(&self) -> usize {
        self.throughput.produced.len()
    }
}

/// A ward's detectors, as of the last bucket judged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WardState {
    /// The ward.
    pub ward: u16,
    /// The bucket's start, seconds since the nodes started.
    pub at_s: f64,
    /// Patients monitored in it.
    pub census: u32,
    /// Febrile.
    pub febrile: u32,
    /// Newly febrile.
    pub new_febrile: u32,
    /// The highest statistic ÷ threshold over the detectors out of
    /// warm-up (`None`: all still warming up).
    pub level: Option<f64>,
    /// Detectors alarming, by position.
    pub alarming: Vec<u8>,
}

/// How many incidents a snapshot carries (open ones first).
pub const SNAPSHOT_INCIDENTS: usize = 60;

/// At most `limit` incidents as a person should read them: the open ones,
/// worst first and newest first among equals, then the most recently
/// opened of those that are over.
pub fn worst_first(all: &[Incident], limit: usize) -> Vec<Incident> {
    let mut open: Vec<&Incident> = all.iter().filter(|i| i.is_open()).collect();
    open.sort_by_key(|i| std::cmp::Reverse((i.severity, i.opened_at, i.id)));
    let closed = all.iter().rev().filter(|i| !i.is_open());
    open.into_iter()
        .chain(closed)
        .take(limit)
        .cloned()
        .collect()
}

/// The state of a run at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Scenario name.
    pub scenario: String,
    /// Master seed.
    pub seed: u64,
    /// Which driver.
    pub mode: RunMode,
    /// Simulated seconds per wall second (virtual time), if known.
    pub speed: Option<f64>,
    /// Where the broker is.
    pub broker_url: String,
    /// What the run is doing.
    pub phase: Phase,
    /// Since nodes started.
    pub elapsed: Duration,
    /// When the nodes' clock started (alerts carry absolute times).
    pub origin: Timestamp,
    /// Planned node run time.
    pub planned: Duration,
    /// Nodes.
    pub nodes: u32,
    /// Nodes started so far.
    pub started: u32,
    /// Nodes connected now.
    pub connected: i64,
    /// Samples taken.
    pub produced: u64,
    /// Samples published.
    pub published: u64,
    /// Distinct samples delivered.
    pub delivered: u64,
    /// Re-deliveries.
    pub duplicates: u64,
    /// Samples acknowledged end to end.
    pub acked: u64,
    /// Held in node buffers now.
    pub buffered: i64,
    /// Evicted from full buffers so far.
    pub dropped_overflow: u64,
    /// Lost in crashes so far.
    pub lost_on_crash: u64,
    /// Messages refused by aggregators so far.
    pub rejected: u64,
    /// The same by reason (`bad_tag`, `replayed`, …).
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// Alerts raised so far, by kind.
    pub alert_counts: BTreeMap<&'static str, u64>,
    /// Last second.
    pub rate: RatePoint,
    /// The last two minutes, oldest first.
    pub history: Vec<RatePoint>,
    /// End-to-end latency over the last ten seconds.
    pub latency_recent: Percentiles,
    /// End-to-end latency over the whole run.
    pub latency_total: Percentiles,
    /// Latency distribution over the last ten seconds: (upper bound ms, count).
    pub latency_recent_buckets: Vec<(f64, u64)>,
    /// Latency distribution over the whole run.
    pub latency_total_buckets: Vec<(f64, u64)>,
    /// Deliveries within each of [`crate::exposition::LATENCY_BOUNDS_S`]
    /// seconds, cumulative: (bound, count), for a Prometheus histogram.
    pub latency_le: Vec<(f64, u64)>,
    /// End-to-end latencies summed, seconds.
    pub latency_sum_s: f64,
    /// Node→broker PUBACK latency over the whole run.
    pub publish_ack: Percentiles,
    /// Health of every node, by id.
    pub node_health: Vec<NodeHealth>,
    /// Nodes the aggregators report down.
    pub nodes_down: Vec<u32>,
    /// Nodes an aggregator suspects (samples missing) but has not declared down.
    pub nodes_suspected: Vec<u32>,
    /// Ward layout.
    pub population: Population,
    /// Aggregators.
    pub aggregators: Vec<AggregatorView>,
    /// Most recent alert events (raises and clears), newest last.
    pub alerts: Vec<Alert>,
    /// Open incidents, then the most recently opened closed ones.
    pub incidents: Vec<Incident>,
    /// Incidents open now.
    pub incidents_open: usize,
    /// Incidents so far.
    pub incidents_total: usize,
    /// Ward detectors' names, in order.
    pub detectors: Vec<String>,
    /// Each ward's detectors now.
    pub wards: Vec<WardState>,
    /// Nodes whose sensors the detectors hold suspect now.
    pub sensor_suspect: Vec<u32>,
    /// Most recent timeline entries, newest last.
    pub timeline: Vec<TimelineEntry>,
    /// Broker restarts and canary figures.
    pub broker: BrokerReport,
    /// This process's RSS (0 where not measured).
    pub rss_bytes: u64,
    /// The broker's RSS (0 where not measured).
    pub broker_rss_bytes: u64,
    /// In a sharded run: the whole run, from every shard's status on the
    /// broker (this snapshot's other figures are this shard's).
    pub whole_run: Option<crate::shard::WholeRun>,
}

impl Snapshot {
    /// A snapshot with everything the observer, the per-second series and
    /// the timeline know filled in, the same for both drivers; the driver
    /// adds what only it knows (struct update syntax).
    pub fn observed(
        o: &crate::observe::Observer,
        seconds: &Seconds,
        timeline: &[TimelineEntry],
        scenario: &Scenario,
    ) -> Self {
        let recent = o.window_histogram();
        let all = o.incidents.incidents();
        let incidents = worst_first(all, SNAPSHOT_INCIDENTS);
        let mut sensor_suspect: Vec<u32> = o
            .active_alerts()
            .filter(|a| matches!(a.kind, AlertKind::CheckSensor { .. }))
            .filter_map(|a| a.node().map(|n| n.0))
            .collect();
        sensor_suspect.sort_unstable();
        sensor_suspect.dedup();
        Self {
            delivered: o.delivered_total,
            duplicates: o.duplicates,
            rejected: o.rejected.values().sum(),
            rejected_by_reason: o.rejected.clone(),
            alert_counts: o.alert_counts.clone(),
            latency_le: crate::latency::cumulative(
                &o.e2e_total,
                &crate::exposition::LATENCY_BOUNDS_S,
            ),
            latency_sum_s: o.e2e_total.mean() * o.e2e_total.len() as f64 / 1e6,
            rate: seconds.rate,
            history: seconds.history.iter().copied().collect(),
            latency_recent: Percentiles::of(&recent),
            latency_total: Percentiles::of(&o.e2e_total),
            latency_recent_buckets: crate::latency::buckets(&recent),
            latency_total_buckets: crate::latency::buckets(&o.e2e_total),
            nodes_down: o.nodes_down.iter().map(|n| n.0).collect(),
            nodes_suspected: o
                .aggregators
                .values()
                .filter(|a| a.up)
                .flat_map(|a| a.suspected.iter().copied())
                .collect(),
            aggregators: o.aggregators.values().cloned().collect(),
            alerts: o.alerts.iter().rev().take(100).rev().copied().collect(),
            incidents_open: all.iter().filter(|i| i.is_open()).count(),
            incidents_total: all.len(),
            incidents,
            detectors: scenario
                .detection
                .ward
                .detectors
                .iter()
                .map(|d| d.name.clone())
                .collect(),
            wards: o
                .wards
                .iter()
                .enumerate()
                .filter_map(|(w, points)| {
                    let last = points.last()?;
                    let c = last.counts.unwrap_or_default();
                    Some(WardState {
                        ward: w as u16,
                        at_s: last.at_s,
                        census: c.census,
                        febrile: c.febrile,
                        new_febrile: c.new_febrile,
                        level: last
                            .steps
                            .iter()
                            .filter_map(|s| Some(s.statistic? / s.threshold.filter(|t| *t > 0.0)?))
                            .reduce(f64::max),
                        alarming: last
                            .steps
                            .iter()
                            .enumerate()
                            .filter(|(_, s)| s.alarm)
                            .map(|(i, _)| i as u8)
                            .collect(),
                    })
                })
                .collect(),
            sensor_suspect,
            timeline: timeline.iter().rev().take(100).rev().cloned().collect(),
            ..Self::default()
        }
    }
}

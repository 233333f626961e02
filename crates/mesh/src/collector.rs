//! The observer: what the aggregators ingested, how late, and what they
//! alerted on. It is the runtime's ground truth for the ledger, so it sees
//! every delivery, from every aggregator, and counts a second delivery of a
//! `(node, seq)` as a duplicate wherever it came from.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hdrhistogram::Histogram;
use serde::Serialize;
use vitalmesh_core::{AggregatorStats, Alert, AlertKind, Delivery};
use vitalmesh_wire::{AggregatorId, NodeId, PartitionId, SeqSet};

use crate::metrics::{latency_histogram, record_latency};

/// Alerts kept in full; beyond this only counts grow.
pub const ALERTS_KEPT: usize = 5000;

/// Seconds of per-second latency histograms kept for the "recent" window.
pub const WINDOW_SECONDS: usize = 10;

/// What the observer knows about one aggregator.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AggregatorView {
    /// Its id.
    pub id: u16,
    /// Whether its task is running and connected.
    pub up: bool,
    /// Its counters.
    pub stats: AggregatorStats,
    /// Aggregators it believes alive.
    pub live_view: Vec<u16>,
    /// Samples it ingested as primary in the last second.
    pub ingest_rate: u64,
    /// Times it was killed or restarted.
    pub restarts: u64,
    /// Partitions it owns as primary.
    pub primary: Vec<u16>,
    /// Partitions it owns as standby.
    pub standby: Vec<u16>,
    /// Nodes it suspects (samples missing) but has not declared down.
    #[serde(skip)]
    pub suspected: Vec<u32>,
}

/// One aggregator's periodic status.
#[derive(Debug, Clone)]
pub(crate) struct AggregatorStatusUpdate {
    pub(crate) id: AggregatorId,
    pub(crate) up: bool,
    pub(crate) stats: AggregatorStats,
    pub(crate) live_view: Vec<u16>,
    pub(crate) suspected: Vec<NodeId>,
}

/// The observer's state.
#[derive(Debug)]
pub struct Collector {
    /// Per node: sequence numbers delivered (ingested by a primary).
    pub(crate) delivered: Vec<SeqSet>,
    pub(crate) delivered_total: u64,
    pub(crate) duplicates: u64,
    pub(crate) e2e_total: Histogram<u64>,
    e2e_second: Histogram<u64>,
    pub(crate) e2e_window: VecDeque<Histogram<u64>>,
    /// Per-second histograms for the HdrHistogram interval log, if wanted.
    pub(crate) intervals: Option<Vec<(f64, Histogram<u64>)>>,
    pub(crate) alerts: VecDeque<Alert>,
    pub(crate) alert_counts: BTreeMap<&'static str, u64>,
    /// Nodes the aggregators currently report down.
    pub(crate) nodes_down: BTreeSet<NodeId>,
    /// Every node ever reported down.
    pub(crate) nodes_ever_down: BTreeSet<NodeId>,
    /// Refused messages by kind.
    pub(crate) rejected: BTreeMap<&'static str, u64>,
    /// The first few messages of each kind, to show what was refused.
    pub(crate) rejected_examples: BTreeMap<&'static str, Vec<String>>,
    pub(crate) aggregators: BTreeMap<u16, AggregatorView>,
    /// Samples each aggregator had ingested at the last tick, for rates.
    ingested_at_last_tick: BTreeMap<u16, u64>,
}

impl Collector {
    pub(crate) fn new(nodes: usize, keep_intervals: bool) -> Self {
        Self {
            delivered: vec![SeqSet::new(); nodes],
            delivered_total: 0,
            duplicates: 0,
            e2e_total: latency_histogram(),
            e2e_second: latency_histogram(),
            e2e_window: VecDeque::new(),
            intervals: keep_intervals.then(Vec::new),
            alerts: VecDeque::new(),
            alert_counts: BTreeMap::new(),
            nodes_down: BTreeSet::new(),
            nodes_ever_down: BTreeSet::new(),
            rejected: BTreeMap::new(),
            rejected_examples: BTreeMap::new(),
            aggregators: BTreeMap::new(),
            ingested_at_last_tick: BTreeMap::new(),
        }
    }

    pub(crate) fn deliveries(&mut self, batch: &[Delivery]) {
        for d in batch {
            let Some(set) = self.delivered.get_mut(d.node.0 as usize) else {
                continue;
            };
            if set.insert(d.seq) {
                self.delivered_total += 1;
                let latency = d.ingested_at.saturating_duration_since(d.sample_time);
                record_latency(&mut self.e2e_total, latency);
                record_latency(&mut self.e2e_second, latency);
            } else {
                self.duplicates += 1;
            }
        }
    }

    pub(crate) fn alert(&mut self, alert: Alert) {
        let kind = match alert.kind {
            AlertKind::PatientRisk { .. } => "patient_risk",
            AlertKind::NodeDown { node, .. } => {
                self.nodes_down.insert(node);
                self.nodes_ever_down.insert(node);
                "node_down"
            }
            AlertKind::NodeUp { node, .. } => {
                self.nodes_down.remove(&node);
                "node_up"
            }
            AlertKind::AggregatorDown { .. } => "aggregator_down",
            AlertKind::AggregatorUp { .. } => "aggregator_up",
            AlertKind::AggregatorIsolated { .. } => "aggregator_isolated",
        };
        *self.alert_counts.entry(kind).or_default() += 1;
        if self.alerts.len() == ALERTS_KEPT {
            self.alerts.pop_front();
        }
        self.alerts.push_back(alert);
    }

    pub(crate) fn rejected(&mut self, kind: &'static str, message: String) {
        *self.rejected.entry(kind).or_default() += 1;
        let examples = self.rejected_examples.entry(kind).or_default();
        if examples.len() < 3 {
            examples.push(message);
        }
    }

    pub(crate) fn aggregator_status(&mut self, s: AggregatorStatusUpdate) {
        let view = self
            .aggregators
            .entry(s.id.0)
            .or_insert_with(|| AggregatorView {
                id: s.id.0,
                ..AggregatorView::default()
            });
        view.up = s.up;
        view.stats = s.stats;
        view.live_view = s.live_view;
        view.suspected = s.suspected.iter().map(|n| n.0).collect();
    }

    pub(crate) fn ownership(
        &mut self,
        id: AggregatorId,
        primary: &[PartitionId],
        standby: &[PartitionId],
    ) {
        let view = self
            .aggregators
            .entry(id.0)
            .or_insert_with(|| AggregatorView {
                id: id.0,
                ..AggregatorView::default()
            });
        view.primary = primary.iter().map(|p| p.0).collect();
        view.standby = standby.iter().map(|p| p.0).collect();
    }

    pub(crate) fn aggregator_restarted(&mut self, id: AggregatorId) {
        if let Some(view) = self.aggregators.get_mut(&id.0) {
            view.restarts += 1;
            view.up = false;
            self.ingested_at_last_tick.insert(id.0, 0);
            view.primary.clear();
            view.standby.clear();
        }
    }

    /// Closes the current second: rotates the latency window, records the
    /// interval histogram, computes ingest rates.
    pub(crate) fn tick(&mut self, second_started_at_s: f64) {
        let h = std::mem::replace(&mut self.e2e_second, latency_histogram());
        if let Some(intervals) = &mut self.intervals {
            intervals.push((second_started_at_s, h.clone()));
        }
        if self.e2e_window.len() == WINDOW_SECONDS {
            self.e2e_window.pop_front();
        }
        self.e2e_window.push_back(h);
        for view in self.aggregators.values_mut() {
            let last = self.ingested_at_last_tick.entry(view.id).or_default();
            view.ingest_rate = view.stats.ingested.saturating_sub(*last);
            *last = view.stats.ingested;
        }
    }

    /// Latency over the last [`WINDOW_SECONDS`].
    pub(crate) fn window_histogram(&self) -> Histogram<u64> {
        let mut h = latency_histogram();
        for s in &self.e2e_window {
            h.add(s).expect("same bounds");
        }
        h
    }
}

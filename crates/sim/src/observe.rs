//! The observer: what the aggregators ingested, how late, what they alerted
//! on and which partitions they owned when. It is a run's ground truth for
//! the ledger, so it sees every delivery from every aggregator and counts a
//! second delivery of a `(node, seq)` as a duplicate wherever it came from.
//!
//! Pure: both drivers feed it the aggregators' events with the time in
//! seconds since the nodes started, and close each second with
//! [`Observer::tick`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use vitalmesh_core::detect::{Step, WardBucket, WardCounts};
use vitalmesh_core::incident::{IncidentBook, IncidentConfig};
use vitalmesh_core::{
    AggregatorStats, Alert, AlertKey, AlertKind, Delivery, News2Five, Population,
};
use vitalmesh_wire::{AggregatorId, NodeId, PartitionId, SeqSet, Timestamp};

use crate::latency::{latency_histogram, record_latency, ward_histogram};

/// Recent alert events (raises and clears) kept for dashboards.
pub const ALERTS_KEPT: usize = 5000;

/// Alerts kept for scoring and the report; beyond this only counts grow
/// (a week of a thousand patients raises a few thousand).
pub const ALERT_HISTORY: usize = 200_000;

/// One judged bucket of a ward's series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WardPoint {
    /// Bucket start, seconds since the nodes started.
    pub at_s: f64,
    /// The counts (`None`: nobody reported).
    pub counts: Option<WardCounts>,
    /// Whether every partition was covered.
    pub complete: bool,
    /// Per detector, in configuration order.
    pub steps: Vec<Step>,
}

/// Seconds of per-second latency histograms kept for the "recent" window.
pub const WINDOW_SECONDS: usize = 10;

/// What the observer knows about one aggregator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AggregatorView {
    /// Its id.
    pub id: u16,
    /// Whether it is running and connected.
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
pub struct AggregatorStatusUpdate {
    /// Who.
    pub id: AggregatorId,
    /// Running and connected.
    pub up: bool,
    /// Counters.
    pub stats: AggregatorStats,
    /// Aggregators it believes alive.
    pub live_view: Vec<u16>,
    /// Nodes it suspects.
    pub suspected: Vec<NodeId>,
}

/// A partition changing primary owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnershipMove {
    /// Seconds since the nodes started.
    pub at_s: f64,
    /// The partition.
    pub partition: u16,
    /// Its previous primary (`None`: first assignment).
    pub from: Option<u16>,
    /// Its new primary.
    pub to: u16,
    /// Why, from the timeline and the aggregators' alerts (filled in when
    /// the report is assembled).
    pub cause: String,
}

/// Partition ownership over the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OwnershipReport {
    /// Per aggregator: primary partitions held at the end of each second.
    pub primary_per_second: BTreeMap<u16, Vec<u16>>,
    /// Every change of primary owner, in order.
    pub moves: Vec<OwnershipMove>,
}

/// The observer's state.
#[derive(Debug)]
pub struct Observer {
    /// Per node: sequence numbers delivered (ingested by a primary).
    pub delivered: Vec<SeqSet>,
    /// Distinct samples delivered.
    pub delivered_total: u64,
    /// Re-deliveries.
    pub duplicates: u64,
    /// End-to-end latency over the whole run.
    pub e2e_total: Histogram<u64>,
    /// Per ward, over the whole run.
    pub e2e_ward: Vec<Histogram<u64>>,
    /// This second's latencies, µs. Raw values, not a histogram: a
    /// histogram covering an hour at three digits is about 180 KB, and a
    /// week of simulated seconds would allocate and zero one per second.
    e2e_second: Vec<u64>,
    /// Each closed second's end-to-end median, p99 and largest, ms.
    pub latency_per_second: Vec<Option<[f64; 3]>>,
    /// The last [`WINDOW_SECONDS`] seconds' latencies (buffers reused).
    e2e_window: VecDeque<Vec<u64>>,
    /// Per-second histograms for the HdrHistogram interval log, if wanted.
    pub intervals: Option<Vec<(f64, Histogram<u64>)>>,
    /// The most recent alert events (raises and clears), oldest first.
    pub alerts: VecDeque<Alert>,
    /// Every alert raised, with its clearing time once it cleared.
    pub history: Vec<Alert>,
    /// Active alerts: the raise, and its position in `history` (none once
    /// the history is full; the alert is still followed to its clear).
    active: BTreeMap<AlertKey, (Alert, Option<usize>)>,
    /// Alerts raised, by kind.
    pub alert_counts: BTreeMap<&'static str, u64>,
    /// Alerts cleared, by kind.
    pub cleared_counts: BTreeMap<&'static str, u64>,
    /// The same alert raised again while it held (two aggregators that
    /// briefly both believed they owned it).
    pub repeated_raises: u64,
    /// Alerts grouped.
    pub incidents: IncidentBook,
    /// Each ward's judged buckets, in order.
    pub wards: Vec<Vec<WardPoint>>,
    /// When each patient's NEWS2 first held at 5 or more: (node, admission) →
    /// sample time.
    pub news2_five: BTreeMap<(u32, u32), Timestamp>,
    /// When the nodes started (alerts carry absolute times).
    pub origin: Option<Timestamp>,
    /// The run is shutting down: what its own shutdown causes is not
    /// recorded (peers announcing the others' departure, say).
    pub closed: bool,
    /// Nodes the aggregators currently report down.
    pub nodes_down: BTreeSet<NodeId>,
    /// Every node ever reported down.
    pub nodes_ever_down: BTreeSet<NodeId>,
    /// Refused messages by kind.
    pub rejected: BTreeMap<&'static str, u64>,
    /// The first few messages of each kind, to show what was refused.
    pub rejected_examples: BTreeMap<&'static str, Vec<String>>,
    /// Copies of each refused message (by fingerprint) per aggregator.
    rejected_copies: HashMap<(u64, u16), u32>,
    /// Copies of each refused message counted so far.
    rejected_counted: HashMap<u64, u32>,
    /// Aggregators by id.
    pub aggregators: BTreeMap<u16, AggregatorView>,
    /// Ownership over time.
    pub ownership: OwnershipReport,
    /// Current primary of each partition, as last claimed.
    owner: BTreeMap<u16, u16>,
    /// Samples each aggregator had ingested at the last tick, for rates.
    ingested_at_last_tick: BTreeMap<u16, u64>,
}

impl Observer {
    /// An observer for `population`.
    pub fn new(population: Population, keep_intervals: bool) -> Self {
        let nodes = population.nodes() as usize;
        let wards = usize::from(population.wards);
        Self {
            delivered: vec![SeqSet::new(); nodes],
            delivered_total: 0,
            duplicates: 0,
            e2e_total: latency_histogram(),
            e2e_ward: (0..wards).map(|_| ward_histogram()).collect(),
            e2e_second: Vec::new(),
            latency_per_second: Vec::new(),
            e2e_window: VecDeque::new(),
            intervals: keep_intervals.then(Vec::new),
            alerts: VecDeque::new(),
            history: Vec::new(),
            active: BTreeMap::new(),
            alert_counts: BTreeMap::new(),
            cleared_counts: BTreeMap::new(),
            repeated_raises: 0,
            incidents: IncidentBook::new(IncidentConfig::default(), population),
            wards: vec![Vec::new(); wards],
            news2_five: BTreeMap::new(),
            origin: None,
            closed: false,
            nodes_down: BTreeSet::new(),
            nodes_ever_down: BTreeSet::new(),
            rejected: BTreeMap::new(),
            rejected_examples: BTreeMap::new(),
            rejected_copies: HashMap::new(),
            rejected_counted: HashMap::new(),
            aggregators: BTreeMap::new(),
            ownership: OwnershipReport::default(),
            owner: BTreeMap::new(),
            ingested_at_last_tick: BTreeMap::new(),
        }
    }

    /// One sample ingested by a primary.
    pub fn delivery(&mut self, d: &Delivery) {
        let Some(set) = self.delivered.get_mut(d.node.0 as usize) else {
            return;
        };
        if set.insert(d.seq) {
            self.delivered_total += 1;
            let latency = d.ingested_at.saturating_duration_since(d.sample_time);
            record_latency(&mut self.e2e_total, latency);
            self.e2e_second.push(latency.as_micros() as u64);
            if let Some(h) = self.e2e_ward.get_mut(usize::from(d.ward.0)) {
                record_latency(h, latency);
            }
        } else {
            self.duplicates += 1;
        }
    }

    /// An alert raised or cleared.
    pub fn alert(&mut self, alert: Alert) {
        if self.closed {
            return;
        }
        let key = alert.key();
        let now = alert.cleared_at.unwrap_or(alert.raised_at);
        match alert.cleared_at {
            None => {
                if self.active.contains_key(&key) {
                    self.repeated_raises += 1;
                    return;
                }
                if let AlertKind::NodeDown { .. } = alert.kind {
                    if let Some(node) = alert.node() {
                        self.nodes_down.insert(node);
                        self.nodes_ever_down.insert(node);
                    }
                }
                *self.alert_counts.entry(alert.kind.name()).or_default() += 1;
                let slot = (self.history.len() < ALERT_HISTORY).then(|| {
                    self.history.push(alert);
                    self.history.len() - 1
                });
                self.active.insert(key, (alert, slot));
            }
            Some(at) => {
                let Some((raised, i)) = self.active.remove(&key) else {
                    return; // nothing to clear (never raised, or already)
                };
                if let Some(i) = i {
                    self.history[i].cleared_at = Some(at);
                }
                if let AlertKind::NodeDown { .. } = alert.kind {
                    if let Some(node) = alert.node() {
                        self.nodes_down.remove(&node);
                    }
                }
                *self.cleared_counts.entry(alert.kind.name()).or_default() += 1;
                // The clear as one record: when it was raised, on what
                // evidence, and when it cleared (the clearing aggregator
                // may not be the one that raised it).
                let cleared = Alert {
                    cleared_at: Some(at),
                    ..raised
                };
                self.incidents.handle(&cleared, now);
                self.keep_recent(cleared);
                return;
            }
        }
        self.incidents.handle(&alert, now);
        self.keep_recent(alert);
    }

    fn keep_recent(&mut self, alert: Alert) {
        if self.alerts.len() == ALERTS_KEPT {
            self.alerts.pop_front();
        }
        self.alerts.push_back(alert);
    }

    /// Alerts holding now.
    pub fn active_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.active.values().map(|(a, _)| a)
    }

    /// A ward bucket judged by the ward's owner.
    pub fn ward_bucket(&mut self, b: WardBucket) {
        let origin = self.origin.unwrap_or(b.start);
        let at_s = b.start.as_micros() as f64 / 1e6 - origin.as_micros() as f64 / 1e6;
        if let Some(series) = self.wards.get_mut(usize::from(b.ward)) {
            // A new owner after a failover may judge a bucket the old one
            // already did; the first verdict stands.
            if series.last().is_some_and(|p| p.at_s >= at_s) {
                return;
            }
            series.push(WardPoint {
                at_s,
                counts: b.counts,
                complete: b.complete,
                steps: b.steps,
            });
        }
    }

    /// A patient's NEWS2 first held at 5 or more.
    pub fn news2_five(&mut self, f: News2Five) {
        self.news2_five
            .entry((f.node.0, f.admission))
            .or_insert(f.sampled_at);
    }

    /// A message `aggregator` refused. Every aggregator subscribed to a
    /// topic refuses the same bytes, so a message counts once: the count of
    /// a fingerprint is the most copies any one aggregator refused (an
    /// attacker who sends the same bytes twice is counted twice).
    pub fn rejected(&mut self, aggregator: u16, message: u64, kind: &'static str, text: String) {
        let copies = self
            .rejected_copies
            .entry((message, aggregator))
            .or_default();
        *copies += 1;
        let counted = self.rejected_counted.entry(message).or_default();
        if *copies <= *counted {
            return;
        }
        *counted = *copies;
        *self.rejected.entry(kind).or_default() += 1;
        let examples = self.rejected_examples.entry(kind).or_default();
        if examples.len() < 3 {
            examples.push(text);
        }
    }

    /// An aggregator's periodic status.
    pub fn aggregator_status(&mut self, s: AggregatorStatusUpdate) {
        let view = self.view(s.id.0);
        view.up = s.up;
        view.stats = s.stats;
        view.live_view = s.live_view;
        view.suspected = s.suspected.iter().map(|n| n.0).collect();
    }

    fn view(&mut self, id: u16) -> &mut AggregatorView {
        self.aggregators
            .entry(id)
            .or_insert_with(|| AggregatorView {
                id,
                ..AggregatorView::default()
            })
    }

    /// The partitions `id` owns changed, `at_s` seconds into the run.
    pub fn ownership(
        &mut self,
        id: AggregatorId,
        primary: &[PartitionId],
        standby: &[PartitionId],
        at_s: f64,
    ) {
        let view = self.view(id.0);
        view.primary = primary.iter().map(|p| p.0).collect();
        view.standby = standby.iter().map(|p| p.0).collect();
        for p in primary {
            let previous = self.owner.insert(p.0, id.0);
            if previous != Some(id.0) {
                self.ownership.moves.push(OwnershipMove {
                    at_s,
                    partition: p.0,
                    from: previous,
                    to: id.0,
                    cause: String::new(),
                });
            }
        }
    }

    /// An aggregator was killed (its task ended without a goodbye).
    /// An aggregator left the mesh on purpose (`remove_aggregator`).
    pub fn aggregator_removed(&mut self, id: AggregatorId) {
        if let Some(view) = self.aggregators.get_mut(&id.0) {
            view.up = false;
            self.ingested_at_last_tick.insert(id.0, 0);
            view.primary.clear();
            view.standby.clear();
        }
    }

    /// An aggregator was killed.
    pub fn aggregator_killed(&mut self, id: AggregatorId) {
        if let Some(view) = self.aggregators.get_mut(&id.0) {
            view.restarts += 1;
            view.up = false;
            self.ingested_at_last_tick.insert(id.0, 0);
            view.primary.clear();
            view.standby.clear();
        }
    }

    /// Closes the current second: rotates the latency window, records the
    /// interval histogram, computes ingest rates and ownership per second,
    /// and groups the alerts that have waited long enough.
    pub fn tick(&mut self, second_started_at_s: f64) {
        if let Some(origin) = self.origin {
            let now = origin + std::time::Duration::from_secs_f64(second_started_at_s + 1.0);
            self.incidents.handle_timeout(now);
        }
        if let Some(intervals) = &mut self.intervals {
            let mut h = latency_histogram();
            for &us in &self.e2e_second {
                record_latency(&mut h, std::time::Duration::from_micros(us));
            }
            intervals.push((second_started_at_s, h));
        }
        self.latency_per_second
            .push(crate::report::second_percentiles(&mut self.e2e_second));
        let mut spare = if self.e2e_window.len() == WINDOW_SECONDS {
            self.e2e_window.pop_front().unwrap_or_default()
        } else {
            Vec::new()
        };
        spare.clear();
        let second = std::mem::replace(&mut self.e2e_second, spare);
        self.e2e_window.push_back(second);
        let second = self
            .ownership
            .primary_per_second
            .values()
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        for view in self.aggregators.values_mut() {
            let last = self.ingested_at_last_tick.entry(view.id).or_default();
            view.ingest_rate = view.stats.ingested.saturating_sub(*last);
            *last = view.stats.ingested;
            let series = self
                .ownership
                .primary_per_second
                .entry(view.id)
                .or_default();
            // An aggregator seen for the first time gets zeros for the
            // seconds before it, so every series indexes the same second.
            series.resize(second, 0);
            series.push(if view.up {
                view.primary.len() as u16
            } else {
                0
            });
        }
    }

    /// Latency over the last [`WINDOW_SECONDS`].
    pub fn window_histogram(&self) -> Histogram<u64> {
        let mut h = latency_histogram();
        for &us in self.e2e_window.iter().flatten() {
            record_latency(&mut h, std::time::Duration::from_micros(us));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use vitalmesh_core::WardId;
    use vitalmesh_wire::Timestamp;

    use super::*;

    fn delivery(node: u32, seq: u64, latency_ms: u64) -> Delivery {
        Delivery {
            node: NodeId(node),
            ward: WardId((node / 10) as u16),
            seq,
            sample_time: Timestamp::from_secs(100),
            ingested_at: Timestamp::from_micros(100_000_000 + latency_ms * 1000),
        }
    }

    #[test]
    fn a_second_delivery_is_a_duplicate_and_latency_is_kept_per_ward() {
        let mut o = Observer::new(
            Population {
                wards: 2,
                nodes_per_ward: 10,
                nodes_per_gateway: 0,
            },
            false,
        );
        for d in [delivery(3, 0, 5), delivery(3, 0, 9), delivery(15, 0, 50)] {
            o.delivery(&d);
        }
        assert_eq!((o.delivered_total, o.duplicates), (2, 1));
        assert_eq!(o.e2e_ward[0].len(), 1);
        assert_eq!(o.e2e_ward[1].len(), 1);
        assert!(o.e2e_ward[1].max() >= 49_000);
    }

    #[test]
    fn ownership_moves_are_recorded_with_their_previous_owner() {
        let mut o = Observer::new(
            Population {
                wards: 1,
                nodes_per_ward: 1,
                nodes_per_gateway: 0,
            },
            false,
        );
        o.ownership(AggregatorId(0), &[PartitionId(0), PartitionId(1)], &[], 0.5);
        o.aggregator_status(AggregatorStatusUpdate {
            id: AggregatorId(0),
            up: true,
            stats: AggregatorStats::default(),
            live_view: vec![0],
            suspected: Vec::new(),
        });
        o.tick(0.0);
        o.ownership(AggregatorId(1), &[PartitionId(1)], &[], 3.0);
        o.ownership(AggregatorId(1), &[PartitionId(1)], &[], 3.5);
        let moves: Vec<(u16, Option<u16>, u16)> = o
            .ownership
            .moves
            .iter()
            .map(|m| (m.partition, m.from, m.to))
            .collect();
        assert_eq!(moves, [(0, None, 0), (1, None, 0), (1, Some(0), 1)]);
        assert_eq!(o.ownership.primary_per_second[&0], [2]);
    }

    #[test]
    fn a_clear_is_recorded_with_its_raise_and_closes_its_incident() {
        use vitalmesh_core::alert::{Alert, AlertKind};
        use vitalmesh_wire::alert::Scope;
        let mut o = Observer::new(
            Population {
                wards: 1,
                nodes_per_ward: 4,
                nodes_per_gateway: 0,
            },
            false,
        );
        let scope = Scope::Patient {
            node: NodeId(2),
            ward: 0,
        };
        let raised = Alert::raise(
            AlertKind::Deterioration,
            scope,
            Timestamp::from_secs(100),
            AggregatorId(0),
        );
        o.alert(raised);
        assert_eq!(o.active_alerts().count(), 1);
        // Cleared by another aggregator (a failover moved the partition).
        let mut clear = Alert::raise(
            AlertKind::Deterioration,
            scope,
            Timestamp::from_secs(900),
            AggregatorId(1),
        );
        clear.cleared_at = Some(Timestamp::from_secs(900));
        o.alert(clear);
        assert_eq!(o.active_alerts().count(), 0);
        let last = o.alerts.back().unwrap();
        assert_eq!(
            last.raised_at,
            Timestamp::from_secs(100),
            "the raise's time"
        );
        assert_eq!(last.raised_by, AggregatorId(0));
        assert_eq!(last.cleared_at, Some(Timestamp::from_secs(900)));
        assert_eq!(o.history[0].cleared_at, Some(Timestamp::from_secs(900)));
        assert_eq!(o.cleared_counts["deterioration"], 1);
        let incidents = o.incidents.incidents();
        assert_eq!(incidents.len(), 1);
        assert!(!incidents[0].is_open(), "{incidents:?}");
        // A second clear changes nothing.
        o.alert(clear);
        assert_eq!(o.cleared_counts["deterioration"], 1);
    }
}

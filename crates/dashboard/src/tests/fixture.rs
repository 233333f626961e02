//! Fixed snapshots for rendering and loop tests.

use std::time::Duration;

use vitalmesh_core::incident::{IncidentBook, IncidentConfig};
use vitalmesh_core::membership::DownReason;
use vitalmesh_core::news2::Risk;
use vitalmesh_core::{AggregatorStats, Alert, AlertKind, Population, Scope, SensorCheck};
use vitalmesh_sim::AggregatorView;
use vitalmesh_sim::NodeHealth;
use vitalmesh_sim::Percentiles;
use vitalmesh_sim::RatePoint;
use vitalmesh_sim::report::BrokerReport;
use vitalmesh_sim::{Phase, Snapshot, TimelineEntry, WardState};
use vitalmesh_wire::{AggregatorId, NodeId, Timestamp, VitalSign};

use crate::state::DashboardState;

const ORIGIN_US: u64 = 1_000_000_000;

fn at(seconds: u64) -> Timestamp {
    Timestamp::from_micros(ORIGIN_US + seconds * 1_000_000)
}

fn percentiles(p50: f64, p99: f64) -> Percentiles {
    Percentiles {
        count: 1000,
        min_ms: 0.4,
        mean_ms: p50,
        p50_ms: p50,
        p90_ms: p50 * 1.5,
        p99_ms: p99,
        p99_9_ms: p99 * 2.0,
        max_ms: p99 * 3.0,
    }
}

fn buckets(peak_ms: f64) -> Vec<(f64, u64)> {
    (0..12)
        .map(|i| {
            let upper = 0.8 * f64::from(1 << i);
            let n = if (upper - peak_ms).abs() < peak_ms {
                500
            } else {
                3
            };
            (upper, n)
        })
        .collect()
}

fn aggregator(id: u16, up: bool, primary: u16, ingest_rate: u64) -> AggregatorView {
    AggregatorView {
        id,
        up,
        stats: AggregatorStats {
            nodes_down: usize::from(id),
            ..AggregatorStats::default()
        },
        live_view: vec![0, 1],
        ingest_rate,
        restarts: u64::from(!up),
        primary: (0..primary).collect(),
        standby: (primary..primary + 3).collect(),
        suspected: Vec::new(),
    }
}

pub(crate) fn entry(at_s: f64, source: &str, description: &str) -> TimelineEntry {
    TimelineEntry {
        at_s,
        source: source.into(),
        action: "kill_aggregator".into(),
        description: description.into(),
        nodes: Vec::new(),
        wards: Vec::new(),
        aggregator: Some(1),
        aggregators: Vec::new(),
        onsets: Vec::new(),
        detail: serde_json::Value::Null,
        error: None,
    }
}

/// A run 65 s in: node 25 down, node 26 suspected, node 27 crashed, node 3
/// with a sensor fault the detectors have not seen, node 5's temperature
/// sensor held suspect, aggregator 1 killed from the dashboard, ward 1's
/// CUSUM alarming.
pub(crate) fn snapshot(wards: u16, nodes_per_ward: u32) -> Snapshot {
    let nodes = u32::from(wards) * nodes_per_ward;
    let mut node_health = vec![NodeHealth::Healthy; nodes as usize];
    node_health[27] = NodeHealth::Crashed;
    node_health[3] = NodeHealth::SensorFault;
    node_health[25] = NodeHealth::Offline;
    node_health[26] = NodeHealth::Offline;
    let alerts = vec![
        Alert::raise(
            AlertKind::AggregatorDown {
                reason: DownReason::LastWill,
            },
            Scope::Aggregator {
                aggregator: AggregatorId(1),
            },
            at(40),
            AggregatorId(0),
        ),
        Alert::raise(
            AlertKind::NodeDown { last_seen: at(41) },
            Scope::Node {
                node: NodeId(25),
                ward: 1,
            },
            at(50),
            AggregatorId(0),
        ),
        Alert::raise(
            AlertKind::PatientRisk {
                band: Risk::High,
                news2: 8,
            },
            Scope::Patient {
                node: NodeId(7),
                ward: 0,
            },
            at(60),
            AggregatorId(0),
        ),
        Alert::raise(
            AlertKind::CheckSensor {
                sign: VitalSign::Temperature,
                check: SensorCheck::RateOfChange,
            },
            Scope::Node {
                node: NodeId(5),
                ward: 0,
            },
            at(61),
            AggregatorId(0),
        ),
    ];
    let population = Population {
        wards,
        nodes_per_ward,
        nodes_per_gateway: 0,
    };
    let mut book = IncidentBook::new(IncidentConfig::default(), population);
    for a in &alerts {
        book.handle(a, a.raised_at);
    }
    book.handle_timeout(at(65));
    let rate = RatePoint {
        produced: 60,
        published: 61,
        delivered: 60,
        acked: 59,
    };
    Snapshot {
        scenario: "fixture-ward".into(),
        seed: 4242,
        mode: vitalmesh_sim::RunMode::Real,
        speed: None,
        broker_url: "mqtt://127.0.0.1:41883".into(),
        phase: Phase::Running,
        elapsed: Duration::from_secs(65),
        origin: at(0),
        planned: Duration::from_secs(600),
        nodes,
        started: nodes,
        connected: i64::from(nodes) - 3,
        produced: 12_345,
        published: 12_400,
        delivered: 12_300,
        duplicates: 17,
        acked: 12_290,
        buffered: 45,
        dropped_overflow: 0,
        lost_on_crash: 4,
        rejected: 2,
        rate,
        history: (0..65)
            .map(|i| RatePoint {
                produced: 60,
                published: 60 + i % 3,
                delivered: 60 - i % 2,
                acked: 59,
            })
            .collect(),
        latency_recent: percentiles(1.5, 3.4),
        latency_total: percentiles(1.7, 7.9),
        latency_recent_buckets: buckets(1.6),
        latency_total_buckets: buckets(6.4),
        latency_le: Vec::new(),
        latency_sum_s: 0.0,
        rejected_by_reason: Default::default(),
        alert_counts: Default::default(),
        publish_ack: percentiles(0.3, 1.2),
        node_health,
        nodes_down: vec![25],
        nodes_suspected: vec![26],
        population: Population {
            wards,
            nodes_per_ward,
            nodes_per_gateway: 0,
        },
        aggregators: vec![aggregator(0, true, 64, 60), aggregator(1, false, 0, 0)],
        alerts: alerts.clone(),
        incidents_open: book.open().count(),
        incidents_total: book.incidents().len(),
        incidents: vitalmesh_sim::snapshot::worst_first(book.incidents(), 60),
        detectors: vec!["c1".into(), "cusum".into()],
        wards: (0..wards)
            .map(|w| WardState {
                ward: w,
                at_s: 0.0,
                census: nodes_per_ward,
                febrile: u32::from(w == 1) * 6,
                new_febrile: u32::from(w == 1) * 4,
                level: Some(if w == 1 { 1.4 } else { 0.2 }),
                alarming: if w == 1 { vec![1] } else { Vec::new() },
            })
            .collect(),
        sensor_suspect: vec![5],
        timeline: vec![
            entry(12.0, "event[0]", "partition ward 2 for 30s"),
            entry(40.0, "dashboard", "kill aggregator 1"),
        ],
        broker: BrokerReport {
            kind: "embedded",
            url: "mqtt://127.0.0.1:41883".into(),
            process_restarts: 1,
            listener_restarts: 0,
            canary_failures: 0,
            auth_refused: 0,
            events: Vec::new(),
            peak_queue_s: None,
        },
        rss_bytes: 20 << 20,
        broker_rss_bytes: 16 << 20,
        whole_run: None,
    }
}

pub(crate) fn state(snapshot: Snapshot, color: bool) -> DashboardState {
    let mut s = DashboardState::new(color);
    s.apply(snapshot);
    s
}

//! Detection end to end, in virtual time: the same firmware, aggregators
//! and pure run as a real-time run, days of a (small) hospital in seconds.
//! Smaller copies of the experiment scenarios (`scenarios/ward-outbreak`,
//! `sensor-faults`, `deterioration`), checked against their ground truth.
//! Each test prints its seed; `VITALMESH_TEST_SEED=N` repeats it.

use vitalmesh_sim::report::Report;
use vitalmesh_sim::virtual_time::{VirtualMesh, VirtualOptions};

fn seed() -> u64 {
    let seed = std::env::var("VITALMESH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(21);
    eprintln!("seed {seed} (VITALMESH_TEST_SEED={seed} repeats it)");
    seed
}

fn run(text: &str) -> Report {
    let s = vitalmesh_scenario::parse("test.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let seed = seed();
    let mut mesh = VirtualMesh::new(&s, seed, &VirtualOptions::default());
    mesh.start()
        .unwrap_or_else(|e| panic!("start failed (seed {seed}): {e}"));
    let report = mesh.run_to_end().report;
    assert_eq!(report.ledger.total.unexplained, 0, "seed {seed}");
    report
}

/// Two days of six wards of thirty beds: admissions, background fevers, an
/// outbreak in ward 2 on the second day.
const OUTBREAK: &str = r#"
[scenario]
name = "small-outbreak"
duration = "2d"
drain = "5m"

[population]
wards = 6
nodes_per_ward = 30

[population.profile]
sample_interval = "1m"

[population.admissions]
occupancy = 0.85

[population.illness]
fever_per_patient_day = 0.04

[detection]
bucket = "2h"

[[detection.ward]]
name = "poisson"
method = "poisson_cusum"
series = "new_febrile"
baseline = 6
measure = "proportion"

[[detection.ward]]
method = "c2"
series = "new_febrile"

[[event]]
at = "1d6h"
action = "outbreak"
ward = 2
attack_rate = 0.5
onset_median = "6h"
onset_spread = 0.3

[slo]
min_outbreak_recall = 1
max_time_to_detect = "12h"
"#;

#[test]
fn an_outbreak_is_detected_in_its_ward_and_scored_against_the_truth() {
    let r = run(OUTBREAK);
    let truth = &r.ground_truth;
    assert_eq!(truth.outbreaks.len(), 1);
    let outbreak = &truth.outbreaks[0];
    assert_eq!(outbreak.ward, 2);
    assert!(
        outbreak.cases >= 8,
        "half of an occupied ward: {}",
        outbreak.cases
    );
    assert!(
        truth.admissions > 10 && truth.discharges > 10,
        "beds turn over"
    );
    assert!(
        truth
            .episodes
            .iter()
            .filter(|e| e.source == "background")
            .count()
            > 3,
        "background fevers"
    );
    // The census moves by the hour and by the ward; the detectors divide by it.
    let census: Vec<u32> = r.detection.wards[2]
        .buckets
        .iter()
        .filter_map(|b| b.counts.map(|c| c.census))
        .collect();
    assert!(census.len() >= 20, "{census:?}");
    assert!(census.iter().max() > census.iter().min(), "{census:?}");

    let scores = &r.detection.scores;
    let poisson = &scores.ward[0];
    assert_eq!(poisson.name, "poisson");
    assert_eq!((poisson.outbreaks, poisson.detected), (1, 1), "{poisson:?}");
    let ttd = poisson.ttd_median_s.unwrap();
    assert!(
        ttd < 12.0 * 3600.0,
        "detected {:.1} h after the first onset",
        ttd / 3600.0
    );
    assert!(r.slo.iter().all(|s| s.passed), "{:?}", r.slo);

    // The alert, as an incident on ward 2 with the detectors that agreed.
    let ward_incidents: Vec<_> = r
        .incidents
        .list
        .iter()
        .filter(|i| i.title == "ward 2: outbreak suspected")
        .collect();
    assert!(!ward_incidents.is_empty(), "{:?}", r.incidents.counts);
    assert!(
        ward_incidents[0]
            .members
            .iter()
            .all(|m| m.kind == "ward_anomaly")
    );
}

#[test]
fn broken_sensors_are_flagged_and_never_counted_as_fevers() {
    let r = run(r#"
[scenario]
name = "small-sensors"
duration = "14h"
drain = "5m"

[population]
wards = 2
nodes_per_ward = 20

[population.profile]
sample_interval = "1m"

[detection]
bucket = "1h"

[[event]]
at = "6h"
action = "sensor_fault"
mode = "stuck_at"
sign = "temperature"
value = 40.5
ward = 1
count = 4

[[event]]
at = "6h"
action = "sensor_fault"
mode = "spike"
sign = "heart_rate"
probability = 0.1
magnitude = 45.0
ward = 0
count = 3

[slo]
min_sensor_fault_recall = 1
"#);
    let s = &r.detection.scores.sensor;
    assert_eq!((s.faults, s.flagged), (7, 7), "{s:?}");
    assert_eq!(s.by_mode["stuck_at"], (4, 4));
    assert_eq!(s.false_alarms, 0, "{s:?}");
    // The four probes read 40.5 °C for eight hours; nobody in ward 1 is
    // counted febrile.
    for b in &r.detection.wards[1].buckets {
        if let Some(c) = b.counts {
            assert_eq!(c.febrile, 0, "bucket at {:.0} s: {c:?}", b.at_s);
        }
    }
    assert!(r.slo.iter().all(|s| s.passed), "{:?}", r.slo);
}

#[test]
fn deteriorations_are_flagged_before_news2_holds_at_five() {
    let r = run(r#"
[scenario]
name = "small-deterioration"
duration = "1d12h"
drain = "5m"

[population]
wards = 4
nodes_per_ward = 30

[population.profile]
sample_interval = "1m"

[population.illness]
deterioration_per_patient_day = 0.05
"#);
    let p = &r.detection.scores.patient;
    assert!(p.deteriorations >= 5, "{p:?}");
    let eligible = p.deteriorations - p.already_at_five;
    assert!(
        f64::from(p.before_news2_five) >= 0.7 * f64::from(eligible),
        "{p:?}"
    );
    assert!(p.false_alarms_per_patient_day < 0.02, "{p:?}");
}

#[test]
fn nodes_that_leave_are_left_and_a_crashed_ward_is_one_incident() {
    let r = run(r#"
[scenario]
name = "small-infrastructure"
duration = "3m"

[population]
wards = 3
nodes_per_ward = 20

[[load]]
at = "20s"
action = "leave"
ward = 0
count = 5

[[event]]
at = "40s"
action = "kill_nodes"
ward = 2

[[event]]
at = "90s"
action = "restart_nodes"
ward = 2
"#);
    assert_eq!(r.alerts.count("node_left"), 5, "{:?}", r.alerts.counts);
    let down: Vec<u32> = r.alerts.nodes_reported_down.clone();
    assert!(
        down.iter().all(|n| (40..60).contains(n)),
        "only ward 2 went down: {down:?}"
    );
    assert_eq!(down.len(), 20);
    assert!(r.alerts.false_node_down.is_empty());
    let unreachable: Vec<_> = r
        .incidents
        .list
        .iter()
        .filter(|i| i.title.starts_with("ward 2 unreachable"))
        .collect();
    assert_eq!(unreachable.len(), 1, "{:?}", r.incidents.list);
    assert_eq!(unreachable[0].members.len(), 20);
    assert!(unreachable[0].closed_at.is_some(), "the restart ended it");
    // The restart touched the twenty nodes that were down.
    let restart = r
        .timeline
        .iter()
        .find(|e| e.action == "restart_nodes")
        .unwrap();
    assert_eq!(restart.nodes, (40..60).collect::<Vec<u32>>());
    for kind in ["aggregator_down", "aggregator_left", "aggregator_isolated"] {
        assert_eq!(r.alerts.count(kind), 0, "{kind}");
    }
}

#[test]
fn a_short_run_has_no_detection_to_score_and_says_so() {
    let r = run(r#"
[scenario]
name = "small"
duration = "30s"

[population]
wards = 2
nodes_per_ward = 5

[slo]
min_outbreak_recall = 0.9
"#);
    let recall = r
        .slo
        .iter()
        .find(|s| s.name == "min_outbreak_recall")
        .unwrap();
    assert!(
        !recall.passed && recall.actual.is_nan(),
        "nothing to measure fails"
    );
    let json: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
    let slo = json["slo"].as_array().unwrap();
    assert!(slo[0]["actual"].is_null(), "NaN is null in JSON: {slo:?}");
    assert_eq!(json["schema"], "vitalmesh-report/3");
    assert!(json["detection"]["scores"]["any"]["recall"].is_null());
}

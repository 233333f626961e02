//! Every fault kind, scheduled from a scenario file against a real mesh
//! (real TCP, the embedded broker), and what it must do to the ledger.
//! Each test prints its seed; `VITALMESH_TEST_SEED=N` repeats it.

use std::path::PathBuf;
use std::time::Duration;

#[path = "support/ledger.rs"]
mod ledger;

use ledger::{assert_accounted, assert_no_node_reported_down};
use tokio::sync::watch;
use vitalmesh_mesh::report::Report;
use vitalmesh_mesh::{Mesh, MeshConfig, RunControl, run};
use vitalmesh_scenario::Action;
use vitalmesh_wire::{Body, FaultFlags, TopicScheme, WireTopic, decode};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn seed() -> u64 {
    std::env::var("VITALMESH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(77)
}

fn config(text: &str) -> MeshConfig {
    let scenario = vitalmesh_scenario::parse("test.toml", text).unwrap_or_else(|e| panic!("{e}"));
    MeshConfig::new(
        scenario,
        seed(),
        PathBuf::from(env!("CARGO_BIN_EXE_vitalmesh")),
    )
}

async fn run_scenario(text: &str) -> Report {
    let (_tx, stop) = watch::channel(false);
    let control = RunControl {
        stop,
        snapshots: None,
        commands: None,
    };
    run(config(text), control)
        .await
        .unwrap_or_else(|e| panic!("run failed (seed {}): {e}", seed()))
        .report
}

fn ward(r: &Report, w: u16) -> &vitalmesh_mesh::ledger::LedgerRow {
    &r.ledger
        .wards
        .iter()
        .find(|x| x.ward.0 == w)
        .expect("ward")
        .row
}

const HEAD: &str = r#"
[scenario]
name = "fault-test"
duration = "40s"
drain = "10s"

[population]
wards = 5
nodes_per_ward = 20
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_shorter_than_the_node_buffer_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let r = run_scenario(&format!(
        r#"{HEAD}
[population.profile]
buffer_bytes = 2048   # 64 samples

[[event]]
at = "5s"
action = "partition"
ward = 1
for = "15s"
"#
    ))
    .await;
    assert_accounted(&r);
    assert_eq!(r.ledger.total.dropped_overflow, 0, "{:?}", r.ledger.total);
    assert_eq!(r.ledger.total.lost_on_crash, 0);
    // The partitioned nodes went silent: reported down, and rightly so.
    let down: Vec<u32> = r.alerts.nodes_reported_down.clone();
    assert!(
        down.iter().all(|n| (20..40).contains(n)),
        "only ward 1 was cut off: {down:?}"
    );
    assert!(r.alerts.false_node_down.is_empty());
    // Their samples arrived late, not never: latency shows the partition.
    assert!(
        r.latency.end_to_end.max_ms > 10_000.0,
        "{:?}",
        r.latency.end_to_end
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_longer_than_the_buffer_loses_exactly_what_overflowed() {
    let _serial = SERIAL.lock().await;
    let r = run_scenario(&format!(
        r#"{HEAD}
[population.profile]
buffer_bytes = 320   # 10 samples

[[event]]
at = "5s"
action = "partition"
ward = 1
for = "30s"
"#
    ))
    .await;
    assert_accounted(&r);
    // Each of the 20 nodes sampled ~30 times into a 10-sample buffer. Up to
    // 16 publishes per node also wait in its connection's outgoing queue;
    // the broker drops the silent session after 1.5 × keep-alive (22.5 s),
    // so most of those die with it. What is counted as dropped is exactly
    // what a node evicted and no aggregator ever received: in ward 1 only.
    let w1 = ward(&r, 1);
    assert!(
        (60..=20 * 30).contains(&w1.dropped_overflow),
        "ward 1: {w1:?} (seed {})",
        r.seed
    );
    for w in [0, 2, 3, 4] {
        assert_eq!(
            ward(&r, w).dropped_overflow,
            0,
            "ward {w} was not partitioned"
        );
    }
    assert_eq!(r.ledger.total.dropped_overflow, w1.dropped_overflow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_kill_and_broker_restart_lose_nothing_the_nodes_held() {
    let _serial = SERIAL.lock().await;
    let r = run_scenario(&format!(
        r#"{HEAD}
[aggregators]
count = 3

[[event]]
at = "8s"
action = "kill_aggregator"
aggregator = 2

[[event]]
at = "16s"
action = "restart_broker"

[[event]]
at = "24s"
action = "restart_aggregator"
aggregator = 2
"#
    ))
    .await;
    assert_accounted(&r);
    assert_eq!(r.ledger.total.lost_on_crash, 0);
    assert_eq!(r.ledger.total.dropped_overflow, 0);
    assert_eq!(r.broker.process_restarts, 1, "{:?}", r.broker.events);
    assert!(
        r.broker
            .events
            .iter()
            .any(|e| e.kind == "restarted" && e.detail == "injected")
    );
    assert_eq!(
        r.alerts.count("aggregator_down"),
        1,
        "{:?}",
        r.alerts.counts
    );
    let actions: Vec<&str> = r.timeline.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["kill_aggregator", "restart_broker", "restart_aggregator"]
    );
    assert!(
        r.timeline.iter().all(|e| e.error.is_none()),
        "{:?}",
        r.timeline
    );
    let agg2 = r.aggregators.iter().find(|a| a.id == 2).unwrap();
    assert_eq!(agg2.restarts, 1);
    assert!(
        !agg2.primary.is_empty(),
        "aggregator 2 came back and owned partitions again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_lose_only_their_ram_and_come_back_with_new_connections() {
    let _serial = SERIAL.lock().await;
    let r = run_scenario(&format!(
        r#"{HEAD}
[[event]]
at = "5s"
action = "kill_nodes"
ward = 3
count = 4

[[event]]
at = "20s"
action = "restart_nodes"
ward = 3
"#
    ))
    .await;
    assert_accounted(&r);
    let killed: Vec<u32> = r.timeline[0].nodes.clone();
    assert_eq!(killed.len(), 4);
    assert_eq!(r.alerts.nodes_reported_down, killed, "seed {}", r.seed);
    assert!(r.alerts.count("node_up") >= 4, "{:?}", r.alerts.counts);
    // A crash loses what was in RAM, unacknowledged: at most a few samples each.
    assert!(ward(&r, 3).lost_on_crash <= 4 * 3, "{:?}", ward(&r, 3));
    assert_eq!(
        r.connections.attempts,
        100 + 4,
        "each restarted node opened a new connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_packet_loss_act_on_real_bytes() {
    let _serial = SERIAL.lock().await;
    let r = run_scenario(&format!(
        r#"{HEAD}
[[event]]
at = "3s"
action = "latency"
ward = 0
latency = "300ms"
jitter = "50ms"
for = "30s"

[[event]]
at = "3s"
action = "packet_loss"
ward = 4
share = 0.3
for = "30s"
"#
    ))
    .await;
    assert_accounted(&r);
    assert_eq!(r.ledger.total.dropped_overflow, 0);
    // 40 % of nodes see ≥ 250 ms one way (latency) or ~200 ms+ retransmission
    // delays (loss): well over 10 % of samples are slower than 200 ms.
    let e = r.latency.end_to_end;
    assert!(e.p90_ms >= 200.0, "{e:?} (seed {})", r.seed);
    assert!(e.p50_ms < 50.0, "the other wards are unaffected: {e:?}");
    // Publish → PUBACK crosses the slowed link twice.
    assert!(
        r.latency.publish_ack.p90_ms >= 400.0,
        "{:?}",
        r.latency.publish_ack
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_aggregator_blames_itself_and_its_partitions_fail_over() {
    let _serial = SERIAL.lock().await;
    let r = run_scenario(&format!(
        r#"{HEAD}
[aggregators]
count = 3

[[event]]
at = "5s"
action = "partition"
aggregator = 0
for = "15s"
"#
    ))
    .await;
    assert_accounted(&r);
    assert_eq!(r.ledger.total.lost_on_crash, 0);
    assert!(
        r.alerts.count("aggregator_isolated") >= 1,
        "{:?}",
        r.alerts.counts
    );
    assert!(
        r.alerts.count("aggregator_down") >= 1,
        "{:?}",
        r.alerts.counts
    );
    assert_no_node_reported_down(&r, "no node was at fault");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rogue_clients_crash_nothing_and_are_rejected_not_delivered() {
    let _serial = SERIAL.lock().await;
    let r = run_scenario(&format!(
        r#"{HEAD}
[aggregators]
count = 2

[[event]]
at = "3s"
action = "rogue"
kind = "garbage"
messages = 100
rate = 100

[[event]]
at = "5s"
action = "rogue"
kind = "oversized"
messages = 20
rate = 20

[[event]]
at = "8s"
action = "rogue"
kind = "impersonate"
messages = 100
rate = 100

[[event]]
at = "11s"
action = "rogue"
kind = "replay"
messages = 50
rate = 50

[[event]]
at = "16s"
action = "rogue"
kind = "connect_flood"
connections = 150
rate = 100
"#
    ))
    .await;
    assert_accounted(&r);
    assert_eq!(r.ledger.total.dropped_overflow, 0);
    assert_eq!(r.ledger.total.lost_on_crash, 0);
    // Each aggregator owning a partition sees each rogue message on it, so
    // rejections are at least the message count of the rejected kinds.
    let rejected: u64 = r.rejected.values().sum();
    assert!(
        rejected >= 100 + 18 + 100,
        "{:?} (seed {})",
        r.rejected,
        r.seed
    );
    for kind in ["bad_tag", "too_large"] {
        assert!(
            r.rejected.get(kind).copied().unwrap_or(0) > 0,
            "no '{kind}' rejections: {:?}",
            r.rejected
        );
    }
    assert!(
        r.rejected_examples["bad_tag"][0].contains("authentication tag mismatch"),
        "{:?}",
        r.rejected_examples
    );
    // Replays were recognised as duplicates: no sample delivered twice, none
    // invented.
    let dup: u64 = r.aggregators.iter().map(|a| a.stats.duplicates).sum();
    assert!(dup >= 40, "replays de-duplicated: {dup}");
    assert_eq!(r.ledger.total.duplicates, 0);
    assert_eq!(
        r.broker.process_restarts, 0,
        "the broker survived: {:?}",
        r.broker.events
    );
    assert!(
        r.alerts.false_node_down.is_empty(),
        "{:?}",
        r.alerts.false_node_down
    );
    let sent: Vec<(String, u64)> = r
        .rogue
        .iter()
        .map(|x| {
            (
                format!("{:?}", x.kind),
                x.messages_sent + x.connections_opened,
            )
        })
        .collect();
    assert_eq!(sent.len(), 5, "{sent:?}");
    assert!(
        r.rogue
            .iter()
            .all(|x| x.messages_sent + x.connections_opened > 0),
        "{sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_faults_change_the_bytes_nodes_send() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::start(config(&format!(
        r#"{HEAD}
[aggregators]
count = 1
"#
    )))
    .await
    .unwrap();
    let (_tx, mut stop) = watch::channel(false);
    mesh.start_nodes(&mut stop).await;
    let stuck = r#"action = "sensor_fault"
mode = "stuck_at"
sign = "temperature"
value = 41.3
nodes = [3, 4]"#;
    let dropout = r#"action = "sensor_fault"
mode = "dropout"
sign = "spo2"
probability = 1.0
nodes = [5]"#;
    let limits = mesh.config().limits();
    for text in [stuck, dropout] {
        let action: Action = vitalmesh_scenario::parse_injection(text, &limits).unwrap();
        mesh.apply(&action, "test", None).await;
    }
    // Read what the faulted nodes now publish, with an independent client.
    let addr = mesh.broker().addrs()[0];
    let mut options =
        rumqttc::MqttOptions::new("fault-observer", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
    client
        .subscribe("vm/v1/p/+/+", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    let (keys, topics) = (mesh.keyring().clone(), TopicScheme::default());
    let (mut temps, mut spo2_lost, mut others) = (Vec::new(), 0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline && (temps.len() < 6 || spo2_lost < 3) {
        mesh.advance().await;
        let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) =
            tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await
        else {
            continue;
        };
        let Some(WireTopic::Data { node, .. }) = topics.parse(&p.topic) else {
            continue;
        };
        let Ok(Body::Batch(b)) = decode(&p.payload, &keys) else {
            panic!("undecodable node traffic")
        };
        for s in b.samples {
            match node.0 {
                3 | 4 => temps.push(s.vitals.temp_decicelsius),
                5 => {
                    assert_eq!(s.vitals.spo2, None);
                    assert!(
                        s.faults.contains(FaultFlags::SPO2_LOST),
                        "the device flags a lost probe"
                    );
                    spo2_lost += 1;
                }
                _ => {
                    assert!(
                        s.vitals.temp_decicelsius.is_some_and(|t| t < 400),
                        "healthy sensors are unaffected"
                    );
                    others += 1;
                }
            }
        }
    }
    assert!(
        temps.len() >= 6 && temps.iter().all(|t| *t == Some(413)),
        "{temps:?}"
    );
    assert!(spo2_lost >= 3 && others > 50);
    let r = mesh.finish(false).await.report;
    assert_accounted(&r);
    assert_eq!(r.timeline.len(), 2);
    assert_eq!(
        r.timeline[0].nodes,
        [3, 4],
        "ground truth: which nodes carry which fault"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbreak_infects_its_attack_rate_of_one_ward_on_an_epidemic_curve() {
    let _serial = SERIAL.lock().await;
    let r = run_scenario(
        r#"
[scenario]
name = "outbreak-test"
duration = "8s"

[population]
wards = 4
nodes_per_ward = 25

[[event]]
at = "2s"
action = "outbreak"
ward = 2
attack_rate = 0.4
onset_median = "30m"
onset_spread = 0.5
"#,
    )
    .await;
    assert_accounted(&r);
    let e = &r.timeline[0];
    assert_eq!(e.action, "outbreak");
    assert_eq!(e.wards, [2]);
    assert_eq!(e.nodes.len(), 10, "40 % of 25");
    assert!(e.nodes.iter().all(|n| (50..75).contains(n)));
    let mut onsets: Vec<f64> = e.onsets.iter().map(|(_, t)| *t).collect();
    onsets.sort_by(f64::total_cmp);
    let median = onsets[5];
    assert!(
        (600.0..4000.0).contains(&median),
        "median onset {median} s after the start, around 30 min"
    );
    // The same seed picks the same patients and onsets.
    let again = run_scenario(
        r#"
[scenario]
name = "outbreak-test"
duration = "4s"

[population]
wards = 4
nodes_per_ward = 25

[[event]]
at = "2s"
action = "outbreak"
ward = 2
attack_rate = 0.4
onset_median = "30m"
onset_spread = 0.5
"#,
    )
    .await;
    assert_eq!(again.timeline[0].nodes, e.nodes);
}

/// One scenario, both drivers: real MQTT over TCP through rumqttd, and the
/// modelled broker in virtual time. They must agree on what must agree —
/// the ledger's identities, which nodes were reported down, the timeline,
/// and which partitions moved where when an aggregator died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_and_virtual_time_agree_on_what_must_agree() {
    let _serial = SERIAL.lock().await;
    let text = format!(
        r#"{HEAD}
[aggregators]
count = 3

[[event]]
at = "5s"
action = "kill_nodes"
ward = 3
count = 4

[[event]]
at = "10s"
action = "kill_aggregator"
aggregator = 1

[[event]]
at = "20s"
action = "restart_nodes"
ward = 3
"#
    );
    let real = run_scenario(&text).await;
    let scenario = vitalmesh_scenario::parse("test.toml", &text).unwrap();
    let mut mesh = vitalmesh_sim::virtual_time::VirtualMesh::new(
        &scenario,
        seed(),
        &vitalmesh_sim::virtual_time::VirtualOptions::default(),
    );
    mesh.start().unwrap();
    let virt = mesh.run_to_end().report;
    for r in [&real, &virt] {
        assert_accounted(r);
        assert_eq!(
            r.ledger.total.dropped_overflow, 0,
            "{:?} {:?}",
            r.mode, r.ledger.total
        );
        assert!(
            r.alerts.false_node_down.is_empty(),
            "{:?}: {:?}",
            r.mode,
            r.alerts
        );
    }
    assert_eq!(
        real.alerts.nodes_reported_down,
        virt.alerts.nodes_reported_down
    );
    assert_eq!(
        real.alerts.nodes_reported_down, real.timeline[0].nodes,
        "the killed nodes"
    );
    let what = |r: &Report| -> Vec<(String, Vec<u32>, Option<u16>)> {
        r.timeline
            .iter()
            .map(|e| (e.action.clone(), e.nodes.clone(), e.aggregator))
            .collect()
    };
    assert_eq!(what(&real), what(&virt));
    // Where aggregator 1's partitions went, and who owned what at first.
    let moved = |r: &Report| -> Vec<(u16, u16)> {
        let mut m: Vec<(u16, u16)> = r
            .ownership
            .moves
            .iter()
            .filter(|m| m.from == Some(1) && m.at_s >= 10.0)
            .map(|m| (m.partition, m.to))
            .collect();
        m.sort_unstable();
        m.dedup();
        m
    };
    assert!(!moved(&real).is_empty(), "{:?}", real.ownership.moves);
    assert_eq!(moved(&real), moved(&virt));
    let first = |r: &Report| -> Vec<(u16, u16)> {
        let mut m: Vec<(u16, u16)> = r
            .ownership
            .moves
            .iter()
            .filter(|m| m.from.is_none())
            .map(|m| (m.partition, m.to))
            .collect();
        m.sort_unstable();
        m
    };
    assert_eq!(first(&real), first(&virt));
    assert_eq!(
        real.alerts.count("aggregator_down"),
        virt.alerts.count("aggregator_down")
    );
    // Both produce about 100 nodes × 40 s, less what the four dead nodes missed.
    let (p, q) = (
        real.ledger.total.produced as f64,
        virt.ledger.total.produced as f64,
    );
    assert!((p - q).abs() / q < 0.05, "real {p} vs virtual {q}");
}

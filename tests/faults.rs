//! Faults over real MQTT: the end-to-end proof, over real TCP and the
//! embedded broker, of what `tests/virtual_time.rs` checks in milliseconds
//! for every fault kind — real link shaping on real bytes, a real broker
//! restart, rogue clients against rumqttd, the bytes faulted sensors put on
//! the wire, and one scenario run in both modes that must agree.
//! Each test prints its seed; `VITALMESH_TEST_SEED=N` repeats it.

use std::path::PathBuf;
use std::time::Duration;

#[path = "support/cases.rs"]
mod cases;
#[path = "support/ledger.rs"]
mod ledger;

use cases::HEAD;
use ledger::assert_accounted;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_longer_than_the_buffer_loses_exactly_what_overflowed() {
    let _serial = SERIAL.lock().await;
    let r = run_scenario(&cases::partition_longer_than_the_buffer()).await;
    cases::expect_partition_longer_than_the_buffer(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_kill_and_broker_restart_lose_nothing_the_nodes_held() {
    let _serial = SERIAL.lock().await;
    let r = run_scenario(&cases::aggregator_kill_and_broker_restart()).await;
    cases::expect_aggregator_kill_and_broker_restart(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_packet_loss_act_on_real_bytes() {
    let _serial = SERIAL.lock().await;
    let r = run_scenario(&cases::latency_and_packet_loss()).await;
    cases::expect_latency_and_packet_loss(&r);
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

[[event]]
at = "13s"
action = "rogue"
kind = "bad_credentials"
connections = 40
rate = 40

[[event]]
at = "4s"
action = "rogue"
kind = "forged_acks"
messages = 30
rate = 30

[[event]]
at = "6s"
action = "rogue"
kind = "qos1_flood"
messages = 100
rate = 100

[[event]]
at = "18s"
action = "rogue"
kind = "slow_subscriber"
connections = 3

[[event]]
at = "7s"
action = "rogue"
kind = "oversized_topics"
messages = 30
rate = 30

[[event]]
at = "9s"
action = "rogue"
kind = "half_packets"
connections = 10
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
        rejected >= 100 + 18 + 100 + 100,
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
        r.rejected_examples["bad_tag"][0].contains("does not authenticate"),
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
    assert_eq!(sent.len(), 11, "{sent:?}");
    // Topics thousands of bytes long reached the aggregators (all but
    // every tenth, over the broker's packet limit) and were refused, each
    // once, with its reason.
    let unknown_topic = r.rejected.get("unknown_topic").copied().unwrap_or(0);
    assert!(
        (15..30).contains(&unknown_topic),
        "30 oversized topics, {unknown_topic} refused as unknown_topic (seed {})",
        r.seed
    );
    // Forged acks reached nodes, which refused every entry: nothing they
    // held was let go (the ledger above balances with nothing dropped).
    assert!(
        r.ledger.total.forged_acks_refused > 0,
        "no node saw a forged ack: {:?} (seed {})",
        r.ledger.total,
        r.seed
    );
    // Each forged message counted once, not once per aggregator that read
    // it (two aggregators here: primary and standby of every partition).
    let forged = r
        .rogue
        .iter()
        .find(|x| x.kind == vitalmesh_scenario::RogueKind::Impersonate)
        .map_or(0, |x| x.messages_sent);
    let bad_tag = r.rejected.get("bad_tag").copied().unwrap_or(0);
    assert!(
        forged > 0 && bad_tag >= forged && bad_tag < 2 * forged,
        "{forged} forged, {bad_tag} refused as bad_tag (seed {})",
        r.seed
    );
    // Every wrong login refused and counted (the flood's logins-less
    // connects are refused too); honest nodes kept connecting (the
    // ledger and the false-down check above).
    assert!(
        r.broker.auth_refused >= 40,
        "refused logins: {} (seed {})",
        r.broker.auth_refused,
        r.seed
    );
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
    // The embedded broker admits only provisioned logins: an operator's.
    options.set_credentials("observer", mesh.keyring().mqtt_password("observer"));
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
        let Some(topic @ WireTopic::Data { node, .. }) = topics.parse(&p.topic) else {
            continue;
        };
        let Ok(Body::Batch(b)) = decode(&p.payload, &topic, &keys) else {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_lose_nothing_over_real_mqtt_under_a_crash_a_lossy_radio_and_a_broker_restart() {
    let _serial = SERIAL.lock().await;
    let r = run_scenario(&cases::gateways_under_faults()).await;
    cases::expect_gateways_under_faults(&r);
    // Ten gateways, ten MQTT connections carried every node's samples, many
    // frames to a relay; the crashed gateway lost what it held and the
    // restart made gateways relay what was unacknowledged again.
    let g = r.gateways.as_ref().expect("a gateways section");
    assert_eq!(g.gateways, 10);
    assert_eq!(g.totals.crashes, 1);
    assert!(g.totals.frames_lost_in_air > 0, "{g:?}");
    assert!(g.totals.acks_relayed > 0, "{g:?}");
    assert!(g.frames_per_relay > 1.0, "{g:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregators_join_and_leave_a_running_mesh_over_real_mqtt_without_a_stall() {
    let _serial = SERIAL.lock().await;
    // 2 aggregators, then 4 (one of weight 3), then 2 again, by hand-over.
    let r = run_scenario(&format!(
        r#"{HEAD}
[aggregators]
count = 2
max = 4
partitions = 256

[[event]]
at = "6s"
action = "add_aggregator"

[[event]]
at = "8s"
action = "add_aggregator"
weight = 3

[[event]]
at = "22s"
action = "remove_aggregator"
count = 2
"#
    ))
    .await;
    assert_accounted(&r);
    let t = &r.ledger.total;
    assert_eq!(t.delivered + t.still_buffered, t.produced, "{t:?}");
    let holding = |second: usize| {
        r.ownership
            .primary_per_second
            .values()
            .filter(|s| s.get(second).is_some_and(|&n| n > 0))
            .count()
    };
    assert_eq!(
        (holding(4), holding(15), holding(30)),
        (2, 4, 2),
        "{:?}",
        r.ownership.primary_per_second
    );
    // The weight-3 aggregator (slot 3) holds the most partitions (about
    // half of them: 115 of 256 by the rendezvous function).
    let at15 = |a: u16| r.ownership.primary_per_second[&a][15];
    assert!(
        (0..3).all(|a| at15(3) > at15(a)),
        "{:?}",
        r.ownership.primary_per_second
    );
    // No sample waited for a node's 5 s re-send.
    assert!(
        r.latency.end_to_end.max_ms < 4000.0,
        "{:?} (seed {})",
        r.latency.end_to_end,
        r.seed
    );
}

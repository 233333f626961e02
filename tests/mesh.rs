//! The mesh over real TCP and a real broker: what a user must be able to
//! rely on. Each test prints its seed; `VITALMESH_TEST_SEED=N` repeats it.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

#[path = "support/ledger.rs"]
mod ledger;

use ledger::{assert_no_node_reported_down, assert_nothing_lost};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use vitalmesh_mesh::broker::BrokerSpec;
use vitalmesh_mesh::broker::mosquitto::Mosquitto;
use vitalmesh_mesh::mqtt::codec::{ConnectOptions, write_connect};
use vitalmesh_mesh::{Mesh, MeshConfig};
use vitalmesh_scenario::{Action, NodeSelector, Pick};
use vitalmesh_wire::{Body, TopicScheme, WireTopic, decode};

/// Mesh tests measure timing-sensitive behaviour (failure detection) on a
/// two-core machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn seed() -> u64 {
    std::env::var("VITALMESH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_122)
}

fn config(nodes: u32, aggregators: u16) -> MeshConfig {
    // These tests drive the mesh by hand: the duration only bounds the schedule.
    let text = format!(
        "[scenario]\nname = \"mesh-test\"\nduration = \"1h\"\ndrain = \"8s\"\n\
         [population]\nwards = 5\nnodes_per_ward = {}\nconnect_rate = 500\n\
         [aggregators]\ncount = {aggregators}\n",
        nodes / 5
    );
    let scenario =
        vitalmesh_scenario::parse("mesh-test.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    MeshConfig::new(
        scenario,
        seed(),
        PathBuf::from(env!("CARGO_BIN_EXE_vitalmesh")),
    )
}

async fn start(config: MeshConfig) -> Mesh {
    let seed = config.seed;
    let mut mesh = Mesh::start(config)
        .await
        .unwrap_or_else(|e| panic!("mesh start failed (seed {seed}): {e}"));
    let (_tx, mut rx) = watch::channel(false);
    mesh.start_nodes(&mut rx).await;
    mesh
}

async fn run_for(mesh: &mut Mesh, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        mesh.advance().await;
        sleep(Duration::from_millis(100)).await;
    }
}

/// The ledger guarantees every run must give when nothing drops data on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_hundred_nodes_deliver_every_sample() {
    let _serial = SERIAL.lock().await;
    let mut mesh = start(config(300, 4)).await;
    run_for(&mut mesh, Duration::from_secs(10)).await;
    let r = mesh.finish(false).await.report;
    assert_nothing_lost(&r);
    let l = &r.ledger.total;
    assert_eq!(l.lost_on_crash, 0);
    // 300 nodes at 1 Hz for ~10 s, nearly all delivered before the end.
    assert!(l.produced >= 2700, "seed {}: {l:?}", r.seed);
    assert!(
        l.delivered as f64 >= 0.99 * l.produced as f64,
        "seed {}: {l:?}",
        r.seed
    );
    assert_eq!(r.connections.failures, 0, "seed {}", r.seed);
    assert!(r.latency.end_to_end.count == l.delivered);
    assert!(r.latency.end_to_end.p50_ms > 0.0 && r.latency.publish_ack.count > 0);
    assert_no_node_reported_down(&r, "no false node-down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_aggregators_partitions_move_to_their_standbys_and_nothing_is_lost() {
    let _serial = SERIAL.lock().await;
    let mut mesh = start(config(200, 4)).await;
    run_for(&mut mesh, Duration::from_secs(4)).await;
    let before = mesh.snapshot().aggregators;
    let victim = before
        .iter()
        .find(|a| a.id == 1)
        .expect("aggregator 1")
        .clone();
    assert!(!victim.primary.is_empty());
    let standby_of = |p: u16| before.iter().find(|a| a.standby.contains(&p)).map(|a| a.id);
    mesh.apply(&Action::KillAggregator { aggregator: 1 }, "test", None)
        .await;
    run_for(&mut mesh, Duration::from_secs(2)).await;
    let after = mesh.snapshot().aggregators;
    for &p in &victim.primary {
        let now_primary: Vec<u16> = after
            .iter()
            .filter(|a| a.up && a.primary.contains(&p))
            .map(|a| a.id)
            .collect();
        assert_eq!(
            now_primary,
            [standby_of(p).unwrap()],
            "partition {p} (seed {})",
            seed()
        );
    }
    run_for(&mut mesh, Duration::from_secs(6)).await;
    let r = mesh.finish(false).await.report;
    assert_nothing_lost(&r);
    assert_eq!(r.ledger.total.lost_on_crash, 0);
    assert_eq!(
        r.alerts.count("aggregator_down"),
        1,
        "{:?}",
        r.alerts.counts
    );
    assert_no_node_reported_down(&r, "a failover is not a node failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_are_reported_down_and_no_other_node_is() {
    let _serial = SERIAL.lock().await;
    let mut mesh = start(config(200, 3)).await;
    run_for(&mut mesh, Duration::from_secs(4)).await;
    let victims = vec![3, 50, 51, 120, 199];
    let kill = Action::KillNodes {
        target: NodeSelector {
            ward: None,
            nodes: Some(victims.clone()),
            pick: Pick::All,
        },
    };
    let entry = mesh.apply(&kill, "test", None).await;
    assert_eq!(
        entry.nodes, victims,
        "the timeline records exactly the victims"
    );
    let killed_at = Instant::now();
    // φ = 8 on 1 s samples detects in about 4.5 s.
    loop {
        run_for(&mut mesh, Duration::from_millis(200)).await;
        if mesh.snapshot().nodes_down.len() >= victims.len()
            || killed_at.elapsed() > Duration::from_secs(12)
        {
            break;
        }
    }
    let detected_after = killed_at.elapsed();
    run_for(&mut mesh, Duration::from_secs(3)).await;
    let r = mesh.finish(false).await.report;
    assert_eq!(r.alerts.nodes_reported_down, victims, "seed {}", r.seed);
    assert!(r.alerts.false_node_down.is_empty());
    assert!(
        detected_after >= Duration::from_secs(3) && detected_after <= Duration::from_secs(8),
        "detected after {detected_after:?} (seed {})",
        r.seed
    );
    assert_nothing_lost(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_mosquitto_the_same_ledger_guarantees_hold_through_a_failover() {
    let _serial = SERIAL.lock().await;
    let mosquitto = Mosquitto::start().unwrap_or_else(|e| panic!("{e}"));
    let mut c = config(200, 3);
    c.broker = BrokerSpec::parse_url(&mosquitto.url()).unwrap();
    let mut mesh = start(c).await;
    run_for(&mut mesh, Duration::from_secs(4)).await;
    mesh.apply(&Action::KillAggregator { aggregator: 0 }, "test", None)
        .await;
    run_for(&mut mesh, Duration::from_secs(6)).await;
    let r = mesh.finish(false).await.report;
    assert_eq!(r.broker.kind, "external");
    assert_nothing_lost(&r);
    assert_eq!(r.ledger.total.lost_on_crash, 0);
    assert_eq!(
        r.alerts.count("aggregator_down"),
        1,
        "{:?}",
        r.alerts.counts
    );
    assert!(
        r.ledger.total.delivered as f64 >= 0.98 * r.ledger.total.produced as f64,
        "{:?}",
        r.ledger.total
    );
}

/// Sends a CONNECT with `client_id` (and a login) and returns whether a
/// CONNACK came back.
fn raw_connect(addr: SocketAddr, client_id: &str, login: Option<(&str, &str)>) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = Vec::new();
    let mut options = ConnectOptions::new(client_id, 10);
    if let Some((user, password)) = login {
        options.username = Some(user.into());
        options.password = Some(password.as_bytes().to_vec());
    }
    write_connect(&mut out, &options);
    if s.write_all(&out).is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(s.read(&mut buf), Ok(4) if buf[0] == 0x20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reconnect_no_longer_poisons_the_listener() {
    let _serial = SERIAL.lock().await;
    let mut mesh = start(config(100, 2)).await;
    run_for(&mut mesh, Duration::from_secs(2)).await;
    let addr = mesh.broker().addrs()[0];
    // Upstream rumqttd 0.20 refuses an id with '/', then panics on the
    // retry with the same id while holding the listener's will-handler
    // lock, and every later connection on that listener fails (rumqtt#991,
    // rumqtt.md §6). The fork in vendor/rumqttd fixes it: the same sequence
    // leaves the listener accepting, and nothing needs restarting.
    let password = mesh.keyring().mqtt_password("observer");
    let sequence = tokio::task::spawn_blocking(move || {
        let login = Some(("observer", password.as_str()));
        let first = raw_connect(addr, "rogue/id", login);
        let second = raw_connect(addr, "rogue/id", login);
        let fresh: Vec<bool> = (0..5)
            .map(|i| raw_connect(addr, &format!("fresh-client-{i}"), login))
            .collect();
        (first, second, fresh)
    });
    let (first, second, fresh) = sequence.await.unwrap();
    assert!(!first && !second, "the bad id is still refused");
    assert!(
        fresh.iter().all(|ok| *ok),
        "the listener still accepts after the refused reconnect: {fresh:?}"
    );
    run_for(&mut mesh, Duration::from_secs(3)).await;
    let r = mesh.finish(false).await.report;
    assert_eq!(
        (
            r.broker.listener_restarts,
            r.broker.process_restarts,
            r.broker.canary_failures
        ),
        (0, 0, 0),
        "nothing broke, so nothing was healed: {:?}",
        r.broker.events
    );
    assert_nothing_lost(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_admits_only_provisioned_logins_and_counts_the_rest() {
    let _serial = SERIAL.lock().await;
    let mut mesh = start(config(100, 2)).await;
    run_for(&mut mesh, Duration::from_secs(2)).await;
    let addr = mesh.broker().addrs()[0];
    let keys = mesh.keyring().clone();
    let attempts = tokio::task::spawn_blocking(move || {
        let node3 = keys.mqtt_password("3");
        let node4 = keys.mqtt_password("4");
        let observer = keys.mqtt_password("observer");
        [
            // No login at all.
            raw_connect(addr, "anonymous", None),
            // A node's client id with a wrong password, three times over
            // (a refused id used again: the listener-poisoning path).
            raw_connect(addr, "vm-n3", Some(("3", "wrong"))),
            raw_connect(addr, "vm-n3", Some(("3", "wrong"))),
            raw_connect(addr, "vm-n3", Some(("3", "wrong"))),
            // Node 4's valid login under node 3's client id.
            raw_connect(addr, "vm-n3.7", Some(("4", &node4))),
            // The right login under the right id; an operator's.
            raw_connect(addr, "vm-n3.9", Some(("3", &node3))),
            raw_connect(addr, "an-operator", Some(("observer", &observer))),
        ]
    })
    .await
    .unwrap();
    assert_eq!(
        attempts,
        [false, false, false, false, false, true, true],
        "who got in"
    );
    run_for(&mut mesh, Duration::from_secs(3)).await;
    let r = mesh.finish(false).await.report;
    assert_eq!(r.broker.auth_refused, 5, "each refused login counted once");
    assert_eq!(
        (r.broker.listener_restarts, r.broker.process_restarts),
        (0, 0)
    );
    assert_nothing_lost(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_mosquitto_with_passwords_and_acls_a_device_is_confined_to_its_own_topic() {
    let _serial = SERIAL.lock().await;
    let mut c = config(100, 2);
    let keys = vitalmesh_sim::setup::keyring(&c.scenario, c.seed);
    let mosquitto = Mosquitto::start_secured(&keys, 100, 0, 2, &["observer"], None)
        .unwrap_or_else(|e| panic!("{e}"));
    c.broker = BrokerSpec::parse_url(&mosquitto.url()).unwrap();
    c.broker_auth = true;
    let mut mesh = start(c).await;
    // An operator watching every node topic.
    let mut options = rumqttc::MqttOptions::new("watcher", "127.0.0.1", mosquitto.port());
    options.set_credentials("observer", keys.mqtt_password("observer"));
    let (watcher, mut watched) = rumqttc::AsyncClient::new(options, 64);
    watcher
        .subscribe("vm/v1/p/+/+", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    // Node 3's stolen credentials: its own topic, then node 4's.
    let topics = TopicScheme::default();
    let part = vitalmesh_wire::Partitioning::new(c_partitions(&mesh)).unwrap();
    let (own, other) = (
        topics.data(
            part.partition_of(vitalmesh_wire::NodeId(3)),
            vitalmesh_wire::NodeId(3),
        ),
        topics.data(
            part.partition_of(vitalmesh_wire::NodeId(4)),
            vitalmesh_wire::NodeId(4),
        ),
    );
    let mut options = rumqttc::MqttOptions::new("vm-n3.99", "127.0.0.1", mosquitto.port());
    options.set_credentials("3", keys.mqtt_password("3"));
    let (thief, mut thief_loop) = rumqttc::AsyncClient::new(options, 16);
    tokio::spawn(async move { while thief_loop.poll().await.is_ok() {} });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut sent = false;
    while Instant::now() < deadline {
        mesh.advance().await;
        if !sent && Instant::now() + Duration::from_secs(6) < deadline {
            thief
                .publish(
                    &other,
                    rumqttc::QoS::AtMostOnce,
                    false,
                    b"not-mine".to_vec(),
                )
                .await
                .unwrap();
            thief
                .publish(&own, rumqttc::QoS::AtMostOnce, false, b"mine".to_vec())
                .await
                .unwrap();
            sent = true;
        }
        if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) =
            tokio::time::timeout(Duration::from_millis(100), watched.poll()).await
        {
            if p.payload.as_ref() == b"mine" || p.payload.as_ref() == b"not-mine" {
                seen.push((p.topic.clone(), p.payload.to_vec()));
            }
        }
    }
    assert_eq!(
        seen,
        vec![(own.clone(), b"mine".to_vec())],
        "mosquitto's ACL let node 3 publish on its own topic only"
    );
    let r = mesh.finish(false).await.report;
    assert_eq!(r.broker.kind, "external");
    assert_nothing_lost(&r);
    // Its own topic, but not its key: the aggregators refused "mine".
    assert!(r.rejected.values().sum::<u64>() >= 1, "{:?}", r.rejected);
}

fn c_partitions(mesh: &Mesh) -> u16 {
    mesh.config().scenario.partitions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_broker_is_restarted_on_the_same_ports_and_nodes_resend_what_it_lost() {
    let _serial = SERIAL.lock().await;
    let mut mesh = start(config(150, 2)).await;
    run_for(&mut mesh, Duration::from_secs(3)).await;
    let pid = mesh.broker().child_pid().expect("embedded broker");
    let addrs = mesh.broker().addrs().to_vec();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let mut restarted = false;
    for _ in 0..100 {
        run_for(&mut mesh, Duration::from_millis(100)).await;
        if mesh.broker().report().process_restarts == 1 {
            restarted = true;
            break;
        }
    }
    assert!(restarted, "{:?}", mesh.broker().report());
    assert_ne!(mesh.broker().child_pid(), Some(pid));
    assert_eq!(mesh.broker().addrs(), addrs, "same ports");
    run_for(&mut mesh, Duration::from_secs(12)).await;
    let r = mesh.finish(false).await.report;
    assert!(
        r.broker.events.iter().any(|e| e.kind == "crashed"),
        "{:?}",
        r.broker.events
    );
    // Each event is one line a person reads; backtraces go to a log file.
    for e in &r.broker.events {
        assert!(
            !e.detail.contains('\n') && e.detail.len() < 600,
            "{}: {}",
            e.kind,
            e.detail
        );
    }
    assert_nothing_lost(&r);
    assert_eq!(r.ledger.total.lost_on_crash, 0);
    assert!(
        r.connections.disconnects >= 150,
        "every node lost its connection: {:?}",
        r.connections
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_traffic_reads_correctly_through_an_independent_mqtt_client_and_only_with_the_keys() {
    let _serial = SERIAL.lock().await;
    let mut mesh = start(config(50, 1)).await;
    let addr = mesh.broker().addrs()[0];
    let mut options =
        rumqttc::MqttOptions::new("independent-observer", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(10));
    // The embedded broker admits only provisioned logins: an operator's.
    options.set_credentials("observer", mesh.keyring().mqtt_password("observer"));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
    client
        .subscribe("vm/v1/p/+/+", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    let topics = TopicScheme::default();
    let keys = mesh.keyring().clone();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen < 100 && Instant::now() < deadline {
        mesh.advance().await;
        let event = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) = event {
            let Some(topic @ WireTopic::Data { node, partition }) = topics.parse(&p.topic) else {
                panic!("unexpected topic {}", p.topic)
            };
            let Ok(Body::Batch(batch)) = decode(&p.payload, &topic, &keys) else {
                panic!("payload on {} does not decode", p.topic)
            };
            // What a subscriber without the provisioning secret sees: no
            // run of 8 plaintext bytes of the body, and nothing that opens.
            let plain = postcard::to_allocvec(&Body::Batch(batch.clone())).unwrap();
            let sealed = &p.payload[vitalmesh_wire::envelope::HEADER_BYTES..];
            if plain.len() >= 12 {
                for window in plain[2..].windows(8) {
                    assert!(
                        !sealed.windows(8).any(|w| w == window),
                        "plaintext visible on {}",
                        p.topic
                    );
                }
            }
            let outsider = vitalmesh_wire::Keyring::new([0x55; 32], 1 << 20);
            assert!(decode(&p.payload, &topic, &outsider).is_err());
            assert_eq!(batch.node, node);
            assert!(partition.0 < mesh.config().scenario.partitions);
            seen += 1;
        }
    }
    assert_eq!(seen, 100, "saw {seen} node publishes");
    let r = mesh.finish(false).await.report;
    assert_nothing_lost(&r);
}

/// Alerts are for anyone watching: an independent MQTT client on
/// `vm/v1/alert/+` of an external broker (mosquitto) sees the node-down
/// alerts of killed nodes, signed by the aggregator whose topic they came
/// on, and their clears when the nodes come back; the run's own shutdown
/// raises no aggregator-down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_published_on_the_alerts_topic_for_anyone_watching() {
    let _serial = SERIAL.lock().await;
    let mosquitto = Mosquitto::start().unwrap_or_else(|e| panic!("{e}"));
    let mut c = config(100, 2);
    c.broker = BrokerSpec::parse_url(&mosquitto.url()).unwrap();
    let mut mesh = start(c).await;
    let mut options = rumqttc::MqttOptions::new("alert-watcher", "127.0.0.1", mosquitto.port());
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
    client
        .subscribe("vm/v1/alert/+", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let keys = mesh.keyring().clone();
    let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
    let watcher = tokio::spawn(async move {
        let topics = TopicScheme::default();
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let Some(topic @ WireTopic::Alert { aggregator }) = topics.parse(&p.topic)
                    else {
                        panic!("unexpected topic {}", p.topic)
                    };
                    let Ok(Body::Alert(notice)) = decode(&p.payload, &topic, &keys) else {
                        panic!("payload on {} does not decode as an alert", p.topic)
                    };
                    assert_eq!(notice.aggregator, aggregator, "signed by its publisher");
                    if tx.send(notice).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => sleep(Duration::from_millis(100)).await,
            }
        }
    });
    run_for(&mut mesh, Duration::from_secs(4)).await;
    let victims = vec![10, 11, 12];
    let target = NodeSelector {
        ward: None,
        nodes: Some(victims.clone()),
        pick: Pick::All,
    };
    mesh.apply(
        &Action::KillNodes {
            target: target.clone(),
        },
        "test",
        None,
    )
    .await;
    run_for(&mut mesh, Duration::from_secs(8)).await;
    mesh.apply(&Action::RestartNodes { target }, "test", None)
        .await;
    run_for(&mut mesh, Duration::from_secs(6)).await;
    let r = mesh.finish(false).await.report;
    sleep(Duration::from_millis(500)).await;
    watcher.abort();
    let mut seen = Vec::new();
    while let Ok(n) = notices.try_recv() {
        seen.push(n);
    }
    let node_of = |n: &vitalmesh_wire::AlertNotice| match n.scope {
        vitalmesh_wire::Scope::Node { node, .. } => Some(node.0),
        _ => None,
    };
    let mut raised: Vec<u32> = seen
        .iter()
        .filter(|n| n.kind == "node_down" && n.cleared_at.is_none())
        .filter_map(node_of)
        .collect();
    raised.sort_unstable();
    assert_eq!(raised, victims, "seed {}: {seen:#?}", r.seed);
    let mut cleared: Vec<u32> = seen
        .iter()
        .filter(|n| n.kind == "node_down" && n.cleared_at.is_some())
        .filter_map(node_of)
        .collect();
    cleared.sort_unstable();
    assert_eq!(cleared, victims, "back up: seed {}", r.seed);
    assert!(
        seen.iter()
            .filter(|n| n.kind == "node_down" && n.cleared_at.is_none())
            .all(|n| n
                .statistic
                .is_some_and(|phi| phi >= n.threshold.unwrap_or(f64::MAX))),
        "each node-down carries its φ and threshold: {seen:#?}"
    );
    assert!(
        !seen
            .iter()
            .any(|n| n.kind == "aggregator_down" || n.kind == "aggregator_isolated"),
        "the run's own shutdown is no failure: {seen:#?}"
    );
    assert_eq!(r.alerts.nodes_reported_down, victims);
    assert_nothing_lost(&r);
}

/// Detection over real MQTT, through the embedded broker: temperature
/// probes stuck at an impossible 45 °C in ward 1 raise "check sensor"
/// alerts, and the ward series every aggregator assembles from the others'
/// reports (sent over the broker on `vm/v1/ward`) count the whole census
/// and not one of those readings as a fever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_probe_is_flagged_and_kept_out_of_the_ward_counts_over_mqtt() {
    let _serial = SERIAL.lock().await;
    let text = "[scenario]\nname = \"mesh-detection\"\nduration = \"1h\"\ndrain = \"8s\"\n\
         [population]\nwards = 3\nnodes_per_ward = 20\nconnect_rate = 500\n\
         [aggregators]\ncount = 2\n\
         [detection]\nbucket = \"4s\"\ngrace = \"1s\"\nassemble = \"1s\"\n\
         [[detection.ward]]\nname = \"c1\"\nmethod = \"c1\"\nseries = \"febrile\"\n";
    let scenario =
        vitalmesh_scenario::parse("mesh-detection.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let config = MeshConfig::new(
        scenario,
        seed(),
        PathBuf::from(env!("CARGO_BIN_EXE_vitalmesh")),
    );
    let mut mesh = start(config).await;
    run_for(&mut mesh, Duration::from_secs(4)).await;
    let broken = vec![20, 21, 22, 23, 24];
    mesh.apply(
        &Action::SensorFault {
            target: NodeSelector {
                ward: None,
                nodes: Some(broken.clone()),
                pick: Pick::All,
            },
            sign: Some(vitalmesh_firmware::VitalSign::Temperature),
            mode: vitalmesh_firmware::FaultMode::StuckAt { value: Some(45.0) },
            for_: None,
        },
        "test",
        None,
    )
    .await;
    let fault_at_s = 4.0;
    run_for(&mut mesh, Duration::from_secs(14)).await;
    let r = mesh.finish(false).await.report;
    let seed = r.seed;

    let mut flagged: Vec<u32> = r
        .alerts
        .recent
        .iter()
        .filter(|a| a.kind.name() == "check_sensor")
        .filter_map(|a| a.scope.node().map(|n| n.0))
        .collect();
    flagged.sort_unstable();
    flagged.dedup();
    assert_eq!(flagged, broken, "seed {seed}: {:#?}", r.alerts.recent);

    let ward1 = r
        .detection
        .wards
        .iter()
        .find(|w| w.ward == 1)
        .unwrap_or_else(|| panic!("seed {seed}: no series for ward 1"));
    // Buckets wholly after the fault (and after the first reading that
    // could be judged) — at least two of them in 14 s of 4-second buckets.
    let after: Vec<_> = ward1
        .buckets
        .iter()
        .filter(|b| b.at_s >= fault_at_s + 1.0)
        .filter_map(|b| b.counts)
        .collect();
    assert!(after.len() >= 2, "seed {seed}: {:#?}", ward1.buckets);
    for c in &after {
        assert_eq!(c.census, 20, "every bed monitored: seed {seed}: {c:?}");
        assert_eq!(
            c.febrile, 0,
            "45 °C probes are no fever: seed {seed}: {c:?}"
        );
    }
    assert_nothing_lost(&r);
}

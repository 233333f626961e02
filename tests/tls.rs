//! TLS between every client and the broker, against the embedded broker
//! and against mosquitto: the ledger's guarantees hold, plain MQTT and
//! untrusted certificates are refused, and a client that never finishes
//! its handshake cannot stall a listener. Each test prints its seed;
//! `VITALMESH_TEST_SEED=N` repeats it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

#[path = "support/ledger.rs"]
mod ledger;

use ledger::assert_nothing_lost;
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use vitalmesh_mesh::broker::BrokerSpec;
use vitalmesh_mesh::broker::mosquitto::Mosquitto;
use vitalmesh_mesh::mqtt::codec::{ConnectOptions, write_connect};
use vitalmesh_mesh::mqtt::{Connection, RunCertificates, TlsClient};
use vitalmesh_mesh::{Mesh, MeshConfig};
use vitalmesh_scenario::Action;

/// These tests time connections on a two-core machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn seed() -> u64 {
    std::env::var("VITALMESH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_202)
}

/// A mesh whose scenario asks for TLS (`[broker] tls = true`).
fn tls_config(nodes: u32, aggregators: u16) -> MeshConfig {
    let text = format!(
        "[scenario]\nname = \"tls-test\"\nduration = \"1h\"\ndrain = \"8s\"\n\
         [population]\nwards = 5\nnodes_per_ward = {}\nconnect_rate = 500\n\
         [aggregators]\ncount = {aggregators}\n[broker]\ntls = true\n",
        nodes / 5
    );
    let scenario =
        vitalmesh_scenario::parse("tls-test.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(scenario.broker_tls, "[broker] tls = true is read");
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

/// A plain-TCP MQTT CONNECT: whether a CONNACK came back.
fn plain_connect(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut out = Vec::new();
    write_connect(&mut out, &ConnectOptions::new("plain-client", 10));
    if s.write_all(&out).is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(s.read(&mut buf), Ok(4) if buf[0] == 0x20)
}

/// A TLS connection with `client`, logged in as the operator `observer`.
async fn tls_connect(
    mesh: &Mesh,
    client: &TlsClient,
    id: &str,
) -> Result<Connection, vitalmesh_mesh::MeshError> {
    let mut options = ConnectOptions::new(id, 10);
    options.username = Some("observer".into());
    options.password = Some(mesh.keyring().mqtt_password("observer").into_bytes());
    Connection::connect(
        mesh.broker().addrs()[0],
        Some(client),
        &options,
        Duration::from_secs(3),
        4096,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_embedded_broker_keeps_the_ledger_and_refuses_plain_and_untrusted_clients() {
    let _serial = SERIAL.lock().await;
    let mut mesh = start(tls_config(200, 3)).await;
    run_for(&mut mesh, Duration::from_secs(3)).await;
    let addr = mesh.broker().addrs()[0];
    let client = mesh.broker().tls_client().expect("a TLS run").clone();

    // The run's own authority lets an operator in.
    let c = tls_connect(&mesh, &client, "operator")
        .await
        .unwrap_or_else(|e| panic!("a trusted TLS client connects: {e}"));
    assert!(c.is_tls());
    c.close_gracefully(Duration::from_millis(200)).await;

    // Plain MQTT on the TLS port gets no CONNACK.
    let plain = tokio::task::spawn_blocking(move || plain_connect(addr))
        .await
        .unwrap();
    assert!(!plain, "plain MQTT on a TLS listener was answered");

    // A client trusting another authority refuses the broker's certificate.
    let stranger = RunCertificates::generate().unwrap();
    let Err(err) = tls_connect(&mesh, &stranger.client().unwrap(), "stranger").await else {
        panic!("a certificate from an untrusted authority was accepted");
    };
    assert!(
        err.to_string().contains("certificate"),
        "the refusal names the certificate: {err}"
    );

    // Failover over TLS: the guarantees are the same.
    mesh.apply(&Action::KillAggregator { aggregator: 0 }, "test", None)
        .await;
    run_for(&mut mesh, Duration::from_secs(5)).await;
    let r = mesh.finish(false).await.report;
    assert!(
        r.broker.url.starts_with("mqtts://"),
        "the report says TLS: {}",
        r.broker.url
    );
    assert_eq!(r.connections.failures, 0, "seed {}", r.seed);
    assert_eq!(
        (r.broker.listener_restarts, r.broker.process_restarts),
        (0, 0),
        "{:?}",
        r.broker.events
    );
    assert_eq!(
        r.alerts.count("aggregator_down"),
        1,
        "{:?}",
        r.alerts.counts
    );
    assert_nothing_lost(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_handshake_does_not_stall_the_listener() {
    let _serial = SERIAL.lock().await;
    let mut mesh = start(tls_config(50, 2)).await;
    run_for(&mut mesh, Duration::from_secs(2)).await;
    let addr = mesh.broker().addrs()[0];
    let client = mesh.broker().tls_client().expect("a TLS run").clone();
    // Upstream rumqttd ran each TLS handshake inline in the accept loop,
    // without a timeout: one connection that sent nothing (or half a
    // ClientHello) stopped the listener accepting anyone else. The fork
    // runs handshakes in the connections' own tasks.
    let mut silent = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(addr).unwrap();
        if i % 2 == 1 {
            // A TLS record header promising 512 bytes, and 3 of them.
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
                .unwrap();
        }
        silent.push(s);
    }
    for i in 0..5 {
        let started = Instant::now();
        let c = tls_connect(&mesh, &client, &format!("after-the-silent-{i}"))
            .await
            .unwrap_or_else(|e| panic!("connection {i} behind 20 stalled handshakes: {e}"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "connection {i} waited {:?} behind stalled handshakes",
            started.elapsed()
        );
        c.close_gracefully(Duration::from_millis(200)).await;
    }
    run_for(&mut mesh, Duration::from_secs(2)).await;
    drop(silent);
    let r = mesh.finish(false).await.report;
    assert_eq!(r.broker.canary_failures, 0, "{:?}", r.broker.events);
    assert_nothing_lost(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_mosquitto_over_tls_with_logins_the_ledger_holds_through_a_failover() {
    let _serial = SERIAL.lock().await;
    let mut c = tls_config(100, 2);
    let certs = RunCertificates::generate().unwrap();
    let keys = vitalmesh_sim::setup::keyring(&c.scenario, c.seed);
    let mosquitto = Mosquitto::start_secured(&keys, 100, 0, 2, &["observer"], Some(&certs))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(mosquitto.url().starts_with("mqtts://"));
    c.broker = BrokerSpec::parse_url(&mosquitto.url()).unwrap();
    c.broker_auth = true;
    c.tls_ca = Some(certs.ca_path());
    let addr: SocketAddr = ([127, 0, 0, 1], mosquitto.port()).into();
    let mut mesh = start(c).await;
    run_for(&mut mesh, Duration::from_secs(3)).await;
    let plain = tokio::task::spawn_blocking(move || plain_connect(addr))
        .await
        .unwrap();
    assert!(!plain, "mosquitto's TLS listener answered plain MQTT");
    mesh.apply(&Action::KillAggregator { aggregator: 0 }, "test", None)
        .await;
    run_for(&mut mesh, Duration::from_secs(5)).await;
    let r = mesh.finish(false).await.report;
    assert_eq!(r.broker.kind, "external");
    assert!(r.broker.url.starts_with("mqtts://"), "{}", r.broker.url);
    assert_eq!(
        r.alerts.count("aggregator_down"),
        1,
        "{:?}",
        r.alerts.counts
    );
    assert_nothing_lost(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_tls_broker_without_its_authority_is_refused_before_the_run() {
    let _serial = SERIAL.lock().await;
    let mut c = tls_config(10, 1);
    c.broker = BrokerSpec::parse_url("mqtts://127.0.0.1:8883").unwrap();
    let Err(err) = Mesh::start(c).await else {
        panic!("an mqtts:// broker without --tls-ca was accepted");
    };
    let err = err.to_string();
    assert!(
        err.contains("'mqtts://127.0.0.1:8883'") && err.contains("--tls-ca"),
        "{err}"
    );
}

/// `vitalmesh watch` follows sharded runs on a TLS broker with its
/// authority, and refuses one without.
#[test]
fn watch_reaches_a_tls_broker_with_its_authority_and_not_without() {
    let certs = RunCertificates::generate().unwrap();
    let mosquitto = Mosquitto::start_tls(&certs).unwrap_or_else(|e| panic!("{e}"));
    let url = mosquitto.url();
    let watch = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vitalmesh"))
            .args(["watch", "--broker", &url, "--every", "1", "--for", "2s"])
            .args(extra)
            .output()
            .unwrap()
    };
    let ca = certs.ca_path();
    let out = watch(&["--tls-ca", ca.to_str().unwrap()]);
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("no shard heard from yet"), "{said}");
    let out = watch(&[]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("expected --tls-ca FILE (PEM)"), "{said}");
}

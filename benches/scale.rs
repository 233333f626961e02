//! The scale benchmark: N nodes at 1 Hz through the embedded broker, then the
//! same load through mosquitto, in one run, against the targets of the mesh
//! runtime issue.
//!
//! ```text
//! cargo bench --bench scale                         # 10,000 nodes, 60 s each
//! cargo bench --bench scale -- --nodes 2000 --duration 30
//! cargo bench --bench scale -- --only embedded
//! ```
//!
//! Results are printed and written to `target/scale-bench.json`.

use std::path::PathBuf;
use std::time::Duration;

#[path = "../tests/support/mosquitto.rs"]
mod mosquitto;

use mosquitto::Mosquitto;
use tokio::sync::watch;
use vitalmesh_mesh::broker::BrokerSpec;
use vitalmesh_mesh::report::Report;
use vitalmesh_mesh::{MeshConfig, RunControl};

struct Args {
    nodes: u32,
    duration_s: u64,
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        nodes: 10_000,
        duration_s: 60,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--nodes" => a.nodes = it.next().and_then(|v| v.parse().ok()).expect("--nodes N"),
            "--duration" => {
                a.duration_s = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--duration SECONDS")
            }
            "--only" => a.only = it.next(),
            _ => {} // `cargo bench` passes --bench
        }
    }
    a
}

fn run(broker: BrokerSpec, a: &Args) -> Report {
    let flags = vitalmesh_scenario::MeshFlags {
        nodes: Some(a.nodes),
        wards: Some(10),
        ..Default::default()
    };
    let mut scenario =
        vitalmesh_scenario::from_flags(&flags, Some(Duration::from_secs(a.duration_s)))
            .unwrap_or_else(|e| panic!("{e}"));
    scenario.name = "scale-bench".into();
    let mut c = MeshConfig::new(
        scenario,
        2026,
        PathBuf::from(env!("CARGO_BIN_EXE_vitalmesh")),
    );
    c.broker = broker;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_stop_tx, stop) = watch::channel(false);
        vitalmesh_mesh::run(
            c,
            RunControl {
                stop,
                snapshots: None,
                commands: None,
            },
        )
        .await
        .expect("run")
        .report
    })
}

fn line(name: &str, r: &Report, broker_rss: u64) -> serde_json::Value {
    let memory = r
        .memory
        .as_ref()
        .expect("a real-time report measures memory");
    let l = &r.ledger.total;
    let e = &r.latency.end_to_end;
    let per_node = (memory.process_peak_bytes + broker_rss) / u64::from(r.config.nodes);
    println!(
        "{name:<10} {:>8} {:>10.1} {:>8} {:>8} {:>11} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>9.1} {:>9.1}",
        r.config.nodes,
        r.connections.all_connected_after_s.unwrap_or(f64::NAN),
        r.connections.failures,
        l.unexplained,
        l.delivered,
        e.p50_ms,
        e.p99_ms,
        e.p99_9_ms,
        e.max_ms,
        memory.process_peak_bytes as f64 / u64::from(r.config.nodes) as f64 / 1024.0,
        per_node as f64 / 1024.0,
    );
    serde_json::json!({
        "broker": name,
        "nodes": r.config.nodes,
        "duration_s": r.ran_for_s,
        "all_connected_after_s": r.connections.all_connected_after_s,
        "connect_failures": r.connections.failures,
        "disconnects": r.connections.disconnects,
        "ledger": l,
        "end_to_end_ms": e,
        "publish_ack_ms": r.latency.publish_ack,
        "simulator_bytes_per_node": memory.process_peak_bytes / u64::from(r.config.nodes),
        "broker_peak_bytes": broker_rss,
        "total_bytes_per_node": per_node,
    })
}

fn main() {
    let a = args();
    let mut results = Vec::new();
    println!(
        "scale benchmark: {} nodes at 1 Hz, {} s per broker",
        a.nodes, a.duration_s
    );
    println!(
        "{:<10} {:>8} {:>10} {:>8} {:>8} {:>11} {:>7} {:>7} {:>7} {:>8} {:>9} {:>9}",
        "broker",
        "nodes",
        "connect s",
        "errors",
        "unexpl.",
        "delivered",
        "p50",
        "p99",
        "p99.9",
        "max ms",
        "sim KB/n",
        "all KB/n"
    );
    if a.only.as_deref().is_none_or(|o| o == "embedded") {
        let spec = BrokerSpec::Embedded {
            program: PathBuf::from(env!("CARGO_BIN_EXE_vitalmesh")),
            listeners: 0,
            max_connections: 0,
            ports: None,
        };
        let r = run(spec, &a);
        let broker = r.memory.as_ref().map_or(0, |m| m.broker_peak_bytes);
        results.push(line("embedded", &r, broker));
    }
    if a.only.as_deref().is_none_or(|o| o == "mosquitto") {
        // mosquitto inherits the raised descriptor limit.
        vitalmesh_mesh::limits::raise_fd_limit();
        match Mosquitto::try_start() {
            Ok(m) => {
                let r = run(BrokerSpec::parse_url(&m.url()).unwrap(), &a);
                let broker = vitalmesh_mesh::procfs::peak_rss_bytes(&m.pid().to_string());
                results.push(line("mosquitto", &r, broker));
            }
            Err(e) => println!("mosquitto       not run: {e}"),
        }
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/scale-bench.json");
    let _ = std::fs::write(&out, serde_json::to_vec_pretty(&results).unwrap());
    println!("results: {}", out.display());
}

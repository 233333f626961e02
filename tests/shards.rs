//! Sharded runs end to end: shard processes against a real broker
//! (mosquitto, and a real 3-node nats-server cluster one node of which is
//! killed mid-run), merged into one report whose ledger is exact.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/ledger.rs"]
mod ledger;

fn vitalmesh() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vitalmesh"))
}

/// `vitalmesh merge PARTS --report REPORT`.
fn merge<P: AsRef<std::ffi::OsStr>>(parts: impl IntoIterator<Item = P>, report: &Path) -> Output {
    vitalmesh()
        .arg("merge")
        .args(parts)
        .arg("--report")
        .arg(report)
        .output()
        .expect("the binary runs")
}

/// The mesh both end-to-end tests run: `nodes` in 3 wards, 3 aggregators,
/// 6 partitions, for `duration`, with `seed`.
fn mesh_args(nodes: u32, duration: &str, seed: u64) -> Vec<String> {
    [
        "run",
        "--nodes",
        &nodes.to_string(),
        "--wards",
        "3",
        "--aggregators",
        "3",
        "--partitions",
        "6",
        "--duration",
        duration,
        "--seed",
        &seed.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("the file was written"))
        .expect("the file is JSON")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vm-shards-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// What every merged report must hold: every sample accounted for, in
/// total and per ward, every node in exactly one part, latency counted
/// once per delivered sample.
fn assert_merged_exactly(report: &serde_json::Value, nodes: u64, seed: u64) {
    ledger::assert_matches_schema(report);
    let total = &report["ledger"]["total"];
    let n = |k: &str| total[k].as_u64().unwrap_or(0);
    assert_eq!(n("unexplained"), 0, "seed {seed}: {total}");
    assert_eq!(
        n("produced"),
        n("delivered") + n("still_buffered") + n("dropped_overflow") + n("lost_on_crash"),
        "seed {seed}: {total}"
    );
    assert_eq!(report["config"]["nodes"], nodes);
    let in_parts: u64 = report["shards"]["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p["nodes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        in_parts, nodes,
        "seed {seed}: each node in exactly one part"
    );
    let wards: u64 = report["ledger"]["wards"]
        .as_array()
        .expect("wards")
        .iter()
        .map(|w| w["produced"].as_u64().unwrap())
        .sum();
    assert_eq!(wards, n("produced"), "seed {seed}: wards add up");
    // One latency per delivered sample, from the added histograms; a
    // sample two shards' aggregators ingested counts in both, and the
    // report says how many (they are duplicates in the ledger).
    let twice = report["shards"]["latency_counted_twice"].as_u64().unwrap();
    assert_eq!(
        report["latency"]["end_to_end"]["count"].as_u64(),
        Some(n("delivered") + twice),
        "seed {seed}"
    );
    assert!(twice <= n("duplicates"), "seed {seed}: {twice} > {total}");
}

#[test]
fn local_shards_against_mosquitto_merge_into_one_exact_report_and_a_missing_part_is_incomplete() {
    let dir = scratch("local");
    let report = dir.join("run.json");
    let seed = 31u64;
    let out = vitalmesh()
        .args(mesh_args(60, "10s", seed))
        .args(["--local-shards", "3", "--progress-every", "2", "--report"])
        .arg(&report)
        .output()
        .expect("the binary runs");
    let said = text(&out);
    assert!(out.status.success(), "seed {seed}: {said}");
    assert!(
        said.contains("as 3 local shards against mqtt://127.0.0.1:"),
        "{said}"
    );
    assert!(said.contains("Merged 3 of 3 shards: 60 nodes"), "{said}");
    // The parent follows its shards, and each shard the whole run.
    assert!(said.contains("whole run (3/3 shards heard)"), "{said}");
    let merged = read_json(&report);
    assert_merged_exactly(&merged, 60, seed);
    assert_eq!(merged["shards"]["complete"], true);
    assert_eq!(
        merged["shards"]["latency_counted_twice"], 0,
        "seed {seed}: no partition moved between shards"
    );
    let produced = merged["ledger"]["total"]["produced"].as_u64().unwrap();
    // 60 nodes at one sample a second for 10 s, started together.
    assert!(
        (540..=660).contains(&produced),
        "seed {seed}: produced {produced}"
    );
    let delivered = merged["ledger"]["total"]["delivered"].as_u64().unwrap();
    assert!(
        delivered * 100 >= produced * 95,
        "seed {seed}: {delivered} of {produced} delivered"
    );
    // Every shard ran one aggregator; they agreed on ownership through the
    // broker, so every partition had a primary.
    let ownership: Vec<u64> = merged["aggregators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ownership, vec![0, 1, 2]);
    let bound = merged["shards"]["latency_clock_error_bound_ms"]
        .as_f64()
        .expect("every shard heard the others both ways");
    assert!(
        (0.0..50.0).contains(&bound),
        "one machine's clocks: {bound} ms"
    );

    // The same parts in another order merge to the same ledger.
    let parts = dir.join("run.parts");
    let again = dir.join("again.json");
    let out = merge(
        ["2", "0", "1"].map(|i| parts.join(format!("part-{i}.json"))),
        &again,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read_json(&again)["ledger"], merged["ledger"]);

    // Without shard 1's part the run is incomplete, not unexplained.
    let partial = dir.join("partial.json");
    let out = merge(
        ["0", "2"].map(|i| parts.join(format!("part-{i}.json"))),
        &partial,
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(6), "{said}");
    assert!(said.contains("incomplete: shards 1 left no part"), "{said}");
    let partial = read_json(&partial);
    ledger::assert_matches_schema(&partial);
    assert_eq!(partial["shards"]["complete"], false);
    assert_eq!(partial["shards"]["missing"], serde_json::json!([1]));

    // The same part twice is refused, naming both files.
    let part0 = parts.join("part-0.json");
    let out = merge([&part0, &part0], &dir.join("twice.json"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is shard 0/3 again"), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 3-node nats-server cluster started by the repository's script.
struct NatsCluster {
    dir: PathBuf,
    pids: Vec<u32>,
    urls: String,
}

impl NatsCluster {
    fn start(dir: &Path) -> Self {
        // Nine ports from a base no one holds now.
        let base = (20_000u16..40_000)
            .step_by(97)
            .find(|b| {
                [1, 2, 3, 11, 12, 13, 21, 22, 23]
                    .iter()
                    .all(|k| std::net::TcpListener::bind(("127.0.0.1", b + k)).is_ok())
            })
            .expect("free ports");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/nats-cluster.sh");
        let out = Command::new(&script)
            .arg(dir)
            .arg(base.to_string())
            .output()
            .expect("the cluster script runs");
        assert!(out.status.success(), "{}", text(&out));
        let urls = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let pids = std::fs::read_to_string(dir.join("pids"))
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        Self {
            dir: dir.to_path_buf(),
            pids,
            urls,
        }
    }

    fn kill_node(&self, k: usize) {
        let _ = Command::new("kill")
            .args(["-9", &self.pids[k].to_string()])
            .status();
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for pid in &self.pids {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = std::fs::remove_dir_all(self.dir.join("n1/store"));
    }
}

#[test]
fn three_shards_on_a_three_node_nats_cluster_keep_an_exact_ledger_when_a_broker_node_dies() {
    let dir = scratch("nats");
    let cluster = NatsCluster::start(&dir.join("cluster"));
    let seed = 47u64;
    // A watcher on the node that survives follows the whole run.
    let first = cluster.urls.split(',').next().unwrap().to_string();
    let watcher = vitalmesh()
        .args(["watch", "--broker", &first, "--every", "1", "--for", "150s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the watcher starts");
    let shards: Vec<(Child, PathBuf)> = (0..3)
        .map(|i| {
            let part = dir.join(format!("part-{i}.json"));
            let log = std::fs::File::create(dir.join(format!("shard-{i}.log"))).unwrap();
            let child = vitalmesh()
                .args(mesh_args(90, "40s", seed))
                .args([
                    "--headless",
                    "--shard",
                    &format!("{i}/3"),
                    "--broker",
                    &cluster.urls,
                    "--report",
                ])
                .arg(&part)
                .arg("--control")
                .arg(dir.join(format!("control-{i}.sock")))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .expect("a shard starts");
            (child, part)
        })
        .collect();
    // Kill the third broker node about 12 s into the schedule: its clients
    // (a third of each shard's) reconnect to the others and re-send.
    let started = Instant::now();
    let mut killed = false;
    let mut statuses = vec![None; shards.len()];
    let mut shards = shards;
    while statuses.iter().any(Option::is_none) {
        if !killed && started.elapsed() > Duration::from_secs(16) {
            cluster.kill_node(2);
            killed = true;
        }
        for (k, (child, _)) in shards.iter_mut().enumerate() {
            if statuses[k].is_none() {
                statuses[k] = child.try_wait().unwrap();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "seed {seed}: shards still running after 240 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs: Vec<String> = (0..3)
        .map(|i| std::fs::read_to_string(dir.join(format!("shard-{i}.log"))).unwrap_or_default())
        .collect();
    for (k, s) in statuses.iter().enumerate() {
        assert!(s.unwrap().success(), "seed {seed}: shard {k}: {}", logs[k]);
    }
    // The watcher saw every shard and ended when all were done.
    let watched = watcher.wait_with_output().unwrap();
    let seen = text(&watched);
    assert!(watched.status.success(), "{seen}");
    assert!(seen.contains("3/3 shards (running) | 90 nodes"), "{seen}");
    assert!(seen.contains("3/3 shards (done)"), "{seen}");
    let report = dir.join("run.json");
    let out = merge(shards.iter().map(|(_, p)| p), &report);
    let said = text(&out);
    assert!(out.status.success(), "seed {seed}: {said}");
    let merged = read_json(&report);
    assert_merged_exactly(&merged, 90, seed);
    let total = &merged["ledger"]["total"];
    let (produced, delivered) = (
        total["produced"].as_u64().unwrap(),
        total["delivered"].as_u64().unwrap(),
    );
    eprintln!("seed {seed}: merged ledger after a broker node died: {total}");
    // What did not arrive is in the nodes' buffers (re-sent, or counted
    // there), never unexplained. How much arrives after the kill is the
    // cluster's business: on nats-server 2.9 here, creating JetStream
    // consumers for the moved aggregators' data subscriptions can time out
    // for the rest of the run, so 59-100 % arrives over 40 s
    // (BENCHMARKS.md). What came before the kill (about 30 %) must.
    assert!(
        delivered * 100 >= produced * 25,
        "seed {seed}: {delivered} of {produced} delivered: {total}"
    );
    let moved: u64 = merged["connections"]["disconnects"].as_u64().unwrap();
    assert!(moved > 0, "seed {seed}: the killed node's clients dropped");
    let failed_probes = merged["broker"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "canary_failed")
        .count();
    assert!(failed_probes > 0, "seed {seed}: the dead node was noticed");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shard_flags_and_part_files_are_refused_clearly_before_anything_runs() {
    let out = vitalmesh()
        .args(["run", "--shard", "3/3", "--broker", "mqtt://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("'3/3' is not a shard; expected 'I/N' with 0 <= I < N"),
        "{}",
        text(&out)
    );
    // A shard needs a broker the shards share.
    let out = vitalmesh()
        .args(["run", "--shard", "0/3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--broker"), "{}", text(&out));
    let out = vitalmesh()
        .args(["run", "--local-shards", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("--local-shards: '0' is not a shard count; expected 1 to 64"),
        "{}",
        text(&out)
    );
    // A report is not a part, and says so.
    let dir = scratch("flags");
    let report = dir.join("report.json");
    std::fs::write(&report, br#"{"schema": "vitalmesh-report/3"}"#).unwrap();
    let out = merge([&report], &dir.join("out.json"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is a run report, not a shard's part"),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

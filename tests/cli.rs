//! The command-line surface, run as a user would run it.

use std::process::Command;

#[path = "support/ledger.rs"]
mod ledger;

fn vitalmesh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vitalmesh"))
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn version_and_help_are_available() {
    let v = vitalmesh(&["--version"]);
    assert!(v.status.success());
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("vitalmesh {}", env!("CARGO_PKG_VERSION"))
    );
    let h = vitalmesh(&["--help"]);
    assert!(h.status.success());
    let text = String::from_utf8_lossy(&h.stdout);
    assert!(text.contains("Usage: vitalmesh"), "{text}");
    assert!(text.contains("vitals"), "{text}");
}

#[test]
fn vitals_prints_scored_samples_reproducibly() {
    let args = [
        "vitals",
        "--nodes",
        "3",
        "--duration",
        "10h",
        "--interval",
        "1h",
        "--seed",
        "5",
        "--deteriorate",
        "2",
    ];
    let a = vitalmesh(&args);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let text = String::from_utf8_lossy(&a.stdout).into_owned();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 30, "3 nodes × 10 hourly samples");
    // The deteriorating patient reaches high risk; the others stay low.
    let last_risk = |node: &str| rows.iter().rev().find(|r| r[1] == node).unwrap()[12];
    assert_eq!(last_risk("2"), "high");
    assert_eq!(vitalmesh(&args).stdout, a.stdout, "same seed, same output");
}

#[test]
fn a_drawn_seed_is_printed_so_the_run_can_be_repeated() {
    let a = vitalmesh(&["vitals", "--nodes", "1", "--duration", "1h"]);
    let err = String::from_utf8_lossy(&a.stderr);
    let seed = err
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no seed printed: {err}"));
    let b = vitalmesh(&[
        "vitals",
        "--nodes",
        "1",
        "--duration",
        "1h",
        "--seed",
        &seed.to_string(),
    ]);
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn bad_flags_say_what_was_expected() {
    let out = vitalmesh(&["vitals", "--duration", "5x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'x' in '5x' is not a unit"), "{err}");
    let out = vitalmesh(&["vitals", "--nodes", "2", "--fever", "9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node '9' does not exist"), "{err}");
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vitalmesh-cli-{}-{name}", std::process::id()))
}

/// JSON the binary wrote.
fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("the file was written"))
        .expect("the file is JSON")
}

/// A run report the binary wrote, checked against the shipped JSON Schema.
fn read_report(path: &std::path::Path) -> serde_json::Value {
    let report = read_json(path);
    ledger::assert_matches_schema(&report);
    report
}

#[test]
fn run_prints_the_ledger_and_writes_the_report_and_latency_log() {
    let report = temp_path("report.json");
    let hlog = temp_path("latency.hlog");
    let out = vitalmesh(&[
        "run",
        "--headless",
        "--nodes",
        "60",
        "--wards",
        "3",
        "--aggregators",
        "2",
        "--duration",
        "6s",
        "--seed",
        "11",
        "--report",
        report.to_str().unwrap(),
        "--hdr-log",
        hlog.to_str().unwrap(),
        "--progress-every",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("every sample accounted for"), "{stdout}");
    assert!(
        stdout.contains(&format!("Report       {}", report.display())),
        "says where the report went: {stdout}"
    );
    assert!(
        stderr.contains("connected | produced"),
        "progress lines while running: {stderr}"
    );
    let r = read_report(&report);
    assert_eq!(r["schema"], "vitalmesh-report/3");
    assert_eq!(r["mode"], "real");
    assert!(
        r["cpu"]["process_s"].as_f64().is_some(),
        "a real-time report measures the host"
    );
    assert_eq!(r["latency"]["per_ward"].as_array().unwrap().len(), 3);
    assert!(!r["ownership"]["moves"].as_array().unwrap().is_empty());
    assert_eq!(r["seed"], 11);
    assert_eq!(r["ledger"]["total"]["unexplained"], 0);
    let produced = r["ledger"]["total"]["produced"].as_u64().unwrap();
    assert!(produced >= 300, "60 nodes × ~6 s: {produced}");
    let wards = r["ledger"]["wards"].as_array().unwrap();
    assert_eq!(wards.len(), 3);
    let by_ward: u64 = wards.iter().map(|w| w["produced"].as_u64().unwrap()).sum();
    assert_eq!(by_ward, produced);
    assert!(r["latency"]["end_to_end"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(r["throughput"]["delivered"].as_array().unwrap().len() >= 5);
    assert_eq!(r["interrupted"], false);
    let log = std::fs::read_to_string(&hlog).expect("the latency log was written");
    assert!(log.contains("#[StartTime:"), "{log}");
    assert!(
        log.lines().filter(|l| l.starts_with("Tag=e2e,")).count() >= 5,
        "one interval per second"
    );
    let _ = std::fs::remove_file(&report);
    let _ = std::fs::remove_file(&hlog);
}

#[test]
fn ctrl_c_ends_the_run_cleanly_and_still_writes_the_report() {
    let report = temp_path("interrupted.json");
    let child = Command::new(env!("CARGO_BIN_EXE_vitalmesh"))
        .args([
            "run",
            "--headless",
            "--nodes",
            "40",
            "--aggregators",
            "2",
            "--duration",
            "10m",
            "--seed",
            "3",
        ])
        .arg("--report")
        .arg(&report)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until nodes are running, then interrupt as a terminal would.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "an interrupted run has its own exit code: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(stopped early)"), "{stdout}");
    let r = read_report(&report);
    assert_eq!(r["interrupted"], true);
    assert_eq!(r["ledger"]["total"]["unexplained"], 0);
    assert!(r["ran_for_s"].as_f64().unwrap() < 60.0);
    let _ = std::fs::remove_file(&report);
}

#[test]
fn a_bad_broker_url_is_refused_before_anything_starts() {
    let out = vitalmesh(&["run", "--broker", "http://localhost:1883", "--seed", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broker: 'http://localhost:1883' has no mqtt:// or mqtts:// scheme"),
        "{err}"
    );
}

/// A command that must be refused before anything starts: exit code 1, the
/// message on stderr, no broker, no report.
fn refused(args: &[&str]) -> String {
    let started = std::time::Instant::now();
    let out = vitalmesh(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(
        !err.contains("control:"),
        "{args:?} was refused only after the run had been set up: {err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    err
}

#[test]
fn flags_are_refused_as_the_same_values_in_a_file_are() {
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--headless", "--seed", "1"];
        args.extend_from_slice(extra);
        refused(&args)
    };
    let err = run(&["--nodes", "0"]);
    assert!(
        err.contains("--nodes: '0' is not enough; expected at least 1"),
        "{err}"
    );
    let err = run(&["--wards", "20", "--nodes", "10"]);
    assert!(
        err.contains("--nodes: '10' does not split evenly over 20 wards"),
        "{err}"
    );
    let err = run(&["--wards", "0"]);
    assert!(err.contains("--wards: '0' is not enough"), "{err}");
    let err = run(&["--duration", "0s"]);
    assert!(
        err.contains("--duration: '0s' is zero; expected a positive duration"),
        "{err}"
    );
    let err = run(&["--connect-rate", "0"]);
    assert!(
        err.contains("--connect-rate: '0' would never connect a node"),
        "{err}"
    );
    let err = run(&["--virtual", "--speed", "0"]);
    assert!(err.contains("--speed: '0' is not a speed"), "{err}");
}

#[test]
fn tls_flags_that_contradict_the_broker_are_refused_before_anything_starts() {
    let err = refused(&[
        "run",
        "--headless",
        "--tls",
        "--broker",
        "mqtt://127.0.0.1:1883",
    ]);
    assert!(
        err.contains(
            "--tls: the broker 'mqtt://127.0.0.1:1883' is plain MQTT; expected an 'mqtts://' url"
        ),
        "{err}"
    );
    let err = refused(&["run", "--headless", "--broker", "mqtts://127.0.0.1:8883"]);
    assert!(
        err.contains(
            "--tls-ca: the broker 'mqtts://127.0.0.1:8883' needs the certificate authority"
        ),
        "{err}"
    );
    let err = refused(&["run", "--headless", "--tls-ca", "/etc/hostname"]);
    assert!(err.contains("--tls-ca: the run does not use TLS"), "{err}");
    let err = refused(&[
        "run",
        "--headless",
        "--broker",
        "mqtts://127.0.0.1:8883",
        "--tls-ca",
        "/etc/hostname",
    ]);
    assert!(
        err.contains("tls-ca: '/etc/hostname': no certificate found"),
        "{err}"
    );
}

#[test]
fn output_paths_are_checked_before_the_run_starts() {
    let err = refused(&["run", "--headless", "--report", "/nonexistent/dir/r.json"]);
    assert!(
        err.contains("--report: cannot create '/nonexistent/dir/r.json'"),
        "{err}"
    );
    let dir = std::env::temp_dir();
    let err = refused(&["run", "--headless", "--report", dir.to_str().unwrap()]);
    assert!(
        err.contains("is a directory; expected a file path"),
        "{err}"
    );
    let err = refused(&["run", "--headless", "--hdr-log", "/nonexistent/dir/x.hlog"]);
    assert!(err.contains("--hdr-log: cannot create"), "{err}");
    let report = temp_path("never.json");
    let out = vitalmesh(&[
        "run",
        "--headless",
        "--report",
        report.to_str().unwrap(),
        "--control",
        "/proc/no/such/place.sock",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--control: cannot listen on '/proc/no/such/place.sock'"),
        "{err}"
    );
    let _ = std::fs::remove_file(&report);
}

#[test]
fn usage_errors_have_their_own_exit_code() {
    let out = vitalmesh(&["run", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = vitalmesh(&["run", "--speed", "10"]);
    assert_eq!(out.status.code(), Some(2), "--speed needs --virtual");
}

#[test]
fn a_virtual_run_is_byte_identical_for_a_seed_and_says_where_its_report_went() {
    let (a, b) = (temp_path("virtual-a.json"), temp_path("virtual-b.json"));
    let run = |report: &std::path::Path| {
        vitalmesh(&[
            "run",
            "--virtual",
            "scenarios/quickstart.toml",
            "--seed",
            "7",
            "--report",
            report.to_str().unwrap(),
        ])
    };
    let out = run(&a);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("90.0 s of virtual time"), "{stdout}");
    assert!(stdout.contains("every sample accounted for"), "{stdout}");
    assert!(
        stdout.contains(&format!("Report       {}", a.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("Host ") && stdout.contains("× real time"),
        "{stdout}"
    );
    assert!(stderr.contains("broker: virtual://broker"), "{stderr}");
    assert!(
        stderr.contains(" sim., ×"),
        "progress shows simulated time and speed: {stderr}"
    );
    assert!(run(&b).status.success());
    let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(x == y, "two virtual runs of seed 7 wrote different reports");
    let r = read_report(&a);
    assert_eq!(r["mode"], "virtual");
    assert_eq!(r["seed"], 7);
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
}

#[test]
fn every_shipped_scenario_runs_in_virtual_time_or_is_refused_up_front() {
    let mut dir: Vec<_> = std::fs::read_dir("scenarios")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    dir.sort();
    assert!(dir.len() >= 8);
    for file in dir {
        let scenario = vitalmesh_scenario::load(&file).unwrap();
        if scenario.duration > std::time::Duration::from_secs(3600) {
            // The experiments (days of a hospital) are run by `vitalmesh
            // experiment` and scored in DETECTION.md; here they must pass
            // the checks a virtual run makes before it starts, and smaller
            // copies of them run in tests/detection.rs.
            scenario
                .check_virtual()
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            continue;
        }
        let report = temp_path("shipped.json");
        let started = std::time::Instant::now();
        let out = vitalmesh(&[
            "run",
            "--virtual",
            file.to_str().unwrap(),
            "--seed",
            "3",
            "--report",
            report.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stderr.contains("cannot run in virtual time") {
            assert_eq!(out.status.code(), Some(1), "{}: {stderr}", file.display());
            assert!(
                stderr.contains(".action: 'rogue'"),
                "{}: {stderr}",
                file.display()
            );
            assert!(started.elapsed().as_secs() < 5, "refused up front");
            continue;
        }
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(3),
            "{} (exit {:?}): {stdout}\n{stderr}",
            file.display(),
            out.status.code()
        );
        let r = read_report(&report);
        assert_eq!(r["ledger"]["total"]["unexplained"], 0, "{}", file.display());
        assert_eq!(r["mode"], "virtual");
        let _ = std::fs::remove_file(&report);
    }
}

#[test]
fn detect_runs_a_method_on_a_users_csv_and_agrees_with_r_surveillance() {
    // The "spikes" series of the committed R fixtures, as an analyst's CSV
    // with a time column and spreadsheet-style quoting.
    let series = include_str!("../crates/core/tests/fixtures/surveillance/series.csv");
    let counts: Vec<&str> = series
        .lines()
        .filter(|l| l.starts_with("spikes,"))
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    let mut csv = String::from("\"time\",\"count\"\r\n");
    for (i, c) in counts.iter().enumerate() {
        csv.push_str(&format!("2026-01-{:02},{c}\r\n", i % 28 + 1));
    }
    let path = temp_path("detect-spikes.csv");
    std::fs::write(&path, csv).unwrap();
    let out = vitalmesh(&[
        "detect",
        "--method",
        "c1",
        "--param",
        "min_sigma=0",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("index,count,statistic,threshold,alarm"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), counts.len(), "one row per input row");
    assert!(
        rows[..7].iter().all(|r| r[2].is_empty() && r[4] == "false"),
        "warm-up"
    );
    // R: earsC(method = "C1", minSigma = 0) alarms on exactly these buckets.
    let fixture = include_str!("../crates/core/tests/fixtures/surveillance/ears.csv");
    let r_alarms: Vec<usize> = fixture
        .lines()
        .filter(|l| l.starts_with("spikes,c1,0,"))
        .filter(|l| l.split(',').nth(7) == Some("1"))
        .map(|l| l.split(',').nth(4).unwrap().parse().unwrap())
        .collect();
    let ours: Vec<usize> = rows
        .iter()
        .filter(|r| r[4] == "true")
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert!(!ours.is_empty());
    assert_eq!(ours, r_alarms);
}

#[test]
fn detect_refuses_bad_input_naming_the_line_and_what_was_expected() {
    let path = temp_path("detect-bad.csv");
    std::fs::write(&path, "count,census\n3,40\nfour,40\n").unwrap();
    let p = path.to_str().unwrap();
    let err = refused(&["detect", "--method", "cusum", p]);
    assert!(
        err.contains(":3: count 'four' is not a count; expected a number of at least 0"),
        "{err}"
    );
    std::fs::write(&path, "cases\n3\n").unwrap();
    let err = refused(&["detect", "--method", "ewma", p]);
    assert!(err.contains("no 'count' column (found 'cases')"), "{err}");
    std::fs::write(&path, "count\n3\n").unwrap();
    let err = refused(&[
        "detect",
        "--method",
        "c2",
        "--param",
        "measure=proportion",
        p,
    ]);
    assert!(err.contains("needs a 'census' column"), "{err}");
    let err = refused(&["detect", "--method", "ewma", "--param", "lambda=2", p]);
    assert!(
        err.contains("--param lambda: '2' is not an EWMA weight; expected above 0 and at most 1"),
        "{err}"
    );
    let err = refused(&["detect", "--method", "c1", "--param", "k=1", p]);
    assert!(err.contains("'k' is not a parameter of 'c1'"), "{err}");
}

/// Half a day of three small wards with an outbreak in ward 1: big enough
/// for the detectors to have something to find, small enough for seconds.
const SMALL_EXPERIMENT: &str = r#"
[scenario]
name = "small-experiment"
duration = "14h"
drain = "2m"

[population]
wards = 3
nodes_per_ward = 12

[population.profile]
sample_interval = "1m"

[population.illness]
fever_per_patient_day = 0.05

[detection]
bucket = "1h"

[[detection.ward]]
name = "poisson"
method = "poisson_cusum"
series = "new_febrile"
baseline = 3

[[detection.ward]]
method = "c1"
series = "new_febrile"

[[event]]
at = "8h"
action = "outbreak"
ward = 1
attack_rate = 0.7
onset_median = "1h"
"#;

#[test]
fn experiment_scores_every_detector_over_seeds_run_in_parallel() {
    let scenario = temp_path("experiment.toml");
    std::fs::write(&scenario, SMALL_EXPERIMENT).unwrap();
    let run = |jobs: &str, out: &std::path::Path| {
        let o = vitalmesh(&[
            "experiment",
            scenario.to_str().unwrap(),
            "--seeds",
            "2",
            "--first-seed",
            "5",
            "--jobs",
            jobs,
            "--out",
            out.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{stderr}");
        (String::from_utf8_lossy(&o.stdout).into_owned(), stderr)
    };
    let parallel = temp_path("experiment-parallel.json");
    let (table, progress) = run("2", &parallel);
    assert!(table.contains("Seeds (2): 5, 6"), "{table}");
    assert!(
        table.contains("| poisson | poisson_cusum | new_febrile |")
            && table.contains("| c1 | c1 | new_febrile |")
            && table.contains("| any |"),
        "a row per detector and one for all of them: {table}"
    );
    assert!(
        table.contains(parallel.to_str().unwrap()),
        "says where: {table}"
    );
    assert!(
        progress.contains("[1/2] seed") && progress.contains("[2/2] seed"),
        "progress per seed: {progress}"
    );
    let json = read_json(&parallel);
    assert_eq!(json["complete"], true);
    assert_eq!(json["seeds"], serde_json::json!([5, 6]));
    let per_seed = json["per_seed"].as_array().unwrap();
    assert_eq!(per_seed.len(), 2);
    assert!(per_seed.iter().all(|s| s["unexplained"] == 0));
    let pooled = &json["pooled"];
    assert_eq!(pooled["any"]["outbreaks"], 2, "one outbreak per seed");
    let outbreaks: u64 = per_seed
        .iter()
        .map(|s| s["scores"]["ward"][0]["outbreaks"].as_u64().unwrap())
        .sum();
    assert_eq!(
        pooled["detectors"][0]["outbreaks"], outbreaks,
        "pooled = summed"
    );

    // A seed's result does not depend on what ran beside it.
    let serial = temp_path("experiment-serial.json");
    run("1", &serial);
    assert_eq!(read_json(&serial)["per_seed"], json["per_seed"]);
    for f in [&scenario, &parallel, &serial] {
        let _ = std::fs::remove_file(f);
    }
}

/// An experiment saves every seed as it finishes: stopped after the first
/// of three, its JSON holds that seed, pooled, and says it is incomplete.
#[test]
fn an_interrupted_experiment_keeps_the_seeds_it_finished() {
    use std::io::{BufRead, BufReader};
    let scenario = temp_path("experiment-interrupted.toml");
    std::fs::write(&scenario, SMALL_EXPERIMENT).unwrap();
    let out = temp_path("experiment-interrupted.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vitalmesh"))
        .args([
            "experiment",
            scenario.to_str().unwrap(),
            "--seeds",
            "3",
            "--first-seed",
            "5",
            "--jobs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("[1/3] seed 5"));
    child.kill().unwrap();
    let _ = child.wait();
    assert!(first.is_some(), "the first seed finished");
    let json = read_json(&out);
    assert_eq!(json["complete"], false);
    assert_eq!(json["seeds"], serde_json::json!([5]));
    assert_eq!(json["per_seed"].as_array().unwrap().len(), 1);
    assert_eq!(json["pooled"]["any"]["outbreaks"], 1);
    for f in [&scenario, &out] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn experiment_refuses_what_it_cannot_run_up_front() {
    let scenario = temp_path("experiment-refused.toml");
    std::fs::write(&scenario, SMALL_EXPERIMENT).unwrap();
    let s = scenario.to_str().unwrap();
    let err = refused(&["experiment", s, "--seeds", "0"]);
    assert!(err.contains("--seeds: '0' runs nothing"), "{err}");
    let err = refused(&["experiment", s, "--out", "/nonexistent-dir/x.json"]);
    assert!(
        err.contains("--out: cannot create '/nonexistent-dir/x.json'"),
        "{err}"
    );
    std::fs::write(
        &scenario,
        SMALL_EXPERIMENT.replace("attack_rate = 0.7", "attack_rate = 7"),
    )
    .unwrap();
    let err = refused(&["experiment", s]);
    assert!(err.contains("attack_rate"), "{err}");
    let _ = std::fs::remove_file(&scenario);
}

/// `vitalmesh bench`: the workloads are listed, an unknown one is refused
/// with the list, and `micro` measures every stage of the pure core — the
/// aggregator among them must ingest what the fleet sent — and saves the
/// figures with the machine and the command.
#[test]
fn bench_lists_its_workloads_and_saves_what_it_measured() {
    let out = vitalmesh(&["bench", "--list"]);
    assert!(out.status.success());
    let list = String::from_utf8_lossy(&out.stdout);
    for workload in [
        "direct-10k",
        "tls-10k",
        "gateway-100k",
        "saturate",
        "micro",
        "virtual-day",
    ] {
        assert!(list.contains(workload), "{workload} missing from:\n{list}");
    }

    let out = vitalmesh(&["bench", "nonesuch"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'nonesuch'")
            && err.contains("direct-10k, tls-10k, gateway-100k, saturate, micro, virtual-day"),
        "{err}"
    );

    let json = temp_path("bench-micro.json");
    let out = vitalmesh(&[
        "bench",
        "micro",
        "--duration",
        "50ms",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["bench"], "micro");
    assert!(v["command"].as_str().unwrap().contains("bench micro"));
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
    let names: Vec<&str> = v["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "firmware step + seal (AES-128-GCM) + ack check",
            "gateway step (100 nodes, radio, relay, decoded)",
            "open (AES-128-GCM) + decode",
            "sensor checks, 1 patient",
            "sensor checks, 1,000 patients",
            "sensor checks, 1,000 patients, scattered",
            "patient monitor, 1,000 patients",
            "aggregator ingest, 1,000 nodes",
        ]
    );
    let _ = std::fs::remove_file(&json);
    // The gateway relayed what its nodes sampled.
    assert!(v["figures"][1]["count"].as_u64().unwrap() > 0);
    let ingest = &v["figures"][7];
    // A minute of 1,000 nodes at 1 Hz, all of it ingested.
    assert!(ingest["count"].as_u64().unwrap() >= 59_000, "{ingest}");
    assert!(ingest["ns_per_unit"].as_f64().unwrap() > 0.0);

    // The virtual day, cut to a minute, from a directory with no scenario
    // files in it: the workload is built in.
    let out = Command::new(env!("CARGO_BIN_EXE_vitalmesh"))
        .args(["bench", "virtual-day", "--duration", "1m"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("samples, end to end"), "{table}");
}

#[test]
fn a_provisioning_file_gives_the_secret_and_a_bad_one_is_refused_without_echoing_it() {
    let (file, report) = (temp_path("provisioning.hex"), temp_path("provisioned.json"));
    let run = || {
        vitalmesh(&[
            "run",
            "--virtual",
            "scenarios/quickstart.toml",
            "--seed",
            "7",
            "--provisioning",
            file.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ])
    };
    std::fs::write(&file, "not-a-secret-at-all\n").unwrap();
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--provisioning '") && stderr.contains("expected 64 hex digits"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-a-secret"),
        "the file's text is never echoed: {stderr}"
    );
    std::fs::write(&file, format!("{}\n", "5a".repeat(32))).unwrap();
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = read_report(&report);
    assert_eq!(r["ledger"]["total"]["unexplained"], 0);
    let _ = std::fs::remove_file(&file);
}

/// `compare`: two real reports side by side, and thresholds that gate CI
/// through the exit code.
#[test]
fn compare_shows_two_reports_side_by_side_and_gates_on_thresholds() {
    let (base, new) = (
        temp_path("compare-base.json"),
        temp_path("compare-new.json"),
    );
    for (report, seed) in [(&base, "7"), (&new, "8")] {
        let out = vitalmesh(&[
            "run",
            "--virtual",
            "scenarios/quickstart.toml",
            "--seed",
            seed,
            "--report",
            report.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (b, n) = (base.to_str().unwrap(), new.to_str().unwrap());
    let reports = (read_report(&base), read_report(&new));
    // The schema is strict where it matters: a field it does not know, a
    // figure of the wrong type or a missing section is caught.
    let mut altered = reports.0.clone();
    altered["surprise"] = serde_json::json!(1);
    altered["ledger"]["total"]["produced"] = serde_json::json!("many");
    altered.as_object_mut().unwrap().remove("latency");
    let errors = ledger::schema_errors(&altered).join("\n");
    assert!(errors.contains("surprise"), "{errors}");
    assert!(errors.contains("/ledger/total/produced"), "{errors}");
    assert!(
        errors.contains("\"latency\" is a required property"),
        "{errors}"
    );
    let p99 = |r: &serde_json::Value| r["latency"]["end_to_end"]["p99_ms"].as_f64().unwrap();

    // No thresholds: the table, exit 0.
    let out = vitalmesh(&["compare", b, n]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(table.contains("seed 7, virtual run of 90 s"), "{table}");
    assert!(table.contains("seed 8, virtual run of 90 s"), "{table}");
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with("latency.p99 "))
        .unwrap_or_else(|| panic!("no latency.p99 row:\n{table}"));
    assert!(
        line.contains(&format!("{:.3} ms", p99(&reports.0)))
            && line.contains(&format!("{:.3} ms", p99(&reports.1))),
        "{line}"
    );
    // A virtual report has no CPU figures: not shown as zero.
    assert!(!table.contains("cpu.cores"), "{table}");

    // A threshold that holds fails the comparison (exit 3) and says which.
    let out = vitalmesh(&[
        "compare",
        b,
        n,
        "--fail-if",
        "ledger.unexplained > +0",
        "--fail-if",
        "ledger.produced > 0",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("pass  ledger.unexplained > +0"), "{stdout}");
    assert!(stdout.contains("FAIL  ledger.produced > 0"), "{stdout}");

    // A report compared with itself: nothing worse, every threshold passes.
    let out = vitalmesh(&["compare", b, b, "--fail-if", "latency.p99 > +0%"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("WORSE"), "{stdout}");

    // Mistakes are refused with what was expected.
    let out = vitalmesh(&["compare", b, n, "--fail-if", "latency.p98 > +10%"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "--fail-if: 'latency.p98' in 'latency.p98 > +10%' is not a figure; expected one of"
        ),
        "{err}"
    );
    let out = vitalmesh(&["compare", b, "Cargo.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NEW 'Cargo.toml': line 1: not JSON"), "{err}");
    let out = vitalmesh(&["compare", b, n, "--fail-if", "cpu.cores > +10%"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("report has no 'cpu.cores'"), "{err}");
    let _ = (std::fs::remove_file(&base), std::fs::remove_file(&new));
}

/// One GET of `http://addr/metrics`: the status line, the content type and
/// the body parsed as Prometheus text.
fn scrape(addr: std::net::SocketAddr) -> Option<prometheus_parse::Scrape> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    if body.is_empty() {
        return None;
    }
    Some(
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
            .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}")),
    )
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
            other => panic!("{name} is {other:?}"),
        })
        .unwrap_or_else(|| panic!("no {name} {label:?}"))
}

/// `run --metrics`: Prometheus scrapes `/metrics` while the run goes; the
/// counters move, and the last scrape agrees with the report.
#[test]
fn metrics_are_served_for_prometheus_while_a_run_goes_and_agree_with_its_report() {
    use prometheus_parse::Value;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let report = temp_path("metrics-report.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vitalmesh"))
        .args([
            "run",
            "--headless",
            "--nodes",
            "50",
            "--wards",
            "5",
            "--duration",
            "6s",
            "--seed",
            "3",
            "--metrics",
            &addr.to_string(),
            "--report",
            report.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut scrapes = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the run did not end");
        if let Some(s) = scrape(addr) {
            scrapes.push(s);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert!(status.success(), "{status}");
    assert!(scrapes.len() >= 5, "{} scrapes", scrapes.len());
    let produced: Vec<f64> = scrapes
        .iter()
        .map(|s| sample(s, "vitalmesh_samples_produced_total", None))
        .collect();
    assert!(
        produced.windows(2).all(|w| w[0] <= w[1]) && produced[0] < produced[produced.len() - 1],
        "a counter moves up only: {produced:?}"
    );
    let last = scrapes.last().unwrap();
    let r = read_report(&report);
    let total = &r["ledger"]["total"];
    // Sampling stopped before the drain the last scrapes saw.
    assert_eq!(
        sample(last, "vitalmesh_samples_produced_total", None),
        total["produced"].as_f64().unwrap()
    );
    let delivered = sample(last, "vitalmesh_samples_delivered_total", None);
    let reported = total["delivered"].as_f64().unwrap();
    assert!(
        delivered <= reported && delivered >= 0.95 * reported,
        "{delivered} of {reported}"
    );
    assert_eq!(
        sample(
            last,
            "vitalmesh_samples_dropped_total",
            Some(("cause", "node_crash"))
        ),
        0.0
    );
    assert_eq!(sample(last, "vitalmesh_nodes", None), 50.0);
    assert_eq!(
        sample(last, "vitalmesh_run_info", Some(("scenario", "default"))),
        1.0
    );
    // The latency histogram: cumulative buckets ending in its count.
    let histogram = last
        .samples
        .iter()
        .find_map(|s| match &s.value {
            Value::Histogram(buckets) if s.metric == "vitalmesh_end_to_end_latency_seconds" => {
                Some(buckets.clone())
            }
            _ => None,
        })
        .expect("vitalmesh_end_to_end_latency_seconds is a histogram");
    assert!(histogram.windows(2).all(|w| w[0].count <= w[1].count));
    let count = sample(last, "vitalmesh_end_to_end_latency_seconds_count", None);
    assert!(count > 0.0);
    assert_eq!(histogram.last().unwrap().count, count);
    assert!(histogram.last().unwrap().less_than.is_infinite());
    // A real run says what machine it ran on, and its HTML page shows it.
    assert!(
        r["machine"]["cores"].as_u64().unwrap() >= 1,
        "{}",
        r["machine"]
    );
    let html = temp_path("metrics-report.html");
    let out = vitalmesh(&[
        "report",
        report.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    let cpu = r["machine"]["cpu"].as_str().unwrap();
    assert!(
        page.contains(&format!("on {cpu} (")),
        "the header names the machine"
    );
    let _ = (std::fs::remove_file(&report), std::fs::remove_file(&html));
}

/// The headless browser tests use: Debian's chromium (`.ci/run` installs it).
fn chromium() -> &'static str {
    ["chromium", "/usr/bin/chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is not installed: `apt-get install -y chromium` (.ci/run does this)")
}

/// `run --html` and `report --html`: one page, the same from either, that
/// opens in a real headless browser with every network request refused,
/// loads nothing from anywhere, and has its charts drawn.
#[test]
fn the_html_report_opens_offline_in_a_real_browser_with_its_charts() {
    let (report, html, again) = (
        temp_path("html-report.json"),
        temp_path("html-report.html"),
        temp_path("html-again.html"),
    );
    let out = vitalmesh(&[
        "run",
        "--virtual",
        "scenarios/quickstart.toml",
        "--seed",
        "7",
        "--report",
        report.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("HTML report  {}", html.display())),
        "{stdout}"
    );
    let out = vitalmesh(&[
        "report",
        report.to_str().unwrap(),
        "--html",
        again.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(
        page,
        std::fs::read_to_string(&again).unwrap(),
        "one page from either"
    );
    for remote in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
        "<script src",
        "<link",
    ] {
        assert!(!page.contains(remote), "the page loads '{remote}…'");
    }

    let profile = temp_path("chromium-profile");
    let shot = temp_path("html-report.png");
    let browse = |extra: &[&str]| {
        let mut args = vec![
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
        ];
        let profile_arg = format!("--user-data-dir={}", profile.display());
        args.push(&profile_arg);
        args.extend_from_slice(extra);
        let url = format!("file://{}", html.display());
        let out = Command::new(chromium())
            .args(&args)
            .arg(&url)
            .output()
            .expect("chromium runs");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (dom, log) = browse(&["--dump-dom"]);
    for id in [
        "throughput",
        "latency-spectrum",
        "latency-wards",
        "latency-time",
        "ledger",
        "timeline",
        "ownership",
    ] {
        let at = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no chart '{id}' in the page the browser built"));
        let chart = &dom[at..dom.len().min(at + 400_000)];
        let svg_end = chart.find("</svg>").unwrap_or(0);
        assert!(
            chart.contains("<svg")
                && chart[..svg_end].matches("<path").count()
                    + chart[..svg_end].matches("<rect").count()
                    + chart[..svg_end].matches("<polyline").count()
                    > 5,
            "chart '{id}' has nothing drawn"
        );
    }
    assert!(dom.contains("every sample accounted for"), "the verdicts");
    for error in ["net::ERR", "Failed to load resource", "Uncaught"] {
        assert!(
            !log.contains(error),
            "the browser reported '{error}':\n{log}"
        );
    }
    let _ = browse(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1100,2600",
        "--hide-scrollbars",
    ]);
    let png = std::fs::read(&shot).expect("the browser took a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    for f in [&report, &html, &again, &shot] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(&profile);
}

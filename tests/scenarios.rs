//! Scenario files through the command line: the shipped ones validate, each
//! invalid fixture fails with its own message, `run` refuses an invalid file
//! before starting anything, and `inject` steers a live run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn vitalmesh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vitalmesh"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn files_in(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_scenario_validates() {
    let files = files_in("scenarios");
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "quickstart",
        "ward-outbreak",
        "aggregator-failover",
        "broker-restart",
        "network-partition",
        "sensor-faults",
        "rogue-clients",
        "scale-10k",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "scenarios/{expected}.toml is missing"
        );
    }
    for f in &files {
        let s = vitalmesh_scenario::load(f).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            text.starts_with("# "),
            "{} has no comment header saying what it shows",
            f.display()
        );
        assert!(
            text.contains("What to look for"),
            "{} does not say what to look for",
            f.display()
        );
        assert!(!s.slos.is_empty(), "{} has no SLO to gate on", f.display());
    }
    let args: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut cmd = vec!["validate"];
    cmd.extend(args.iter().map(String::as_str));
    let out = vitalmesh(&cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("ok "))
            .count(),
        files.len()
    );
}

#[test]
fn every_invalid_fixture_fails_with_its_own_message() {
    let fixtures = files_in("tests/scenarios/invalid");
    assert!(
        fixtures.len() >= 38,
        "one fixture per rule: found {}",
        fixtures.len()
    );
    for f in fixtures {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        // One `# expect:` line per problem the file has: all are listed.
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no '# expect:' line",
            f.display()
        );
        let out = vitalmesh(&["validate", f.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} validated", f.display());
        for expect in expected {
            // The message starts with the file name and line, then the path.
            let want = format!("{}{expect}", f.display());
            assert!(
                stderr.contains(&want),
                "{}:\n  want: {want}\n  got:  {stderr}",
                f.display()
            );
        }
    }
}

#[test]
fn run_refuses_an_invalid_scenario_before_starting_anything() {
    let report = std::env::temp_dir().join(format!("vm-refused-{}.json", std::process::id()));
    let f =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/invalid/event-after-end.toml");
    let started = Instant::now();
    let out = vitalmesh(&[
        "run",
        f.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not after starting a mesh"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("event[0].at: '90s' is after the scenario end '60s'"),
        "{err}"
    );
    assert!(!report.exists(), "nothing ran, so no report");
}

#[test]
fn flags_the_scenario_owns_are_refused_with_the_place_to_edit() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/quickstart.toml");
    let out = vitalmesh(&["run", f.to_str().unwrap(), "--nodes", "5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--nodes: set by the scenario; edit [population] in"),
        "{err}"
    );
    let out = vitalmesh(&["run", f.to_str().unwrap(), "--duration", "30s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--duration: '30s' ends before load[1] at '30s'"),
        "{err}"
    );
}

#[test]
fn inject_steers_a_live_run_and_the_timeline_records_it() {
    let dir = std::env::temp_dir().join(format!("vm-inject-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("run.sock");
    let report = dir.join("report.json");
    let scenario =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/valid/inject-target.toml");
    let child = Command::new(env!("CARGO_BIN_EXE_vitalmesh"))
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--headless",
            "--seed",
            "4",
        ])
        .arg("--control")
        .arg(&socket)
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the run never opened its control socket"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(4));
    let run = socket.to_str().unwrap();
    let ok = vitalmesh(&["inject", "--run", run, "partition", "ward=1", "for=3s"]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("injected at") && stdout.contains("partition all nodes in ward 1 for 3s"),
        "{stdout}"
    );
    // The same validation as scenario files, against this run's mesh.
    let bad = vitalmesh(&["inject", "--run", run, "kill_aggregator", "aggregator=9"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("inject.aggregator: '9' does not exist; expected an aggregator from 0 to 1"),
        "{err}"
    );
    let bad = vitalmesh(&["inject", "--run", run, "explode"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("'explode' is not an action here"));
    let ok = vitalmesh(&["inject", "--run", run, "kill_nodes", "ward=2", "count=3"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "stopped early, report written: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let timeline = r["timeline"].as_array().unwrap();
    let injected: Vec<&str> = timeline
        .iter()
        .filter(|e| e["source"] == "inject")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(injected, ["partition", "kill_nodes"]);
    let kill = timeline
        .iter()
        .find(|e| e["action"] == "kill_nodes")
        .unwrap();
    let victims = kill["nodes"].as_array().unwrap();
    assert_eq!(victims.len(), 3);
    assert!(
        victims
            .iter()
            .all(|n| (40..60).contains(&n.as_u64().unwrap())),
        "ward 2 is nodes 40–59"
    );
    assert!(
        timeline
            .iter()
            .any(|e| e["source"] == "scheduled end" && e["action"] == "partition")
    );
    assert_eq!(r["ledger"]["total"]["unexplained"], 0);
    assert!(!socket.exists(), "the socket is removed when the run ends");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_is_not_a_scenario_file_is_refused_before_it_is_read_whole() {
    // A device that never ends.
    let out = vitalmesh(&["validate", "/dev/zero"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/dev/zero: is not a regular file; expected a scenario's .toml file"),
        "{stderr}"
    );
    // A file far larger than any scenario (a log passed by mistake).
    let big = std::env::temp_dir().join(format!("vm-big-{}.toml", std::process::id()));
    std::fs::write(&big, "# filler\n".repeat(300_000)).unwrap();
    let out = vitalmesh(&["validate", big.to_str().unwrap()]);
    std::fs::remove_file(&big).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is larger than 1024 KiB; expected a scenario of a few kilobytes"),
        "{stderr}"
    );
}

#[test]
fn validate_says_when_this_machine_cannot_run_a_scenario_in_real_time() {
    let file = std::env::temp_dir().join(format!("vm-million-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "[scenario]\nname = \"million\"\nduration = \"10m\"\n\
         [population]\nwards = 1000\nnodes_per_ward = 1000\n",
    )
    .unwrap();
    let out = vitalmesh(&["validate", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    // Valid (virtual time runs it), but not here in real time: it says so.
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("note: ")
            && stderr.contains("'1000004' clients need about")
            && stderr.contains("file descriptors")
            && stderr.contains("--virtual"),
        "{stderr}"
    );
}

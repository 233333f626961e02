//! What the live dashboard costs: the same scenario run headless and with
//! the dashboard in a real terminal (tmux), compared by the CPU time each
//! run reports (`cpu` in the JSON report: this process, the broker, and
//! this process by thread).
//!
//! ```text
//! cargo bench --bench dashboard                      # scenarios/scale-10k.toml, 2 rounds
//! cargo bench --bench dashboard -- --rounds 3 --size 200x60
//! cargo bench --bench dashboard -- --scenario scenarios/quickstart.toml
//! ```
//!
//! Two figures: the whole-run overhead (dashboard runs' CPU over headless
//! runs', which includes run-to-run noise) and the dashboard thread's own
//! CPU as a share of a headless run (the drawing cost alone). The terminal
//! emulator's work (tmux here) is not the simulator's and is not counted.
//! Needs tmux. Results are printed and written to
//! `target/dashboard-bench.json`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[path = "../tests/support/tmux.rs"]
mod tmux;

use tmux::{Tmux, shell_quote};

struct Args {
    scenario: PathBuf,
    rounds: u32,
    width: u16,
    height: u16,
}

fn args() -> Args {
    let mut a = Args {
        scenario: Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/scale-10k.toml"),
        rounds: 2,
        width: 160,
        height: 48,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--scenario" => a.scenario = it.next().map(PathBuf::from).expect("--scenario FILE"),
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--size" => {
                let size = it.next().expect("--size WIDTHxHEIGHT");
                let (w, h) = size.split_once('x').expect("--size WIDTHxHEIGHT");
                a.width = w.parse().expect("a width");
                a.height = h.parse().expect("a height");
            }
            _ => {} // `cargo bench` passes --bench
        }
    }
    a
}

/// CPU figures of one run, seconds.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    process: f64,
    broker: f64,
    dashboard_thread: f64,
    ran_for: f64,
}

impl Cpu {
    fn total(&self) -> f64 {
        self.process + self.broker
    }

    fn from_report(path: &Path) -> Self {
        let text =
            std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let json: serde_json::Value = serde_json::from_slice(&text).expect("a JSON report");
        assert_eq!(
            json["ledger"]["total"]["unexplained"],
            0,
            "{}: samples unexplained",
            path.display()
        );
        let cpu = &json["cpu"];
        Self {
            process: cpu["process_s"].as_f64().expect("cpu.process_s"),
            broker: cpu["broker_s"].as_f64().expect("cpu.broker_s"),
            dashboard_thread: cpu["threads_s"]["dashboard"].as_f64().unwrap_or(0.0),
            ran_for: json["ran_for_s"].as_f64().expect("ran_for_s"),
        }
    }
}

fn headless(a: &Args, report: &Path) -> Cpu {
    let out = Command::new(env!("CARGO_BIN_EXE_vitalmesh"))
        .args(["run", "--headless", "--seed", "7", "--report"])
        .arg(report)
        .arg(&a.scenario)
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "headless run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Cpu::from_report(report)
}

fn with_dashboard(a: &Args, report: &Path) -> Cpu {
    let command = format!(
        "env -u CI {bin} run --seed 7 --report {report} {scenario}; echo \"vitalmesh exited with $?\"; sleep 600",
        bin = shell_quote(Path::new(env!("CARGO_BIN_EXE_vitalmesh"))),
        report = shell_quote(report),
        scenario = shell_quote(&a.scenario),
    );
    let tmux = Tmux::new("dashboard-bench");
    tmux.start(&command, a.width, a.height);
    tmux.wait_for("the run to finish", Duration::from_secs(3600), |s| {
        s.contains("Run finished") || s.contains("vitalmesh exited with")
    });
    tmux.keys("q");
    let screen = tmux.wait_for("the process to exit", Duration::from_secs(60), |s| {
        s.contains("vitalmesh exited with")
    });
    assert!(
        screen.contains("vitalmesh exited with 0"),
        "dashboard run failed:\n{screen}"
    );
    Cpu::from_report(report)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn main() {
    let a = args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-bench");
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "dashboard benchmark: {} — {} rounds, terminal {}×{}",
        a.scenario.display(),
        a.rounds,
        a.width,
        a.height
    );
    println!(
        "{:<10} {:>6} {:>10} {:>10} {:>10} {:>8} {:>12}",
        "mode", "round", "process s", "broker s", "total s", "cores", "dashboard s"
    );
    let (mut plain, mut dash) = (Vec::new(), Vec::new());
    let print = |mode: &str, round: u32, c: &Cpu| {
        println!(
            "{:<10} {:>6} {:>10.2} {:>10.2} {:>10.2} {:>8.2} {:>12.3}",
            mode,
            round,
            c.process,
            c.broker,
            c.total(),
            c.total() / c.ran_for.max(1e-3),
            c.dashboard_thread
        );
    };
    // Alternate, so drift in the machine's state hits both modes alike.
    for round in 1..=a.rounds {
        let c = headless(&a, &dir.join(format!("headless-{round}.json")));
        print("headless", round, &c);
        plain.push(c);
        let c = with_dashboard(&a, &dir.join(format!("dashboard-{round}.json")));
        print("dashboard", round, &c);
        dash.push(c);
    }
    let plain_total = mean(&plain.iter().map(Cpu::total).collect::<Vec<_>>());
    let dash_total = mean(&dash.iter().map(Cpu::total).collect::<Vec<_>>());
    let thread = mean(&dash.iter().map(|c| c.dashboard_thread).collect::<Vec<_>>());
    let whole_run = 100.0 * (dash_total / plain_total - 1.0);
    let drawing = 100.0 * thread / plain_total;
    println!();
    println!(
        "whole-run CPU overhead of the dashboard: {whole_run:+.1} % (includes run-to-run noise)"
    );
    println!(
        "dashboard thread's own CPU: {thread:.2} s = {drawing:.2} % of a headless run (target ≤ 5 %)"
    );
    let json = serde_json::json!({
        "scenario": a.scenario.display().to_string(),
        "rounds": a.rounds,
        "terminal": format!("{}x{}", a.width, a.height),
        "headless_cpu_s": plain.iter().map(Cpu::total).collect::<Vec<_>>(),
        "dashboard_cpu_s": dash.iter().map(Cpu::total).collect::<Vec<_>>(),
        "dashboard_thread_s": dash.iter().map(|c| c.dashboard_thread).collect::<Vec<_>>(),
        "whole_run_overhead_percent": whole_run,
        "dashboard_thread_percent": drawing,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-bench.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    println!("written to {}", out.display());
}

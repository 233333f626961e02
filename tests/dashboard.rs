//! The dashboard in a real terminal: the real binary runs under tmux, keys
//! are typed into it, and the screen is read back with `capture-pane`.
//!
//! Needs `tmux` (`.ci/run` installs it). The test uses its own tmux server
//! socket, so it neither sees nor disturbs the user's sessions.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "support/tmux.rs"]
mod tmux;

use tmux::{Tmux, shell_quote};

/// The number after the last `label` on the screen.
fn figure(screen: &str, label: &str) -> Option<u64> {
    let at = screen.rfind(label)? + label.len();
    let digits: String = screen[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// SGR parameters that set a colour (30–37, 40–47, 90–97, 100–107, 38/48
/// extended); 39 and 49, back to the default, do not count.
fn colour_codes(escaped: &str) -> Vec<String> {
    let mut found = Vec::new();
    for sequence in escaped.split("\u{1b}[").skip(1) {
        let Some(end) = sequence.find('m') else {
            continue;
        };
        let params = &sequence[..end];
        if !params.chars().all(|c| c.is_ascii_digit() || c == ';') {
            continue;
        }
        for p in params.split(';').filter_map(|p| p.parse::<u16>().ok()) {
            if matches!(p, 30..=38 | 40..=48 | 90..=97 | 100..=107) {
                found.push(params.to_string());
            }
        }
    }
    found
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vitalmesh-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_dashboard_runs_in_a_real_terminal_takes_keys_and_gives_the_terminal_back() {
    let dir = scratch_dir("dashboard");
    let report = dir.join("report.json");
    let scenario =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/valid/inject-target.toml");
    let command = format!(
        "env -u CI NO_COLOR=1 {bin} run {scenario} --seed 11 --report {report} --control {control}; \
         echo \"vitalmesh exited with $?\"; stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; echo 'stty checked'; sleep 600",
        bin = shell_quote(Path::new(env!("CARGO_BIN_EXE_vitalmesh"))),
        scenario = shell_quote(&scenario),
        report = shell_quote(&report),
        control = shell_quote(&dir.join("control.sock")),
    );
    let tmux = Tmux::new("dashboard");
    tmux.start(&command, 110, 32);

    // Live numbers: the run connects and the ledger grows between frames.
    let screen = tmux.wait_for("all 60 nodes connected", Duration::from_secs(60), |s| {
        s.contains("60/60 connected") && figure(s, "produced").is_some_and(|n| n > 0)
    });
    for panel in [
        "Throughput/s",
        "End-to-end latency",
        "Nodes by ward",
        "Aggregators",
        "Incidents",
        "Events",
        "Ledger",
    ] {
        assert!(screen.contains(panel), "panel {panel:?} missing:\n{screen}");
    }
    assert!(screen.contains("W2"), "the map shows every ward:\n{screen}");
    assert!(screen.contains("seed 11"), "{screen}");
    let before = figure(&screen, "produced").unwrap();
    let screen = tmux.wait_for("the ledger to move", Duration::from_secs(10), |s| {
        figure(s, "produced").is_some_and(|n| n > before)
    });
    assert!(
        figure(&screen, "p99 ").is_some(),
        "latency percentiles shown:\n{screen}"
    );
    let escaped = tmux.capture(false, true);
    let colours = colour_codes(&escaped);
    assert!(
        colours.is_empty(),
        "NO_COLOR: no colour in the real terminal either: {colours:?}"
    );
    assert!(
        escaped.contains("\u{1b}[7m"),
        "reverse video still marks the selection"
    );

    // Break something from the keyboard: aggregator 0 goes down, the event
    // log and the aggregator table say so.
    tmux.keys("a");
    let screen = tmux.wait_for("the kill in the event log", Duration::from_secs(15), |s| {
        s.contains("[dashboard] kill aggregator 0") && s.contains("DOWN")
    });
    assert!(screen.contains("Events · 1"), "{screen}");
    // The detectors' conclusion, as an incident; `i` shows the raw alert.
    tmux.wait_for("the incident", Duration::from_secs(15), |s| {
        s.contains("aggregator 0 down") && s.contains("1 open of 1")
    });
    tmux.keys("i");
    tmux.wait_for("the raw alerts", Duration::from_secs(10), |s| {
        s.contains("Alerts · ") && s.contains("DOWN    aggregator 0")
    });
    tmux.keys("i");

    // Resizing redraws to the new size.
    tmux.run(&["resize-window", "-t", "dash", "-x", "80", "-y", "24"]);
    tmux.wait_for("the 80-column layout", Duration::from_secs(10), |s| {
        s.contains("Ledger prod ") && s.lines().all(|l| l.chars().count() <= 80)
    });

    // Quit: the run stops early, the final ledger and the report path show.
    tmux.keys("q");
    let screen = tmux.wait_for("the final screen", Duration::from_secs(60), |s| {
        s.contains("Run stopped early")
    });
    assert!(screen.contains("every sample accounted for"), "{screen}");
    assert!(screen.contains("report.json"), "{screen}");
    tmux.keys("q");
    let screen = tmux.wait_for("the process to exit", Duration::from_secs(20), |s| {
        s.contains("stty checked")
    });
    assert!(
        screen.contains("vitalmesh exited with 5"),
        "quitting stops the run early, which has its own exit code: {screen}"
    );
    assert!(
        screen.contains("every sample accounted for"),
        "the summary follows:\n{screen}"
    );
    assert!(
        screen.contains("dashboard      kill aggregator 0"),
        "the summary's timeline:\n{screen}"
    );
    let canonical = screen.lines().any(|l| l.trim() == "icanon");
    assert!(
        canonical,
        "the terminal is back in canonical (cooked) mode:\n{screen}"
    );
    let alternate = tmux.run(&["display-message", "-p", "-t", "dash", "#{alternate_on}"]);
    assert_eq!(
        String::from_utf8_lossy(&alternate.stdout).trim(),
        "0",
        "left the alternate screen"
    );

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("the report was written")).unwrap();
    let timeline = json["timeline"].as_array().expect("a timeline");
    assert!(
        timeline.iter().any(|e| e["source"] == "dashboard"
            && e["action"] == "kill_aggregator"
            && e["aggregator"] == 0),
        "the key press is in the report's timeline: {timeline:?}"
    );
    assert_eq!(json["ledger"]["total"]["unexplained"], 0);
    assert_eq!(json["interrupted"], true);
    let _ = std::fs::remove_dir_all(&dir);
}

//! The command-line surface, run as a user would run it.

use std::process::Command;

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

//! One simulated day of a 1,000-bed hospital at 1 Hz in virtual time:
//! 86.4 M samples through firmware, codec, the modelled broker and the
//! aggregators, on one core.
//!
//! `cargo bench --bench virtual` runs the whole day;
//! `cargo bench --bench virtual -- --duration 1h` a shorter stretch (the
//! rate is what matters). Prints samples per second, simulated seconds per
//! wall second and events processed, and writes `target/virtual-bench.json`.

use std::time::{Duration, Instant};

use vitalmesh_sim::virtual_time::{VirtualMesh, VirtualOptions};

fn main() {
    let mut duration: Option<Duration> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--duration" {
            let v = it.next().expect("--duration D");
            duration = Some(vitalmesh_scenario::duration::parse(&v).expect("a duration"));
        }
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/scenarios/virtual-day.toml");
    let mut scenario = vitalmesh_scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    if let Some(d) = duration {
        scenario = scenario.with_duration(d).unwrap_or_else(|e| panic!("{e}"));
    }
    let started = Instant::now();
    let mut mesh = VirtualMesh::new(&scenario, 2026, &VirtualOptions::default());
    mesh.start().expect("aggregators agree");
    let outcome = mesh.run_to_end();
    let wall = started.elapsed().as_secs_f64();
    let r = &outcome.report;
    let samples = r.ledger.total.produced;
    assert_eq!(r.ledger.total.unexplained, 0, "{:?}", r.ledger.total);
    println!(
        "virtual-day: {} simulated, {} samples ({} delivered) in {wall:.1} s wall: {:.2} M samples/s, {:.0}× real time, {:.1} events/sample, {:.0} ns/sample",
        vitalmesh_scenario::duration::format(scenario.duration),
        samples,
        r.ledger.total.delivered,
        samples as f64 / wall / 1e6,
        r.ran_for_s / wall,
        outcome.events as f64 / samples as f64,
        wall * 1e9 / samples as f64,
    );
    let json = serde_json::json!({
        "bench": "virtual-day",
        "simulated_s": r.ran_for_s,
        "samples": samples,
        "delivered": r.ledger.total.delivered,
        "wall_s": wall,
        "samples_per_s": samples as f64 / wall,
        "events": outcome.events,
        "end_to_end_ms": r.latency.end_to_end,
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/virtual-bench.json");
    let _ = std::fs::write(out, serde_json::to_vec_pretty(&json).unwrap());
}

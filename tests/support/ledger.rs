//! What every run's report must satisfy, whatever was done to the mesh:
//! the ledger accounts for every sample, in total and per ward.
//! Shared by the test binaries through `#[path]`.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::OnceLock;

use vitalmesh_mesh::report::Report;

/// Where `report` departs from the shipped JSON Schema
/// (`crates/sim/schema/vitalmesh-report-3.schema.json`): the first few
/// mismatches, each with its JSON path.
pub(crate) fn schema_errors(report: &serde_json::Value) -> Vec<String> {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        let schema: serde_json::Value =
            serde_json::from_str(vitalmesh_mesh::report::REPORT_JSON_SCHEMA)
                .expect("the shipped schema is JSON");
        jsonschema::validator_for(&schema).expect("the shipped schema is a valid JSON Schema")
    });
    validator
        .iter_errors(report)
        .take(5)
        .map(|e| format!("at '{}': {e}", e.instance_path()))
        .collect()
}

/// The report matches the shipped JSON Schema; panics with where it does
/// not.
pub(crate) fn assert_matches_schema(report: &serde_json::Value) {
    let errors = schema_errors(report);
    assert!(
        errors.is_empty(),
        "the report does not match its schema (seed {}):\n  {}",
        report["seed"],
        errors.join("\n  ")
    );
}

/// Every sample produced is delivered, still buffered, dropped on overflow
/// or lost with its node's RAM, and nothing is unexplained — in total and in
/// every ward.
pub(crate) fn assert_accounted(r: &Report) {
    assert_matches_schema(&serde_json::from_slice(&r.to_json()).expect("the report is JSON"));
    let l = &r.ledger.total;
    let ctx = format!("seed {}: {l:?}", r.seed);
    assert!(l.produced > 0, "{ctx}");
    assert_eq!(l.unexplained, 0, "{ctx}");
    assert_eq!(
        l.delivered + l.still_buffered + l.dropped_overflow + l.lost_on_crash,
        l.produced,
        "{ctx}"
    );
    for w in &r.ledger.wards {
        assert_eq!(w.row.unexplained, 0, "ward {} ({ctx})", w.ward.0);
    }
    let wards: u64 = r.ledger.wards.iter().map(|w| w.row.produced).sum();
    assert_eq!(wards, l.produced, "wards add up ({ctx})");
}

/// [`assert_accounted`], and no node buffer overflowed either.
pub(crate) fn assert_nothing_lost(r: &Report) {
    assert_accounted(r);
    let l = &r.ledger.total;
    assert_eq!(l.dropped_overflow, 0, "seed {}: {l:?}", r.seed);
}

/// No node was reported down: `why` says why none should have been.
pub(crate) fn assert_no_node_reported_down(r: &Report, why: &str) {
    assert!(
        r.alerts.nodes_reported_down.is_empty(),
        "{why}: {:?} (seed {})",
        r.alerts.nodes_reported_down,
        r.seed
    );
}

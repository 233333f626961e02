//! What every run's report must satisfy, whatever was done to the mesh:
//! the ledger accounts for every sample, in total and per ward.
//! Shared by the test binaries through `#[path]`.
#![allow(dead_code)] // each test binary uses its own subset

use vitalmesh_mesh::report::Report;

/// Every sample produced is delivered, still buffered, dropped on overflow
/// or lost with its node's RAM, and nothing is unexplained — in total and in
/// every ward.
pub(crate) fn assert_accounted(r: &Report) {
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

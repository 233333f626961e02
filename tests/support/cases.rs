//! Fault cases that run in both modes: the scenario and what every run of
//! it must show, whichever driver ran it. `tests/faults.rs` runs them over
//! real MQTT, `tests/virtual_time.rs` in virtual time, each adding what
//! only its mode can check.
#![allow(dead_code)] // each test binary uses its own subset

use vitalmesh_sim::ledger::LedgerRow;
use vitalmesh_sim::report::Report;

use crate::ledger::assert_accounted;

/// The population and length every case shares.
pub(crate) const HEAD: &str = r#"
[scenario]
name = "fault-test"
duration = "40s"
drain = "10s"

[population]
wards = 5
nodes_per_ward = 20
"#;

/// One ward's ledger row.
pub(crate) fn ward(r: &Report, w: u16) -> &LedgerRow {
    &r.ledger
        .wards
        .iter()
        .find(|x| x.ward.0 == w)
        .expect("ward")
        .row
}

/// Ward 1 cut off for 30 s with a 10-sample buffer.
pub(crate) fn partition_longer_than_the_buffer() -> String {
    format!(
        r#"{HEAD}
[population.profile]
buffer_bytes = 320   # 10 samples

[[event]]
at = "5s"
action = "partition"
ward = 1
for = "30s"
"#
    )
}

/// Each of the 20 nodes sampled ~30 times into a 10-sample buffer. What was
/// sent before the broker dropped the silent sessions (1.5 × keep-alive =
/// 22.5 s) died with them. What is counted as dropped is exactly what a
/// node evicted and no aggregator received: in ward 1 only.
pub(crate) fn expect_partition_longer_than_the_buffer(r: &Report) {
    assert_accounted(r);
    let w1 = ward(r, 1);
    assert!(
        (60..=20 * 30).contains(&w1.dropped_overflow),
        "ward 1: {w1:?} (seed {})",
        r.seed
    );
    for w in [0, 2, 3, 4] {
        assert_eq!(
            ward(r, w).dropped_overflow,
            0,
            "ward {w} was not partitioned"
        );
    }
    assert_eq!(r.ledger.total.dropped_overflow, w1.dropped_overflow);
}

/// An aggregator killed, the broker restarted, the aggregator back.
pub(crate) fn aggregator_kill_and_broker_restart() -> String {
    format!(
        r#"{HEAD}
[aggregators]
count = 3

[[event]]
at = "8s"
action = "kill_aggregator"
aggregator = 2

[[event]]
at = "16s"
action = "restart_broker"

[[event]]
at = "24s"
action = "restart_aggregator"
aggregator = 2
"#
    )
}

/// Nothing the nodes held is lost; one injected restart, one aggregator
/// down; the aggregator comes back and owns partitions again.
pub(crate) fn expect_aggregator_kill_and_broker_restart(r: &Report) {
    assert_accounted(r);
    assert_eq!(r.ledger.total.lost_on_crash, 0);
    assert_eq!(r.ledger.total.dropped_overflow, 0);
    assert_eq!(r.broker.process_restarts, 1, "{:?}", r.broker.events);
    assert!(
        r.broker
            .events
            .iter()
            .any(|e| e.kind == "restarted" && e.detail == "injected")
    );
    assert_eq!(
        r.alerts.count("aggregator_down"),
        1,
        "{:?}",
        r.alerts.counts
    );
    let actions: Vec<&str> = r.timeline.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["kill_aggregator", "restart_broker", "restart_aggregator"]
    );
    assert!(
        r.timeline.iter().all(|e| e.error.is_none()),
        "{:?}",
        r.timeline
    );
    let agg2 = r.aggregators.iter().find(|a| a.id == 2).unwrap();
    assert_eq!(agg2.restarts, 1);
    assert!(
        !agg2.primary.is_empty(),
        "aggregator 2 came back and owned partitions again"
    );
}

/// 300 ± 50 ms on ward 0, 30 % loss on ward 4, for 30 s.
pub(crate) fn latency_and_packet_loss() -> String {
    format!(
        r#"{HEAD}
[[event]]
at = "3s"
action = "latency"
ward = 0
latency = "300ms"
jitter = "50ms"
for = "30s"

[[event]]
at = "3s"
action = "packet_loss"
ward = 4
share = 0.3
for = "30s"
"#
    )
}

/// 40 % of nodes see ≥ 250 ms one way (latency) or ≥ 200 ms retransmission
/// delays (loss): well over 10 % of samples are slower than 200 ms, the
/// median is not, and publish → PUBACK crosses the slowed link twice.
pub(crate) fn expect_latency_and_packet_loss(r: &Report) {
    assert_accounted(r);
    assert_eq!(r.ledger.total.dropped_overflow, 0);
    let e = r.latency.end_to_end;
    assert!(e.p90_ms >= 200.0, "{e:?} (seed {})", r.seed);
    assert!(e.p50_ms < 50.0, "the other wards are unaffected: {e:?}");
    assert!(
        r.latency.publish_ack.p90_ms >= 400.0,
        "{:?}",
        r.latency.publish_ack
    );
    let w = |i: usize| r.latency.per_ward[i].latency;
    assert!(
        w(0).p50_ms >= 250.0,
        "ward 0 crosses a 300 ms ± 50 ms link: {:?}",
        w(0)
    );
    assert!(
        w(4).p99_ms >= 200.0,
        "ward 4 waits for retransmissions: {:?}",
        w(4)
    );
    assert!(w(2).p99_ms < 100.0, "{:?}", w(2));
}

/// 100 nodes behind 10 gateways over a lossy radio with range drop-outs;
/// one gateway of ward 1 crashes for 10 s, then the broker restarts.
pub(crate) fn gateways_under_faults() -> String {
    format!(
        r#"{HEAD}
[gateways]
nodes_per_gateway = 10
radio_loss = 0.05
dropouts_per_hour = 120
dropout_length = "3s"

[[event]]
at = "5s"
action = "kill_gateways"
ward = 1
count = 1

[[event]]
at = "15s"
action = "restart_gateways"
ward = 1

[[event]]
at = "22s"
action = "restart_broker"
"#
    )
}

/// Nothing was lost: a gateway crash and a lossy radio cost re-sends, not
/// samples, and the ledger stays exact per node.
pub(crate) fn expect_gateways_under_faults(r: &Report) {
    assert_accounted(r);
    let total = &r.ledger.total;
    assert_eq!(total.lost_on_crash, 0, "no node crashed (seed {})", r.seed);
    assert_eq!(
        total.dropped_overflow, 0,
        "buffers outlast a 10 s outage (seed {})",
        r.seed
    );
    // What is not delivered is still held by its node (a frame lost in the
    // air near the end waits for the node's retransmission timeout).
    assert_eq!(
        total.delivered + total.still_buffered,
        total.produced,
        "{total:?} (seed {})",
        r.seed
    );
    assert!(
        total.still_buffered * 50 <= total.produced,
        "at most 2% still on its way: {total:?} (seed {})",
        r.seed
    );
    let w1 = ward(r, 1);
    assert_eq!(
        w1.delivered + w1.still_buffered,
        w1.produced,
        "ward 1: {w1:?}"
    );
    // Silences were real (a crashed gateway, a node out of range, the
    // broker restart), never a drained node's quiet at the end.
    assert!(
        r.alerts.false_node_down.is_empty(),
        "{:?} (seed {})",
        r.alerts.false_node_down,
        r.seed
    );
}

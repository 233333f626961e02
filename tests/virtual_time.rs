//! The same scenarios as `tests/faults.rs`, in virtual time: the same node
//! firmware, aggregators and pure run on a discrete-event clock with a
//! modelled broker and network. They run in milliseconds instead of 40 s
//! of real time each, and a run is a function of its seed: the same seed
//! gives the same report, byte for byte. Each test prints its seed;
//! `VITALMESH_TEST_SEED=N` repeats it.

use std::time::Duration;

#[path = "support/cases.rs"]
mod cases;
#[path = "support/ledger.rs"]
mod ledger;

use cases::{HEAD, ward};
use ledger::{assert_accounted, assert_no_node_reported_down};
use vitalmesh_sim::report::Report;
use vitalmesh_sim::virtual_time::{VirtualMesh, VirtualOptions};

fn seed() -> u64 {
    std::env::var("VITALMESH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(77)
}

fn scenario(text: &str) -> vitalmesh_scenario::Scenario {
    let s = vitalmesh_scenario::parse("test.toml", text).unwrap_or_else(|e| panic!("{e}"));
    s.check_virtual().unwrap_or_else(|e| panic!("{e}"));
    s
}

fn run_with(text: &str, seed: u64) -> Report {
    let mut mesh = VirtualMesh::new(&scenario(text), seed, &VirtualOptions::default());
    mesh.start()
        .unwrap_or_else(|e| panic!("start failed (seed {seed}): {e}"));
    mesh.run_to_end().report
}

fn run(text: &str) -> Report {
    run_with(text, seed())
}

/// Every kind of fault at once: what the determinism checks run.
fn everything() -> String {
    format!(
        r#"{HEAD}
[aggregators]
count = 3

[[event]]
at = "4s"
action = "partition"
ward = 1
for = "12s"

[[event]]
at = "6s"
action = "kill_aggregator"
aggregator = 2

[[event]]
at = "9s"
action = "kill_nodes"
ward = 3
count = 4

[[event]]
at = "12s"
action = "latency"
ward = 0
latency = "300ms"
jitter = "50ms"
for = "10s"

[[event]]
at = "14s"
action = "packet_loss"
ward = 4
share = 0.2
for = "10s"

[[event]]
at = "18s"
action = "restart_broker"

[[event]]
at = "22s"
action = "restart_aggregator"
aggregator = 2

[[event]]
at = "24s"
action = "restart_nodes"
ward = 3

[[event]]
at = "25s"
action = "sensor_fault"
ward = 2
count = 3
mode = "stuck_at"
value = 40.0
sign = "temperature"

[[event]]
at = "26s"
action = "outbreak"
ward = 4
attack_rate = 0.5
onset_median = "10s"
onset_spread = 0.3
"#
    )
}

#[test]
fn the_same_seed_gives_a_byte_identical_report_and_another_seed_does_not() {
    let text = everything();
    let a = run_with(&text, seed()).to_json();
    let b = run_with(&text, seed()).to_json();
    assert!(a == b, "two runs of seed {} differ", seed());
    let other = run_with(&text, seed() + 1).to_json();
    assert!(
        a != other,
        "seeds {} and {} gave the same report",
        seed(),
        seed() + 1
    );
    let r: serde_json::Value = serde_json::from_slice(&a).unwrap();
    assert_eq!(r["mode"], "virtual");
    assert_eq!(r["latency"]["clock"], "simulated");
    assert!(
        r.get("cpu").is_none() && r.get("memory").is_none(),
        "host figures stay out"
    );
    assert_eq!(
        r["started_at_unix_s"], 1_767_225_600.0,
        "the scenario's start, not the wall clock"
    );
}

#[test]
fn every_fault_at_once_still_accounts_for_every_sample() {
    let r = run(&everything());
    assert_accounted(&r);
    assert!(
        r.timeline.iter().all(|e| e.error.is_none()),
        "{:?}",
        r.timeline
    );
    assert_eq!(r.broker.process_restarts, 1);
    // Node-down reports only for nodes an action silenced.
    assert!(
        r.alerts.false_node_down.is_empty(),
        "{:?}",
        r.alerts.false_node_down
    );
}

#[test]
fn a_partition_shorter_than_the_node_buffer_loses_nothing() {
    let r = run(&format!(
        r#"{HEAD}
[population.profile]
buffer_bytes = 2048   # 64 samples

[[event]]
at = "5s"
action = "partition"
ward = 1
for = "15s"
"#
    ));
    assert_accounted(&r);
    assert_eq!(r.ledger.total.dropped_overflow, 0, "{:?}", r.ledger.total);
    assert_eq!(r.ledger.total.lost_on_crash, 0);
    let down: Vec<u32> = r.alerts.nodes_reported_down.clone();
    assert_eq!(
        down,
        (20..40).collect::<Vec<u32>>(),
        "exactly ward 1 went silent"
    );
    assert!(r.alerts.false_node_down.is_empty());
    // Their samples arrived late, not never, and only ward 1's latency shows it.
    let w = |i: usize| r.latency.per_ward[i].latency;
    assert!(w(1).max_ms > 10_000.0, "{:?}", w(1));
    for i in [0, 2, 3, 4] {
        assert!(w(i).max_ms < 100.0, "ward {i} was not cut off: {:?}", w(i));
    }
}

#[test]
fn a_partition_longer_than_the_buffer_loses_exactly_what_overflowed() {
    let r = run(&cases::partition_longer_than_the_buffer());
    cases::expect_partition_longer_than_the_buffer(&r);
    // In virtual time nothing else competes: at least half of the ~30
    // samples each node took during the partition overflowed.
    assert!(ward(&r, 1).dropped_overflow >= 20 * 15, "{:?}", ward(&r, 1));
    // The sessions expired: each partitioned node reconnected after the heal.
    assert!(r.connections.attempts >= 100 + 20, "{:?}", r.connections);
}

#[test]
fn aggregator_kill_and_broker_restart_lose_nothing_the_nodes_held() {
    let r = run(&cases::aggregator_kill_and_broker_restart());
    cases::expect_aggregator_kill_and_broker_restart(&r);
    // Ownership over time: aggregator 2 held partitions, lost them at the
    // kill (to the standbys, with the kill named as the cause) and got
    // them back after its restart.
    let series = &r.ownership.primary_per_second[&2];
    assert!(
        series[5] > 0 && series[12] == 0 && *series.last().unwrap() > 0,
        "{series:?}"
    );
    let moved_away: Vec<_> = r
        .ownership
        .moves
        .iter()
        .filter(|m| m.from == Some(2) && (8.0..12.0).contains(&m.at_s))
        .collect();
    assert!(!moved_away.is_empty(), "{:?}", r.ownership.moves);
    assert!(
        moved_away
            .iter()
            .all(|m| m.cause.contains("kill aggregator 2")),
        "{moved_away:?}"
    );
    // Every node lost its connection in the restart and came back.
    assert!(r.connections.attempts >= 200, "{:?}", r.connections);
}

#[test]
fn killed_nodes_lose_only_their_ram_and_come_back_with_new_connections() {
    let r = run(&format!(
        r#"{HEAD}
[[event]]
at = "5s"
action = "kill_nodes"
ward = 3
count = 4

[[event]]
at = "20s"
action = "restart_nodes"
ward = 3
"#
    ));
    assert_accounted(&r);
    let killed: Vec<u32> = r.timeline[0].nodes.clone();
    assert_eq!(killed.len(), 4);
    assert_eq!(r.alerts.nodes_reported_down, killed, "seed {}", r.seed);
    assert!(
        r.alerts.cleared.get("node_down").copied().unwrap_or(0) >= 4,
        "{:?}",
        r.alerts.cleared
    );
    assert!(ward(&r, 3).lost_on_crash <= 4 * 3, "{:?}", ward(&r, 3));
    assert_eq!(
        r.connections.attempts,
        100 + 4,
        "each restarted node opened a new connection"
    );
}

#[test]
fn latency_and_packet_loss_act_on_the_modelled_links() {
    let r = run(&cases::latency_and_packet_loss());
    cases::expect_latency_and_packet_loss(&r);
    let w2 = r.latency.per_ward[2].latency;
    assert!(
        w2.p99_ms < 20.0,
        "an untouched ward sees the base link only: {w2:?}"
    );
}

#[test]
fn a_partitioned_aggregator_blames_itself_and_its_partitions_fail_over() {
    let r = run(&format!(
        r#"{HEAD}
[aggregators]
count = 3

[[event]]
at = "5s"
action = "partition"
aggregator = 0
for = "15s"
"#
    ));
    assert_accounted(&r);
    assert_eq!(r.ledger.total.lost_on_crash, 0);
    assert!(
        r.alerts.count("aggregator_isolated") >= 1,
        "{:?}",
        r.alerts.counts
    );
    assert!(
        r.alerts.count("aggregator_down") >= 1,
        "{:?}",
        r.alerts.counts
    );
    assert_no_node_reported_down(&r, "no node was at fault");
    let away: Vec<_> = r
        .ownership
        .moves
        .iter()
        .filter(|m| m.from == Some(0))
        .collect();
    assert!(!away.is_empty(), "aggregator 0's partitions moved away");
    assert!(
        away.iter()
            .all(|m| m.cause.contains("partition aggregator 0")),
        "{away:?}"
    );
}

#[test]
fn an_outbreak_infects_its_attack_rate_of_one_ward_over_hours_of_simulated_time() {
    let r = run(r#"
[scenario]
name = "outbreak-test"
duration = "8h"

[population]
wards = 4
nodes_per_ward = 10

[[event]]
at = "10m"
action = "outbreak"
ward = 2
attack_rate = 0.6
onset_median = "1h"
onset_spread = 0.5
"#);
    assert_accounted(&r);
    let e = &r.timeline[0];
    assert_eq!(
        (e.action.as_str(), e.wards.as_slice()),
        ("outbreak", &[2][..])
    );
    assert_eq!(e.nodes.len(), 6, "60 % of 10");
    assert!(e.nodes.iter().all(|n| (20..30).contains(n)));
    let mut onsets: Vec<f64> = e.onsets.iter().map(|(_, t)| *t).collect();
    onsets.sort_by(f64::total_cmp);
    let median = onsets[3];
    assert!(
        (600.0 + 1200.0..600.0 + 10_000.0).contains(&median),
        "median onset {median} s, around an hour after the event at 10 min"
    );
    // Eight simulated hours of 40 patients at 1 Hz, every one accounted for.
    let hours = 40 * 8 * 3600;
    assert!(
        (hours - 40..=hours).contains(&r.ledger.total.produced),
        "{:?}",
        r.ledger.total
    );
}

#[test]
fn an_injected_action_is_recorded_and_a_refused_one_says_why() {
    let s = scenario(HEAD);
    let mut mesh = VirtualMesh::new(&s, seed(), &VirtualOptions::default());
    mesh.start().unwrap();
    mesh.run_until(Duration::from_secs(5));
    let ok = mesh.apply(
        &vitalmesh_scenario::Action::KillAggregator { aggregator: 1 },
        "inject",
    );
    assert!(ok.error.is_none(), "{ok:?}");
    let refused = mesh.apply(
        &vitalmesh_scenario::Action::KillAggregator { aggregator: 1 },
        "inject",
    );
    assert_eq!(
        refused.error.as_deref(),
        Some("aggregator 1 is not running")
    );
    assert!(
        refused.console_line().contains("refused"),
        "{}",
        refused.console_line()
    );
    mesh.run_until(Duration::from_secs(15));
    let r = mesh.finish(false).report;
    assert_accounted(&r);
    assert_eq!(r.timeline.len(), 2);
    assert!(
        (r.timeline[0].at_s - 5.0).abs() < 1e-6,
        "{:?}",
        r.timeline[0]
    );
}

#[test]
fn rogue_clients_are_refused_up_front_for_a_virtual_run() {
    let s = vitalmesh_scenario::parse(
        "rogue.toml",
        &format!(
            "{HEAD}\n[[event]]\nat = \"5s\"\naction = \"rogue\"\nkind = \"garbage\"\nmessages = 10\nrate = 5.0\n"
        ),
    )
    .unwrap();
    let e = s.check_virtual().unwrap_err().to_string();
    assert!(
        e.contains("rogue.toml:")
            && e.contains("event[0].action: 'rogue' cannot run in virtual time"),
        "{e}"
    );
}

/// 200 nodes on a broker that delivers 10,000 copies a second. One sample
/// per message costs two copies (primary and standby), so the broker
/// saturates near 4,900 samples/s sent one per message; `hz` sets the
/// offered load.
fn overload(hz: u32) -> String {
    format!(
        r#"
[scenario]
name = "overload-{hz}hz"
duration = "40s"
drain = "20s"

[population]
wards = 5
nodes_per_ward = 40

[population.profile]
sample_interval = "{}ms"
buffer_bytes = 262144

[virtual]
broker_capacity = 10000
"#,
        1_000 / hz
    )
}

/// Distinct samples delivered per second over the second half of the
/// load (20–40 s: windows and batches have settled, the drain has not
/// begun).
fn goodput(r: &Report) -> f64 {
    let half = &r.throughput.delivered[20..40];
    half.iter().sum::<u64>() as f64 / half.len() as f64
}

#[test]
fn past_saturation_goodput_keeps_rising_and_every_sample_is_accounted() {
    // Below the knee, about 2× and 4× past it.
    let ladder = [20u32, 50, 100];
    let mut rows = Vec::new();
    for hz in ladder {
        let r = run(&overload(hz));
        assert_accounted(&r);
        let offered = f64::from(hz) * 200.0;
        rows.push((
            hz,
            offered,
            goodput(&r),
            r.broker.peak_queue_s.unwrap_or(0.0),
            r.ledger.total,
        ));
    }
    let table: Vec<String> = rows
        .iter()
        .map(|(hz, offered, good, queue, row)| {
            format!("{hz} Hz: offered {offered:.0}/s, goodput {good:.0}/s, peak broker queue {queue:.2}s, {row:?}")
        })
        .collect();
    let table = table.join("\n");
    eprintln!("{table}");
    for (i, (_, offered, good, _, row)) in rows.iter().enumerate() {
        assert_eq!(row.unexplained, 0, "{table}\n(seed {})", seed());
        assert_eq!(
            row.dropped_overflow, 0,
            "nothing overflowed a 256 KiB buffer:\n{table}"
        );
        // Batching carries the whole offered load, even at 4× the
        // one-message-per-sample knee.
        assert!(
            *good >= 0.9 * offered,
            "step {i} delivered {good:.0}/s of {offered:.0}/s offered:\n{table}\n(seed {})",
            seed()
        );
    }
    assert!(
        rows.windows(2).all(|w| w[1].2 > w[0].2),
        "goodput never falls as load rises:\n{table}"
    );
}

#[test]
fn gateways_lose_nothing_under_crashes_a_lossy_radio_and_a_broker_restart() {
    let r = run(&cases::gateways_under_faults());
    cases::expect_gateways_under_faults(&r);
    // Every sample went through a gateway: 100 nodes, one uplink each
    // gateway, so far fewer publishes than samples.
    assert!(r.connections.peak_connected >= 95, "{:?}", r.connections);
}

#[test]
fn a_returning_aggregator_takes_its_partitions_back_without_a_gap() {
    // Aggregator 1 dies, its partitions fail over to their standbys; when
    // it returns it joins as a warm standby first and the hand-back is
    // make-before-break: no sample goes unheard, so none waits for a node's
    // retransmission timeout (5 s).
    let r = run(&format!(
        r#"{HEAD}
[aggregators]
count = 3

[[event]]
at = "8s"
action = "kill_aggregator"
aggregator = 1

[[event]]
at = "18s"
action = "restart_aggregator"
aggregator = 1
"#
    ));
    assert_accounted(&r);
    let series = &r.ownership.primary_per_second[&1];
    assert!(
        series[5] > 0 && series[12] == 0 && *series.last().unwrap() > 0,
        "it held partitions, lost them and took them back: {series:?}"
    );
    let e2e = &r.latency.end_to_end;
    assert!(
        e2e.max_ms < 1000.0,
        "a sample waited {} ms: a hand-over left a partition unheard (seed {})",
        e2e.max_ms,
        r.seed
    );
    assert_eq!(r.ledger.total.delivered, r.ledger.total.produced);
}

#[test]
fn nodes_rejoin_as_soon_as_a_long_partition_heals() {
    // Ward 1 is cut off for 200 s: the broker drops its sessions, and its
    // nodes' attempts time out again and again, their backoff growing to
    // its 30 s ceiling. When the path is back they reconnect at once
    // instead of waiting out the backoff, and lose nothing.
    let r = run(&format!(
        r#"{HEAD}
[population.profile]
buffer_bytes = 65536

[[event]]
at = "5s"
action = "partition"
ward = 1
for = "200s"
"#
    )
    .replace("duration = \"40s\"", "duration = \"230s\""));
    assert_accounted(&r);
    let connected = &r.throughput.connected;
    assert!(
        connected[100] <= 80,
        "ward 1 was really disconnected: {connected:?}"
    );
    assert_eq!(
        connected[207],
        100,
        "all back within 2 s of the heal at 205 s: {:?} (seed {})",
        &connected[200..],
        r.seed
    );
    assert_eq!(ward(&r, 1).dropped_overflow, 0);
}

#[test]
fn aggregators_scale_two_to_eight_to_three_under_load_losing_and_stalling_nothing() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/elastic-aggregators.toml"
    );
    let text = std::fs::read_to_string(path).expect("the shipped scenario");
    let r = run(&text);
    assert_accounted(&r);
    let t = &r.ledger.total;
    assert_eq!(
        (t.lost_on_crash, t.dropped_overflow),
        (0, 0),
        "seed {}",
        r.seed
    );
    assert_eq!(t.delivered + t.still_buffered, t.produced);
    let holding = |second: usize| {
        r.ownership
            .primary_per_second
            .values()
            .filter(|s| s.get(second).is_some_and(|&n| n > 0))
            .count()
    };
    assert_eq!(
        (holding(10), holding(45), holding(80)),
        (2, 8, 3),
        "aggregators holding partitions at 10 s, 45 s and 80 s (seed {})",
        r.seed
    );
    // Weighted rendezvous: the two weight-2 aggregators (slots 6 and 7)
    // hold about twice the partitions of each weight-1 one.
    let held = |a: u16| f64::from(r.ownership.primary_per_second[&a][45]);
    let heavy = (held(6) + held(7)) / 2.0;
    let light = (0..6).map(held).sum::<f64>() / 6.0;
    assert!(
        (1.5..=2.7).contains(&(heavy / light)),
        "weight 2 holds {heavy} partitions, weight 1 {light} (seed {})",
        r.seed
    );
    // Every move is explained by the action that caused it.
    assert!(
        r.ownership
            .moves
            .iter()
            .filter(|m| (19.0..30.0).contains(&m.at_s))
            .all(|m| m.cause.contains("add")),
        "{:?}",
        r.ownership.moves
    );
    // No sample waited for a node's 5 s re-send during a move.
    let e2e = &r.latency.end_to_end;
    assert!(
        e2e.max_ms < 1000.0,
        "max {} ms (seed {})",
        e2e.max_ms,
        r.seed
    );
    assert!(r.slo.iter().all(|s| s.passed), "{:?}", r.slo);
}

/// The merge algebra on a real run: a virtual run's outcome split as
/// shards would know it (each node in its device's shard; each delivered
/// sequence number in the shard of whichever aggregator ingested it — here
/// spread over every shard, and some twice) merges back to the run's own
/// ledger, whatever the shard count.
#[test]
fn a_virtual_run_split_into_shards_merges_back_to_its_own_ledger() {
    use vitalmesh_sim::shard::{LedgerPart, Shard};
    let seed = seed();
    let scenario = scenario(&everything());
    let mut mesh = VirtualMesh::new(&scenario, seed, &VirtualOptions::default());
    mesh.start().unwrap();
    let outcome = mesh.run_to_end();
    assert_accounted(&outcome.report);
    let population = scenario.population;
    let whole = serde_json::to_value(&outcome.report.ledger).unwrap();
    for count in 1..=4u32 {
        let mut parts: Vec<LedgerPart> = (0..count).map(|_| LedgerPart::default()).collect();
        for f in &outcome.finals {
            let owner = (0..count)
                .map(|index| Shard { index, count })
                .position(|s| s.owns_device(&population, f.id))
                .expect("every node has a shard");
            parts[owner].nodes.insert(f.id.0, f.clone());
        }
        for (node, set) in outcome.delivered.iter().enumerate() {
            for seq in set.iter() {
                let shard = (seq % u64::from(count)) as usize;
                parts[shard]
                    .delivered
                    .entry(node as u32)
                    .or_default()
                    .insert(seq);
                *parts[shard].ingests.entry(node as u32).or_default() += 1;
                // Every seventh also reached a second shard's aggregator
                // (a partition that moved between shards in flight).
                if seq % 7 == 0 && count > 1 {
                    let other = (shard + 1) % count as usize;
                    parts[other]
                        .delivered
                        .entry(node as u32)
                        .or_default()
                        .insert(seq);
                    *parts[other].ingests.entry(node as u32).or_default() += 1;
                }
            }
        }
        let merged = parts
            .into_iter()
            .rev()
            .fold(LedgerPart::default(), LedgerPart::merge)
            .ledger(&population);
        let mut merged = serde_json::to_value(&merged).unwrap();
        let mut expected = whole.clone();
        // Duplicates: the run's come from its own re-deliveries, the
        // split's from the copies made above; everything else must agree.
        for v in [&mut merged, &mut expected] {
            v["total"]["duplicates"] = 0.into();
            for w in v["wards"].as_array_mut().unwrap() {
                w["duplicates"] = 0.into();
            }
        }
        assert_eq!(merged, expected, "seed {seed}, {count} shards");
    }
}

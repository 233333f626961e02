//! Behaviour of the node state machine, driven the way a runtime would.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use vitalmesh_firmware::PatientOptions;
use vitalmesh_firmware::battery::BatteryConfig;
use vitalmesh_firmware::buffer::{DropPolicy, RECORD_BYTES};
use vitalmesh_firmware::{Link, LinkAction, Node, NodeConfig, Power, Transmit};
use vitalmesh_wire::envelope::{Keyring, Principal, claimed_sender};
use vitalmesh_wire::{
    Batch, Body, NodeAck, NodeId, PartitionId, Presence, Timestamp, WireTopic, decode,
};

const T0: Timestamp = Timestamp::from_secs(1_767_225_600);
const SECRET: [u8; 32] = *b"node-test-secret-node-test-secre";

fn keyring() -> &'static Keyring {
    static RING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
    RING.get_or_init(|| Keyring::new(SECRET, 100_000))
}

fn node_with(id: u32, seed: u64, config: NodeConfig) -> Node {
    let credentials = keyring().node_credentials(NodeId(id));
    Node::new(NodeId(id), PartitionId(0), config, seed, credentials, T0)
}

/// The partition's aggregator acks everything below `upto`.
fn ack_up_to(node: &mut Node, upto: u64, now: Timestamp) {
    let id = node.id();
    let key = keyring().ack_key(id).expect("provisioned");
    node.handle_ack(&key.ack(PartitionId(0), id, upto), now);
}

fn batch(t: &Transmit) -> Batch {
    let payload = &t.payload;
    let Some(Principal::Node(node)) = claimed_sender(payload) else {
        panic!("a node's payload")
    };
    let topic = WireTopic::Data {
        partition: PartitionId(0),
        node,
    };
    match decode(payload, &topic, keyring()).expect("a node's own payload decodes") {
        Body::Batch(b) => b,
        other => panic!("expected a batch, got {other:?}"),
    }
}

/// Runs the node to `until`, connecting whenever it asks, collecting transmits.
fn drive_online(node: &mut Node, from: Timestamp, until: Timestamp) -> Vec<Transmit> {
    drive(node, from, until, false)
}

/// As [`drive_online`], acknowledging every transmit at once.
fn drive_acked(node: &mut Node, from: Timestamp, until: Timestamp) -> Vec<Transmit> {
    drive(node, from, until, true)
}

fn drive(node: &mut Node, from: Timestamp, until: Timestamp, ack: bool) -> Vec<Transmit> {
    let mut out = Vec::new();
    let mut now = from;
    loop {
        node.handle_timeout(now);
        while let Some(action) = node.poll_link() {
            if action == LinkAction::Connect {
                node.handle_connected(now);
            }
        }
        while let Some(t) = node.poll_transmit(now) {
            if ack {
                ack_up_to(node, t.first_seq + t.samples as u64, now);
            }
            out.push(t);
        }
        match node.poll_timeout() {
            Some(next) if next <= until => now = next.max(now),
            _ => break,
        }
    }
    out
}

fn drive_offline(node: &mut Node, until: Timestamp) {
    while let Some(next) = node.poll_timeout() {
        if next > until {
            break;
        }
        node.handle_timeout(next);
        while let Some(action) = node.poll_link() {
            if action == LinkAction::Connect {
                node.handle_disconnected(next);
            }
        }
    }
}

#[test]
fn same_seed_gives_byte_identical_streams_and_nodes_differ() {
    let run = |id: u32, seed: u64| {
        let mut n = node_with(id, seed, NodeConfig::default());
        drive_acked(&mut n, T0, T0 + Duration::from_secs(120))
            .into_iter()
            .map(|t| t.payload)
            .collect::<Vec<_>>()
    };
    let a = run(1, 42);
    assert_eq!(a.len(), 120);
    assert_eq!(a, run(1, 42), "same seed, same node: identical bytes");
    let values = |stream: &[Vec<u8>]| -> Vec<_> {
        stream
            .iter()
            .map(|p| {
                batch(&Transmit {
                    payload: p.clone(),
                    first_seq: 0,
                    samples: 1,
                })
                .samples[0]
                    .vitals
            })
            .collect()
    };
    assert_ne!(
        values(&a),
        values(&run(2, 42)),
        "another node has another patient"
    );
    assert_ne!(
        values(&a),
        values(&run(1, 43)),
        "another seed gives another run"
    );
}

#[test]
fn nodes_sample_on_staggered_phases() {
    let firsts: BTreeSet<u64> = (0..200)
        .map(|id| {
            let mut n = node_with(id, 7, NodeConfig::default());
            let t = drive_online(&mut n, T0, T0 + Duration::from_secs(1));
            batch(&t[0]).samples[0].time.as_micros() / 1000
        })
        .collect();
    // 200 nodes in a 1 s window: almost all in distinct milliseconds.
    assert!(
        firsts.len() > 170,
        "only {} distinct first-sample milliseconds",
        firsts.len()
    );
}

#[test]
fn samples_are_due_on_the_grid_even_when_the_runtime_is_late() {
    let mut n = node_with(3, 1, NodeConfig::default());
    // The runtime wakes only once, 10 s late: ten samples, each with its own
    // intended time, so latency measured from them includes the stall.
    n.handle_timeout(T0 + Duration::from_secs(10));
    assert_eq!(n.next_seq(), 10);
    let times: Vec<u64> = n.buffered().map(|s| s.time.as_micros()).collect();
    assert!(
        times.windows(2).all(|w| w[1] - w[0] == 1_000_000),
        "{times:?}"
    );
}

#[test]
fn backlog_is_backfilled_in_bounded_batches_and_acks_empty_the_buffer() {
    let config = NodeConfig {
        max_batch_samples: 16,
        ..NodeConfig::default()
    };
    let mut n = node_with(4, 1, config);
    let down_until = T0 + Duration::from_secs(100);
    drive_offline(&mut n, down_until);
    assert_eq!(n.status(down_until).buffered as u64, n.next_seq());
    n.handle_timeout(down_until);
    n.handle_connected(down_until);
    let mut sent = Vec::new();
    while let Some(t) = n.poll_transmit(down_until) {
        sent.push(batch(&t));
    }
    assert!(sent.iter().all(|b| b.samples.len() <= 16));
    let seqs: Vec<u64> = sent
        .iter()
        .flat_map(|b| b.samples.iter().map(|s| s.seq))
        .collect();
    assert_eq!(
        seqs,
        (0..n.next_seq()).collect::<Vec<_>>(),
        "every sample once, in order"
    );
    let upto = n.next_seq();
    ack_up_to(&mut n, upto, down_until);
    assert_eq!(n.status(down_until).buffered, 0);
    assert_eq!(n.ledger().acked.len(), n.next_seq());
    assert!(n.ledger().balances(0));
}

#[test]
fn overflow_drops_the_oldest_and_tells_the_receiver() {
    let config = NodeConfig {
        buffer_bytes: 10 * RECORD_BYTES,
        ..NodeConfig::default()
    };
    let mut n = node_with(5, 1, config);
    let t = T0 + Duration::from_secs(30);
    drive_offline(&mut n, t);
    let produced = n.next_seq();
    assert!(produced >= 29);
    assert_eq!(n.ledger().dropped_overflow.len(), produced - 10);
    assert_eq!(n.ledger().dropped_overflow.first(), Some(0));
    n.handle_timeout(t);
    n.handle_connected(t);
    let b = batch(&n.poll_transmit(t).unwrap());
    assert_eq!(
        b.held_from,
        produced - 10,
        "the receiver must not wait for dropped samples"
    );
    assert_eq!(b.samples[0].seq, produced - 10);
}

#[test]
fn drop_newest_keeps_the_backlog() {
    let config = NodeConfig {
        buffer_bytes: 10 * RECORD_BYTES,
        drop_policy: DropPolicy::DropNewest,
        ..NodeConfig::default()
    };
    let mut n = node_with(5, 1, config);
    drive_offline(&mut n, T0 + Duration::from_secs(30));
    let held: Vec<u64> = n.buffered().map(|s| s.seq).collect();
    assert_eq!(held, (0..10).collect::<Vec<_>>());
    assert_eq!(n.ledger().dropped_overflow.first(), Some(10));
}

#[test]
fn a_crash_loses_the_buffer_and_sequence_numbers_continue_after_restart() {
    let mut n = node_with(6, 1, NodeConfig::default());
    let t = T0 + Duration::from_secs(20);
    drive_offline(&mut n, t);
    let before = n.next_seq();
    n.crash(t);
    assert_eq!(n.status(t).power, Power::Crashed);
    assert_eq!(n.ledger().lost_on_crash.len(), before);
    assert_eq!(
        n.poll_timeout(),
        None,
        "a crashed node sleeps until restarted"
    );
    n.handle_timeout(t + Duration::from_secs(60));
    assert_eq!(n.next_seq(), before, "no samples while crashed");
    let back = t + Duration::from_secs(60);
    n.restart(back);
    let sent = drive_online(&mut n, back, back + Duration::from_secs(5));
    let b = batch(&sent[0]);
    assert_eq!(b.samples[0].seq, before);
    assert_eq!(b.held_from, before);
    assert!(n.ledger().balances(n.status(back).buffered as u64));
}

#[test]
fn a_clean_reboot_keeps_the_buffer() {
    let mut n = node_with(6, 1, NodeConfig::default());
    let t = T0 + Duration::from_secs(20);
    let _ = drive_online(&mut n, T0, t);
    let held = n.status(t).buffered;
    assert!(held > 0);
    n.reboot(t);
    assert_eq!(
        n.poll_link(),
        Some(LinkAction::Disconnect { graceful: true })
    );
    assert_eq!(n.ledger().lost_on_crash.len(), 0);
    let sent = drive_online(&mut n, t, t + Duration::from_secs(5));
    let first = batch(&sent[0]);
    assert_eq!(
        first.samples[0].seq, 0,
        "unacknowledged samples are re-sent after the reboot"
    );
}

#[test]
fn without_acks_the_node_resends_with_doubling_timeouts() {
    let mut n = node_with(8, 1, NodeConfig::default());
    let sent = drive_online(&mut n, T0, T0 + Duration::from_secs(60));
    let rounds = n.ledger().retransmission_rounds;
    // Timeouts 5, 10, 20 s: three rounds in the first minute (5, 15, 35 s after
    // the first transmission), a fourth would be at 75 s.
    assert_eq!(rounds, 3, "rounds {rounds}");
    let resent_from_zero = sent.iter().filter(|t| t.first_seq == 0).count();
    assert_eq!(resent_from_zero as u64, 1 + rounds);
    // An acknowledgement stops the re-sending and resets the timeout.
    let now = T0 + Duration::from_secs(60);
    let upto = n.next_seq();
    ack_up_to(&mut n, upto, now);
    let acked_to = n.next_seq();
    let more = drive_online(&mut n, now, now + Duration::from_secs(4));
    assert!(
        more.iter()
            .all(|t| t.samples == 0 || (t.samples == 1 && t.first_seq >= acked_to)),
        "only fresh samples after the ack (and, while the one-batch window \
         waits, empty heartbeats)"
    );
}

#[test]
fn a_node_blocked_on_its_window_keeps_saying_it_is_alive_without_flooding() {
    // A one-batch window and no acknowledgements: without a heartbeat the
    // node would be silent between retransmission timeouts (5, 10, 20 s),
    // long enough for its aggregator to declare it down.
    let config = NodeConfig {
        flow: vitalmesh_firmware::flow::FlowConfig {
            initial_window: 1,
            max_window: 1,
        },
        ..NodeConfig::default()
    };
    let mut n = node_with(10, 1, config);
    let sent = drive_online(&mut n, T0, T0 + Duration::from_secs(40));
    let heartbeats = sent.iter().filter(|t| t.samples == 0).count();
    // One every QUIET_HEARTBEAT (2 s) while blocked, less the seconds a
    // re-send spoke instead: about 16 in 40 s, never one per sample.
    assert!(
        (12..=20).contains(&heartbeats),
        "{heartbeats} heartbeats in 40 s"
    );
    assert!(
        sent.iter()
            .filter(|t| t.samples == 0)
            .map(batch)
            .all(|b| b.presence == Presence::Monitoring),
    );
}

#[test]
fn a_forged_or_misdirected_ack_never_makes_a_node_drop_a_sample() {
    let mut n = node_with(9, 1, NodeConfig::default());
    let t = T0 + Duration::from_secs(5);
    let sent = drive_online(&mut n, T0, t);
    assert!(!sent.is_empty());
    let held = n.buffered_len();
    assert!(held > 0);
    let id = n.id();
    let own = keyring().ack_key(id).unwrap();
    let forgeries = [
        // No key at all.
        NodeAck {
            node: id,
            next_expected: u64::MAX,
            tag: [0; 16],
        },
        // Another node's key (a node, or a gateway, forging for it).
        keyring()
            .ack_key(NodeId(10))
            .unwrap()
            .ack(PartitionId(0), id, u64::MAX),
        // A genuine ack of another partition's, replayed here.
        own.ack(PartitionId(1), id, u64::MAX),
        // A genuine ack, altered.
        NodeAck {
            next_expected: u64::MAX,
            ..own.ack(PartitionId(0), id, 1)
        },
    ];
    for forged in &forgeries {
        n.handle_ack(forged, t);
    }
    assert_eq!(n.buffered_len(), held, "nothing released");
    assert!(n.ledger().acked.is_empty());
    assert_eq!(n.ledger().forged_acks, forgeries.len() as u64);
    // The real one still works.
    ack_up_to(&mut n, 2, t);
    assert_eq!(n.ledger().acked.len(), 2);
}

#[test]
fn acks_beyond_what_was_produced_are_clamped() {
    let mut n = node_with(9, 1, NodeConfig::default());
    let t = T0 + Duration::from_secs(5);
    let _ = drive_online(&mut n, T0, t);
    ack_up_to(&mut n, u64::MAX, t);
    assert_eq!(n.ledger().acked.len(), n.next_seq());
    let later = t + Duration::from_secs(3);
    let _ = drive_online(&mut n, t, later);
    assert!(
        n.status(later).buffered > 0,
        "new samples are not pre-acknowledged"
    );
}

#[test]
fn a_flat_battery_stops_the_node() {
    let config = NodeConfig {
        battery: Some(BatteryConfig {
            capacity_j: 0.5,
            ..BatteryConfig::default()
        }),
        ..NodeConfig::default()
    };
    let mut n = node_with(10, 1, config);
    let sent = drive_acked(&mut n, T0, T0 + Duration::from_secs(3600));
    let last = batch(sent.last().unwrap());
    assert!(last.samples.last().unwrap().battery_pct < 15);
    let flags = last.samples.last().unwrap().faults;
    assert!(flags.contains(vitalmesh_wire::FaultFlags::LOW_BATTERY));
    let t = T0 + Duration::from_secs(3600);
    assert_eq!(n.status(t).power, Power::Flat);
    assert_eq!(n.poll_timeout(), None);
    assert!(n.next_seq() < 3600);
}

#[test]
fn reconnect_attempts_back_off() {
    let mut n = node_with(11, 1, NodeConfig::default());
    let mut attempts = Vec::new();
    let until = T0 + Duration::from_secs(120);
    while let Some(next) = n.poll_timeout() {
        if next > until {
            break;
        }
        n.handle_timeout(next);
        while let Some(a) = n.poll_link() {
            if a == LinkAction::Connect {
                attempts.push(next);
                n.handle_disconnected(next);
            }
        }
    }
    let gaps: Vec<Duration> = attempts
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .collect();
    assert!(gaps.len() >= 5);
    assert!(
        gaps.iter()
            .all(|g| *g <= Duration::from_secs(30) + Duration::from_secs(1))
    );
    assert!(gaps[4] > gaps[0] * 4, "waits grow: {gaps:?}");
}

#[test]
fn a_full_window_holds_samples_back_and_they_leave_together_when_it_opens() {
    // 50 Hz with acknowledgements that take far longer than a sample
    // interval: an overloaded broker.
    let config = NodeConfig {
        sample_interval: Duration::from_millis(20),
        ..NodeConfig::default()
    };
    let window = config.flow.initial_window as usize;
    let mut n = node_with(20, 1, config);
    let until = T0 + Duration::from_secs(2);
    let sent = drive_online(&mut n, T0, until);
    assert_eq!(
        sent.len(),
        window,
        "no acknowledgement: only a window's worth of messages leaves"
    );
    assert!(
        sent.iter().all(|t| t.samples == 1),
        "each sample in its own message while the window has room"
    );
    assert!(n.poll_transmit(until).is_none(), "the window is full");
    let waiting = n.status(until).buffered - window;
    assert!(waiting > 80, "samples wait in the buffer: {waiting}");
    // The first acknowledgement opens the window: everything waiting leaves
    // in full batches, not one message per sample.
    ack_up_to(&mut n, sent[1].first_seq + 1, until);
    let mut after = Vec::new();
    while let Some(t) = n.poll_transmit(until) {
        after.push(t);
    }
    let carried: usize = after.iter().map(|t| t.samples).sum();
    assert_eq!(carried, waiting, "all that waited is sent");
    assert!(
        after.len() * 20 < waiting,
        "{waiting} samples in {} messages",
        after.len()
    );
    assert!(
        after
            .iter()
            .all(|t| t.samples <= n.config().max_batch_samples)
    );
}

#[test]
fn after_a_timeout_the_resend_is_bounded_by_a_halved_window() {
    let config = NodeConfig {
        max_batch_samples: 4,
        ..NodeConfig::default()
    };
    let mut n = node_with(21, 1, config);
    // 200 samples buffered offline, then a connection that never acknowledges.
    let t = T0 + Duration::from_secs(200);
    drive_offline(&mut n, t);
    n.handle_timeout(t);
    n.handle_connected(t);
    let mut first = 0;
    while n.poll_transmit(t).is_some() {
        first += 1;
    }
    assert_eq!(first, 8, "the initial window");
    let timeout = t + Duration::from_secs(5);
    n.handle_timeout(timeout);
    assert_eq!(n.ledger().retransmission_rounds, 1);
    let mut resent = Vec::new();
    while let Some(x) = n.poll_transmit(timeout) {
        resent.push(x);
    }
    assert_eq!(
        resent.len(),
        4,
        "half the window, not the whole backlog of 50 batches"
    );
    assert_eq!(
        resent[0].first_seq, 0,
        "go-back-N from the oldest unacknowledged"
    );
}

/// One input to a node, as a runtime could deliver it.
#[derive(Debug, Clone)]
enum Op {
    Advance(u16),
    Connected,
    Disconnected,
    Ack(u16),
    Transmit,
    Crash,
    Restart,
    Reboot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u16..5000).prop_map(Op::Advance),
        2 => Just(Op::Connected),
        1 => Just(Op::Disconnected),
        2 => (0u16..400).prop_map(Op::Ack),
        3 => Just(Op::Transmit),
        1 => Just(Op::Crash),
        1 => Just(Op::Restart),
        1 => Just(Op::Reboot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_batch_exceeds_its_byte_or_sample_limit(
        seed in any::<u64>(),
        max_bytes in 120usize..4096,
        max_samples in 1usize..300,
        backlog_s in 1u64..900,
    ) {
        let config = NodeConfig {
            max_batch_bytes: max_bytes,
            max_batch_samples: max_samples,
            flow: vitalmesh_firmware::flow::FlowConfig { initial_window: 64, max_window: 64 },
            buffer_bytes: 64 * 1024,
            ..NodeConfig::default()
        };
        let mut n = node_with(22, seed, config);
        let t = T0 + Duration::from_secs(backlog_s);
        drive_offline(&mut n, t);
        n.handle_timeout(t);
        n.handle_connected(t);
        let held = n.status(t).buffered as u64;
        let mut seqs: Vec<u64> = Vec::new();
        loop {
            let Some(x) = n.poll_transmit(t) else {
                // The window is full (or all is sent): acknowledge what left.
                let upto = seqs.last().map_or(0, |s| s + 1);
                if upto == held {
                    break;
                }
                ack_up_to(&mut n, upto, t);
                continue;
            };
            prop_assert!(x.payload.len() <= max_bytes, "{} bytes > {max_bytes} (seed {seed})", x.payload.len());
            let b = batch(&x);
            prop_assert!(!b.samples.is_empty());
            prop_assert!(b.samples.len() <= max_samples.min(vitalmesh_wire::message::MAX_BATCH_SAMPLES));
            seqs.extend(b.samples.iter().map(|s| s.seq));
        }
        prop_assert_eq!(seqs, (0..held).collect::<Vec<u64>>(), "every held sample once, in order");
    }

    #[test]
    fn the_ledger_balances_after_any_sequence_of_events(
        seed in any::<u64>(),
        buffer_records in 1u32..64,
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let config = NodeConfig {
            buffer_bytes: buffer_records * RECORD_BYTES,
            sample_interval: Duration::from_millis(250),
            ..NodeConfig::default()
        };
        let mut n = node_with(1, seed, config);
        let mut now = T0;
        let mut sent = BTreeSet::new();
        for op in ops {
            match op {
                Op::Advance(ms) => {
                    now = now + Duration::from_millis(u64::from(ms));
                    n.handle_timeout(now);
                }
                Op::Connected => n.handle_connected(now),
                Op::Disconnected => n.handle_disconnected(now),
                Op::Ack(k) => {
                    // A plausible cumulative ack: never beyond what was sent.
                    let upto = sent.iter().take(usize::from(k)).next_back().map_or(0, |s| s + 1);
                    ack_up_to(&mut n, upto, now);
                }
                Op::Transmit => {
                    while let Some(t) = n.poll_transmit(now) {
                        let b = batch(&t);
                        prop_assert!(b.samples.len() <= n.config().max_batch_samples);
                        sent.extend(b.samples.iter().map(|s| s.seq));
                    }
                }
                Op::Crash => n.crash(now),
                Op::Restart => n.restart(now),
                Op::Reboot => n.reboot(now),
            }
            while n.poll_link().is_some() {}
            let status = n.status(now);
            let ledger = n.ledger();
            prop_assert!(ledger.balances(status.buffered as u64),
                "produced {} acked {} buffered {} dropped {} lost {} (seed {seed})",
                ledger.produced, ledger.acked.len(), status.buffered,
                ledger.dropped_overflow.len(), ledger.lost_on_crash.len());
            prop_assert!(status.buffered <= status.buffer_capacity);
            // Only transmitted samples can be acknowledged.
            prop_assert!(ledger.acked.iter().all(|s| sent.contains(&s)));
            // The poll timeout is never in the past when the node runs.
            if status.power == Power::On {
                prop_assert!(n.poll_timeout().is_some());
            }
            if let Link::Offline { retry_at } = status.link {
                if status.power == Power::On {
                    prop_assert!(retry_at <= now + Duration::from_secs(31));
                }
            }
        }
    }
}

#[test]
fn a_node_that_stops_sampling_still_delivers_its_backlog() {
    let mut n = node_with(12, 1, NodeConfig::default());
    let t = T0 + Duration::from_secs(10);
    drive_offline(&mut n, t);
    let produced = n.next_seq();
    n.set_sampling(false, t);
    let sent = drive_online(&mut n, t, t + Duration::from_secs(20));
    assert_eq!(n.next_seq(), produced, "no new samples");
    let seqs: BTreeSet<u64> = sent
        .iter()
        .flat_map(|x| batch(x).samples.into_iter().map(|s| s.seq))
        .collect();
    assert_eq!(seqs.len() as u64, produced, "the whole backlog went out");
    // And it kept saying it is alive: about one empty heartbeat a second.
    let heartbeats = sent.iter().filter(|x| batch(x).samples.is_empty()).count();
    assert!(
        (15..=21).contains(&heartbeats),
        "{heartbeats} heartbeats in 20 s"
    );
}

#[test]
fn a_node_that_leaves_delivers_its_backlog_then_switches_off() {
    let mut n = node_with(13, 1, NodeConfig::default());
    let t = T0 + Duration::from_secs(10);
    drive_offline(&mut n, t);
    let produced = n.next_seq();
    n.shut_down(t);
    assert_eq!(n.status(t).power, Power::On, "still holding its backlog");
    let sent = drive_acked(&mut n, t, t + Duration::from_secs(30));
    assert_eq!(n.next_seq(), produced, "no new samples");
    assert_eq!(sent.iter().map(|x| x.samples as u64).sum::<u64>(), produced);
    // The last transmit is the goodbye: no samples, presence Leaving; every
    // one before it said the node was monitoring.
    let (goodbye, backlog) = sent.split_last().unwrap();
    assert_eq!(goodbye.samples, 0);
    assert_eq!(batch(goodbye).presence, Presence::Leaving);
    assert!(
        backlog
            .iter()
            .all(|t| batch(t).presence == Presence::Monitoring)
    );
    assert_eq!(
        n.poll_link(),
        Some(LinkAction::Disconnect { graceful: true }),
        "says goodbye, then closes cleanly"
    );
    assert_eq!(n.status(t).power, Power::Off);
    assert_eq!(n.poll_timeout(), None);
    assert!(n.ledger().balances(0));
    n.restart(t + Duration::from_secs(60));
    assert_eq!(n.status(t).power, Power::On);
}

#[test]
fn an_empty_bed_heartbeats_and_a_new_patient_is_a_new_draw() {
    let mut n = node_with(21, 4, NodeConfig::default());
    let t1 = T0 + Duration::from_secs(10);
    let first = drive_acked(&mut n, T0, t1);
    assert!(
        first
            .iter()
            .all(|t| batch(t).samples.iter().all(|s| s.admission == 0))
    );
    let hr_before: Vec<u16> = first
        .iter()
        .flat_map(|t| batch(t).samples)
        .filter_map(|s| s.vitals.heart_rate)
        .collect();
    n.discharge(t1);
    let produced = n.next_seq();
    let t2 = t1 + Duration::from_secs(10);
    let idle = drive_acked(&mut n, t1, t2);
    assert_eq!(n.next_seq(), produced, "an empty bed takes no samples");
    assert!(
        idle.len() >= 9,
        "one heartbeat per sample slot: {}",
        idle.len()
    );
    assert!(
        idle.iter()
            .all(|t| t.samples == 0 && batch(t).presence == Presence::BedEmpty)
    );
    assert!(n.status(t2).bed_empty);

    n.admit(PatientOptions::default(), t2);
    let again = drive_acked(&mut n, t2, t2 + Duration::from_secs(10));
    let samples: Vec<_> = again.iter().flat_map(|t| batch(t).samples).collect();
    assert!(!samples.is_empty());
    assert!(samples.iter().all(|s| s.admission == 1));
    assert!(
        again
            .iter()
            .all(|t| batch(t).presence == Presence::Monitoring)
    );
    // The same node and seed, another patient: a different baseline.
    let hr_after: Vec<u16> = samples.iter().filter_map(|s| s.vitals.heart_rate).collect();
    let mean = |v: &[u16]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
    assert_ne!(mean(&hr_before).round(), mean(&hr_after).round());
    assert!(n.ledger().balances(0));
}

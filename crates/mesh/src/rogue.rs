//! Misbehaving clients. Each really does what its name says, over its own
//! TCP connections to the same broker the mesh uses:
//!
//! - **garbage**: random bytes published on real node topics;
//! - **oversized**: payloads above the largest valid message, and every
//!   tenth one above the broker's packet limit (the broker drops the
//!   connection; the rogue reconnects under a new id and goes on);
//! - **impersonate**: well-formed batches in a node's name, on its topic,
//!   without its key;
//! - **replay**: genuine node messages captured off the broker and published
//!   again;
//! - **connect flood**: many connections at once — a third complete the
//!   handshake, a third send client ids brokers refuse (twice each: the
//!   sequence that poisons a rumqttd 0.20 listener), a third open TCP and
//!   never send CONNECT;
//! - **bad credentials**: logins with a wrong password under a real node's
//!   client id, again and again (the same id after a refusal: rumqttd's
//!   listener-poisoning path);
//! - **forged acks**: ack batches on real partitions' ack topics that
//!   acknowledge everything for real nodes, sealed with a made-up key and
//!   tagged without the nodes' ack keys (nodes refuse every entry and count
//!   it; standbys refuse the envelope);
//! - **QoS 1 flood**: garbage on node topics at QoS 1, so the broker must
//!   store, acknowledge and route every message;
//! - **slow subscriber**: subscriptions to every node topic at QoS 1 whose
//!   sockets are never read again, held for 20 s: the broker must bound
//!   what it queues for them without stalling everyone else;
//! - **half packets**: connections that send half a packet and then
//!   nothing, held for 20 s — half a CONNECT on a bare socket (under TLS,
//!   half a record the handshake waits for), or a whole login and then
//!   half a PUBLISH: the broker must time them out without waiting on them;
//! - **oversized topics**: publishes on node topics whose last level is
//!   1 to 17 KB long, every tenth up to MQTT's 65,535-byte limit (and so
//!   over the broker's packet limit: it hangs up, the rogue reconnects);
//!   they still match the aggregators' filters, which refuse them as
//!   `unknown_topic`.
//!
//! When the broker wants logins, the rogues that publish log in as a
//! stolen *spare* device: provisioned (its password is valid) but never
//! deployed (an id above the population's), which is what an attacker
//! with one compromised device has. The broker lets it in; the envelope
//! keeps it from speaking for anyone else.
//!
//! What they achieve is measured elsewhere: aggregators count what they
//! refuse, the ledger shows nothing was delivered that should not be, and
//! the broker supervisor counts listener restarts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep};
use vitalmesh_scenario::RogueKind;
use vitalmesh_wire::envelope::{DeviceKey, Principal, Sealer, mqtt_username};
use vitalmesh_wire::{
    AckBatch, AggregatorId, Batch, Body, FaultFlags, NodeAck, NodeId, Partitioning, Sample,
    Timestamp, TopicScheme, Vitals, WireTopic,
};

use crate::broker::{BrokerLogin, MAX_PACKET};
use crate::mqtt::codec::{ConnectOptions, write_connect, write_publish};
use crate::mqtt::{Connection, Incoming, QoS, TlsClient};

/// What a rogue client did.
#[derive(Debug, Default)]
pub(crate) struct RogueCounters {
    pub(crate) messages: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) dropped_by_broker: AtomicU64,
}

pub use vitalmesh_sim::report::RogueReport;

/// Everything a rogue needs to know about the mesh.
#[derive(Debug, Clone)]
pub(crate) struct RogueTarget {
    pub(crate) broker: SocketAddr,
    pub(crate) topics: TopicScheme,
    pub(crate) partitioning: Partitioning,
    pub(crate) nodes: u32,
    /// The broker's logins, when it wants them (a rogue that publishes
    /// uses a stolen spare device's).
    pub(crate) login: Option<BrokerLogin>,
    /// TLS, when the broker is reached over it (a rogue gets through the
    /// handshake like anyone: TLS authenticates the broker, not clients).
    pub(crate) tls: Option<TlsClient>,
}

impl RogueTarget {
    /// The stolen spare device: the first id above the population.
    fn spare(&self) -> NodeId {
        NodeId(self.nodes)
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Runs one rogue client to completion.
pub(crate) async fn run(
    kind: RogueKind,
    messages: u32,
    connections: u32,
    rate: f64,
    target: RogueTarget,
    seed: u64,
    counters: Arc<RogueCounters>,
) {
    let mut rng = Rng(seed ^ 0xBAD_C0DE);
    let pause = Duration::from_secs_f64(1.0 / rate.max(0.001));
    match kind {
        RogueKind::ConnectFlood => flood(connections, pause, &target, &mut rng, &counters).await,
        RogueKind::BadCredentials => {
            bad_credentials(connections, pause, &target, &mut rng, &counters).await
        }
        RogueKind::SlowSubscriber => slow_subscribers(connections, &target, &counters).await,
        RogueKind::HalfPackets => half_packets(connections, &target, &mut rng, &counters).await,
        RogueKind::Replay => replay(messages, pause, &target, &counters).await,
        _ => publish_loop(kind, messages, pause, &target, &mut rng, &counters).await,
    }
}

/// Connects as the rogue `n`th connection: under `id`, or, when the
/// broker wants logins, as the stolen spare device.
async fn connect(target: &RogueTarget, id: String, counters: &RogueCounters) -> Option<Connection> {
    let n = counters.connections.fetch_add(1, Ordering::Relaxed);
    let options = match &target.login {
        Some(login) => {
            let spare = target.spare();
            let mut o = ConnectOptions::new(target.topics.node_client_id(spare, n as u32 + 1), 30);
            login.apply(&mqtt_username(Principal::Node(spare)), &mut o);
            o
        }
        None => ConnectOptions::new(id, 30),
    };
    Connection::connect(
        target.broker,
        target.tls.as_ref(),
        &options,
        Duration::from_secs(5),
        MAX_PACKET * 4,
    )
    .await
    .ok()
}

/// Wrong passwords under real nodes' client ids, one login after another
/// (each refused; the next one reuses an id that was just refused).
async fn bad_credentials(
    connections: u32,
    pause: Duration,
    target: &RogueTarget,
    rng: &mut Rng,
    counters: &RogueCounters,
) {
    let node = NodeId(rng.below(u64::from(target.nodes.max(1))) as u32);
    let mut options = ConnectOptions::new(target.topics.node_client_id(node, 0), 30);
    options.username = Some(mqtt_username(Principal::Node(node)));
    for _ in 0..connections {
        options.password = Some(vitalmesh_wire::envelope::to_hex(&rng.bytes(16)).into_bytes());
        counters.connections.fetch_add(1, Ordering::Relaxed);
        if Connection::connect(
            target.broker,
            target.tls.as_ref(),
            &options,
            Duration::from_secs(2),
            4096,
        )
        .await
        .is_err()
        {
            counters.dropped_by_broker.fetch_add(1, Ordering::Relaxed);
        }
        sleep(pause).await;
    }
}

/// How long a slow subscriber, or a half-sent packet, holds on.
const HOLD: Duration = Duration::from_secs(20);

/// `connections` subscribers to every node topic at QoS 1 that never read
/// their sockets after subscribing, held for [`HOLD`].
async fn slow_subscribers(connections: u32, target: &RogueTarget, counters: &RogueCounters) {
    let filter = format!("{}/v1/p/+/+", target.topics.root());
    let mut held = Vec::new();
    for n in 0..connections {
        let Some(mut c) = connect(target, format!("vm-rogue-slow-{n}"), counters).await else {
            counters.dropped_by_broker.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        c.subscribe(&[(&filter, QoS::AtLeastOnce)]);
        if c.flush().await.is_err() {
            counters.dropped_by_broker.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        held.push(c);
    }
    // Never read: the broker's queues for them fill up.
    sleep(HOLD).await;
    drop(held);
}

/// `connections` connections that send half a packet and nothing more,
/// held for [`HOLD`]: even ones half a CONNECT on a bare socket, odd ones
/// a whole login (as the stolen spare device, when logins are on) and
/// then half a PUBLISH.
async fn half_packets(
    connections: u32,
    target: &RogueTarget,
    rng: &mut Rng,
    counters: &RogueCounters,
) {
    let mut bare = Vec::new();
    let mut logged_in = Vec::new();
    for n in 0..connections {
        if n % 2 == 0 {
            counters.connections.fetch_add(1, Ordering::Relaxed);
            let mut connect = Vec::new();
            write_connect(
                &mut connect,
                &ConnectOptions::new(format!("vm-rogue-half-{n}"), 30),
            );
            match TcpStream::connect(target.broker).await {
                Ok(mut s) => {
                    if s.write_all(&connect[..connect.len() / 2]).await.is_ok() {
                        counters.messages.fetch_add(1, Ordering::Relaxed);
                    }
                    bare.push(s);
                }
                Err(_) => {
                    counters.dropped_by_broker.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            let Some(mut c) = connect(target, format!("vm-rogue-half-{n}"), counters).await else {
                counters.dropped_by_broker.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (_, topic) = random_node_topic(target, rng);
            let mut publish = Vec::new();
            write_publish(
                &mut publish,
                &topic,
                &rng.bytes(200),
                QoS::AtMostOnce,
                0,
                false,
            );
            c.queue_raw(&publish[..publish.len() / 2]);
            if c.flush().await.is_err() {
                counters.dropped_by_broker.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            counters.messages.fetch_add(1, Ordering::Relaxed);
            logged_in.push(c);
        }
    }
    // The other halves never come.
    sleep(HOLD).await;
    drop((bare, logged_in));
}

fn random_node_topic(target: &RogueTarget, rng: &mut Rng) -> (NodeId, String) {
    let node = NodeId(rng.below(u64::from(target.nodes)) as u32);
    (
        node,
        target
            .topics
            .data(target.partitioning.partition_of(node), node),
    )
}

/// An ack batch on a random partition's ack topic acknowledging everything
/// for up to 64 of its nodes, with made-up tags, in an envelope sealed
/// with a made-up key: the (topic, payload).
fn forged_acks(target: &RogueTarget, rng: &mut Rng) -> (String, Vec<u8>) {
    let (node, _) = random_node_topic(target, rng);
    let partition = target.partitioning.partition_of(node);
    let mut acks: Vec<NodeAck> = (0..target.nodes)
        .map(NodeId)
        .filter(|&n| target.partitioning.partition_of(n) == partition)
        .take(64)
        .map(|n| NodeAck {
            node: n,
            next_expected: u64::MAX / 2,
            tag: rng.bytes(16).try_into().expect("16 bytes"),
        })
        .collect();
    acks.sort_by_key(|a| a.node);
    let body = Body::Ack(AckBatch {
        partition,
        aggregator: AggregatorId(0),
        acks,
    });
    let key = DeviceKey::from_bytes(rng.bytes(16).try_into().expect("16 bytes"));
    let payload = Sealer::new(key, Principal::Aggregator(AggregatorId(0)), 0)
        .seal_to_vec(&body, &WireTopic::Ack { partition })
        .expect("at most 64 acks fit");
    (target.topics.ack(partition), payload)
}

fn forged_batch(node: NodeId, rng: &mut Rng) -> Vec<u8> {
    let sample = Sample {
        node,
        seq: rng.below(1000),
        time: Timestamp::from_secs(1_767_225_600 + rng.below(86_400)),
        vitals: Vitals {
            heart_rate: Some(72),
            resp_rate: Some(16),
            spo2: Some(97),
            temp_decicelsius: Some(370),
            systolic: Some(120),
            diastolic: Some(80),
            consciousness: None,
            on_oxygen: false,
            spo2_scale: Default::default(),
        },
        battery_pct: 90,
        faults: FaultFlags::empty(),
        admission: 0,
    };
    let body = Body::Batch(Batch {
        presence: vitalmesh_wire::Presence::Monitoring,
        node,
        held_from: sample.seq,
        samples: vec![sample],
    });
    // A key the rogue made up: it does not hold the node's.
    let key = DeviceKey::from_bytes(rng.bytes(16).try_into().expect("16 bytes"));
    let topic = WireTopic::Data {
        partition: vitalmesh_wire::PartitionId(0),
        node,
    };
    Sealer::new(key, Principal::Node(node), 0)
        .seal_to_vec(&body, &topic)
        .expect("a one-sample batch is valid")
}

async fn publish_loop(
    kind: RogueKind,
    messages: u32,
    pause: Duration,
    target: &RogueTarget,
    rng: &mut Rng,
    counters: &RogueCounters,
) {
    let mut generation = 0u32;
    let mut conn: Option<Connection> = None;
    let mut sent = 0;
    let mut next = Instant::now();
    while sent < messages {
        if conn.is_none() {
            generation += 1;
            conn = connect(
                target,
                format!("vm-rogue-{}-{generation}", rng.below(1 << 30)),
                counters,
            )
            .await;
            if conn.is_none() {
                sleep(Duration::from_millis(500)).await;
                continue;
            }
        }
        let c = conn.as_mut().expect("connected above");
        let (node, topic) = random_node_topic(target, rng);
        let (topic, payload) = match kind {
            RogueKind::Garbage | RogueKind::Qos1Flood => {
                let len = 1 + rng.below(300) as usize;
                (topic, rng.bytes(len))
            }
            RogueKind::Oversized if sent % 10 == 9 => (topic, rng.bytes(MAX_PACKET + 1024)),
            RogueKind::Oversized => {
                let len =
                    vitalmesh_wire::envelope::MAX_MESSAGE_BYTES + 1 + rng.below(4096) as usize;
                (topic, rng.bytes(len))
            }
            RogueKind::OversizedTopics => {
                // The last level grows, so the topic still matches the
                // aggregators' `+/+` filters and reaches them.
                let room = usize::from(u16::MAX) - topic.len();
                let len = if sent % 10 == 9 {
                    room
                } else {
                    (1024 + rng.below(16 * 1024) as usize).min(room)
                };
                (format!("{topic}{}", "9".repeat(len)), rng.bytes(64))
            }
            RogueKind::Impersonate => (topic, forged_batch(node, rng)),
            RogueKind::ForgedAcks => forged_acks(target, rng),
            RogueKind::Replay
            | RogueKind::ConnectFlood
            | RogueKind::BadCredentials
            | RogueKind::SlowSubscriber
            | RogueKind::HalfPackets => unreachable!("handled elsewhere"),
        };
        let qos = if kind == RogueKind::Qos1Flood {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        c.publish(&topic, &payload, qos);
        sent += 1;
        counters.messages.fetch_add(1, Ordering::Relaxed);
        next += pause;
        // Push the bytes out and notice a broker that hung up on us.
        let deadline = next.max(Instant::now() + Duration::from_millis(1));
        loop {
            tokio::select! {
                r = c.drive() => {
                    let ok = r.and_then(|()| { while c.next_incoming()?.is_some() {} Ok(()) });
                    if ok.is_err() {
                        counters.dropped_by_broker.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                        break;
                    }
                    if c.pending_bytes() == 0 && Instant::now() >= deadline {
                        break;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    if c.pending_bytes() == 0 {
                        break;
                    }
                }
            }
        }
    }
    if let Some(c) = conn {
        c.close_gracefully(Duration::from_millis(500)).await;
    }
}

async fn replay(messages: u32, pause: Duration, target: &RogueTarget, counters: &RogueCounters) {
    let Some(mut c) = connect(
        target,
        format!("vm-rogue-replay-{}", std::process::id()),
        counters,
    )
    .await
    else {
        return;
    };
    c.subscribe(&[(
        &format!("{}/v1/p/+/+", target.topics.root()),
        QoS::AtMostOnce,
    )]);
    let mut captured = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while captured.len() < messages as usize && Instant::now() < until {
        let r = tokio::time::timeout(Duration::from_millis(200), c.drive()).await;
        if matches!(r, Ok(Err(_))) {
            return;
        }
        while let Ok(Some(incoming)) = c.next_incoming() {
            if let Incoming::Message { topic, payload } = incoming {
                captured.push((topic, payload));
            }
        }
    }
    c.unsubscribe(&[&format!("{}/v1/p/+/+", target.topics.root())]);
    for (topic, payload) in captured {
        c.publish(&topic, &payload, QoS::AtMostOnce);
        counters.messages.fetch_add(1, Ordering::Relaxed);
        let _ = tokio::time::timeout(pause, async {
            loop {
                if c.drive().await.is_err() {
                    break;
                }
                while let Ok(Some(_)) = c.next_incoming() {}
            }
        })
        .await;
    }
    c.close_gracefully(Duration::from_millis(500)).await;
}

async fn flood(
    connections: u32,
    pause: Duration,
    target: &RogueTarget,
    rng: &mut Rng,
    counters: &RogueCounters,
) {
    let mut held = Vec::new();
    for n in 0..connections {
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let Ok(mut s) = TcpStream::connect(target.broker).await else {
            sleep(pause).await;
            continue;
        };
        match n % 3 {
            0 => {
                let mut out = Vec::new();
                write_connect(
                    &mut out,
                    &ConnectOptions::new(format!("vm-flood-{}-{n}", rng.below(1 << 30)), 30),
                );
                let _ = s.write_all(&out).await;
                held.push(s);
            }
            1 => {
                // An id with '/': refused without a CONNACK; then the same id
                // again, which is what poisons a rumqttd 0.20 listener.
                let id = format!("rogue/flood/{n}");
                let mut out = Vec::new();
                write_connect(&mut out, &ConnectOptions::new(id.clone(), 30));
                let _ = s.write_all(&out).await;
                drop(s);
                if let Ok(mut again) = TcpStream::connect(target.broker).await {
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = again.write_all(&out).await;
                }
            }
            _ => held.push(s), // connected, never says anything
        }
        sleep(pause).await;
    }
    // Keep the idle ones open a while, as a slowloris would, then go.
    sleep(Duration::from_secs(5)).await;
    drop(held);
}

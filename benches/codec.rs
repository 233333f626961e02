//! Generate + encode and decode throughput of the pure core.
//!
//! `cargo bench --bench codec`. Figures and machine are in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vitalmesh_firmware::{Node, NodeConfig};
use vitalmesh_wire::envelope::Keyring;
use vitalmesh_wire::{NodeId, PartitionId, Timestamp, WireTopic, decode};

const T0: Timestamp = Timestamp::from_secs(1_767_225_600);
const SAMPLES_PER_ITER: u64 = 1000;

fn keyring() -> &'static Keyring {
    static RING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
    RING.get_or_init(|| Keyring::new(*b"bench-secret-key-bench-secret-ke", 1_000_000))
}

fn topic(id: u32) -> WireTopic {
    WireTopic::Data {
        partition: PartitionId(0),
        node: NodeId(id),
    }
}

fn online_node(id: u32) -> Node {
    let mut node = Node::new(
        NodeId(id),
        PartitionId(0),
        NodeConfig::default(),
        42,
        keyring().node_credentials(NodeId(id)),
        T0,
    );
    node.handle_timeout(T0);
    while node.poll_link().is_some() {}
    node.handle_connected(T0);
    node
}

/// One sample per transmit, acknowledged at once: the steady state of a live
/// node. Each iteration takes 1000 samples through physiology, the sensor
/// model, the buffer, the sealed postcard envelope (AES-128-GCM) and the
/// check of the ack's tag. The aggregator's cost of tagging the acks is
/// made outside the timed loop.
fn generate_and_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("node");
    g.throughput(Throughput::Elements(SAMPLES_PER_ITER));
    g.bench_function("generate_and_seal_live_sample", |b| {
        let mut node = online_node(1);
        let key = keyring().ack_key(NodeId(1)).unwrap().clone();
        let mut now = T0;
        let mut bytes = 0usize;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let first = node.next_seq();
                let acks: Vec<_> = (1..=SAMPLES_PER_ITER)
                    .map(|k| key.ack(PartitionId(0), NodeId(1), first + k))
                    .collect();
                let started = std::time::Instant::now();
                for ack in &acks {
                    now = now + Duration::from_secs(1);
                    node.handle_timeout(now);
                    let t = node.poll_transmit(now).expect("one sample due");
                    bytes += t.payload.len();
                    node.handle_ack(ack, now);
                }
                total += started.elapsed();
            }
            total
        });
        black_box(bytes);
    });
    g.finish();
}

fn decoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    let mut node = online_node(2);
    let now = T0 + Duration::from_secs(1);
    node.handle_timeout(now);
    let single = node.poll_transmit(now).unwrap().payload;
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_single_sample_batch", |b| {
        let ring = keyring();
        b.iter(|| decode(black_box(&single), &topic(2), ring).unwrap());
    });

    // A 64-sample backfill batch.
    let mut node = online_node(3);
    node.handle_disconnected(T0);
    let later = T0 + Duration::from_secs(64);
    node.handle_timeout(later);
    node.handle_connected(later);
    let backfill = node.poll_transmit(later).unwrap();
    assert_eq!(backfill.samples, 64);
    g.throughput(Throughput::Elements(64));
    g.bench_function("decode_64_sample_backfill", |b| {
        let ring = keyring();
        b.iter_batched(
            || backfill.payload.clone(),
            |p| decode(&p, &topic(3), ring).unwrap(),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = generate_and_encode, decoding
}
criterion_main!(benches);

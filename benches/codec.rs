//! Generate + encode and decode throughput of the pure core.
//!
//! `cargo bench --bench codec`. Figures and machine are in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vitalmesh_firmware::{Node, NodeConfig};
use vitalmesh_wire::envelope::{Keyring, Principal};
use vitalmesh_wire::{NodeId, PartitionId, Timestamp, decode};

const T0: Timestamp = Timestamp::from_secs(1_767_225_600);
const SAMPLES_PER_ITER: u64 = 1000;

fn keyring() -> Keyring {
    Keyring::new(*b"bench-secret-key", 1_000_000)
}

fn online_node(id: u32) -> Node {
    let key = keyring().derive(Principal::Node(NodeId(id)));
    let mut node = Node::new(
        NodeId(id),
        PartitionId(0),
        NodeConfig::default(),
        42,
        key,
        T0,
    );
    node.handle_timeout(T0);
    while node.poll_link().is_some() {}
    node.handle_connected(T0);
    node
}

/// One sample per transmit, acknowledged at once: the steady state of a live
/// node. Each iteration takes 1000 samples through physiology, the sensor
/// model, the buffer and the authenticated postcard envelope.
fn generate_and_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("node");
    g.throughput(Throughput::Elements(SAMPLES_PER_ITER));
    g.bench_function("generate_and_encode_live_sample", |b| {
        let mut node = online_node(1);
        let mut now = T0;
        let mut bytes = 0usize;
        b.iter(|| {
            for _ in 0..SAMPLES_PER_ITER {
                now = now + Duration::from_secs(1);
                node.handle_timeout(now);
                let t = node.poll_transmit(now).expect("one sample due");
                bytes += t.payload.len();
                node.handle_ack(t.first_seq + t.samples as u64, now);
            }
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
        b.iter(|| decode(black_box(&single), &ring).unwrap());
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
            |p| decode(&p, &ring).unwrap(),
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

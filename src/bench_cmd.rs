//! `vitalmesh bench`: named, repeatable workloads that print a table and
//! save JSON with the machine, the command and the figures.
//!
//! Every workload is one row of [`WORKLOADS`]; `--list` prints them. The
//! workloads time the same state machines a run executes; nothing here
//! re-implements them. Wall-clock reads live here, in the binary, and
//! never in the pure crates.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use vitalmesh_core::Aggregator;
use vitalmesh_core::detect::{PatientMonitor, SensorMonitor};
use vitalmesh_firmware::Node;
use vitalmesh_scenario::Scenario;
use vitalmesh_sim::setup;
use vitalmesh_sim::virtual_time::{VirtualMesh, VirtualOptions};
use vitalmesh_wire::topic::filter_matches;
use vitalmesh_wire::{
    AggregatorId, Body, Keyring, NodeId, Sample, Timestamp, TopicScheme, WireTopic, decode,
};

use crate::bench_mesh::{self, MeshRow};

/// `vitalmesh bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The workload (`--list` names them).
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// List the workloads and exit.
    #[arg(long)]
    list: bool,
    /// How much to run: simulated time for `virtual-day` (default 1d);
    /// for `micro`, wall time per timed measurement (default 2s; under 1s
    /// the fleet's stretch shrinks from an hour to a minute, for a quick
    /// check); for the real-time workloads, each run's sampling time
    /// (`direct-10k` and `gateway-100k` 60s, `saturate` 20s a step).
    #[arg(long, value_name = "D")]
    duration: Option<String>,
    /// Also write the figures as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

type Workload = fn(Option<Duration>) -> anyhow::Result<Measured>;

/// What a workload measured: timed figures of the pure core, or whole runs
/// over real MQTT (each through both brokers), with notes in words.
#[derive(Debug, Default, Serialize)]
struct Measured {
    figures: Vec<Figure>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    runs: Vec<MeshRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ratios: Vec<bench_mesh::Ratio>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

impl Measured {
    fn figures(figures: Vec<Figure>) -> Self {
        Self {
            figures,
            ..Self::default()
        }
    }

    fn runs((runs, notes): (Vec<MeshRow>, Vec<String>)) -> Self {
        Self {
            ratios: bench_mesh::ratios(&runs),
            runs,
            notes,
            figures: Vec::new(),
        }
    }
}

/// The workloads: name, what it measures, the code.
const WORKLOADS: &[(&str, &str, Workload)] = &[
    (
        "direct-10k",
        "10,000 nodes at 1 Hz, each its own MQTT connection, through the embedded broker and then mosquitto (default 60 s each)",
        |d| bench_mesh::direct_10k(d).map(Measured::runs),
    ),
    (
        "tls-10k",
        "direct-10k in plain TCP and then over TLS (a CA and certificate made for the run), through each broker: TLS ÷ plain for CPU, memory and latency (default 60 s a run, four runs)",
        |d| bench_mesh::tls_10k(d).map(Measured::runs),
    ),
    (
        "gateway-100k",
        "100,000 nodes behind 1,000 gateways at 1 Hz (one MQTT connection per gateway), through the embedded broker and then mosquitto (default 60 s each)",
        |d| bench_mesh::gateway_100k(d).map(Measured::runs),
    ),
    (
        "saturate",
        "2,000 direct nodes at 10, 20, 40, 50 and 100 Hz, then 10,000 nodes behind 100 gateways at 10 to 100 Hz, through each broker: the knee, the peak goodput and goodput past it (default 20 s a step)",
        |d| bench_mesh::saturate(d).map(Measured::runs),
    ),
    (
        "micro",
        "per-sample cost of the pure core: firmware step + seal, open, sensor checks, patient monitor, aggregator ingest (1,000 patients, hot and spread)",
        |d| micro(d).map(Measured::figures),
    ),
    (
        "virtual-day",
        "a simulated day of 1,000 patients at 1 Hz through firmware, codec, modelled broker and aggregators on one core (benches/scenarios/virtual-day.toml)",
        |d| virtual_day(d).map(Measured::figures),
    ),
];

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    /// What was measured.
    pub name: String,
    /// Units processed.
    pub count: u64,
    /// Wall time, seconds.
    pub wall_s: f64,
    /// Nanoseconds per unit.
    pub ns_per_unit: f64,
    /// Units per second.
    pub per_second: f64,
    /// The unit (`sample`, …).
    pub unit: &'static str,
}

impl Figure {
    fn new(name: impl Into<String>, count: u64, wall: Duration, unit: &'static str) -> Self {
        let wall_s = wall.as_secs_f64();
        Self {
            name: name.into(),
            count,
            wall_s,
            ns_per_unit: wall_s * 1e9 / count.max(1) as f64,
            per_second: count as f64 / wall_s.max(1e-9),
            unit,
        }
    }
}

/// Runs `vitalmesh bench`.
pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.list {
        for (name, what, _) in WORKLOADS {
            println!("{name:<12} {what}");
        }
        return Ok(());
    }
    let name = args.name.as_deref().expect("clap: required unless --list");
    let Some((name, _, workload)) = WORKLOADS.iter().find(|(n, _, _)| *n == name) else {
        let known: Vec<_> = WORKLOADS.iter().map(|(n, _, _)| *n).collect();
        bail!(
            "no workload '{name}'; expected one of {} (`vitalmesh bench --list`)",
            known.join(", ")
        );
    };
    let duration = args
        .duration
        .as_deref()
        .map(|d| {
            vitalmesh_scenario::duration::parse(d)
                .map_err(|e| anyhow::anyhow!("--duration '{d}': {e}"))
        })
        .transpose()?;
    let machine = vitalmesh_mesh::procfs::machine();
    eprintln!(
        "bench {name}: {} ({} cores, {:.0} GiB), release build: {}",
        machine.cpu,
        machine.cores,
        machine.memory_gib,
        if cfg!(debug_assertions) {
            "no — figures from a debug build mean little"
        } else {
            "yes"
        }
    );
    let measured = workload(duration)?;
    print!("{}", table(name, &measured.figures));
    if !measured.runs.is_empty() {
        print!("{}", bench_mesh::table(&measured.runs));
    }
    for note in &measured.notes {
        println!("  {note}");
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "bench": name,
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "vitalmesh_version": env!("CARGO_PKG_VERSION"),
            "release_build": !cfg!(debug_assertions),
            "machine": machine,
            "figures": measured.figures,
            "runs": measured.runs,
            "ratios": measured.ratios,
            "notes": measured.notes,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

fn table(name: &str, figures: &[Figure]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{name}");
    if figures.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "  {:<44} {:>12} {:>10} {:>12} {:>16}",
        "measure", "count", "wall s", "ns / unit", "per second"
    );
    for f in figures {
        let _ = writeln!(
            s,
            "  {:<44} {:>12} {:>10.2} {:>12.0} {:>14.2} M",
            f.name,
            f.count,
            f.wall_s,
            f.ns_per_unit,
            f.per_second / 1e6
        );
    }
    s
}

const T0: Timestamp = Timestamp::from_secs(1_767_225_600);

/// A thousand patients at 1 Hz, as in `virtual-day.toml`.
fn micro_scenario() -> anyhow::Result<Scenario> {
    let text = "[scenario]\nname = \"micro\"\nduration = \"1h\"\n\
                [population]\nwards = 10\nnodes_per_ward = 100\n\
                [population.profile]\nsample_interval = \"1s\"\n";
    Ok(vitalmesh_scenario::parse("micro.toml", text)?)
}

/// A live node: connected, each sample acknowledged at once.
fn live_node(scenario: &Scenario, keys: &Keyring, id: u32) -> Node {
    let interval = scenario.profile.sample_interval;
    let mut node = setup::node(scenario, 7, keys, NodeId(id), interval, T0);
    node.handle_timeout(T0);
    while node.poll_link().is_some() {}
    node.handle_connected(T0);
    node
}

/// Times a [`GatewayCell`](vitalmesh_firmware::GatewayCell) of 100 nodes
/// for `budget`: sampling, radio, relaying and the acks relayed back.
fn gateway_step(budget: Duration, keys: &Keyring) -> anyhow::Result<(u64, Duration)> {
    let text = "[scenario]\nname = \"micro-gateway\"\nduration = \"1h\"\n\
                [population]\nwards = 1\nnodes_per_ward = 100\n\
                [gateways]\nnodes_per_gateway = 100\n";
    let scenario = vitalmesh_scenario::parse("micro-gateway.toml", text)?;
    let gateway = vitalmesh_wire::GatewayId(0);
    let mut cell = setup::gateway(&scenario, 7, keys, gateway).context("a gateway")?;
    for id in cell.serves_ids() {
        let node = setup::node(&scenario, 7, keys, NodeId(id), Duration::from_secs(1), T0);
        let _ = cell.add_node(node, T0);
    }
    cell.handle_timeout(T0);
    while cell.poll_link().is_some() {}
    cell.handle_connected(T0);
    let mut now = T0;
    let mut acked = 0u64;
    let started = Instant::now();
    while started.elapsed() < budget {
        // A simulated second at a time, in 10 ms steps.
        for _ in 0..100 {
            now = now + Duration::from_millis(10);
            cell.handle_timeout(now);
            let mut acks = Vec::new();
            let partition = cell.topic_partition();
            let relay_topic = WireTopic::Relay { partition, gateway };
            while let Some(r) = cell.poll_transmit(now) {
                let Ok(Some((_, relay))) =
                    vitalmesh_wire::envelope::open_relay(&r.payload, &relay_topic, keys)
                else {
                    bail!("the gateway sent something that is not a relay");
                };
                for frame in relay.frames {
                    let Some(vitalmesh_wire::Principal::Node(node)) =
                        vitalmesh_wire::envelope::claimed_sender(frame)
                    else {
                        bail!("the gateway relayed something that is not a node's frame");
                    };
                    let frame_topic = WireTopic::Data { partition, node };
                    if let Ok(Body::Batch(b)) = decode(frame, &frame_topic, keys) {
                        if let Some(last) = b.samples.last() {
                            let key = keys.ack_key(b.node).context("a provisioned node")?;
                            acks.push(key.ack(partition, b.node, last.seq + 1));
                        }
                        acked += b.samples.len() as u64;
                    }
                }
            }
            acks.sort_by_key(|a| a.node);
            acks.dedup_by_key(|a| a.node);
            cell.handle_acks(
                &vitalmesh_wire::AckBatch {
                    partition: cell.topic_partition(),
                    aggregator: AggregatorId(0),
                    acks,
                },
                now,
            );
        }
    }
    Ok((acked, started.elapsed()))
}

/// Runs `step` in rounds of `per_round` units until `budget` has passed.
fn timed(budget: Duration, per_round: u64, mut step: impl FnMut()) -> (u64, Duration) {
    let started = Instant::now();
    let mut count = 0;
    while started.elapsed() < budget {
        step();
        count += per_round;
    }
    (count, started.elapsed())
}

fn micro(duration: Option<Duration>) -> anyhow::Result<Vec<Figure>> {
    let budget = duration.unwrap_or(Duration::from_secs(2));
    let scenario = micro_scenario()?;
    let keys = setup::keyring(&scenario, 7);
    let nodes = scenario.population.nodes();
    let mut out = Vec::new();

    // Firmware step + seal, one live node, each sample acked (the node
    // checks the ack's tag; the aggregator's cost of making it is not
    // timed here).
    eprintln!("  firmware step + seal …");
    let mut node = live_node(&scenario, &keys, 1);
    let ack_key = keys.ack_key(node.id()).context("a provisioned node")?;
    let mut now = T0;
    let (mut n, mut wall) = (0u64, Duration::ZERO);
    while wall < budget {
        let first = node.next_seq();
        let acks: Vec<_> = (1..=1000)
            .map(|k| ack_key.ack(node.partition(), node.id(), first + k))
            .collect();
        let started = Instant::now();
        for ack in &acks {
            now = now + Duration::from_secs(1);
            node.handle_timeout(now);
            let t = node.poll_transmit(now).expect("one sample due");
            debug_assert_eq!(t.first_seq + 1, ack.next_expected);
            node.handle_ack(ack, now);
        }
        wall += started.elapsed();
        n += 1000;
    }
    out.push(Figure::new(
        "firmware step + seal (AES-128-GCM) + ack check",
        n,
        wall,
        "sample",
    ));

    // A gateway step: 100 nodes behind one gateway at 1 Hz, their radio,
    // and the relays, each node acknowledged as its relay leaves.
    eprintln!("  gateway step …");
    let (n, wall) = gateway_step(budget, &keys)?;
    out.push(Figure::new(
        "gateway step (100 nodes, radio, relay, decoded)",
        n,
        wall,
        "sample",
    ));

    // What every node sends over an hour, in time order across nodes: the
    // order an aggregator sees it in.
    // An hour; a budget under a second (a smoke test) makes do with a
    // minute.
    let seconds: u64 = if budget < Duration::from_secs(1) {
        60
    } else {
        3600
    };
    eprintln!("  generating {seconds} s of {nodes} nodes …");
    let mut fleet: Vec<Node> = (0..nodes).map(|i| live_node(&scenario, &keys, i)).collect();
    let mut payloads: Vec<(String, Vec<u8>)> =
        Vec::with_capacity((nodes as u64 * seconds) as usize);
    let topics = TopicScheme::default();
    for s in 1..=seconds {
        let now = T0 + Duration::from_secs(s);
        for node in &mut fleet {
            node.handle_timeout(now);
            while let Some(t) = node.poll_transmit(now) {
                let (partition, id) = (node.partition(), node.id());
                let key = keys.ack_key(id).context("a provisioned node")?;
                node.handle_ack(&key.ack(partition, id, t.first_seq + t.samples as u64), now);
                payloads.push((topics.data(partition, id), t.payload));
            }
        }
    }
    drop(fleet);
    // (node index, sample), in arrival order.
    let samples: Vec<(usize, Sample)> = payloads
        .iter()
        .filter_map(|(topic, p)| match decode(p, &topics.parse(topic)?, &keys) {
            Ok(Body::Batch(b)) => Some(b),
            _ => None,
        })
        .flat_map(|b| {
            let i = b.node.0 as usize;
            b.samples.into_iter().map(move |s| (i, s))
        })
        .collect();
    let total = samples.len() as u64;

    // Decode, spread over the fleet.
    eprintln!("  decode …");
    let parsed: Vec<WireTopic> = payloads
        .iter()
        .map(|(topic, _)| topics.parse(topic).expect("a node's data topic"))
        .collect();
    let mut i = 0;
    let (n, wall) = timed(budget, 1000, || {
        for _ in 0..1000 {
            let k = i % payloads.len();
            std::hint::black_box(decode(&payloads[k].1, &parsed[k], &keys).ok());
            i += 1;
        }
    });
    out.push(Figure::new(
        "open (AES-128-GCM) + decode",
        n,
        wall,
        "sample",
    ));

    // The configuration the aggregator below runs with.
    let detection = scenario.detection.clone();
    // Sensor checks on one patient's hour, again and again (hot cache)…
    eprintln!("  sensor checks …");
    let one: Vec<&Sample> = samples
        .iter()
        .filter(|(i, _)| *i == 0)
        .map(|(_, s)| s)
        .collect();
    let mut events = Vec::new();
    let (n, wall) = timed(budget, one.len() as u64, || {
        let mut m = SensorMonitor::default();
        for s in &one {
            std::hint::black_box(m.observe(s, &detection.sensor, &mut events));
            events.clear();
        }
    });
    out.push(Figure::new("sensor checks, 1 patient", n, wall, "sample"));
    // … and on 1,000 patients in turn, as an aggregator sees them.
    let mut monitors = vec![SensorMonitor::default(); nodes as usize];
    let start = Instant::now();
    for (i, s) in &samples {
        std::hint::black_box(monitors[*i].observe(s, &detection.sensor, &mut events));
        events.clear();
    }
    out.push(Figure::new(
        "sensor checks, 1,000 patients",
        total,
        start.elapsed(),
        "sample",
    ));
    // … and the same with each patient's state far from the last one's
    // (slot = patient × 617 mod 1,000: a jump of ~0.9 MB the prefetcher
    // cannot follow), as state kept in a map is: what cache misses cost.
    let mut monitors = vec![SensorMonitor::default(); nodes as usize];
    let slot = |i: usize| (i * 617) % nodes as usize;
    let start = Instant::now();
    for (i, s) in &samples {
        std::hint::black_box(monitors[slot(*i)].observe(s, &detection.sensor, &mut events));
        events.clear();
    }
    out.push(Figure::new(
        "sensor checks, 1,000 patients, scattered",
        total,
        start.elapsed(),
        "sample",
    ));

    // The whole patient monitor (sensor checks, NEWS2, CUSUM, bucket
    // tallies), 1,000 patients in turn.
    eprintln!("  patient monitor, {nodes} patients …");
    let mut monitors: Vec<PatientMonitor> = (0..nodes).map(|_| PatientMonitor::new(0)).collect();
    let mut events = Vec::new();
    let start = Instant::now();
    for (i, s) in &samples {
        let m = &mut monitors[*i];
        std::hint::black_box(m.observe(
            s,
            &detection.patient,
            &detection.sensor,
            detection.ward.bucket,
            &mut events,
        ));
        events.clear();
    }
    out.push(Figure::new(
        "patient monitor, 1,000 patients",
        total,
        start.elapsed(),
        "sample",
    ));

    // Aggregator ingest: decode, authenticate, de-duplicate, φ, NEWS2,
    // detectors; one aggregator that owns every partition.
    eprintln!("  aggregator ingest, {nodes} nodes …");
    let mut agg = setup::aggregator(&scenario, &keys, &topics, AggregatorId(0), 0, 1);
    let mut subs: Vec<String> = Vec::new();
    let mut t = T0;
    agg.handle_connected(t);
    // Let it hear itself and take every partition.
    for _ in 0..200 {
        t = t + Duration::from_millis(50);
        agg.handle_timeout(t);
        pump(&mut agg, &mut subs, t);
    }
    let start = Instant::now();
    let mut last_timer = t;
    for (k, (topic, p)) in payloads.iter().enumerate() {
        // Messages arrive spread over each second, never before the
        // aggregator's own clock after its warm-up.
        let now = (T0 + Duration::from_micros((k as u64 * 1_000_000) / nodes as u64)).max(t);
        agg.handle_message(topic, p, now);
        if now.saturating_duration_since(last_timer) >= Duration::from_millis(250) {
            agg.handle_timeout(now);
            pump(&mut agg, &mut subs, now);
            last_timer = now;
        }
    }
    let wall = start.elapsed();
    let ingested = agg.stats().ingested;
    if (ingested as f64) < 0.99 * total as f64 {
        bail!(
            "the aggregator ingested {ingested} of {total} samples: it did not own every partition"
        );
    }
    out.push(Figure::new(
        "aggregator ingest, 1,000 nodes",
        ingested,
        wall,
        "sample",
    ));
    Ok(out)
}

/// Delivers an aggregator's own publications back to it where it
/// subscribed (heartbeats, ward reports); drops the rest (acks, alerts).
fn pump(agg: &mut Aggregator, subs: &mut Vec<String>, now: Timestamp) {
    loop {
        let mut mine = Vec::new();
        while let Some(o) = agg.poll_output() {
            match o {
                vitalmesh_core::Output::Subscribe(f) => subs.push(f),
                vitalmesh_core::Output::Unsubscribe(f) => subs.retain(|s| *s != f),
                vitalmesh_core::Output::Publish { topic, payload } => {
                    if subs.iter().any(|f| filter_matches(f, &topic)) {
                        mine.push((topic, payload));
                    }
                }
            }
        }
        while agg.poll_event().is_some() {}
        if mine.is_empty() {
            return;
        }
        for (topic, payload) in mine {
            agg.handle_message(&topic, &payload, now);
        }
    }
}

fn virtual_day(duration: Option<Duration>) -> anyhow::Result<Vec<Figure>> {
    // Built in, so the installed binary runs it from anywhere; the file is
    // the one `cargo bench --bench virtual` reads.
    let mut scenario = vitalmesh_scenario::parse(
        "benches/scenarios/virtual-day.toml",
        include_str!("../benches/scenarios/virtual-day.toml"),
    )?;
    if let Some(d) = duration {
        scenario = scenario.with_duration(d)?;
    }
    eprintln!(
        "  {} simulated of {} nodes …",
        vitalmesh_scenario::duration::format(scenario.duration),
        scenario.population.nodes()
    );
    let started = Instant::now();
    let mut mesh = VirtualMesh::new(&scenario, 2026, &VirtualOptions::default());
    mesh.start()?;
    let outcome = mesh.run_to_end();
    let wall = started.elapsed();
    let r = &outcome.report;
    if r.ledger.total.unexplained != 0 {
        bail!("{} samples unexplained", r.ledger.total.unexplained);
    }
    Ok(vec![
        Figure::new(
            "samples, end to end",
            r.ledger.total.produced,
            wall,
            "sample",
        ),
        Figure::new(
            "simulated seconds",
            r.ran_for_s.round() as u64,
            wall,
            "simulated s",
        ),
        Figure::new("events", outcome.events, wall, "event"),
    ])
}

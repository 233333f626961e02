//! The real-time workloads of `vitalmesh bench`: whole meshes over real MQTT
//! on this machine, each through the embedded broker and then, in the same
//! invocation, through mosquitto, reported side by side with ratios.
//!
//! A workload is a scenario (built in, so the installed binary runs it from
//! anywhere) run by the same `vitalmesh_mesh::run` as `vitalmesh run`; this
//! module only chooses the load, starts mosquitto and reads the reports.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use vitalmesh_mesh::broker::mosquitto::Mosquitto;
use vitalmesh_mesh::report::Report;
use vitalmesh_mesh::{MeshConfig, RunControl, Snapshot};

/// Which broker a run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Broker {
    /// The embedded rumqttd, in its supervised child process.
    Embedded,
    /// A mosquitto started for the run on a free loopback port.
    Mosquitto,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Mosquitto => "mosquitto",
        }
    }
}

/// What one real run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MeshRow {
    /// The step (`10k nodes`, `40 Hz`, …).
    pub step: String,
    /// Which broker.
    pub broker: Broker,
    /// Nodes.
    pub nodes: u32,
    /// Samples per second the nodes were asked to take.
    pub offered_per_s: f64,
    /// Seconds the nodes sampled.
    pub ran_s: f64,
    /// When the last node first connected, seconds into the run.
    pub connected_after_s: Option<f64>,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Samples taken.
    pub produced: u64,
    /// Distinct samples delivered.
    pub delivered: u64,
    /// Distinct samples delivered per second while the nodes sampled
    /// (second half of the run: the ramp and the start are over).
    pub goodput_per_s: f64,
    /// Samples published per second over the same stretch, re-sends
    /// included.
    pub published_per_s: f64,
    /// Samples evicted from full node buffers (accounted, not lost).
    pub dropped_overflow: u64,
    /// Samples nobody can account for: must be 0.
    pub unexplained: u64,
    /// End-to-end latency, ms.
    pub p50_ms: f64,
    /// End-to-end latency, ms.
    pub p99_ms: f64,
    /// End-to-end latency, ms.
    pub max_ms: f64,
    /// CPU seconds of simulator and broker together per wall second of the
    /// run (ramp and drain included): out of this machine's cores.
    pub cpu_cores: f64,
    /// Peak RSS of the simulator per node, bytes.
    pub sim_bytes_per_node: u64,
    /// Peak RSS of simulator and broker per node, bytes.
    pub total_bytes_per_node: u64,
}

/// Runs `scenario_toml` through `broker` and measures it.
pub(crate) fn run(step: &str, scenario_toml: &str, broker: Broker) -> anyhow::Result<MeshRow> {
    let mut scenario = vitalmesh_scenario::parse("bench.toml", scenario_toml)?;
    // Mosquitto inherits this process's descriptor limit: raise it first.
    vitalmesh_mesh::limits::raise_fd_limit();
    // A TLS step through mosquitto: it presents a certificate made for
    // the run, as the embedded broker does.
    let certs = (scenario.broker_tls && broker == Broker::Mosquitto)
        .then(vitalmesh_mesh::mqtt::RunCertificates::generate)
        .transpose()?;
    let mosquitto = match (broker, &certs) {
        (Broker::Embedded, _) => None,
        (Broker::Mosquitto, Some(certs)) => Some(Mosquitto::start_tls(certs)?),
        (Broker::Mosquitto, None) => Some(Mosquitto::start()?),
    };
    if let Some(m) = &mosquitto {
        scenario.broker = vitalmesh_scenario::BrokerChoice::External {
            host: "127.0.0.1".into(),
            port: m.port(),
        };
    }
    // The scenario's broker choice decides the spec, as for `vitalmesh run`.
    let mut config = MeshConfig::new(scenario, 2026, crate::run_cmd::broker_program()?);
    config.tls_ca = certs.as_ref().map(|c| c.ca_path());
    let nodes = config.scenario.population.nodes();
    let offered = f64::from(nodes) / config.scenario.profile.sample_interval.as_secs_f64();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("vitalmesh")
        .build()
        .context("starting the async runtime")?;
    let (_stop_tx, stop) = watch::channel(false);
    let (snap_tx, snap_rx) = mpsc::channel::<Snapshot>(4);
    let label = format!("{step} via {}", broker.name());
    // The printer ends when the run drops its end of the snapshot channel.
    let printer = std::thread::spawn(move || progress(snap_rx, &label));
    // The report's CPU figure covers this whole process, earlier runs
    // included: take this run's share as a difference.
    let cpu_before = vitalmesh_mesh::procfs::cpu_seconds("self").unwrap_or(0.0);
    let started = std::time::Instant::now();
    let outcome = runtime.block_on(vitalmesh_mesh::run(
        config,
        RunControl {
            stop,
            snapshots: Some(snap_tx),
            commands: None,
        },
    ));
    let _ = printer.join();
    let report = outcome?.report;
    let wall = started.elapsed().as_secs_f64();
    let sim_cpu = vitalmesh_mesh::procfs::cpu_seconds("self").unwrap_or(0.0) - cpu_before;
    let (broker_rss, broker_cpu) = match &mosquitto {
        Some(m) => {
            let pid = m.pid().to_string();
            (
                vitalmesh_mesh::procfs::peak_rss_bytes(&pid),
                vitalmesh_mesh::procfs::cpu_seconds(&pid).unwrap_or(0.0),
            )
        }
        None => (
            report.memory.as_ref().map_or(0, |m| m.broker_peak_bytes),
            report.cpu.as_ref().map_or(0.0, |c| c.broker_s),
        ),
    };
    drop(mosquitto);
    let mut row = row(step, broker, offered, &report, broker_rss);
    row.cpu_cores = (sim_cpu + broker_cpu) / wall.max(1e-9);
    if row.unexplained != 0 {
        bail!(
            "{step} via {}: {} samples unexplained — a ledger bug; the report's seed is {}",
            broker.name(),
            row.unexplained,
            report.seed
        );
    }
    Ok(row)
}

fn row(step: &str, broker: Broker, offered: f64, r: &Report, broker_rss: u64) -> MeshRow {
    let nodes = r.config.nodes.max(1);
    let t = &r.throughput;
    // The second half of the sampling time, in whole seconds.
    let sampled = (r.ran_for_s.floor() as usize).min(t.delivered.len());
    let from = sampled / 2;
    let per_s = |v: &[u64]| {
        let part = &v[from.min(v.len())..sampled.min(v.len())];
        part.iter().sum::<u64>() as f64 / part.len().max(1) as f64
    };
    let memory = r.memory.as_ref();
    let sim = memory.map_or(0, |m| m.process_peak_bytes);
    MeshRow {
        step: step.into(),
        broker,
        nodes,
        offered_per_s: offered,
        ran_s: r.ran_for_s,
        connected_after_s: r.connections.all_connected_after_s,
        connect_failures: r.connections.failures,
        produced: r.ledger.total.produced,
        delivered: r.ledger.total.delivered,
        goodput_per_s: per_s(&t.delivered),
        published_per_s: per_s(&t.published),
        dropped_overflow: r.ledger.total.dropped_overflow,
        unexplained: r.ledger.total.unexplained,
        p50_ms: r.latency.end_to_end.p50_ms,
        p99_ms: r.latency.end_to_end.p99_ms,
        max_ms: r.latency.end_to_end.max_ms,
        // Set by the caller, which knows this run's share.
        cpu_cores: 0.0,
        sim_bytes_per_node: sim / u64::from(nodes),
        total_bytes_per_node: (sim + broker_rss) / u64::from(nodes),
    }
}

/// Prints a line every 5 s of the run: long benchmarks show progress.
fn progress(mut snapshots: mpsc::Receiver<Snapshot>, label: &str) {
    let mut last = Duration::ZERO;
    let mut last_delivered = 0u64;
    while let Some(s) = snapshots.blocking_recv() {
        if s.elapsed >= last + Duration::from_secs(5) {
            let rate = s.delivered.saturating_sub(last_delivered) as f64
                / (s.elapsed - last).as_secs_f64().max(1e-9);
            eprintln!(
                "    {label}: {:>4.0} s of {:.0} s, {} of {} nodes connected, {:.0} delivered/s",
                s.elapsed.as_secs_f64(),
                s.planned.as_secs_f64(),
                s.connected,
                s.nodes,
                rate
            );
            last = s.elapsed;
            last_delivered = s.delivered;
        }
    }
}

/// Prints rows side by side: one line per run, then embedded ÷ mosquitto
/// for each step both brokers ran.
pub(crate) fn table(rows: &[MeshRow]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  {:<12} {:<9} {:>7} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>8} {:>8}",
        "step",
        "broker",
        "nodes",
        "offered/s",
        "goodput/s",
        "publ./s",
        "connect",
        "errors",
        "unexpl.",
        "p50 ms",
        "p99 ms",
        "cores",
        "sim KB/n",
        "all KB/n"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "  {:<12} {:<9} {:>7} {:>10.0} {:>10.0} {:>10.0} {:>8} {:>8} {:>8} {:>8.2} {:>9.2} {:>6.2} {:>8.1} {:>8.1}",
            r.step,
            r.broker.name(),
            r.nodes,
            r.offered_per_s,
            r.goodput_per_s,
            r.published_per_s,
            r.connected_after_s
                .map_or("never".into(), |c| format!("{c:.1} s")),
            r.connect_failures,
            r.unexplained,
            r.p50_ms,
            r.p99_ms,
            r.cpu_cores,
            r.sim_bytes_per_node as f64 / 1024.0,
            r.total_bytes_per_node as f64 / 1024.0,
        );
    }
    let ratios = ratios(rows);
    if !ratios.is_empty() {
        let _ = writeln!(
            s,
            "  embedded ÷ mosquitto, same invocation (goodput above 1 and the rest below 1 favour the embedded broker):"
        );
        for r in &ratios {
            let _ = writeln!(
                s,
                "  {:<12} goodput ×{:.2}  p99 ×{:.2}  cores ×{:.2}  memory per node ×{:.2}",
                r.step, r.goodput, r.p99, r.cpu, r.memory
            );
        }
    }
    s
}

/// Embedded ÷ mosquitto for one step.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ratio {
    pub step: String,
    pub goodput: f64,
    pub p99: f64,
    pub cpu: f64,
    pub memory: f64,
}

/// `a ÷ b`, NaN when there is nothing to divide by.
fn div(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

pub(crate) fn ratios(rows: &[MeshRow]) -> Vec<Ratio> {
    rows.iter()
        .filter(|r| r.broker == Broker::Embedded)
        .filter_map(|e| {
            let m = rows
                .iter()
                .find(|m| m.broker == Broker::Mosquitto && m.step == e.step)?;
            Some(Ratio {
                step: e.step.clone(),
                goodput: div(e.goodput_per_s, m.goodput_per_s),
                p99: div(e.p99_ms, m.p99_ms),
                cpu: div(e.cpu_cores, m.cpu_cores),
                memory: div(e.total_bytes_per_node as f64, m.total_bytes_per_node as f64),
            })
        })
        .collect()
}

/// Both brokers, unless mosquitto is missing (then said, not hidden).
pub(crate) fn both(
    step: &str,
    scenario_toml: &str,
    rows: &mut Vec<MeshRow>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    eprintln!("  {step} via embedded …");
    rows.push(run(step, scenario_toml, Broker::Embedded)?);
    eprintln!("  {step} via mosquitto …");
    match run(step, scenario_toml, Broker::Mosquitto) {
        Ok(r) => rows.push(r),
        Err(e) => {
            let note = format!("{step}: mosquitto not run: {e:#}");
            eprintln!("  {note}");
            notes.push(note);
        }
    }
    Ok(())
}

/// `direct-10k`: 10,000 nodes, each its own MQTT connection, at 1 Hz.
pub(crate) fn direct_10k(
    duration: Option<Duration>,
) -> anyhow::Result<(Vec<MeshRow>, Vec<String>)> {
    let d = duration.unwrap_or(Duration::from_secs(60));
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    both(
        "10k nodes",
        &direct_10k_toml(d, false),
        &mut rows,
        &mut notes,
    )?;
    Ok((rows, notes))
}

fn direct_10k_toml(d: Duration, tls: bool) -> String {
    format!(
        r#"
[scenario]
name = "direct-10k"
duration = "{}ms"
drain = "5s"

[population]
wards = 20
nodes_per_ward = 500
connect_rate = 1000

[aggregators]
count = 4

[broker]
listeners = 4
tls = {tls}
"#,
        d.as_millis()
    )
}

/// Step names of `tls-10k`.
const PLAIN_STEP: &str = "10k plain";
const TLS_STEP: &str = "10k TLS";

/// `tls-10k`: `direct-10k` in plain TCP and then over TLS, through each
/// broker: what TLS costs at 10,000 connections, TLS ÷ plain per broker.
pub(crate) fn tls_10k(duration: Option<Duration>) -> anyhow::Result<(Vec<MeshRow>, Vec<String>)> {
    let d = duration.unwrap_or(Duration::from_secs(60));
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    both(
        PLAIN_STEP,
        &direct_10k_toml(d, false),
        &mut rows,
        &mut notes,
    )?;
    both(TLS_STEP, &direct_10k_toml(d, true), &mut rows, &mut notes)?;
    for broker in [Broker::Embedded, Broker::Mosquitto] {
        let find = |step: &str| rows.iter().find(|r| r.broker == broker && r.step == step);
        if let (Some(plain), Some(tls)) = (find(PLAIN_STEP), find(TLS_STEP)) {
            notes.push(format!(
                "{}: TLS ÷ plain — CPU x{:.2}, memory per node x{:.2}, p50 x{:.2}, p99 x{:.2}, goodput x{:.3}",
                broker.name(),
                div(tls.cpu_cores, plain.cpu_cores),
                div(tls.total_bytes_per_node as f64, plain.total_bytes_per_node as f64),
                div(tls.p50_ms, plain.p50_ms),
                div(tls.p99_ms, plain.p99_ms),
                div(tls.goodput_per_s, plain.goodput_per_s),
            ));
        }
    }
    Ok((rows, notes))
}

/// The offered-load ladder of `saturate`: sample rates of 2,000 direct
/// nodes.
pub(crate) const SATURATE_LADDER_HZ: [u32; 5] = [10, 20, 40, 50, 100];

/// `saturate`: the same 2,000 nodes at rising sample rates, one message
/// per sample while the broker keeps up; each step `duration` long
/// (default 20 s).
pub(crate) fn saturate(duration: Option<Duration>) -> anyhow::Result<(Vec<MeshRow>, Vec<String>)> {
    let d = duration.unwrap_or(Duration::from_secs(20));
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for hz in SATURATE_LADDER_HZ {
        both(
            &format!("{hz} Hz"),
            &saturate_step(hz, false, d),
            &mut rows,
            &mut notes,
        )?;
    }
    // The same ladder behind gateways: 10,000 nodes, 100 to a gateway,
    // so a relay carries many nodes' batches in one message.
    for hz in GATEWAY_LADDER_HZ {
        both(
            &format!("{GATEWAY_STEP}{hz} Hz"),
            &saturate_step(hz, true, d),
            &mut rows,
            &mut notes,
        )?;
    }
    for gateways in [false, true] {
        for broker in [Broker::Embedded, Broker::Mosquitto] {
            let ladder: Vec<&MeshRow> = rows
                .iter()
                .filter(|r| r.broker == broker && r.step.starts_with(GATEWAY_STEP) == gateways)
                .collect();
            if let Some(k) = knee(&ladder) {
                let kind = if gateways {
                    "behind gateways"
                } else {
                    "direct"
                };
                notes.push(format!("{kind}, {k}"));
            }
        }
    }
    Ok((rows, notes))
}

/// One step of `saturate`: 2,000 direct nodes, or 10,000 behind 100
/// gateways, sampling at `hz` for `d`.
fn saturate_step(hz: u32, gateways: bool, d: Duration) -> String {
    // Direct nodes connect at 1,000/s (a faster TCP connect storm costs the
    // embedded broker a backlog that shows in p99 for the whole step);
    // nodes behind gateways only associate over the radio.
    let (kind, per_ward, connect_rate, extra) = if gateways {
        (
            "gateways-",
            1000,
            20_000,
            "\n[gateways]\nnodes_per_gateway = 100\nflush = \"50ms\"\n",
        )
    } else {
        ("", 200, 1_000, "")
    };
    format!(
        r#"
[scenario]
name = "saturate-{kind}{hz}hz"
duration = "{}ms"
drain = "10s"

[population]
wards = 10
nodes_per_ward = {per_ward}
connect_rate = {connect_rate}

[population.profile]
sample_interval = "{}ms"
buffer_bytes = 262144
{extra}
[aggregators]
count = 4
"#,
        d.as_millis(),
        1000 / hz
    )
}

/// Sample rates of the 10,000 nodes behind gateways in `saturate` (each a
/// whole number of milliseconds apart, the fastest a scenario allows):
/// 100,000 to 1,000,000 offered.
pub(crate) const GATEWAY_LADDER_HZ: [u32; 5] = [10, 20, 40, 50, 100];

/// How `saturate` names its gateway steps.
const GATEWAY_STEP: &str = "gw ";

/// `gateway-100k`: 100,000 nodes behind 1,000 gateways at 1 Hz.
pub(crate) fn gateway_100k(
    duration: Option<Duration>,
) -> anyhow::Result<(Vec<MeshRow>, Vec<String>)> {
    let d = duration.unwrap_or(Duration::from_secs(60));
    let toml = format!(
        r#"
[scenario]
name = "gateway-100k"
duration = "{}ms"
drain = "5s"

[population]
wards = 100
nodes_per_ward = 1000
connect_rate = 20000

[gateways]
nodes_per_gateway = 100
flush = "50ms"

[aggregators]
count = 4
"#,
        d.as_millis()
    );
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    both("100k nodes", &toml, &mut rows, &mut notes)?;
    Ok((rows, notes))
}

/// The knee, the peak and goodput at twice the knee, in words.
fn knee(ladder: &[&MeshRow]) -> Option<String> {
    let first = ladder.first()?;
    let knee = ladder
        .iter()
        .take_while(|r| r.goodput_per_s >= 0.95 * r.offered_per_s)
        .last();
    let peak = ladder
        .iter()
        .map(|r| r.goodput_per_s)
        .fold(0.0f64, f64::max);
    let Some(knee) = knee else {
        return Some(format!(
            "{}: below 95 % of the offered load from the first step; peak goodput {peak:.0}/s",
            first.broker.name()
        ));
    };
    let beyond = ladder
        .iter()
        .find(|r| r.offered_per_s >= 2.0 * knee.offered_per_s);
    let at_twice = match beyond {
        Some(r) => format!(
            "at {:.0}/s offered (≥ 2× the knee) goodput {:.0}/s = {:.0} % of the peak, {:.0} % of the goodput at the knee",
            r.offered_per_s,
            r.goodput_per_s,
            100.0 * r.goodput_per_s / peak.max(1.0),
            100.0 * r.goodput_per_s / knee.goodput_per_s.max(1.0)
        ),
        None => "the ladder does not reach 2× the knee".into(),
    };
    Some(format!(
        "{}: knee at {:.0}/s offered (the last step delivering ≥ 95 %), peak goodput {peak:.0}/s; {at_twice}",
        knee.broker.name(),
        knee.offered_per_s
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(hz: u32, broker: Broker, goodput: f64, p99: f64) -> MeshRow {
        MeshRow {
            step: format!("{hz} Hz"),
            broker,
            nodes: 2000,
            offered_per_s: f64::from(hz) * 2000.0,
            ran_s: 20.0,
            connected_after_s: Some(2.0),
            connect_failures: 0,
            produced: 0,
            delivered: 0,
            goodput_per_s: goodput,
            published_per_s: goodput,
            dropped_overflow: 0,
            unexplained: 0,
            p50_ms: 1.0,
            p99_ms: p99,
            max_ms: 10.0,
            cpu_cores: 1.5,
            sim_bytes_per_node: 10_000,
            total_bytes_per_node: 20_000,
        }
    }

    #[test]
    fn every_saturate_step_is_a_valid_scenario_at_its_rate() {
        for (ladder, gateways, nodes) in [
            (&SATURATE_LADDER_HZ, false, 2_000),
            (&GATEWAY_LADDER_HZ, true, 10_000),
        ] {
            for &hz in ladder {
                let toml = saturate_step(hz, gateways, Duration::from_secs(20));
                let s = vitalmesh_scenario::parse("step.toml", &toml)
                    .unwrap_or_else(|e| panic!("{hz} Hz: {e}"));
                assert_eq!(s.population.nodes(), nodes);
                assert_eq!(s.population.has_gateways(), gateways);
                assert_eq!(s.connect_rate, if gateways { 20_000 } else { 1_000 });
                assert_eq!(
                    s.profile.sample_interval.as_nanos() * u128::from(hz),
                    1_000_000_000
                );
            }
        }
    }

    #[test]
    fn the_knee_is_the_last_step_that_keeps_up_and_twice_it_is_compared_with_the_peak() {
        let e = Broker::Embedded;
        let ladder = [
            step(10, e, 20_000.0, 3.0),
            step(20, e, 39_500.0, 4.0),
            step(40, e, 60_000.0, 900.0),
            step(60, e, 58_000.0, 2_000.0),
        ];
        let refs: Vec<&MeshRow> = ladder.iter().collect();
        let said = knee(&refs).unwrap();
        // 20 Hz (40,000/s) is the last step delivering ≥ 95 %; 40 Hz
        // offers 80,000/s and delivers 75 %.
        assert!(said.contains("knee at 40000/s"), "{said}");
        assert!(said.contains("peak goodput 60000/s"), "{said}");
        // The first step at ≥ 2× the knee is 40 Hz, at the peak.
        assert!(
            said.contains("at 80000/s offered (≥ 2× the knee) goodput 60000/s = 100 % of the peak, 152 % of the goodput at the knee"),
            "{said}"
        );
    }

    #[test]
    fn a_ladder_that_never_keeps_up_says_so() {
        let ladder = [step(10, Broker::Mosquitto, 1_000.0, 3.0)];
        let refs: Vec<&MeshRow> = ladder.iter().collect();
        let said = knee(&refs).unwrap();
        assert!(said.contains("below 95 %"), "{said}");
    }

    #[test]
    fn ratios_pair_the_same_step_of_both_brokers() {
        let rows = [
            step(10, Broker::Embedded, 20_000.0, 3.0),
            step(10, Broker::Mosquitto, 20_000.0, 6.0),
            step(20, Broker::Embedded, 40_000.0, 3.0),
        ];
        let r = ratios(&rows);
        assert_eq!(r.len(), 1, "20 Hz has no mosquitto run to compare with");
        assert_eq!(r[0].step, "10 Hz");
        assert!((r[0].p99 - 0.5).abs() < 1e-9);
        assert!((r[0].goodput - 1.0).abs() < 1e-9);
        let printed = table(&rows);
        assert!(printed.contains("embedded ÷ mosquitto"), "{printed}");
        assert!(printed.contains("p99 ×0.50"), "{printed}");
    }
}

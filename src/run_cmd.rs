//! `vitalmesh run`: a whole simulation over real MQTT, ending with the ledger.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio::sync::{mpsc, watch};
use vitalmesh_mesh::broker::BrokerSpec;
use vitalmesh_mesh::{MeshConfig, RunControl, Snapshot};

/// Options of `vitalmesh run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Plain progress lines instead of the dashboard (the dashboard arrives
    /// with a later release; runs are headless for now).
    #[arg(long)]
    headless: bool,
    /// How long nodes run.
    #[arg(long, value_parser = crate::duration::parse)]
    duration: Option<Duration>,
    /// Number of sensor nodes.
    #[arg(long)]
    nodes: Option<u32>,
    /// Number of wards the nodes are spread over.
    #[arg(long)]
    wards: Option<u16>,
    /// Number of aggregators.
    #[arg(long)]
    aggregators: Option<u16>,
    /// Number of partitions.
    #[arg(long)]
    partitions: Option<u16>,
    /// Time between samples on every node.
    #[arg(long, value_parser = crate::duration::parse)]
    sample_interval: Option<Duration>,
    /// New node connections per second while ramping up.
    #[arg(long)]
    connect_rate: Option<u32>,
    /// Master seed (drawn and printed when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "vitalmesh-report.json")]
    report: PathBuf,
    /// Also write end-to-end latency as an HdrHistogram interval log.
    #[arg(long, value_name = "FILE.hlog")]
    hdr_log: Option<PathBuf>,
    /// Use an existing broker, e.g. mqtt://127.0.0.1:1883, instead of the
    /// embedded one.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress_every: u64,
}

fn build_config(args: &RunArgs) -> Result<MeshConfig> {
    let program =
        std::env::current_exe().context("locating this executable to start the embedded broker")?;
    let mut config = MeshConfig::new(program);
    config.seed = crate::seed::resolve(args.seed);
    if let Some(d) = args.duration {
        config.duration = d;
    }
    let nodes = args.nodes.unwrap_or(config.population.nodes());
    let wards = args.wards.unwrap_or(config.population.wards);
    config.set_nodes(nodes, wards);
    if let Some(k) = args.aggregators {
        config.aggregators = k;
    }
    if let Some(p) = args.partitions {
        config.partitions = p;
    }
    if let Some(i) = args.sample_interval {
        config.node.sample_interval = i;
    }
    if let Some(r) = args.connect_rate {
        config.connect_rate = r;
    }
    if let Some(url) = &args.broker {
        config.broker = BrokerSpec::parse_url(url)?;
    }
    config.keep_intervals = args.hdr_log.is_some();
    config.validate()?;
    Ok(config)
}

fn progress_line(s: &Snapshot) -> String {
    format!(
        "[{:>5.0}s/{:.0}s] {:<8} {}/{} connected | produced {} delivered {} ({}/s) | buffered {} | e2e p99 {:.1} ms (10 s) | alerts {}",
        s.elapsed.as_secs_f64(),
        s.planned.as_secs_f64(),
        format!("{:?}", s.phase).to_lowercase(),
        s.connected,
        s.nodes,
        s.produced,
        s.delivered,
        s.rate.delivered,
        s.buffered,
        s.latency_recent.p99_ms,
        s.alerts.len()
    )
}

pub(crate) fn run(args: &RunArgs) -> Result<ExitCode> {
    let config = build_config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vitalmesh")
        .build()
        .context("starting the async runtime")?;
    let nodes = config.population.nodes();
    eprintln!(
        "vitalmesh: {} nodes in {} wards, {} aggregators, {} partitions, {} — seed {}",
        nodes,
        config.population.wards,
        config.aggregators,
        config.partitions,
        crate::duration::format(config.duration),
        config.seed
    );
    let outcome = runtime.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (snap_tx, mut snap_rx) = mpsc::channel::<Snapshot>(4);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\nstopping: finishing the run and writing the report (Ctrl-C again to abort)"
                );
                let _ = stop_tx.send(true);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let every = Duration::from_secs(args.progress_every.max(1));
        let printer = tokio::spawn(async move {
            let mut last: Option<Duration> = None;
            while let Some(s) = snap_rx.recv().await {
                if last.is_none_or(|l| s.elapsed >= l + every) {
                    last = Some(s.elapsed);
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{}", progress_line(&s));
                }
            }
        });
        let control = RunControl {
            stop: stop_rx,
            snapshots: Some(snap_tx),
            commands: None,
        };
        let outcome = vitalmesh_mesh::run(config, control).await;
        let _ = printer.await;
        outcome
    })?;
    let report = &outcome.report;
    println!("{}", report.summary());
    report.write_json(&args.report)?;
    let shown = std::fs::canonicalize(&args.report).unwrap_or_else(|_| args.report.clone());
    println!("Report       {}", shown.display());
    if let (Some(path), Some(intervals)) = (&args.hdr_log, &outcome.intervals) {
        vitalmesh_mesh::report::write_hdr_log(path, outcome.started, intervals)?;
        let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        println!(
            "Latency log  {} (HdrHistogram interval log, µs)",
            shown.display()
        );
    }
    if report.ledger.total.unexplained > 0 {
        eprintln!(
            "error: {} samples are unexplained: produced but neither delivered, buffered, dropped nor lost",
            report.ledger.total.unexplained
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of the hidden `vitalmesh broker` (the embedded broker process).
#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    /// Loopback port to listen on (repeat for more listeners).
    #[arg(long = "port", required = true)]
    ports: Vec<u16>,
    /// Router connection slots.
    #[arg(long, default_value_t = 20_000)]
    max_connections: usize,
    /// Largest incoming packet, bytes.
    #[arg(long, default_value_t = 65_536)]
    max_payload: usize,
}

pub(crate) fn broker(args: &BrokerArgs) -> Result<ExitCode> {
    vitalmesh_mesh::broker::child::run(vitalmesh_mesh::broker::child::ChildConfig {
        ports: args.ports.clone(),
        max_connections: args.max_connections,
        max_payload: args.max_payload,
        canary_interval: Duration::from_secs(1),
    })?;
    Ok(ExitCode::SUCCESS)
}

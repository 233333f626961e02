//! `vitalmesh run`, `vitalmesh validate` and `vitalmesh inject`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::sync::{mpsc, watch};
use vitalmesh_dashboard::Exit;
use vitalmesh_mesh::broker::BrokerSpec;
use vitalmesh_mesh::{MeshCommand, MeshConfig, RunControl, Snapshot};
use vitalmesh_scenario::{Action, Scenario, duration};

/// Exit code when a sample is unexplained.
const EXIT_UNEXPLAINED: u8 = 2;
/// Exit code when an SLO of the scenario failed.
const EXIT_SLO_FAILED: u8 = 3;

/// Options of `vitalmesh run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Scenario file (TOML). Without one, the default mesh runs: 1,000
    /// nodes, 4 aggregators, 60 s.
    scenario: Option<PathBuf>,
    /// Plain progress lines on stderr instead of the live dashboard (also
    /// the case when stdout is not a terminal or CI is set).
    #[arg(long)]
    headless: bool,
    /// How long nodes run (overrides the scenario's duration).
    #[arg(long, value_parser = duration::parse)]
    duration: Option<Duration>,
    /// Number of sensor nodes (without a scenario).
    #[arg(long)]
    nodes: Option<u32>,
    /// Number of wards the nodes are spread over (without a scenario).
    #[arg(long)]
    wards: Option<u16>,
    /// Number of aggregators (without a scenario).
    #[arg(long)]
    aggregators: Option<u16>,
    /// Number of partitions (without a scenario).
    #[arg(long)]
    partitions: Option<u16>,
    /// Time between samples on every node (without a scenario).
    #[arg(long, value_parser = duration::parse)]
    sample_interval: Option<Duration>,
    /// New node connections per second while ramping up.
    #[arg(long)]
    connect_rate: Option<u32>,
    /// Master seed (the scenario's, or drawn and printed, when absent).
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
    /// Unix socket for `vitalmesh inject` (a per-run one by default).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress_every: u64,
}

/// Refuses a flag that the scenario file owns.
fn scenario_owns(flag: &str, given: bool, file: &Path, section: &str) -> Result<()> {
    if given {
        bail!(
            "{flag}: set by the scenario; edit [{section}] in '{}' instead",
            file.display()
        );
    }
    Ok(())
}

/// The program the embedded broker runs as. On Linux `/proc/self/exe`
/// names this process's own image even if the file on disk has since been
/// replaced (say, by a rebuild during a long run), so a broker restart
/// always starts the same build.
fn broker_program() -> Result<PathBuf> {
    let proc_self = Path::new("/proc/self/exe");
    if proc_self.exists() {
        return Ok(proc_self.to_path_buf());
    }
    std::env::current_exe().context("locating this executable to start the embedded broker")
}

fn build_config(args: &RunArgs) -> Result<MeshConfig> {
    let program = broker_program()?;
    let mut config = match &args.scenario {
        Some(path) => {
            let scenario = vitalmesh_scenario::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            scenario_owns("--nodes", args.nodes.is_some(), path, "population")?;
            scenario_owns("--wards", args.wards.is_some(), path, "population")?;
            scenario_owns(
                "--aggregators",
                args.aggregators.is_some(),
                path,
                "aggregators",
            )?;
            scenario_owns(
                "--partitions",
                args.partitions.is_some(),
                path,
                "aggregators",
            )?;
            scenario_owns(
                "--sample-interval",
                args.sample_interval.is_some(),
                path,
                "population.profile",
            )?;
            if let Some(d) = args.duration {
                check_shortened(&scenario, d)?;
            }
            let seed = crate::seed::resolve(args.seed.or(scenario.seed));
            let c = MeshConfig::from_scenario(&scenario, program, seed);
            if args.broker.is_some() {
                if let Some(s) = c
                    .schedule
                    .iter()
                    .find(|s| matches!(s.action, Action::RestartBroker))
                {
                    bail!(
                        "--broker: {} in '{}' restarts the broker, which only the embedded one can do",
                        s.origin,
                        path.display()
                    );
                }
            }
            c
        }
        None => {
            let mut c = MeshConfig::new(program);
            c.seed = crate::seed::resolve(args.seed);
            let nodes = args.nodes.unwrap_or(c.population.nodes());
            let wards = args.wards.unwrap_or(c.population.wards);
            c.set_nodes(nodes, wards);
            if let Some(k) = args.aggregators {
                c.aggregators = k;
            }
            if let Some(p) = args.partitions {
                c.partitions = p;
            }
            if let Some(i) = args.sample_interval {
                c.node.sample_interval = i;
            }
            c
        }
    };
    if let Some(d) = args.duration {
        config.duration = d;
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

/// A `--duration` that would cut off scheduled actions is refused, as the
/// same file with that duration would be.
fn check_shortened(s: &Scenario, d: Duration) -> Result<()> {
    if let Some(late) = s
        .load
        .iter()
        .chain(&s.events)
        .filter(|e| e.at >= d)
        .min_by_key(|e| e.at)
    {
        bail!(
            "--duration: '{}' ends before {} at '{}' in '{}'; expected a duration longer than its last scheduled action",
            duration::format(d),
            late.origin,
            duration::format(late.at),
            s.file
        );
    }
    Ok(())
}

fn progress_line(s: &Snapshot) -> String {
    format!(
        "[{:>5.0}s/{:.0}s] {:<8} {}/{} connected | produced {} delivered {} ({}/s) | buffered {} | e2e p99 {:.1} ms (10 s) | alerts {} | events {}",
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
        s.alerts.len(),
        s.timeline.len(),
    )
}

/// Plain progress on stderr: timeline entries as they fire and a status
/// line every `every`. Runs on its own thread until the run ends.
fn print_progress(mut snapshots: mpsc::Receiver<Snapshot>, every: Duration) {
    let mut last: Option<Duration> = None;
    // Timeline entries already printed, by time (the snapshot carries the
    // most recent hundred).
    let mut printed_until = f64::NEG_INFINITY;
    while let Some(s) = snapshots.blocking_recv() {
        let mut err = std::io::stderr().lock();
        for e in s.timeline.iter().filter(|e| e.at_s > printed_until) {
            let _ = writeln!(err, "[{:>5.0}s] {}: {}", e.at_s, e.source, e.description);
        }
        printed_until = s
            .timeline
            .last()
            .map_or(printed_until, |e| e.at_s.max(printed_until));
        if last.is_none_or(|l| s.elapsed >= l + every) {
            last = Some(s.elapsed);
            let _ = writeln!(err, "{}", progress_line(&s));
        }
    }
}

/// Whether this run gets the live dashboard: a terminal on stdout, no
/// `--headless`, and not under CI.
fn wants_dashboard(args: &RunArgs) -> bool {
    !args.headless && std::io::stdout().is_terminal() && std::env::var_os("CI").is_none()
}

/// `NO_COLOR` set to anything but the empty string turns colour off
/// (<https://no-color.org>).
fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Ctrl-C or SIGTERM stops the run cleanly (the report is still written);
/// a second one leaves at once, giving the terminal back first.
async fn stop_on_signal(stop: watch::Sender<bool>, quiet: bool) {
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return;
    };
    let mut signal = async || {
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.is_ok(),
            r = terminate.recv() => r.is_some(),
        }
    };
    if !signal().await {
        return;
    }
    if !quiet {
        eprintln!("\nstopping: finishing the run and writing the report (Ctrl-C again to abort)");
    }
    let _ = stop.send(true);
    if signal().await {
        vitalmesh_dashboard::terminal::restore();
        eprintln!("aborted: no report written");
        std::process::exit(130);
    }
}

/// The dashboard's thread: the dashboard while it holds the terminal, plain
/// progress if it cannot (or loses the terminal to a panic elsewhere).
fn spawn_dashboard(
    mut link: vitalmesh_dashboard::DashboardLink,
    every: Duration,
) -> Result<std::thread::JoinHandle<()>> {
    let color = color_allowed();
    std::thread::Builder::new()
        .name("dashboard".into())
        .spawn(move || match vitalmesh_dashboard::run(&mut link, color) {
            Ok(Exit::Done) => {}
            Ok(Exit::Abort) => {
                eprintln!("aborted: no report written");
                std::process::exit(130);
            }
            Ok(Exit::Detached) => {
                eprintln!("dashboard: gave the terminal back; plain progress follows");
                print_progress(link.snapshots, every);
            }
            Err(e) => {
                eprintln!("dashboard: {e}; plain progress follows");
                print_progress(link.snapshots, every);
            }
        })
        .context("starting the dashboard thread")
}

pub(crate) fn run(args: &RunArgs) -> Result<ExitCode> {
    let config = build_config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vitalmesh")
        .build()
        .context("starting the async runtime")?;
    let control_socket = args
        .control
        .clone()
        .unwrap_or_else(vitalmesh_mesh::control::default_socket);
    eprintln!(
        "vitalmesh: '{}' — {} nodes in {} wards, {} aggregators, {} partitions, {}, {} scheduled actions — seed {}",
        config.scenario,
        config.population.nodes(),
        config.population.wards,
        config.aggregators,
        config.partitions,
        duration::format(config.duration),
        config.schedule.len(),
        config.seed
    );
    eprintln!(
        "control: {} (vitalmesh inject <action> ...)",
        control_socket.display()
    );
    let dashboard = wants_dashboard(args);
    let every = Duration::from_secs(args.progress_every.max(1));
    let limits = config.limits();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (snap_tx, snap_rx) = mpsc::channel::<Snapshot>(4);
    let (finished_tx, ui, commands) = if dashboard {
        let (command_tx, command_rx) = mpsc::channel::<MeshCommand>(8);
        let (finished_tx, finished_rx) = std::sync::mpsc::channel();
        let link = vitalmesh_dashboard::DashboardLink {
            snapshots: snap_rx,
            commands: command_tx,
            stop: stop_tx.clone(),
            finished: finished_rx,
            limits,
        };
        (
            Some(finished_tx),
            spawn_dashboard(link, every)?,
            Some(command_rx),
        )
    } else {
        let printer = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || print_progress(snap_rx, every))
            .context("starting the progress thread")?;
        (None, printer, None)
    };
    let outcome = runtime.block_on(async {
        tokio::spawn(stop_on_signal(stop_tx, dashboard));
        let control = RunControl {
            stop: stop_rx,
            snapshots: Some(snap_tx),
            commands,
            control_socket: Some(control_socket),
        };
        vitalmesh_mesh::run(config, control).await
    });
    // Files first, so the dashboard's last screen can say where they went.
    let written = outcome
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|o| {
            o.report.write_json(&args.report)?;
            let report =
                std::fs::canonicalize(&args.report).unwrap_or_else(|_| args.report.clone());
            let hdr_log = match (&args.hdr_log, &o.intervals) {
                (Some(path), Some(intervals)) => {
                    vitalmesh_mesh::report::write_hdr_log(path, o.started, intervals)?;
                    Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()))
                }
                _ => None,
            };
            Ok((report, hdr_log))
        });
    if let (Some(tx), Ok(outcome), Ok((report, _))) = (&finished_tx, &outcome, &written) {
        let _ = tx.send(vitalmesh_dashboard::Finished {
            ledger: outcome.report.ledger.total,
            slo: outcome.report.slo.clone(),
            report: report.clone(),
            interrupted: outcome.report.interrupted,
        });
    }
    drop(finished_tx);
    // The dashboard gives the terminal back before anything else prints.
    let _ = ui.join();
    let outcome = outcome?;
    let report = &outcome.report;
    println!("{}", report.summary());
    let (report_path, hdr_log) = written?;
    println!("Report       {}", report_path.display());
    if let Some(path) = hdr_log {
        println!(
            "Latency log  {} (HdrHistogram interval log, µs)",
            path.display()
        );
    }
    if report.ledger.total.unexplained > 0 {
        eprintln!(
            "error: {} samples are unexplained: produced but neither delivered, buffered, dropped nor lost",
            report.ledger.total.unexplained
        );
        return Ok(ExitCode::from(EXIT_UNEXPLAINED));
    }
    if !report.slo_passed() {
        let failed: Vec<&str> = report
            .slo
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.name)
            .collect();
        eprintln!("error: SLO failed: {}", failed.join(", "));
        return Ok(ExitCode::from(EXIT_SLO_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `vitalmesh validate`.
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Scenario files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub(crate) fn validate(args: &ValidateArgs) -> Result<ExitCode> {
    let mut bad = 0;
    for file in &args.files {
        match vitalmesh_scenario::load(file) {
            Ok(s) => println!(
                "ok  {} — '{}': {} nodes in {} wards, {} aggregators, {}, {} load steps, {} events, {} SLOs",
                file.display(),
                s.name,
                s.population.nodes(),
                s.population.wards,
                s.aggregators,
                duration::format(s.duration),
                s.load.len(),
                s.events.len(),
                s.slos.len()
            ),
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
            }
        }
    }
    if bad > 0 {
        eprintln!("{bad} of {} files invalid", args.files.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `vitalmesh inject`.
#[derive(Debug, Args)]
pub(crate) struct InjectArgs {
    /// The run's control socket or process id (the only running run by default).
    #[arg(long, value_name = "SOCKET|PID")]
    run: Option<String>,
    /// The action, named as in `[[event]]` entries: partition, kill_nodes,
    /// kill_aggregator, restart_broker, outbreak, sensor_fault, rogue, …
    action: String,
    /// The action's fields as key=value, e.g. ward=3 for=30s fraction=0.5.
    #[arg(value_name = "KEY=VALUE")]
    fields: Vec<String>,
}

/// Turns `key=value` pairs into TOML lines: values that are TOML stay as
/// they are (`3`, `0.5`, `[1, 2]`), anything else becomes a string (`30s`).
pub(crate) fn fields_to_toml(action: &str, fields: &[String]) -> Result<String> {
    let mut toml = format!("action = {}\n", toml_string(action));
    for f in fields {
        let Some((key, value)) = f.split_once('=') else {
            bail!("'{f}' is not a field; expected key=value, e.g. ward=3 or for=30s");
        };
        let (key, value) = (key.trim(), value.trim());
        let literal = format!("{key} = {value}\n");
        if value.parse::<toml::Table>().is_err() && toml::from_str::<toml::Table>(&literal).is_ok()
        {
            toml.push_str(&literal);
        } else {
            toml.push_str(&format!("{key} = {}\n", toml_string(value)));
        }
    }
    Ok(toml)
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

async fn find_run(choice: Option<&str>) -> Result<PathBuf> {
    let dir = vitalmesh_mesh::control::socket_dir();
    if let Some(c) = choice {
        if let Ok(pid) = c.parse::<u32>() {
            return Ok(dir.join(format!("run-{pid}.sock")));
        }
        return Ok(PathBuf::from(c));
    }
    let live = vitalmesh_mesh::control::live_runs(&dir).await;
    match live.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no running `vitalmesh run` found in '{}'; start one, or pass --run SOCKET",
            dir.display()
        ),
        many => {
            let list: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
            bail!(
                "several runs are going; pick one with --run: {}",
                list.join(", ")
            )
        }
    }
}

pub(crate) fn inject(args: &InjectArgs) -> Result<ExitCode> {
    let toml = fields_to_toml(&args.action, &args.fields)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let socket = find_run(args.run.as_deref()).await?;
        let reply = vitalmesh_mesh::control::send(&socket, &toml).await?;
        if reply.ok {
            let at = reply.entry.as_ref().map_or(0.0, |e| e.at_s);
            println!("injected at {at:.1} s: {}", reply.message);
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("{}", reply.message);
            Ok(ExitCode::FAILURE)
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_become_the_same_toml_a_scenario_would_hold() {
        let toml = fields_to_toml(
            "partition",
            &[
                "ward=3".into(),
                "for=30s".into(),
                "nodes=[1, 2]".into(),
                "fraction=0.5".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            toml,
            "action = \"partition\"\nward = 3\nfor = \"30s\"\nnodes = [1, 2]\nfraction = 0.5\n"
        );
        assert!(
            fields_to_toml("partition", &["ward".into()])
                .unwrap_err()
                .to_string()
                .contains("expected key=value")
        );
    }
}

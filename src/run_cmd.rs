//! `vitalmesh run`, `vitalmesh validate` and `vitalmesh inject`.
//!
//! `run` is honest at both edges: everything it will write (the report, the
//! latency log, the control socket) is opened before anything starts, so a
//! bad path costs nothing; every outcome has its own exit code.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};
use vitalmesh_dashboard::Exit;
use vitalmesh_mesh::{MeshCommand, MeshConfig, RunControl, Snapshot};
use vitalmesh_scenario::{MeshFlags, Scenario, duration};
use vitalmesh_sim::report::Report;

/// Exit code of a run that could not start or failed (bad input, broker).
pub(crate) const EXIT_ERROR: u8 = 1;
/// Exit code of a command line clap refused (its own convention).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code when an SLO of the scenario failed.
pub(crate) const EXIT_SLO_FAILED: u8 = 3;
/// Exit code when a sample is unexplained.
pub(crate) const EXIT_UNEXPLAINED: u8 = 4;
/// Exit code of a run stopped early (Ctrl-C, `q`): the report is written
/// but covers less than the scenario.
pub(crate) const EXIT_INTERRUPTED: u8 = 5;
/// Exit code of a sharded run some shard of which left no part: the
/// merged report covers the shards that did.
pub(crate) const EXIT_INCOMPLETE: u8 = 6;
/// Exit code when a second Ctrl-C abandoned the run (no report).
pub(crate) const EXIT_ABORTED: u8 = 130;

/// Options of `vitalmesh run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Scenario file (TOML). Without one, the default mesh runs: 1,000
    /// nodes in 10 wards, 4 aggregators, 60 s.
    scenario: Option<PathBuf>,
    /// Run in virtual time: the same state machines on a discrete-event
    /// clock with a modelled broker and network, as fast as one core allows
    /// (or at --speed); the same seed gives a byte-identical report.
    #[arg(long = "virtual")]
    virtual_time: bool,
    /// With --virtual: simulated seconds per wall second (60 = one
    /// simulated minute a second), e.g. to follow a run on the dashboard.
    #[arg(long, value_name = "FACTOR", requires = "virtual_time")]
    speed: Option<f64>,
    /// Plain progress lines on stderr instead of the live dashboard (also
    /// the case when stdout is not a terminal or CI is set).
    #[arg(long)]
    headless: bool,
    /// How long nodes run (overrides the scenario's duration).
    #[arg(long, value_parser = duration::parse)]
    duration: Option<Duration>,
    /// Number of sensor nodes (without a scenario; a multiple of --wards).
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
    /// Provisioning file: 64 hex digits, the secret every device key and
    /// broker password derives from (drawn from the seed when absent).
    #[arg(long, value_name = "FILE")]
    provisioning: Option<PathBuf>,
    /// Where to write the JSON report (default `vitalmesh-report.json`;
    /// with --shard, the part file, default `part-I.json`).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Also write the report as one self-contained HTML page.
    #[arg(long, value_name = "OUT.html")]
    pub(crate) html: Option<PathBuf>,
    /// Also write end-to-end latency as an HdrHistogram interval log.
    #[arg(long, value_name = "FILE.hlog")]
    hdr_log: Option<PathBuf>,
    /// Use an existing broker, e.g. mqtt://127.0.0.1:1883, instead of the
    /// embedded one. Several nodes of a clustered broker are given
    /// separated by commas: clients spread over them and move to another
    /// when theirs stops answering.
    #[arg(long, value_name = "URL[,URL...]")]
    pub(crate) broker: Option<String>,
    /// Log every client in to the external broker with its own credentials
    /// (user name: a node's id, `g<id>` for a gateway, `a<id>` for an
    /// aggregator; password derived from the run's provisioning secret). The
    /// embedded broker always requires them.
    #[arg(long, requires = "broker")]
    broker_auth: bool,
    /// Connect every client over TLS. The embedded broker gets a
    /// certificate authority and certificate made for the run; an external
    /// broker is named with `mqtts://` and needs `--tls-ca`.
    #[arg(long)]
    tls: bool,
    /// The certificate authority (PEM) an external TLS broker's
    /// certificate chains to.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Unix socket for `vitalmesh inject` (a per-run one by default).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    pub(crate) progress_every: u64,
    /// Serve the run's live figures for Prometheus at http://ADDR/metrics,
    /// e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Run shard I of N (`0/3`): the nodes, gateways and aggregators whose
    /// id is I modulo N, against --broker; every shard runs the whole
    /// schedule and applies what it owns. Writes a part file for
    /// `vitalmesh merge`.
    #[arg(long, value_name = "I/N", value_parser = vitalmesh_sim::shard::Shard::parse,
          requires = "broker", conflicts_with_all = ["virtual_time", "html", "hdr_log", "broker_auth", "local_shards"])]
    pub(crate) shard: Option<vitalmesh_sim::shard::Shard>,
    /// The id the shards of one run share (default: from the scenario, the
    /// seed and the shard count). Give each run its own when runs of the
    /// same scenario and seed may overlap on one broker.
    #[arg(long, value_name = "ID")]
    pub(crate) run_id: Option<String>,
    /// How long a shard waits for the other shards to come up.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "120s")]
    pub(crate) shard_wait: Duration,
    /// Run N shards as processes on this machine against --broker (or a
    /// mosquitto started for the run), then merge their parts into one
    /// report: the way past one process's file-descriptor limit.
    #[arg(long, value_name = "N", conflicts_with_all = ["virtual_time", "broker_auth", "tls"])]
    pub(crate) local_shards: Option<u32>,
}

impl RunArgs {
    /// Where the report (or a shard's part) goes.
    pub(crate) fn report_path(&self) -> PathBuf {
        match (&self.report, self.shard) {
            (Some(p), _) => p.clone(),
            (None, Some(shard)) => PathBuf::from(format!("part-{}.json", shard.index)),
            (None, None) => PathBuf::from("vitalmesh-report.json"),
        }
    }

    /// The mesh-shaping flags given.
    fn flags(&self) -> MeshFlags {
        MeshFlags {
            nodes: self.nodes,
            wards: self.wards,
            aggregators: self.aggregators,
            partitions: self.partitions,
            sample_interval: self.sample_interval,
        }
    }

    /// The scenario as a part file records it, so the merge builds the
    /// same one.
    pub(crate) fn recipe(&self) -> Result<vitalmesh_sim::merge::Recipe> {
        let text = match &self.scenario {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading '{}'", path.display()))?,
            ),
            None => None,
        };
        Ok(vitalmesh_sim::merge::Recipe {
            file: self.scenario.as_ref().map(|p| p.display().to_string()),
            text,
            flags: self.flags(),
            duration_ms: self.duration.map(|d| d.as_millis() as u64),
            connect_rate: self.connect_rate,
        })
    }
}

/// The program the embedded broker runs as. On Linux `/proc/self/exe`
/// names this process's own image even if the file on disk has since been
/// replaced (say, by a rebuild during a long run), so a broker restart
/// always starts the same build.
pub(crate) fn broker_program() -> Result<PathBuf> {
    let proc_self = Path::new("/proc/self/exe");
    if proc_self.exists() {
        return Ok(proc_self.to_path_buf());
    }
    std::env::current_exe().context("locating this executable to start the embedded broker")
}

/// The run's one source of truth: the scenario file, or the flags through
/// the same validation, with the command-line overrides applied and
/// checked like the file's own values.
pub(crate) fn build_scenario(args: &RunArgs) -> Result<(Scenario, u64)> {
    let flags = args.flags();
    let mut scenario = match &args.scenario {
        Some(path) => {
            let s = vitalmesh_scenario::load(path)?;
            flags.refuse_with_file(&path.display().to_string())?;
            match args.duration {
                Some(d) => s.with_duration(d)?,
                None => s,
            }
        }
        None => vitalmesh_scenario::from_flags(&flags, args.duration)?,
    };
    if let Some(r) = args.connect_rate {
        scenario = scenario.with_connect_rate(r)?;
    }
    if let Some(first) = brokers(args)?.into_iter().next() {
        scenario = scenario.with_external_broker(first)?;
    }
    if args.tls {
        scenario = scenario.with_tls()?;
    }
    if args.tls_ca.is_some() && !scenario.broker_tls {
        bail!(
            "--tls-ca: the run does not use TLS; expected an 'mqtts://' broker, [broker] tls = true, or --tls"
        );
    }
    if let (vitalmesh_scenario::BrokerChoice::External { host, port }, true, None) =
        (&scenario.broker, scenario.broker_tls, &args.tls_ca)
    {
        bail!(
            "--tls-ca: the broker 'mqtts://{host}:{port}' needs the certificate authority its certificate chains to; expected --tls-ca FILE (PEM)"
        );
    }
    if let (vitalmesh_scenario::BrokerChoice::External { host, .. }, Some(ca)) =
        (&scenario.broker, &args.tls_ca)
    {
        // A CA file that cannot be used is refused now, not after the run
        // has been set up.
        vitalmesh_mesh::mqtt::TlsClient::from_ca_file(ca, host)?;
    }
    if args.virtual_time {
        scenario.check_virtual()?;
        if let Some(x) = args.speed {
            if !(x.is_finite() && x > 0.0) {
                bail!(
                    "--speed: '{x}' is not a speed; expected simulated seconds per wall second above 0, e.g. '60'"
                );
            }
        }
    }
    if let Some(path) = &args.provisioning {
        let text =
            read_small(path).with_context(|| format!("--provisioning '{}'", path.display()))?;
        let secret = vitalmesh_wire::ProvisioningSecret::from_hex(&text)
            .map_err(|e| anyhow::anyhow!("--provisioning '{}': {e}", path.display()))?;
        scenario.provisioning = Some(secret);
    }
    let seed = crate::seed::resolve(args.seed.or(scenario.seed));
    Ok((scenario, seed))
}

/// The brokers `--broker` names, comma-separated, all over TLS or none.
fn brokers(args: &RunArgs) -> Result<Vec<vitalmesh_scenario::broker_url::BrokerUrl>> {
    let Some(list) = &args.broker else {
        return Ok(Vec::new());
    };
    let urls = list
        .split(',')
        .map(|url| {
            vitalmesh_scenario::broker_url::parse(url.trim())
                .map_err(|e| anyhow::anyhow!("--broker: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    if urls.iter().any(|u| u.tls != urls[0].tls) {
        bail!(
            "--broker: '{list}' mixes mqtt:// and mqtts://; expected every node of the broker over TLS or none"
        );
    }
    Ok(urls)
}

/// A small text file (at most 4 KiB, a regular file): a provisioning file
/// is 64 characters, and a mistaken path must not be read whole.
fn read_small(path: &Path) -> Result<String> {
    use std::io::Read;
    let f = File::open(path)?;
    if !f.metadata()?.is_file() {
        bail!("is not a regular file");
    }
    let mut text = String::new();
    f.take(4096).read_to_string(&mut text)?;
    Ok(text)
}

/// An output file, created (or truncated) before the run starts so a bad
/// path is found at once, not after the run has been lost.
/// One never written (the run failed) is removed again rather than left
/// behind empty.
struct Output {
    path: PathBuf,
    file: Option<File>,
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Output {
    fn create(flag: &str, path: &Path) -> Result<Self> {
        if path.is_dir() {
            bail!(
                "{flag}: '{}' is a directory; expected a file path",
                path.display()
            );
        }
        let file = File::create(path).map_err(|e| {
            anyhow::anyhow!(
                "{flag}: cannot create '{}': {e}; expected a writable file path",
                path.display()
            )
        })?;
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(Self {
            path,
            file: Some(file),
        })
    }

    fn write(mut self, bytes: &[u8]) -> Result<PathBuf> {
        let mut file = self.file.take().expect("written once");
        file.write_all(bytes)
            .and_then(|()| file.flush())
            .with_context(|| format!("writing '{}'", self.path.display()))?;
        Ok(self.path.clone())
    }
}

fn progress_line(s: &Snapshot) -> String {
    let clock = match s.speed {
        Some(x) => format!(
            "[{} sim., ×{x:.0}]",
            duration::format(Duration::from_secs(s.elapsed.as_secs()))
        ),
        None => format!(
            "[{:>5.0}s/{:.0}s]",
            s.elapsed.as_secs_f64(),
            s.planned.as_secs_f64()
        ),
    };
    // A shard says how the whole run goes as well as its own part.
    let whole = s.whole_run.map_or(String::new(), |w| {
        format!(
            " | whole run ({}/{} shards heard): {} connected, produced {} delivered {}",
            w.shards_heard, w.count, w.connected, w.produced, w.delivered
        )
    });
    format!(
        "{clock} {:<8} {}/{} connected | produced {} delivered {} ({}/s) | buffered {} | e2e p99 {:.1} ms (10 s) | alerts {} | events {}{whole}",
        s.phase.name(),
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

/// Plain progress on stderr: the broker's address once, timeline entries
/// as they fire (a refused one says so) and a status line every `every`.
/// Runs on its own thread until the run ends.
fn print_progress(mut snapshots: mpsc::Receiver<Snapshot>, every: Duration) {
    let mut last: Option<Duration> = None;
    let mut announced = false;
    // Timeline entries already printed, by time (the snapshot carries the
    // most recent hundred).
    let mut printed_until = f64::NEG_INFINITY;
    // Broker events already printed (crashes, restarts: one line each, as
    // they happen; failed canaries only in the report).
    let mut broker_events = 0;
    while let Some(s) = snapshots.blocking_recv() {
        let mut err = std::io::stderr().lock();
        if !announced {
            announced = true;
            let _ = writeln!(
                err,
                "broker: {}{}",
                s.broker_url,
                attach_hint(&s.broker_url)
            );
        }
        for e in s.timeline.iter().filter(|e| e.at_s > printed_until) {
            let _ = writeln!(err, "{}", e.console_line());
        }
        printed_until = s
            .timeline
            .last()
            .map_or(printed_until, |e| e.at_s.max(printed_until));
        for e in s.broker.events.iter().skip(broker_events) {
            if !matches!(e.kind, "canary_failed" | "started") {
                let _ = writeln!(err, "[{:>5.0}s] broker {}: {}", e.at_s, e.kind, e.detail);
            }
        }
        broker_events = broker_events.max(s.broker.events.len());
        if last.is_none_or(|l| s.elapsed >= l + every) {
            last = Some(s.elapsed);
            let _ = writeln!(err, "{}", progress_line(&s));
        }
    }
}

/// How to watch a real broker's traffic.
fn attach_hint(url: &str) -> String {
    match vitalmesh_scenario::broker_url::parse(url) {
        Ok(u) if !u.tls => {
            format!(
                " (watch it: mosquitto_sub -h {} -p {} -t 'vm/#' -v)",
                u.host, u.port
            )
        }
        _ => String::new(),
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
        std::process::exit(i32::from(EXIT_ABORTED));
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
                std::process::exit(i32::from(EXIT_ABORTED));
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

/// What either driver leaves behind.
pub(crate) struct Finished {
    pub(crate) report: Report,
    pub(crate) intervals: Option<Vec<(f64, Histogram<u64>)>>,
    pub(crate) started: SystemTime,
    pub(crate) part: Option<vitalmesh_sim::merge::ShardPart>,
}

pub(crate) fn run(args: &RunArgs) -> Result<ExitCode> {
    if args.local_shards.is_some() {
        return crate::shard_cmd::run_local(args);
    }
    let (scenario, seed) = build_scenario(args)?;
    let report_out = Output::create("--report", &args.report_path())?;
    let hdr_out = args
        .hdr_log
        .as_deref()
        .map(|p| Output::create("--hdr-log", p))
        .transpose()?;
    let html_out = args
        .html
        .as_deref()
        .map(|p| Output::create("--html", p))
        .transpose()?;
    let mut config = MeshConfig::new(scenario, seed, broker_program()?);
    config.keep_intervals = hdr_out.is_some();
    config.broker_auth = args.broker_auth;
    config.tls_ca = args.tls_ca.clone();
    if let vitalmesh_mesh::broker::BrokerSpec::External { also, .. } = &mut config.broker {
        *also = brokers(args)?
            .into_iter()
            .skip(1)
            .map(|u| (u.host, u.port))
            .collect();
    }
    if let Some(shard) = args.shard {
        let recipe = args.recipe()?;
        config.shard = Some(vitalmesh_mesh::ShardPlan {
            shard,
            run_id: args
                .run_id
                .clone()
                .unwrap_or_else(|| crate::shard_cmd::run_id(&recipe, seed, shard.count)),
            recipe,
            wait: args.shard_wait,
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(if args.virtual_time { 1 } else { 2 })
        .thread_name("vitalmesh")
        .build()
        .context("starting the async runtime")?;
    let control_socket = args
        .control
        .clone()
        .unwrap_or_else(vitalmesh_mesh::control::default_socket);
    let listener = {
        let _guard = runtime.enter();
        vitalmesh_mesh::control::bind(&control_socket).map_err(|e| {
            anyhow::anyhow!(
                "--control: cannot listen on '{}': {e}; expected a path in a writable directory",
                control_socket.display()
            )
        })?
    };
    let metrics = args
        .metrics
        .map(|addr| crate::metrics_http::bind(&runtime, addr).map(|l| (addr, l)))
        .transpose()?;
    let s = &config.scenario;
    eprintln!(
        "vitalmesh: '{}' in {} — {} nodes in {} wards, {} aggregators, {} partitions, {}, {} scheduled actions — seed {}",
        s.name,
        if args.virtual_time {
            "virtual time"
        } else {
            "real time"
        },
        s.population.nodes(),
        s.population.wards,
        s.aggregators,
        s.partitions,
        duration::format(s.duration),
        s.load.len() + s.events.len(),
        seed
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
    let (command_tx, command_rx) = mpsc::channel::<MeshCommand>(16);
    let (finished_tx, ui) = if dashboard {
        let (finished_tx, finished_rx) = std::sync::mpsc::channel();
        let link = vitalmesh_dashboard::DashboardLink {
            snapshots: snap_rx,
            commands: command_tx.clone(),
            stop: stop_tx.clone(),
            finished: finished_rx,
            limits: limits.clone(),
        };
        (Some(finished_tx), spawn_dashboard(link, every)?)
    } else {
        let printer = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || print_progress(snap_rx, every))
            .context("starting the progress thread")?;
        (None, printer)
    };
    let snap_tx = match metrics {
        Some((addr, listener)) => {
            eprintln!("metrics: http://{addr}/metrics");
            crate::metrics_http::tap(&runtime, listener, snap_tx)
        }
        None => snap_tx,
    };
    let server = runtime.spawn(vitalmesh_mesh::control::serve(listener, limits, command_tx));
    runtime.spawn(stop_on_signal(stop_tx, dashboard));
    let host_start = std::time::Instant::now();
    let outcome: Result<Finished> = if args.virtual_time {
        crate::virtual_cmd::run(&config, args.speed, stop_rx, snap_tx, command_rx)
    } else {
        runtime
            .block_on(vitalmesh_mesh::run(
                config,
                RunControl {
                    stop: stop_rx,
                    snapshots: Some(snap_tx),
                    commands: Some(command_rx),
                },
            ))
            .map(|o| Finished {
                report: o.report,
                intervals: o.intervals,
                started: o.started,
                part: o.part,
            })
            .map_err(Into::into)
    };
    let host_wall = host_start.elapsed();
    server.abort();
    let _ = std::fs::remove_file(&control_socket);
    // Files first, so the dashboard's last screen can say where they went.
    let written = outcome
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|o| {
            // A shard writes its part for the merge, not a report.
            let json = match &o.part {
                Some(part) => {
                    let mut json = serde_json::to_vec(part)?;
                    json.push(b'\n');
                    json
                }
                None => o.report.to_json(),
            };
            let report = report_out.write(&json)?;
            let html = match html_out {
                Some(out) => {
                    let value: serde_json::Value = serde_json::from_slice(&json)?;
                    Some(out.write(crate::html_report::render(&value)?.as_bytes())?)
                }
                None => None,
            };
            let hdr_log = match (hdr_out, &o.intervals) {
                (Some(out), Some(intervals)) => {
                    let bytes = vitalmesh_sim::report::hdr_log(o.started, intervals)
                        .map_err(|e| anyhow::anyhow!("--hdr-log: {e}"))?;
                    Some(out.write(&bytes)?)
                }
                _ => None,
            };
            Ok((report, hdr_log, html))
        });
    if let (Some(tx), Ok(outcome), Ok((report, _, _))) = (&finished_tx, &outcome, &written) {
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
    let (report_path, hdr_log, html) = written?;
    if let Some(shard) = args.shard {
        println!(
            "Shard {shard}: {} nodes produced {} samples; its aggregators ingested {}",
            outcome.part.as_ref().map_or(0, |p| p.nodes.len()),
            report.ledger.total.produced,
            outcome.part.as_ref().map_or(0, |p| p.delivered_total),
        );
        println!(
            "Part         {} (merge every shard's: vitalmesh merge part-*.json --report run.json)",
            report_path.display()
        );
        return Ok(ExitCode::from(if report.interrupted {
            EXIT_INTERRUPTED
        } else {
            0
        }));
    }
    println!("{}", report.summary());
    println!("Report       {}", report_path.display());
    if let Some(path) = html {
        println!("HTML report  {}", path.display());
    }
    if let Some(path) = hdr_log {
        println!(
            "Latency log  {} (HdrHistogram interval log, µs)",
            path.display()
        );
    }
    if args.virtual_time {
        let wall = host_wall.as_secs_f64().max(1e-6);
        println!(
            "Host         {:.2} s wall = {:.0}× real time, {} CPU s, peak RSS {:.0} MB (not in the report, which is byte-identical for a seed)",
            wall,
            report.ran_for_s / wall,
            vitalmesh_mesh::procfs::cpu_seconds("self").map_or("?".into(), |c| format!("{c:.2}")),
            vitalmesh_mesh::procfs::peak_rss_bytes("self") as f64 / 1e6
        );
    }
    Ok(ExitCode::from(exit_code(report)))
}

/// The exit code of a finished run, worst outcome first.
fn exit_code(report: &Report) -> u8 {
    if report.ledger.total.unexplained > 0 {
        eprintln!(
            "error: {} samples are unexplained: produced but neither delivered, buffered, dropped nor lost",
            report.ledger.total.unexplained
        );
        return EXIT_UNEXPLAINED;
    }
    if report.interrupted {
        eprintln!(
            "stopped early: the report covers {:.1} s of the planned {:.1} s",
            report.ran_for_s, report.config.duration_s
        );
        return EXIT_INTERRUPTED;
    }
    if !report.slo_passed() {
        let failed: Vec<&str> = report
            .slo
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.name)
            .collect();
        eprintln!("error: SLO failed: {}", failed.join(", "));
        return EXIT_SLO_FAILED;
    }
    0
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
            Ok(s) => {
                println!(
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
                );
                // Valid everywhere, but can this machine run it in real
                // time? (One socket per direct node or gateway.)
                let clients = if s.population.has_gateways() {
                    s.population.gateways()
                } else {
                    s.population.nodes()
                };
                if let Err(e) = vitalmesh_mesh::limits::check_budget(
                    u64::from(clients) + u64::from(s.aggregators),
                ) {
                    eprintln!(
                        "note: {}: in real time here, {e}; `vitalmesh run --virtual` runs it at any size",
                        file.display()
                    );
                }
            }
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
    /// Size of each commit-log segment (two per subscribed filter), bytes.
    #[arg(long, default_value_t = 128 * 1024)]
    segment_bytes: usize,
    /// Refuse clients without valid credentials: the provisioning secret
    /// (64 hex digits) is read from the first line of standard input, never
    /// from the command line, where any local user could see it.
    #[arg(long)]
    auth: bool,
    /// TLS on every listener: the authority (the canary trusts it), the
    /// broker's certificate and its private key, as PEM files.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// The broker's certificate (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_ca")]
    tls_cert: Option<PathBuf>,
    /// The broker's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_ca")]
    tls_key: Option<PathBuf>,
}

pub(crate) fn broker(args: &BrokerArgs) -> Result<ExitCode> {
    let provisioning = if args.auth {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the provisioning secret from standard input")?;
        Some(
            vitalmesh_wire::ProvisioningSecret::from_hex(&line)
                .map_err(|e| anyhow::anyhow!("the provisioning secret on standard input {e}"))?
                .0,
        )
    } else {
        None
    };
    vitalmesh_mesh::broker::child::run(vitalmesh_mesh::broker::child::ChildConfig {
        ports: args.ports.clone(),
        max_connections: args.max_connections,
        max_payload: args.max_payload,
        segment_bytes: args.segment_bytes,
        canary_interval: Duration::from_secs(1),
        provisioning,
        tls: match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(vitalmesh_mesh::broker::child::ChildTls {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
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

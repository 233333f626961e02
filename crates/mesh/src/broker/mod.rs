//! The broker the mesh runs on: embedded (rumqttd in a supervised child
//! process of this binary) or external (any MQTT 3.1.1 broker).
//!
//! The supervisor watches the embedded broker three ways: the child's exit
//! (a crash), the child's own per-listener canary (it restarts a listener
//! after two failures and reports it), and a canary from this process
//! through the same path the nodes use (eight failures in a row, with no
//! listener restart in between: the broker is killed and started again on
//! the same ports). Healing escalates: listener first, process second. Every restart is counted and timestamped for
//! the report. An external broker gets the canary only.

pub mod child;
pub mod mosquitto;

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use vitalmesh_sim::report::{BrokerEvent, BrokerReport};

use crate::MeshError;
use crate::clock::RunClock;
use crate::mqtt::{ConnectOptions, Connection, RunCertificates, TlsClient};

/// Which broker to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerSpec {
    /// rumqttd in a child process running `program broker ...`.
    Embedded {
        /// This binary (the child runs its hidden `broker` subcommand).
        program: PathBuf,
        /// Number of listeners (ports) to spread clients over.
        listeners: usize,
        /// Router connection slots.
        max_connections: usize,
        /// Size of each of the two commit-log segments rumqttd keeps per
        /// subscribed filter ([`segment_bytes_for`]).
        segment_bytes: usize,
        /// Fixed ports, or `None` to pick free ones.
        ports: Option<Vec<u16>>,
    },
    /// An existing broker.
    External {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// More nodes of the same (clustered) broker: clients spread over
        /// all of them and move to the next when theirs stops answering.
        also: Vec<(String, u16)>,
    },
}

impl BrokerSpec {
    /// Parses `mqtt://host:port` (port 1883 if absent) or `mqtts://`: the
    /// scheme says whether the run needs TLS, which [`BrokerTls`] gives.
    pub fn parse_url(url: &str) -> Result<Self, MeshError> {
        let parsed = vitalmesh_scenario::broker_url::parse(url)
            .map_err(|e| MeshError::config("broker", e))?;
        Ok(Self::External {
            host: parsed.host,
            port: parsed.port,
            also: Vec::new(),
        })
    }
}

/// The broker address client `index` connects to on its attempt after
/// `failures` failed ones: clients spread over the addresses (a clustered
/// broker's nodes, or the embedded broker's listeners), and one whose node
/// died moves to the next.
pub(crate) fn address_for(addrs: &[SocketAddr], index: usize, failures: u32) -> SocketAddr {
    addrs[(index + failures as usize) % addrs.len()]
}

/// TLS to the broker: what clients trust and, for the embedded broker, the
/// certificate it presents (made for the run, removed after it).
#[derive(Debug)]
pub struct BrokerTls {
    client: TlsClient,
    certificates: Option<RunCertificates>,
}

fn run_certificates(tls: &Option<Arc<BrokerTls>>) -> Option<&RunCertificates> {
    tls.as_ref().and_then(|t| t.certificates.as_ref())
}

impl BrokerTls {
    /// For the embedded broker: a new authority and broker certificate.
    pub fn for_embedded() -> Result<Self, MeshError> {
        let certificates = RunCertificates::generate()?;
        Ok(Self {
            client: certificates.client()?,
            certificates: Some(certificates),
        })
    }

    /// For a broker whose certificate `client` trusts (an external one,
    /// or a mosquitto given [`RunCertificates`]).
    pub fn trusting(client: TlsClient) -> Self {
        Self {
            client,
            certificates: None,
        }
    }

    /// What clients connect with.
    pub fn client(&self) -> &TlsClient {
        &self.client
    }
}

/// How clients log in to the broker: everyone's credentials derive from the
/// run's provisioning secret (see `vitalmesh_wire::envelope::Keyring`).
#[derive(Clone)]
pub struct BrokerLogin {
    secret: vitalmesh_wire::ProvisioningSecret,
    keys: vitalmesh_wire::Keyring,
}

impl std::fmt::Debug for BrokerLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerLogin(..)")
    }
}

impl BrokerLogin {
    /// Logins under `secret`.
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            secret: vitalmesh_wire::ProvisioningSecret(secret),
            keys: vitalmesh_wire::Keyring::new(secret, 0),
        }
    }

    /// Sets `options`' user name and password for `username`.
    pub fn apply(&self, username: &str, options: &mut ConnectOptions) {
        options.username = Some(username.into());
        options.password = Some(self.keys.mqtt_password(username).into_bytes());
    }
}

/// One line for a crashed broker process: how it exited and what it said
/// as it panicked; everything it wrote last goes to a log file the line
/// names (a backtrace is tens of kilobytes: not for a report's event list).
fn crash_line(status: &str, stderr_tail: &[String]) -> String {
    const MAX: usize = 240;
    let mut line = format!("exited ({status})");
    if let Some(panic) = stderr_tail.iter().rev().find(|l| l.contains("panicked at")) {
        let said: String = panic.trim().chars().take(MAX).collect();
        line.push_str(&format!(": {said}"));
    }
    if !stderr_tail.is_empty() {
        static CRASHES: AtomicU64 = AtomicU64::new(0);
        let n = CRASHES.fetch_add(1, Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!(
            "vitalmesh-broker-{}-crash-{n}.log",
            std::process::id()
        ));
        if std::fs::write(&log, stderr_tail.join("\n")).is_ok() {
            line.push_str(&format!("; its last output is in {}", log.display()));
        }
    }
    line
}

/// Failed canaries in a row (one a second) before the broker process is
/// restarted. The broker restarts a failed listener itself within about
/// three seconds; the whole process is restarted only when that did not
/// help: a listener restart first, a process restart second.
const PROCESS_RESTART_AFTER: u32 = 8;

/// Largest MQTT packet the runtime accepts or sends.
pub const MAX_PACKET: usize = 64 * 1024;

/// Broker health counters.
#[derive(Debug, Default)]
struct BrokerStats {
    /// Clients refused for their credentials (all processes).
    auth_refused: AtomicU64,
    /// Refused by the processes before the current one.
    auth_refused_before: AtomicU64,
    process_restarts: AtomicU64,
    listener_restarts: AtomicU64,
    canary_failures: AtomicU64,
    child_pid: AtomicU32,
    events: Mutex<Vec<BrokerEvent>>,
}

type RestartReply = oneshot::Sender<Result<(), MeshError>>;

enum SupervisorCommand {
    Restart { reason: String, reply: RestartReply },
}

/// A running broker and its supervisor.
pub struct BrokerHandle {
    addrs: Vec<SocketAddr>,
    /// Kept for the run: the embedded broker's certificate files live as
    /// long as this does (a restarted broker loads them again).
    tls: Option<Arc<BrokerTls>>,
    kind: &'static str,
    stats: Arc<BrokerStats>,
    commands: mpsc::Sender<SupervisorCommand>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("addrs", &self.addrs)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

struct ChildProc {
    child: Child,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

fn free_port() -> Result<u16, MeshError> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Smallest and largest commit-log segment the embedded broker is given.
const SEGMENT_BYTES: std::ops::RangeInclusive<usize> = 128 * 1024..=4 * 1024 * 1024;
/// Seconds of a partition's traffic the broker's segments should hold.
const SEGMENT_RETENTION_S: f64 = 5.0;
/// An uplink message's bytes per sample as rumqttd stores it (topic, a
/// live sample's envelope), rounded up.
const STORED_BYTES_PER_SAMPLE: f64 = 64.0;

/// How big rumqttd's commit-log segments should be for a run: two per
/// subscribed filter hold what a lagging subscriber has not read yet, and
/// what falls off the end is lost to it (nodes re-send it after their
/// timeout). Sized to hold [`SEGMENT_RETENTION_S`] of one partition's
/// samples at the scenario's rate, within [`SEGMENT_BYTES`]: 10,000 nodes
/// at 1 Hz keep the 128 KiB floor (memory per node), 2,000 nodes at
/// 100 Hz get ~1 MiB. Measured at the latter: with 128 KiB a quarter of
/// what nodes published were such re-sends and p99 was 16.6 s; with
/// 1 MiB, 2 % and 9.3 s (BENCHMARKS.md).
pub fn segment_bytes_for(nodes: u32, sample_interval: Duration, partitions: u16) -> usize {
    let samples_per_s = f64::from(nodes) / sample_interval.as_secs_f64().max(1e-3);
    let per_partition = samples_per_s * STORED_BYTES_PER_SAMPLE / f64::from(partitions.max(1));
    ((per_partition * SEGMENT_RETENTION_S) as usize)
        .clamp(*SEGMENT_BYTES.start(), *SEGMENT_BYTES.end())
}

async fn spawn_child(
    program: &PathBuf,
    ports: &[u16],
    max_connections: usize,
    segment_bytes: usize,
    login: Option<&BrokerLogin>,
    tls: Option<&RunCertificates>,
) -> Result<ChildProc, MeshError> {
    let mut cmd = Command::new(program);
    cmd.arg("broker");
    if let Some(certs) = tls {
        cmd.arg("--tls-ca").arg(certs.ca_path());
        cmd.arg("--tls-cert").arg(certs.cert_path());
        cmd.arg("--tls-key").arg(certs.key_path());
    }
    for p in ports {
        cmd.arg("--port").arg(p.to_string());
    }
    cmd.arg("--max-connections")
        .arg(max_connections.to_string());
    cmd.arg("--segment-bytes").arg(segment_bytes.to_string());
    cmd.arg("--max-payload").arg(MAX_PACKET.to_string());
    if login.is_some() {
        cmd.arg("--auth");
    }
    cmd.stdin(if login.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        MeshError::Broker(format!("cannot start '{} broker': {e}", program.display()))
    })?;
    if let Some(login) = login {
        // The secret goes over a pipe, never the command line.
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(format!("{}\n", login.secret.to_hex()).as_bytes())
            .await
            .map_err(|e| MeshError::Broker(format!("cannot hand the broker its secret: {e}")))?;
        drop(stdin);
    }
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    let mut stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let tail = stderr_tail.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == 200 {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stdout.next_line().await {
                Ok(Some(line)) if line == "ready" => return Ok(()),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Err(()),
            }
        }
    })
    .await;
    match ready {
        Ok(Ok(())) => Ok(ChildProc {
            child,
            stdout,
            stderr_tail,
        }),
        _ => {
            let _ = child.kill().await;
            // Let the stderr reader catch up before reporting.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let tail: Vec<String> = stderr_tail
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect();
            Err(MeshError::Broker(format!(
                "the broker process did not become ready on ports {ports:?}: {}",
                if tail.is_empty() {
                    "no output".to_owned()
                } else {
                    tail.join(" | ")
                }
            )))
        }
    }
}

async fn probe(
    addr: SocketAddr,
    n: u64,
    login: Option<&BrokerLogin>,
    tls: Option<&TlsClient>,
) -> Result<(), MeshError> {
    // The process id keeps two runs' probes (shards on one broker) from
    // taking each other's sessions over.
    let mut options = ConnectOptions::new(format!("vm-probe-{}-{n}", std::process::id()), 5);
    if let Some(login) = login {
        login.apply(child::CANARY_USER, &mut options);
    }
    Connection::connect(addr, tls, &options, Duration::from_secs(3), 4096)
        .await?
        .close_gracefully(Duration::from_millis(200))
        .await;
    Ok(())
}

impl BrokerHandle {
    /// Starts (or resolves) the broker and its supervisor.
    ///
    /// With a `login`, the embedded broker refuses clients without valid
    /// credentials, and the supervisor's canary logs in; an external broker
    /// must be configured with the same credentials
    /// ([`mosquitto::Mosquitto::start_secured`]). With `tls`, every client,
    /// the canaries included, connects over TLS, and the embedded broker
    /// listens with the run's certificate.
    pub async fn start(
        spec: BrokerSpec,
        clock: RunClock,
        login: Option<BrokerLogin>,
        tls: Option<BrokerTls>,
    ) -> Result<Self, MeshError> {
        let tls = tls.map(Arc::new);
        let tls_client = tls.as_ref().map(|t| t.client.clone());
        let stats = Arc::new(BrokerStats::default());
        let (commands, mut rx) = mpsc::channel::<SupervisorCommand>(4);
        let event = {
            let stats = stats.clone();
            move |kind: &'static str, detail: String| {
                stats
                    .events
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(BrokerEvent {
                        at_s: clock.elapsed().as_secs_f64(),
                        kind,
                        detail,
                    });
            }
        };
        match spec {
            BrokerSpec::External { host, port, also } => {
                let mut addrs = Vec::with_capacity(1 + also.len());
                for (host, port) in std::iter::once((host, port)).chain(also) {
                    let addr = (host.as_str(), port)
                        .to_socket_addrs()
                        .map_err(|e| {
                            MeshError::config(
                                "broker",
                                format!("cannot resolve '{host}:{port}': {e}"),
                            )
                        })?
                        .next()
                        .ok_or_else(|| {
                            MeshError::config(
                                "broker",
                                format!("'{host}:{port}' resolves to no address"),
                            )
                        })?;
                    probe(addr, 0, login.as_ref(), tls_client.as_ref())
                        .await
                        .map_err(|e| {
                            MeshError::Broker(format!(
                                "cannot connect to the external broker at {addr}: {e}"
                            ))
                        })?;
                    addrs.push(addr);
                }
                let stats2 = stats.clone();
                let probed = addrs.clone();
                let task = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(2));
                    let mut n = 0;
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {
                                n += 1;
                                // Each node of a cluster in turn.
                                let addr = probed[n as usize % probed.len()];
                                if let Err(e) = probe(addr, n, login.as_ref(), tls_client.as_ref()).await {
                                    stats2.canary_failures.fetch_add(1, Ordering::Relaxed);
                                    event("canary_failed", format!("{addr}: {e}"));
                                }
                            }
                            cmd = rx.recv() => match cmd {
                                Some(SupervisorCommand::Restart { reply, .. }) => {
                                    let _ = reply.send(Err(MeshError::Broker("an external broker cannot be restarted from here".into())));
                                }
                                None => return,
                            }
                        }
                    }
                });
                Ok(Self {
                    addrs,
                    tls,
                    kind: "external",
                    stats,
                    commands,
                    task,
                })
            }
            BrokerSpec::Embedded {
                program,
                listeners,
                max_connections,
                segment_bytes,
                ports,
            } => {
                let ports = match ports {
                    Some(p) => p,
                    None => (0..listeners.max(1))
                        .map(|_| free_port())
                        .collect::<Result<_, _>>()?,
                };
                let addrs: Vec<SocketAddr> = ports
                    .iter()
                    .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
                    .collect();
                let certificates = tls.clone();
                if tls.is_some() && run_certificates(&certificates).is_none() {
                    return Err(MeshError::config(
                        "tls",
                        "the embedded broker needs the run's certificates; expected BrokerTls::for_embedded",
                    ));
                }
                let mut proc = spawn_child(
                    &program,
                    &ports,
                    max_connections,
                    segment_bytes,
                    login.as_ref(),
                    run_certificates(&certificates),
                )
                .await?;
                stats
                    .child_pid
                    .store(proc.child.id().unwrap_or(0), Ordering::Relaxed);
                event("started", format!("rumqttd on ports {ports:?}"));
                let stats2 = stats.clone();
                let probe_addrs = addrs.clone();
                let task = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    let mut n = 0u64;
                    let mut failures_in_a_row = 0;
                    loop {
                        let restart_cause: Option<(String, Option<RestartReply>)> = tokio::select! {
                            status = proc.child.wait() => {
                                let tail: Vec<String> = proc.stderr_tail.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
                                let detail = crash_line(
                                    &status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                                    &tail,
                                );
                                event("crashed", detail.clone());
                                Some((format!("crash: {detail}"), None))
                            }
                            line = proc.stdout.next_line() => {
                                if let Ok(Some(line)) = line {
                                    if let Some(total) = line.strip_prefix("auth_refused ") {
                                        // A fresh process counts from zero.
                                        if let Ok(total) = total.parse::<u64>() {
                                            let base = stats2.auth_refused_before.load(Ordering::Relaxed);
                                            stats2.auth_refused.store(base + total, Ordering::Relaxed);
                                        }
                                    } else if let Some(rest) = line.strip_prefix("listener_restart ") {
                                        stats2.listener_restarts.fetch_add(1, Ordering::Relaxed);
                                        // The broker is healing itself: give it the time.
                                        failures_in_a_row = 0;
                                        // The broker's own panic message says what broke the listener.
                                        let cause = proc.stderr_tail.lock().unwrap_or_else(|p| p.into_inner())
                                            .iter().rev().find(|l| l.contains("panicked at"))
                                            .map(|l| l.trim().chars().take(240).collect::<String>());
                                        event("listener_restart", match cause {
                                            Some(c) => format!("{rest}; broker said: {c}"),
                                            None => rest.to_owned(),
                                        });
                                    }
                                }
                                None
                            }
                            _ = tick.tick() => {
                                n += 1;
                                let addr = probe_addrs[(n as usize) % probe_addrs.len()];
                                match probe(addr, n, login.as_ref(), tls_client.as_ref()).await {
                                    Ok(()) => { failures_in_a_row = 0; None }
                                    Err(e) => {
                                        stats2.canary_failures.fetch_add(1, Ordering::Relaxed);
                                        failures_in_a_row += 1;
                                        event("canary_failed", format!("{addr}: {e}"));
                                        (failures_in_a_row >= PROCESS_RESTART_AFTER).then(|| {
                                            (format!("unresponsive to {PROCESS_RESTART_AFTER} canaries in a row"), None)
                                        })
                                    }
                                }
                            }
                            cmd = rx.recv() => match cmd {
                                Some(SupervisorCommand::Restart { reason, reply }) => Some((reason, Some(reply))),
                                None => {
                                    let _ = proc.child.kill().await;
                                    return;
                                }
                            }
                        };
                        let Some((cause, reply)) = restart_cause else {
                            continue;
                        };
                        let _ = proc.child.kill().await;
                        failures_in_a_row = 0;
                        // Start again on the same ports until it works.
                        let result = loop {
                            match spawn_child(
                                &program,
                                &ports,
                                max_connections,
                                segment_bytes,
                                login.as_ref(),
                                run_certificates(&certificates),
                            )
                            .await
                            {
                                Ok(p) => break Ok(p),
                                Err(e) if reply.is_some() => break Err(e),
                                Err(e) => {
                                    event("restart_failed", e.to_string());
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                            }
                        };
                        match result {
                            Ok(p) => {
                                proc = p;
                                let so_far = stats2.auth_refused.load(Ordering::Relaxed);
                                stats2.auth_refused_before.store(so_far, Ordering::Relaxed);
                                stats2
                                    .child_pid
                                    .store(proc.child.id().unwrap_or(0), Ordering::Relaxed);
                                stats2.process_restarts.fetch_add(1, Ordering::Relaxed);
                                event("restarted", cause);
                                if let Some(reply) = reply {
                                    let _ = reply.send(Ok(()));
                                }
                            }
                            Err(e) => {
                                if let Some(reply) = reply {
                                    let _ = reply.send(Err(e));
                                }
                                return;
                            }
                        }
                    }
                });
                Ok(Self {
                    addrs,
                    tls,
                    kind: "embedded",
                    stats,
                    commands,
                    task,
                })
            }
        }
    }

    /// Addresses clients connect to.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// What clients connect with when the broker is reached over TLS.
    pub fn tls_client(&self) -> Option<&TlsClient> {
        self.tls.as_ref().map(|t| &t.client)
    }

    /// The address client `i` uses (clients are spread over the listeners).
    pub fn addr_for(&self, i: usize) -> SocketAddr {
        self.addrs[i % self.addrs.len()]
    }

    /// The broker process id (embedded), for memory readings.
    pub fn child_pid(&self) -> Option<u32> {
        let pid = self.stats.child_pid.load(Ordering::Relaxed);
        (pid != 0).then_some(pid)
    }

    /// Kills the broker process and starts it again on the same ports:
    /// every connection and all in-memory broker state is lost.
    pub async fn restart(&self, reason: &str) -> Result<(), MeshError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(SupervisorCommand::Restart {
                reason: reason.to_owned(),
                reply,
            })
            .await
            .map_err(|_| MeshError::Broker("the broker supervisor has stopped".into()))?;
        rx.await
            .map_err(|_| MeshError::Broker("the broker supervisor has stopped".into()))?
    }

    /// Figures for the report.
    pub fn report(&self) -> BrokerReport {
        BrokerReport {
            kind: self.kind,
            url: self
                .addrs
                .iter()
                .map(|a| {
                    format!(
                        "{}://{a}",
                        if self.tls.is_some() { "mqtts" } else { "mqtt" }
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
            process_restarts: self.stats.process_restarts.load(Ordering::Relaxed),
            listener_restarts: self.stats.listener_restarts.load(Ordering::Relaxed),
            canary_failures: self.stats.canary_failures.load(Ordering::Relaxed),
            auth_refused: self.stats.auth_refused.load(Ordering::Relaxed),
            peak_queue_s: None,
            events: self
                .stats
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Stops the supervisor and the broker process.
    pub async fn shutdown(self) {
        drop(self.commands);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn segments_hold_seconds_of_a_partition_within_the_floor_and_ceiling() {
        let second = Duration::from_secs(1);
        // 10,000 nodes at 1 Hz over 64 partitions: ~50 KB in 5 s, so the
        // 128 KiB floor that keeps memory per node low.
        assert_eq!(segment_bytes_for(10_000, second, 64), 128 * 1024);
        // 2,000 nodes at 100 Hz: 5 s of 3,125 samples/s × 64 B.
        assert_eq!(
            segment_bytes_for(2_000, Duration::from_millis(10), 64),
            1_000_000
        );
        // Absurd rates stop at the ceiling; a zero interval does not panic.
        assert_eq!(
            segment_bytes_for(20_000, Duration::ZERO, 1),
            4 * 1024 * 1024
        );
    }

    use super::*;

    #[test]
    fn broker_urls_parse_or_say_what_is_expected() {
        assert_eq!(
            BrokerSpec::parse_url("mqtt://127.0.0.1:1884").unwrap(),
            BrokerSpec::External {
                host: "127.0.0.1".into(),
                port: 1884,
                also: Vec::new(),
            }
        );
        assert_eq!(
            BrokerSpec::parse_url("mqtt://broker.local").unwrap(),
            BrokerSpec::External {
                host: "broker.local".into(),
                port: 1883,
                also: Vec::new(),
            }
        );
        let err = BrokerSpec::parse_url("http://x:1").unwrap_err().to_string();
        assert!(
            err.contains("'http://x:1' has no mqtt:// or mqtts:// scheme"),
            "{err}"
        );
        let err = BrokerSpec::parse_url("mqtt://x:99999")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'99999' in 'mqtt://x:99999' is not a port"),
            "{err}"
        );
    }
}

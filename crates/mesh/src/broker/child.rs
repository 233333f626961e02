//! The broker process: rumqttd 0.20 (our fork in `vendor/rumqttd`) with
//! restartable listeners.
//!
//! Runs as `vitalmesh broker --port P...`, a child of the run, so that
//! (a) its sockets count against its own descriptor limit, not the nodes',
//! (b) a broker restart really drops every connection and all in-memory
//! state, and (c) a router panic cannot take the simulation down with it.
//!
//! Settings chosen against the failure modes in `rumqtt.md`:
//! - `max_connections` far above the expected clients, and client ids
//!   without `/ + # $`, so no honest CONNECT is rejected (upstream, a
//!   rejected connect followed by a reconnect with the same id poisoned a
//!   listener for good; the fork fixes that, rumqtt#991);
//! - commit-log segments sized by the parent from the run's rate (two per
//!   filter, 128 KiB to 4 MiB: `segment_bytes_for`): small bounds memory
//!   at 10,000 nodes, but what a lagging subscriber misses off the end is
//!   re-sent by nodes after their timeout, so a busy run needs more;
//! - no persistent sessions and no `$share` groups (router crash);
//! - several listeners, no accept delay, to absorb connect storms.
//!
//! A canary connects to every listener each second. Two failures in a row
//! restart that listener (a new `Server` with a fresh will-handler map, on
//! the same port; established connections stay up). If no listener answers
//! after that, the router is presumed dead and the process exits, so the
//! supervisor in the parent starts a new one.
//!
//! With a provisioning secret (`--auth`, the secret on stdin) every client
//! must log in: the user name is a device's
//! ([`vitalmesh_wire::envelope::mqtt_username`]) or an
//! operator's name, the password the one the secret derives for it
//! ([`Keyring::mqtt_password`]), and a device's client id must be its own
//! ([`TopicScheme::client_id_principal`]). What rumqttd cannot do is
//! confine a client to topics: it has no ACLs. That is left to the
//! envelope (a message sealed for one topic does not open on another) and,
//! on mosquitto, to its ACL file.
//!
//! With `--tls-cert`/`--tls-key` every listener speaks TLS only (rustls,
//! through rumqttd's `use-rustls`); the fork builds each listener's
//! acceptor once and runs handshakes in the connections' own tasks, so a
//! client that never finishes one cannot stall the listener.
//!
//! Protocol with the parent, one line each on stdout: `ready`,
//! `listener_restart <port> <reason>`, `auth_refused <total>` (at most once
//! a second, when the count moved).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttd::protocol::v4::V4;
use rumqttd::{
    ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings, TlsConfig,
};
use tokio::task::JoinHandle;

use vitalmesh_wire::TopicScheme;
use vitalmesh_wire::envelope::{Keyring, principal_of_username};

use crate::MeshError;
use crate::mqtt::{ConnectOptions, Connection, TlsClient};

/// The canary's user name (it logs in like any operator tool).
pub const CANARY_USER: &str = "canary";

/// How the broker process is set up.
#[derive(Clone)]
pub struct ChildConfig {
    /// Loopback ports, one listener each.
    pub ports: Vec<u16>,
    /// Router connection slots.
    pub max_connections: usize,
    /// Largest incoming packet.
    pub max_payload: usize,
    /// Size of each commit-log segment (two per filter).
    pub segment_bytes: usize,
    /// Between canary rounds.
    pub canary_interval: Duration,
    /// The provisioning secret: clients must log in.
    pub provisioning: Option<[u8; 32]>,
    /// TLS on every listener: the authority's, the broker's certificate
    /// and its key, as PEM files.
    pub tls: Option<ChildTls>,
}

/// The certificate files a TLS listener loads.
#[derive(Debug, Clone)]
pub struct ChildTls {
    /// The authority the canary trusts.
    pub ca: PathBuf,
    /// The broker's certificate chain.
    pub cert: PathBuf,
    /// The broker's private key.
    pub key: PathBuf,
}

impl std::fmt::Debug for ChildConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("ChildConfig")
            .field("ports", &self.ports)
            .field("max_connections", &self.max_connections)
            .field("auth", &self.provisioning.is_some())
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(..)")
    }
}

/// Who may log in, and how many were refused.
#[derive(Clone)]
struct Auth {
    keys: Keyring,
    refused: Arc<AtomicU64>,
}

impl Auth {
    /// Whether a CONNECT's login is a valid one.
    fn admits(&self, client_id: &str, username: &str, password: &str) -> bool {
        let ok = !username.is_empty()
            && self.keys.check_mqtt_password(username, password)
            && match principal_of_username(username) {
                // A device logs in under its own client id only.
                Some(p) => TopicScheme::client_id_principal(client_id) == Some(p),
                None => TopicScheme::client_id_principal(client_id).is_none(),
            };
        if !ok {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

struct Listener {
    port: u16,
    task: JoinHandle<()>,
    failures: u32,
}

fn settings(
    port: u16,
    max_payload: usize,
    auth: Option<&Auth>,
    tls: Option<&ChildTls>,
) -> ServerSettings {
    let path = |p: &PathBuf| p.display().to_string();
    let mut settings = ServerSettings {
        name: format!("v4-{port}"),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: tls.map(|t| TlsConfig::Rustls {
            capath: None,
            certpath: path(&t.cert),
            keypath: path(&t.key),
        }),
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_payload,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: false,
        },
    };
    if let Some(auth) = auth.cloned() {
        settings.set_auth_handler(move |client_id: String, user: String, pass: String| {
            let admitted = auth.admits(&client_id, &user, &pass);
            async move { admitted }
        });
    }
    settings
}

async fn canary(
    port: u16,
    n: u64,
    auth: Option<&Auth>,
    tls: Option<&TlsClient>,
) -> Result<(), MeshError> {
    // A fresh id every time: reusing one after a refused connect is what
    // poisoned an upstream rumqttd listener (fixed in our fork; the canary
    // stays for whatever else may stop a listener).
    let mut options = ConnectOptions::new(format!("vm-canary-{port}-{n}"), 5);
    if let Some(auth) = auth {
        options.username = Some(CANARY_USER.into());
        options.password = Some(auth.keys.mqtt_password(CANARY_USER).into_bytes());
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let c = Connection::connect(addr, tls, &options, Duration::from_secs(2), 4096).await?;
    c.close_gracefully(Duration::from_millis(200)).await;
    Ok(())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the broker until the parent goes away. Blocks.
pub fn run(config: ChildConfig) -> Result<(), MeshError> {
    crate::limits::raise_fd_limit();
    // Die with the parent, even if it is killed outright.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("broker")
        .build()?;
    runtime.block_on(async move {
        let router = Router::new(
            0,
            RouterConfig {
                max_connections: config.max_connections,
                max_outgoing_packet_count: 200,
                max_segment_size: config.segment_bytes,
                max_segment_count: 2,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: Default::default(),
            },
        )
        .spawn();
        // The router's sender type names a crate-private event type, so the
        // listener factory is a closure rather than a function.
        let max_payload = config.max_payload;
        let auth = config.provisioning.map(|secret| Auth {
            keys: Keyring::new(secret, 0),
            refused: Arc::new(AtomicU64::new(0)),
        });
        let tls_client = match &config.tls {
            Some(t) => Some(TlsClient::from_ca_file(
                &t.ca,
                crate::mqtt::tls::RUN_SERVER_NAME,
            )?),
            None => None,
        };
        let start_listener = |port: u16| {
            let mut server = Server::new(
                settings(port, max_payload, auth.as_ref(), config.tls.as_ref()),
                router.clone(),
                V4,
            );
            let task = tokio::spawn(async move {
                let _ = server.start(LinkType::Remote).await;
            });
            Listener {
                port,
                task,
                failures: 0,
            }
        };
        let mut listeners: Vec<Listener> =
            config.ports.iter().map(|&p| start_listener(p)).collect();

        let mut probe = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        for l in &listeners {
            loop {
                probe += 1;
                if canary(l.port, probe, auth.as_ref(), tls_client.as_ref())
                    .await
                    .is_ok()
                {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(MeshError::Broker(format!(
                        "listener on port {} never accepted a connection",
                        l.port
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        say("ready");

        let mut tick = tokio::time::interval(config.canary_interval);
        // Rounds in a row in which no listener answered. Listener restarts
        // happen after two failures, so three dead rounds mean restarting
        // listeners did not help: the router itself is gone.
        let mut dead_rounds = 0;
        let mut refused_said = 0;
        loop {
            tick.tick().await;
            if let Some(a) = &auth {
                let refused = a.refused.load(Ordering::Relaxed);
                if refused != refused_said {
                    say(&format!("auth_refused {refused}"));
                    refused_said = refused;
                }
            }
            let mut healthy = 0;
            for l in &mut listeners {
                probe += 1;
                match canary(l.port, probe, auth.as_ref(), tls_client.as_ref()).await {
                    Ok(()) => {
                        l.failures = 0;
                        healthy += 1;
                    }
                    Err(e) => {
                        l.failures += 1;
                        if l.failures >= 2 {
                            l.task.abort();
                            let _ = (&mut l.task).await;
                            *l = start_listener(l.port);
                            say(&format!(
                                "listener_restart {} {}",
                                l.port,
                                e.to_string().replace('\n', " ")
                            ));
                        }
                    }
                }
            }
            dead_rounds = if healthy == 0 { dead_rounds + 1 } else { 0 };
            if dead_rounds >= 3 {
                return Err(MeshError::Broker(
                    "no listener accepts connections after restarts; the router is gone".into(),
                ));
            }
        }
    })
}

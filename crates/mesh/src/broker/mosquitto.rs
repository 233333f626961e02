//! A real mosquitto on a free loopback port, killed when dropped: the
//! external broker that `vitalmesh bench` compares the embedded one with,
//! and that the tests run the mesh against.
//!
//! [`Mosquitto::start_secured`] gives it what a deployment would: a
//! password file with every device's credentials (hashed by
//! `mosquitto_passwd -U`) and an ACL file in which a device may publish
//! only on its own topic and read only acks, so a stolen device cannot
//! even put bytes on another's topic — what the embedded broker, which has
//! no ACLs, leaves to the envelope.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::MeshError;
use crate::mqtt::RunCertificates;

/// A running mosquitto with its own config directory.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
    tls: bool,
}

/// A mosquitto listener's certificate and key (PEM files).
type TlsFiles<'a> = (&'a Path, &'a Path);

impl Mosquitto {
    /// Starts one and waits until it listens. Its queue limit is raised so
    /// that a burst after a failover is not dropped by the broker. It
    /// inherits this process's descriptor limit.
    pub fn start() -> Result<Self, MeshError> {
        Self::launch(None, None).map_err(MeshError::Mosquitto)
    }

    /// [`Mosquitto::start`] with TLS only, presenting the certificate of
    /// `certs` (clients trust `certs`' authority).
    pub fn start_tls(certs: &RunCertificates) -> Result<Self, MeshError> {
        Self::launch(None, Some((&certs.cert_path(), &certs.key_path())))
            .map_err(MeshError::Mosquitto)
    }

    /// Starts one that admits only the run's devices (`nodes` nodes,
    /// `gateways` gateways, `aggregators` aggregators) and `operators`
    /// (read and write everything), with the passwords `keys` derives, and
    /// confines each device to its own topics; over TLS with `tls`.
    pub fn start_secured(
        keys: &vitalmesh_wire::Keyring,
        nodes: u32,
        gateways: u32,
        aggregators: u16,
        operators: &[&str],
        tls: Option<&RunCertificates>,
    ) -> Result<Self, MeshError> {
        use vitalmesh_wire::envelope::{Principal, mqtt_username};
        use vitalmesh_wire::{AggregatorId, GatewayId, NodeId};
        let mut passwd = String::new();
        let mut line = |user: String| {
            passwd.push_str(&format!("{user}:{}\n", keys.mqtt_password(&user)));
        };
        (0..nodes).for_each(|n| line(mqtt_username(Principal::Node(NodeId(n)))));
        (0..gateways).for_each(|g| line(mqtt_username(Principal::Gateway(GatewayId(g)))));
        let aggregator_users: Vec<String> = (0..aggregators)
            .map(|a| mqtt_username(Principal::Aggregator(AggregatorId(a))))
            .collect();
        aggregator_users.iter().cloned().for_each(&mut line);
        operators.iter().for_each(|o| line((*o).to_owned()));
        // The run's canary logs in too; it needs no topic.
        line(super::child::CANARY_USER.to_owned());
        // Aggregators and operators: everything. Devices (every other user):
        // publish on the topic whose last level is their user name (a
        // node's `vm/v1/p/{p}/{node}`, a gateway's `vm/v1/p/{p}/g{id}`),
        // read acks.
        let mut acl = String::new();
        for user in aggregator_users
            .iter()
            .map(String::as_str)
            .chain(operators.iter().copied())
        {
            acl.push_str(&format!("user {user}\ntopic readwrite #\n\n"));
        }
        acl.push_str("pattern write vm/v1/p/+/%u\npattern read vm/v1/ack/+\n");
        let (cert, key) = tls.map(|c| (c.cert_path(), c.key_path())).unzip();
        let files = cert.as_deref().zip(key.as_deref());
        Self::launch(Some((passwd, acl)), files).map_err(MeshError::Mosquitto)
    }

    fn launch(
        security: Option<(String, String)>,
        tls: Option<TlsFiles<'_>>,
    ) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let dir =
            std::env::temp_dir().join(format!("vitalmesh-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("mosquitto.conf");
        let write = |path: &PathBuf, text: &str| {
            std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
        };
        let mut config = format!(
            "listener {port} 127.0.0.1\nmax_queued_messages 100000\nper_listener_settings false\n"
        );
        if let Some((cert, key)) = tls {
            // Copies in its own directory: mosquitto started as root reads
            // them after dropping to its own user.
            let (own_cert, own_key) = (dir.join("broker.pem"), dir.join("broker.key"));
            std::fs::copy(cert, &own_cert).map_err(|e| format!("{}: {e}", cert.display()))?;
            std::fs::copy(key, &own_key).map_err(|e| format!("{}: {e}", key.display()))?;
            give_to_mosquitto_user(&own_cert)?;
            give_to_mosquitto_user(&own_key)?;
            config.push_str(&format!(
                "certfile {}\nkeyfile {}\n",
                own_cert.display(),
                own_key.display()
            ));
        }
        match &security {
            None => config.push_str("allow_anonymous true\n"),
            Some((passwd, acl)) => {
                let (passwd_file, acl_file) = (dir.join("passwd"), dir.join("acl"));
                write(&passwd_file, passwd)?;
                write(&acl_file, acl)?;
                // Hash the plain passwords in place (PBKDF2-SHA512).
                let hashed = Command::new("mosquitto_passwd")
                    .arg("-U")
                    .arg(&passwd_file)
                    .status()
                    .map_err(|e| format!("mosquitto_passwd: {e} (it comes with mosquitto)"))?;
                if !hashed.success() {
                    return Err(format!("mosquitto_passwd -U failed: {hashed}"));
                }
                config.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\nacl_file {}\n",
                    passwd_file.display(),
                    acl_file.display()
                ));
            }
        }
        write(&conf, &config)?;
        let binary = ["mosquitto", "/usr/sbin/mosquitto"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("-h")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })
            .ok_or(
                "mosquitto is not installed: `apt-get install -y mosquitto` (.ci/run does this)",
            )?;
        let log_path = dir.join("mosquitto.log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {binary}: {e}"))?;
        let mosquitto = Self {
            child,
            port,
            dir,
            tls: tls.is_some(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                let said: Vec<&str> = said.lines().filter(|l| l.contains("Error")).collect();
                return Err(format!(
                    "mosquitto did not listen on {port} within 10 s{}",
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!("; it said: {}", said.join(" | "))
                    }
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(mosquitto)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL for `--broker` (`mqtts://` when it speaks TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// mosquitto started as root drops to its own user before it reads its
/// certificate and key: that user must own the copies (which stay
/// readable by no one else).
fn give_to_mosquitto_user(path: &Path) -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let Some((uid, gid)) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"mosquitto") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    }) else {
        // No such user: mosquitto then keeps running as root.
        return Ok(());
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("{}: giving the key to user mosquitto: {e}", path.display()))
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

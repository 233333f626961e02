//! A real mosquitto on a free loopback port, killed when dropped: the
//! external broker that `vitalmesh bench` compares the embedded one with,
//! and that the tests run the mesh against.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::MeshError;

/// A running mosquitto with its own config directory.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    /// Starts one and waits until it listens. Its queue limit is raised so
    /// that a burst after a failover is not dropped by the broker. It
    /// inherits this process's descriptor limit.
    pub fn start() -> Result<Self, MeshError> {
        Self::launch().map_err(MeshError::Mosquitto)
    }

    fn launch() -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let dir =
            std::env::temp_dir().join(format!("vitalmesh-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"
            ),
        )
        .map_err(|e| format!("{}: {e}", conf.display()))?;
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
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {binary}: {e}"))?;
        let mosquitto = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("mosquitto did not listen on {port} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(mosquitto)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL for `--broker`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

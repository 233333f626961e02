//! The live-injection channel: a Unix domain socket per run.
//!
//! `vitalmesh run` listens on `<tmp>/vitalmesh-<uid>/run-<pid>.sock` (or
//! `--control PATH`); the directory is created mode 0700 and the socket is
//! mode 0600, so only the user who started the run can steer it. A client
//! sends one JSON line, `{"toml": "action = \"partition\"\nward = 3\n..."}` —
//! the same fields as an `[[event]]` entry, without `at` — and gets one JSON
//! line back: `{"ok": true, "message": ..., "entry": {...}}` or
//! `{"ok": false, "message": "<validation error>"}`. The run validates with
//! the same code as scenario files, against its own population, and records
//! what it did in the timeline.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use vitalmesh_scenario::{Limits, parse_injection};

use crate::MeshError;
use vitalmesh_sim::TimelineEntry;

use crate::run::MeshCommand;

/// A request on the control socket.
#[derive(Debug, Serialize, Deserialize)]
pub struct ControlRequest {
    /// The action as TOML key/value lines.
    pub toml: String,
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ControlReply {
    /// Whether the action was applied.
    pub ok: bool,
    /// What happened, or why not.
    pub message: String,
    /// The timeline entry recorded.
    pub entry: Option<TimelineEntry>,
}

/// Where runs of this user put their sockets.
pub fn socket_dir() -> PathBuf {
    let uid = rustix::process::getuid().as_raw();
    std::env::temp_dir().join(format!("vitalmesh-{uid}"))
}

/// The default socket of this process.
pub fn default_socket() -> PathBuf {
    socket_dir().join(format!("run-{}.sock", std::process::id()))
}

/// Binds the socket (private to the user) and serves it until the
/// returned guard is dropped.
pub fn bind(path: &Path) -> Result<UnixListener, MeshError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        if dir == socket_dir() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers requests until the command channel closes.
pub async fn serve(listener: UnixListener, limits: Limits, commands: mpsc::Sender<MeshCommand>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let limits = limits.clone();
        let commands = commands.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read.take_limit());
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = answer(&line, &limits, &commands).await;
            let mut out = serde_json::to_vec(&reply).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

trait TakeLimit: Sized {
    fn take_limit(self) -> tokio::io::Take<Self>;
}

impl TakeLimit for tokio::net::unix::OwnedReadHalf {
    fn take_limit(self) -> tokio::io::Take<Self> {
        // One action fits easily; a hostile client cannot make us buffer more.
        tokio::io::AsyncReadExt::take(self, 64 * 1024)
    }
}

async fn answer(line: &str, limits: &Limits, commands: &mpsc::Sender<MeshCommand>) -> ControlReply {
    let refuse = |message: String| ControlReply {
        ok: false,
        message,
        entry: None,
    };
    let request: ControlRequest = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return refuse(format!("not a control request: {e}")),
    };
    let action = match parse_injection(&request.toml, limits) {
        Ok(a) => a,
        Err(e) => return refuse(e.to_string()),
    };
    let (reply, rx) = oneshot::channel();
    if commands
        .send(MeshCommand::Apply {
            action,
            source: "inject".into(),
            reply: Some(reply),
        })
        .await
        .is_err()
    {
        return refuse("the run is finishing".into());
    }
    match rx.await {
        Ok(Ok(entry)) => ControlReply {
            ok: true,
            message: entry.description.clone(),
            entry: Some(entry),
        },
        Ok(Err(e)) => refuse(e),
        Err(_) => refuse("the run is finishing".into()),
    }
}

/// Sends one action to the run listening on `socket`.
pub async fn send(socket: &Path, toml: &str) -> Result<ControlReply, MeshError> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        MeshError::config(
            "run",
            format!("cannot reach a run at '{}': {e}", socket.display()),
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut request = serde_json::to_vec(&ControlRequest {
        toml: toml.to_owned(),
    })
    .unwrap_or_default();
    request.push(b'\n');
    write.write_all(&request).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    serde_json::from_str(&line)
        .map_err(|e| MeshError::protocol(format!("bad reply from the run: {e}")))
}

/// The sockets of runs that answer, in `dir`.
pub async fn live_runs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "sock") && UnixStream::connect(&p).await.is_ok() {
            out.push(p);
        }
    }
    out.sort();
    out
}

//! A private tmux server for driving the real binary in a real terminal
//! (shared by `tests/dashboard.rs` and `benches/dashboard.rs`). Each
//! instance has its own server socket, so it neither sees nor disturbs the
//! user's sessions, and kills its server when dropped.

// Each user of this file uses a different part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A private tmux server, killed on drop.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts nothing yet; checks that tmux is installed.
    pub(crate) fn new(name: &str) -> Self {
        let socket = format!("vitalmesh-test-{name}-{}", std::process::id());
        let probe = Command::new("tmux").arg("-V").output();
        assert!(
            probe.as_ref().is_ok_and(|o| o.status.success()),
            "tmux is needed for this test (apt-get install -y tmux): {probe:?}"
        );
        Self { socket }
    }

    /// Runs a tmux command on this server; fails the caller if tmux does.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts the `dash` session running `command` in a `width`×`height`
    /// terminal.
    pub(crate) fn start(&self, command: &str, width: u16, height: u16) {
        let (w, h) = (width.to_string(), height.to_string());
        self.run(&[
            "new-session",
            "-d",
            "-s",
            "dash",
            "-x",
            &w,
            "-y",
            &h,
            command,
        ]);
    }

    /// The visible screen (with `history`, the scrollback too).
    pub(crate) fn capture(&self, history: bool, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", "dash"];
        if history {
            args.extend(["-S", "-500"]);
        }
        if escapes {
            args.push("-e");
        }
        String::from_utf8_lossy(&self.run(&args).stdout).into_owned()
    }

    /// Waits until the screen satisfies `ok`; fails with the last screen.
    pub(crate) fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.capture(true, false);
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Types `keys` into the `dash` session.
    pub(crate) fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "dash", keys]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// `p` quoted for `sh`.
pub(crate) fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

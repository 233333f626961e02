//! The dashboard's loop: one thread, no async.
//!
//! Each turn it reads the keys waiting on the terminal, folds the newest
//! snapshot into [`DashboardState`] (older ones are skipped: only the latest
//! matters), collects the mesh's answers to injected actions, and redraws if
//! anything changed — never more than [`MAX_FPS`] times a second. Fault keys
//! travel as [`MeshCommand::Apply`] with source `dashboard`, the same path
//! `vitalmesh inject` takes, so the run's timeline records them.
//!
//! When the run ends (the snapshot channel closes) the loop waits for the
//! run's [`Finished`] word, shows the final ledger and where the report went,
//! and returns on the next key.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, oneshot, watch};
use vitalmesh_mesh::MeshCommand;
use vitalmesh_scenario::{Limits, parse_injection};
use vitalmesh_sim::{Snapshot, TimelineEntry};

use crate::DashboardError;
use crate::keys::{UiCommand, apply_local, command_for};
use crate::state::{DashboardState, Finished, StatusKind};
use crate::terminal;

/// Redraws per second, at most.
pub const MAX_FPS: u32 = 10;
const FRAME: Duration = Duration::from_millis(1000 / MAX_FPS as u64);
/// How long the loop sleeps on the keyboard when nothing needs drawing; it
/// bounds how late a snapshot shows up.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// Everything the dashboard is connected to.
#[derive(Debug)]
pub struct DashboardLink {
    /// Snapshots from the running mesh; closes when the run ends.
    pub snapshots: mpsc::Receiver<Snapshot>,
    /// Where fault keys go.
    pub commands: mpsc::Sender<MeshCommand>,
    /// Turned true when the operator quits.
    pub stop: watch::Sender<bool>,
    /// The run's final word, sent after the report is written (dropping the
    /// sender unsent means the run failed; the dashboard then just leaves).
    pub finished: std_mpsc::Receiver<Finished>,
    /// What injected actions are validated against.
    pub limits: Limits,
}

/// How the dashboard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The run finished and the operator left the final screen, or the run
    /// failed.
    Done,
    /// Ctrl-C while the run was already stopping: leave now, no report.
    Abort,
    /// A panic elsewhere took the terminal back; the run goes on without
    /// the dashboard.
    Detached,
}

/// Runs the dashboard on the current thread until the run is over. The
/// link stays the caller's, so after [`Exit::Detached`] or an error it can
/// go on reading snapshots some other way.
pub fn run(link: &mut DashboardLink, color: bool) -> Result<Exit, DashboardError> {
    let mut terminal = terminal::enter().map_err(DashboardError::Terminal)?;
    let mut app = App::new(link, color);
    let exit = app.run(&mut terminal);
    drop(terminal);
    exit
}

/// An action sent to the mesh, awaiting its timeline entry.
pub(crate) struct Pending {
    what: String,
    reply: oneshot::Receiver<Result<TimelineEntry, String>>,
}

/// The loop's state: the link, what is drawn, and what is in flight.
pub(crate) struct App<'a> {
    link: &'a mut DashboardLink,
    pub(crate) state: DashboardState,
    /// Newest snapshot received while paused; shown on resume.
    held: Option<Snapshot>,
    /// Actions sent to the mesh whose answer has not come yet.
    pub(crate) pending: Vec<Pending>,
    /// The snapshot channel closed: the run is over.
    pub(crate) run_over: bool,
}

impl<'a> App<'a> {
    pub(crate) fn new(link: &'a mut DashboardLink, color: bool) -> Self {
        Self {
            link,
            state: DashboardState::new(color),
            held: None,
            pending: Vec::new(),
            run_over: false,
        }
    }

    fn run(&mut self, terminal: &mut terminal::TerminalGuard) -> Result<Exit, DashboardError> {
        let mut dirty = true;
        let mut last_draw: Option<Instant> = None;
        loop {
            if !terminal::is_active() {
                return Ok(Exit::Detached);
            }
            let wait = match (dirty, last_draw) {
                (true, Some(t)) => FRAME.saturating_sub(t.elapsed()),
                (true, None) => Duration::ZERO,
                (false, _) => IDLE_POLL,
            };
            if event::poll(wait).map_err(DashboardError::Terminal)? {
                // Everything already typed, so a burst of keys costs one frame.
                loop {
                    match event::read().map_err(DashboardError::Terminal)? {
                        Event::Key(key) => {
                            if let Some(exit) = self.on_key(key) {
                                return Ok(exit);
                            }
                            dirty = true;
                        }
                        Event::Resize(..) => dirty = true,
                        _ => {}
                    }
                    if !event::poll(Duration::ZERO).map_err(DashboardError::Terminal)? {
                        break;
                    }
                }
            }
            dirty |= self.receive();
            if self.run_over && self.state.finished.is_none() {
                match self.link.finished.try_recv() {
                    Ok(finished) => {
                        self.state.say(
                            format!("report written to {}", finished.report.display()),
                            StatusKind::Info,
                        );
                        self.state.finished = Some(finished);
                        dirty = true;
                    }
                    Err(std_mpsc::TryRecvError::Disconnected) => return Ok(Exit::Done),
                    Err(std_mpsc::TryRecvError::Empty) => {}
                }
            }
            if dirty && last_draw.is_none_or(|t| t.elapsed() >= FRAME) {
                terminal
                    .draw(|frame| crate::view::draw(frame, &self.state))
                    .map_err(DashboardError::Terminal)?;
                last_draw = Some(Instant::now());
                dirty = false;
            }
        }
    }

    /// Takes in snapshots and answers; true when the screen should change.
    pub(crate) fn receive(&mut self) -> bool {
        let mut changed = false;
        loop {
            match self.link.snapshots.try_recv() {
                Ok(snapshot) => {
                    if self.state.paused {
                        self.held = Some(snapshot);
                    } else {
                        self.state.apply(snapshot);
                        changed = true;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if !self.run_over {
                        self.run_over = true;
                        changed = true;
                        if let Some(s) = self.held.take() {
                            self.state.apply(s);
                        }
                        self.state.paused = false;
                    }
                    break;
                }
            }
        }
        let mut answered = Vec::new();
        self.pending.retain_mut(|p| match p.reply.try_recv() {
            Ok(answer) => {
                answered.push((p.what.clone(), answer));
                false
            }
            Err(oneshot::error::TryRecvError::Empty) => true,
            Err(oneshot::error::TryRecvError::Closed) => false,
        });
        for (what, answer) in answered {
            changed = true;
            match answer {
                Ok(entry) => self.state.say(
                    format!("{:.0} s: {}", entry.at_s, entry.description),
                    StatusKind::Info,
                ),
                Err(e) => self.state.say(format!("{what}: {e}"), StatusKind::Error),
            }
        }
        changed
    }

    /// Handles one key; `Some` ends the dashboard.
    pub(crate) fn on_key(&mut self, key: KeyEvent) -> Option<Exit> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if self.state.finished.is_some() {
            return matches!(key.code, KeyCode::Char('q') | KeyCode::Esc | KeyCode::Enter)
                .then_some(Exit::Done)
                .or_else(|| is_ctrl_c(key).then_some(Exit::Done));
        }
        let command = command_for(key, &self.state)?;
        let was_paused = self.state.paused;
        let command = apply_local(command, &mut self.state);
        if was_paused && !self.state.paused {
            if let Some(s) = self.held.take() {
                self.state.apply(s);
            }
        }
        match command? {
            UiCommand::Quit => {
                if self.state.stopping && is_ctrl_c(key) {
                    return Some(Exit::Abort);
                }
                if !self.state.stopping {
                    self.state.stopping = true;
                    let _ = self.link.stop.send(true);
                    self.state.say(
                        "stopping: finishing the run and writing the report (Ctrl-C again to abort)",
                        StatusKind::Info,
                    );
                }
            }
            UiCommand::Inject { toml } => self.inject(&toml),
            _ => {}
        }
        None
    }

    fn inject(&mut self, toml: &str) {
        if self.state.stopping || self.run_over {
            self.state.say(
                "the run is finishing; nothing more is injected",
                StatusKind::Error,
            );
            return;
        }
        let action = match parse_injection(toml, &self.link.limits) {
            Ok(a) => a,
            Err(e) => {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default().to_owned();
                self.state.say(first, StatusKind::Error);
                return;
            }
        };
        let what = action.to_string();
        let (reply, answer) = oneshot::channel();
        let command = MeshCommand::Apply {
            action,
            source: "dashboard".into(),
            reply: Some(reply),
        };
        match self.link.commands.try_send(command) {
            Ok(()) => {
                self.state.say(format!("sent: {what}"), StatusKind::Info);
                self.pending.push(Pending {
                    what,
                    reply: answer,
                });
            }
            Err(TrySendError::Full(_)) => {
                self.state.say(
                    format!("{what}: the mesh is busy; press again"),
                    StatusKind::Error,
                );
            }
            Err(TrySendError::Closed(_)) => {
                self.state.say(
                    "the run is over; nothing more is injected",
                    StatusKind::Error,
                );
            }
        }
    }
}

fn is_ctrl_c(key: KeyEvent) -> bool {
    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL)
}

//! The dashboard loop without a terminal: keys become mesh commands with
//! source `dashboard`, answers reach the status line, quitting stops the
//! run, pausing holds snapshots back, and the run's end is noticed.

use std::sync::mpsc as std_mpsc;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tokio::sync::{mpsc, watch};
use vitalmesh_mesh::MeshCommand;
use vitalmesh_scenario::Limits;
use vitalmesh_sim::Snapshot;

use super::fixture::{entry, snapshot};
use crate::app::{App, DashboardLink, Exit};
use crate::state::Finished;
use crate::state::StatusKind;

struct Harness {
    link: DashboardLink,
    mesh_commands: mpsc::Receiver<MeshCommand>,
    snapshots: Option<mpsc::Sender<Snapshot>>,
    stop: watch::Receiver<bool>,
    _finished: std_mpsc::Sender<Finished>,
}

fn harness() -> Harness {
    let (snap_tx, snap_rx) = mpsc::channel(4);
    let (cmd_tx, cmd_rx) = mpsc::channel(2);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (fin_tx, fin_rx) = std_mpsc::channel();
    Harness {
        link: DashboardLink {
            snapshots: snap_rx,
            commands: cmd_tx,
            stop: stop_tx,
            finished: fin_rx,
            limits: Limits {
                wards: 3,
                nodes_per_ward: 20,
                aggregators: 2,
                external_broker: false,
                gateways_per_ward: 0,
            },
        },
        mesh_commands: cmd_rx,
        snapshots: Some(snap_tx),
        stop: stop_rx,
        _finished: fin_tx,
    }
}

fn key(c: char) -> KeyEvent {
    KeyEvent::from(KeyCode::Char(c))
}

fn status(app: &App<'_>) -> (String, StatusKind) {
    app.state.status.clone().expect("a status line")
}

#[test]
fn a_fault_key_reaches_the_mesh_as_a_dashboard_action_and_the_answer_shows() {
    let mut h = harness();
    let mut app = App::new(&mut h.link, true);
    app.state.selected_aggregator = 1;
    assert_eq!(app.on_key(key('a')), None);
    let MeshCommand::Apply {
        action,
        source,
        reply,
    } = h.mesh_commands.try_recv().expect("a command");
    assert_eq!(source, "dashboard");
    assert_eq!(action.to_string(), "kill aggregator 1");
    assert!(status(&app).0.contains("sent: kill aggregator 1"));
    reply
        .expect("a reply channel")
        .send(Ok(entry(17.0, "dashboard", "kill aggregator 1")))
        .unwrap();
    assert!(app.receive(), "the answer changes the screen");
    assert_eq!(
        status(&app),
        ("17 s: kill aggregator 1".into(), StatusKind::Info)
    );
}

#[test]
fn a_refusal_from_the_mesh_shows_as_an_error() {
    let mut h = harness();
    let mut app = App::new(&mut h.link, true);
    app.on_key(key('A'));
    let MeshCommand::Apply { reply, .. } = h.mesh_commands.try_recv().unwrap();
    reply
        .unwrap()
        .send(Err("aggregator 0 is already up".into()))
        .unwrap();
    app.receive();
    let (text, kind) = status(&app);
    assert_eq!(kind, StatusKind::Error);
    assert!(text.contains("aggregator 0 is already up"), "{text}");
}

#[test]
fn an_action_the_validator_refuses_never_reaches_the_mesh() {
    let mut h = harness();
    h.link.limits.wards = 1;
    let mut app = App::new(&mut h.link, true);
    app.state.selected_ward = 2;
    app.on_key(key('p'));
    assert!(h.mesh_commands.try_recv().is_err(), "nothing sent");
    let (text, kind) = status(&app);
    assert_eq!(kind, StatusKind::Error);
    assert!(text.contains("ward"), "the error names the field: {text}");
}

#[test]
fn a_full_command_queue_refuses_instead_of_blocking() {
    let mut h = harness();
    let mut app = App::new(&mut h.link, true);
    app.on_key(key('b'));
    app.on_key(key('b'));
    app.on_key(key('b'));
    let (text, kind) = status(&app);
    assert_eq!(kind, StatusKind::Error);
    assert!(text.contains("busy"), "{text}");
    assert_eq!(app.pending.len(), 2);
}

#[test]
fn quit_stops_the_run_once_and_a_second_ctrl_c_aborts() {
    let mut h = harness();
    let mut app = App::new(&mut h.link, true);
    assert_eq!(app.on_key(key('q')), None);
    assert!(*h.stop.borrow(), "the run is told to stop");
    assert!(app.state.stopping);
    assert_eq!(app.on_key(key('q')), None, "q again waits for the report");
    app.on_key(key('k'));
    assert_eq!(
        status(&app).1,
        StatusKind::Error,
        "no injection while stopping"
    );
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(app.on_key(ctrl_c), Some(Exit::Abort));
}

#[test]
fn pause_holds_snapshots_back_and_resume_shows_the_newest() {
    let mut h = harness();
    let snapshots = h.snapshots.take().unwrap();
    let mut app = App::new(&mut h.link, true);
    let mut first = snapshot(3, 20);
    first.produced = 1;
    snapshots.try_send(first).unwrap();
    assert!(app.receive());
    app.on_key(key(' '));
    assert!(app.state.paused);
    for produced in [2, 3] {
        let mut s = snapshot(3, 20);
        s.produced = produced;
        snapshots.try_send(s).unwrap();
    }
    assert!(!app.receive(), "paused: the screen stays");
    assert_eq!(app.state.snapshot.as_ref().unwrap().produced, 1);
    app.on_key(key(' '));
    assert_eq!(
        app.state.snapshot.as_ref().unwrap().produced,
        3,
        "the newest, not the oldest"
    );
}

#[test]
fn the_end_of_the_run_is_noticed_and_the_final_screen_leaves_on_q() {
    let mut h = harness();
    drop(h.snapshots.take());
    let mut app = App::new(&mut h.link, true);
    assert!(app.receive());
    assert!(app.run_over);
    app.on_key(key('k'));
    assert_eq!(status(&app).1, StatusKind::Error, "nothing to inject into");
    app.state.finished = Some(Finished {
        ledger: Default::default(),
        slo: Vec::new(),
        report: "r.json".into(),
        interrupted: false,
    });
    assert_eq!(
        app.on_key(key('x')),
        None,
        "other keys keep the final screen"
    );
    assert_eq!(app.on_key(key('q')), Some(Exit::Done));
}

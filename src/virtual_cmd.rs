//! `vitalmesh run --virtual`: drives the pure virtual-time mesh and paces it.
//!
//! The mesh itself (`vitalmesh_sim::virtual_time`) never reads a clock;
//! this loop is the only place a virtual run meets wall time: it advances
//! simulated time a step at a time, sleeps to hold `--speed`, sends
//! snapshots to the dashboard or the progress printer (at most two a wall
//! second, each with the speed achieved), applies injected actions between
//! steps and stops early when asked.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use tokio::sync::{mpsc, watch};
use vitalmesh_mesh::{MeshCommand, MeshConfig, Snapshot};
use vitalmesh_sim::virtual_time::{VirtualMesh, VirtualOptions};

use crate::run_cmd::Finished;

/// Simulated time between looks at the wall clock, the stop flag and the
/// command queue: small enough for a dashboard at `--speed 1`, large
/// enough to cost nothing at full speed.
const STEP: Duration = Duration::from_millis(200);

/// Runs `config`'s scenario in virtual time.
pub(crate) fn run(
    config: &MeshConfig,
    speed: Option<f64>,
    stop: watch::Receiver<bool>,
    snapshots: mpsc::Sender<Snapshot>,
    mut commands: mpsc::Receiver<MeshCommand>,
) -> Result<Finished> {
    let options = VirtualOptions {
        keep_intervals: config.keep_intervals,
    };
    let mut mesh = VirtualMesh::new(&config.scenario, config.seed, &options);
    mesh.start()?;
    let planned = config.scenario.duration;
    let wall_start = Instant::now();
    let mut next_snapshot = wall_start;
    let mut t = Duration::ZERO;
    let mut interrupted = *stop.borrow();
    let achieved = |t: Duration| t.as_secs_f64() / wall_start.elapsed().as_secs_f64().max(1e-6);
    while !interrupted && t < planned {
        t = (t + STEP).min(planned);
        mesh.run_until(t);
        if let Some(x) = speed {
            let due = wall_start + t.div_f64(x);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        while let Ok(MeshCommand::Apply {
            action,
            source,
            reply,
        }) = commands.try_recv()
        {
            let entry = mesh.apply(&action, &source);
            if let Some(reply) = reply {
                let _ = reply.send(match &entry.error {
                    Some(e) => Err(e.clone()),
                    None => Ok(entry),
                });
            }
        }
        if Instant::now() >= next_snapshot {
            next_snapshot = Instant::now() + Duration::from_millis(500);
            let _ = snapshots.try_send(mesh.snapshot(Some(achieved(t))));
        }
        interrupted = *stop.borrow();
    }
    let _ = snapshots.try_send(mesh.snapshot(Some(achieved(t))));
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(config.scenario.start_unix_s);
    let outcome = mesh.finish(interrupted);
    Ok(Finished {
        report: outcome.report,
        intervals: outcome.intervals,
        started: start,
        part: None,
    })
}

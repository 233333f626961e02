//! `vitalmesh experiment`: one scenario, many seeds, in virtual time, in
//! parallel across cores; every detector scored against the ground truth
//! and the scores pooled into one table, saved with the seeds.
//!
//! Each seed runs on its own thread with its own virtual mesh (the mesh is
//! single-threaded by design: it is a deterministic state machine), so N
//! cores run N seeds at once and each seed's result is the same whatever
//! else runs beside it.
//!
//! An experiment can take most of an hour, so the JSON is rewritten after
//! every finished seed (`"complete": false`, the seeds done so far pooled):
//! an interrupted experiment keeps what it measured.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use vitalmesh_sim::experiment::{self, SeedResult};
use vitalmesh_sim::virtual_time::{VirtualMesh, VirtualOptions};

/// Options of `vitalmesh experiment`.
#[derive(Debug, Args)]
pub(crate) struct ExperimentArgs {
    /// Scenario file (TOML); it runs in virtual time.
    scenario: PathBuf,
    /// How many seeds.
    #[arg(long, default_value_t = 20)]
    seeds: u32,
    /// The first seed; the others follow it (1, 2, 3, … by default).
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Seeds run at once (the machine's cores by default).
    #[arg(long)]
    jobs: Option<usize>,
    /// Where to save the pooled scores and every seed's (JSON).
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
}

pub(crate) fn run(args: &ExperimentArgs) -> Result<()> {
    if args.seeds == 0 {
        bail!("--seeds: '0' runs nothing; expected at least 1");
    }
    let scenario = vitalmesh_scenario::load(&args.scenario)?;
    scenario.check_virtual()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("experiment-{}.json", scenario.name)));
    // Opened first: a bad path costs nothing.
    std::fs::File::create(&out).map_err(|e| {
        anyhow::anyhow!(
            "--out: cannot create '{}': {e}; expected a writable file path",
            out.display()
        )
    })?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .clamp(1, args.seeds as usize);
    let seeds: Vec<u64> = (0..u64::from(args.seeds))
        .map(|i| args.first_seed.wrapping_add(i))
        .collect();
    eprintln!(
        "experiment '{}': {} seeds ({}…{}) of {} in virtual time, {jobs} at a time; scores go to {}",
        scenario.name,
        seeds.len(),
        seeds[0],
        seeds[seeds.len() - 1],
        vitalmesh_scenario::duration::format(scenario.duration),
        out.display()
    );
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<SeedResult>>>> =
        Mutex::new((0..seeds.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else { break };
                    let t = Instant::now();
                    let result = run_seed(&scenario, seed);
                    let mut all = results.lock().unwrap_or_else(|p| p.into_inner());
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    let line = match &result {
                        Ok(r) => format!(
                            "[{n}/{}] seed {seed}: {} in {:.0} s",
                            seeds.len(),
                            one_line(r),
                            t.elapsed().as_secs_f64()
                        ),
                        Err(e) => format!("[{n}/{}] seed {seed}: failed: {e:#}", seeds.len()),
                    };
                    all[i] = Some(result);
                    // Saved before it is announced; the lock keeps writers
                    // one at a time.
                    let so_far: Vec<&SeedResult> = all
                        .iter()
                        .flatten()
                        .filter_map(|r| r.as_ref().ok())
                        .collect();
                    if !so_far.is_empty() {
                        if let Err(e) = save(&out, &scenario, &so_far, false) {
                            eprintln!(
                                "warning: saving the seeds so far to '{}': {e:#}",
                                out.display()
                            );
                        }
                    }
                    eprintln!("{line}");
                }
            });
        }
    });
    let results: Vec<SeedResult> = results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every seed ran"))
        .collect::<Result<_>>()?;
    let unexplained: u64 = results.iter().map(|r| r.unexplained).sum();
    let all: Vec<&SeedResult> = results.iter().collect();
    let pooled = save(&out, &scenario, &all, true)
        .with_context(|| format!("writing '{}'", out.display()))?;
    println!("{}", pooled.markdown());
    println!(
        "{} seeds in {:.0} s; scores and every seed's in {}",
        results.len(),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    if unexplained > 0 {
        bail!("{unexplained} samples were unexplained across the seeds: the ledger failed");
    }
    Ok(())
}

/// Writes the seeds done so far, pooled, to `out` — through a file beside
/// it and a rename, so a reader (or a kill) never sees half a file — and
/// returns the pooled scores.
fn save(
    out: &std::path::Path,
    scenario: &vitalmesh_scenario::Scenario,
    done: &[&SeedResult],
    complete: bool,
) -> Result<experiment::Pooled> {
    let pooled = experiment::pool(done);
    let json = serde_json::json!({
        "scenario": scenario.name,
        "file": scenario.file,
        "duration_s": scenario.duration.as_secs_f64(),
        "complete": complete,
        "seeds": pooled.seeds,
        "pooled": pooled,
        "per_seed": done,
    });
    let mut bytes = serde_json::to_vec_pretty(&json)?;
    bytes.push(b'\n');
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, &bytes)?;
    std::fs::rename(&partial, out)?;
    Ok(pooled)
}

fn run_seed(scenario: &vitalmesh_scenario::Scenario, seed: u64) -> Result<SeedResult> {
    let mut mesh = VirtualMesh::new(scenario, seed, &VirtualOptions::default());
    mesh.start()?;
    let outcome = mesh.run_to_end();
    Ok(SeedResult {
        seed,
        unexplained: outcome.report.ledger.total.unexplained,
        scores: outcome.report.detection.scores,
    })
}

fn one_line(r: &SeedResult) -> String {
    let s = &r.scores;
    let mut parts = Vec::new();
    if s.any.outbreaks > 0 {
        parts.push(format!(
            "{}/{} outbreaks detected{}",
            s.any.detected,
            s.any.outbreaks,
            s.any
                .ttd_median_s
                .map(|t| format!(" in {:.1} h", t / 3600.0))
                .unwrap_or_default()
        ));
    }
    parts.push(format!("{} false ward alarms", s.any.false_alarms));
    if s.patient.deteriorations > 0 {
        parts.push(format!(
            "{}/{} deteriorations early",
            s.patient.before_news2_five, s.patient.deteriorations
        ));
    }
    if s.sensor.faults > 0 {
        parts.push(format!(
            "{}/{} sensor faults flagged",
            s.sensor.flagged, s.sensor.faults
        ));
    }
    parts.join(", ")
}

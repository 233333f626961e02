//! `vitalmesh experiment`: one scenario, many seeds, in virtual time, in
//! parallel across cores; every detector scored against the ground truth
//! and the scores pooled into one table, saved with the seeds.
//!
//! Each seed runs on its own thread with its own virtual mesh (the mesh is
//! single-threaded by design: it is a deterministic state machine), so N
//! cores run N seeds at once and each seed's result is the same whatever
//! else runs beside it.

use std::io::Write;
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
    let mut file = std::fs::File::create(&out).map_err(|e| {
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
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    match &result {
                        Ok(r) => eprintln!(
                            "[{n}/{}] seed {seed}: {} in {:.0} s",
                            seeds.len(),
                            one_line(r),
                            t.elapsed().as_secs_f64()
                        ),
                        Err(e) => eprintln!("[{n}/{}] seed {seed}: failed: {e:#}", seeds.len()),
                    }
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
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
    let pooled = experiment::pool(&results);
    let json = serde_json::json!({
        "scenario": scenario.name,
        "file": scenario.file,
        "duration_s": scenario.duration.as_secs_f64(),
        "seeds": pooled.seeds,
        "pooled": pooled,
        "per_seed": results,
    });
    file.write_all(&serde_json::to_vec_pretty(&json)?)
        .and_then(|()| file.write_all(b"\n"))
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

//! `vitalmesh`: the command-line front end.

mod bench_cmd;
mod bench_mesh;
mod compare_cmd;
mod detect_cmd;
mod experiment_cmd;
mod html_report;
mod metrics_http;
mod report_cmd;
mod run_cmd;
mod seed;
mod shard_cmd;
mod virtual_cmd;
mod vitals;

use clap::{Parser, Subcommand};

/// Simulates an ultra-large-scale health-telemetry mesh: thousands of sensor
/// nodes publishing vital signs over MQTT to failure-tolerant aggregators.
#[derive(Debug, Parser)]
#[command(name = "vitalmesh", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the vital signs and NEWS2 scores simulated patients produce
    /// (virtual time, no network): the firmware, wire and scoring pipeline
    /// on its own.
    Vitals(vitals::VitalsArgs),
    /// Run the mesh: an embedded MQTT broker, sensor nodes and aggregators,
    /// ending with an exact ledger and latency histograms.
    Run(Box<run_cmd::RunArgs>),
    /// Run a population detector (EARS C1/C2/C3, CUSUM, Poisson CUSUM,
    /// EWMA) on your own series: a CSV with a `count` column (optional
    /// `census`, `time`) in, one row per bucket out with the statistic, its
    /// threshold and whether it alarms.
    Detect(detect_cmd::DetectArgs),
    /// Run a scenario over many seeds in virtual time, in parallel, and
    /// score every detector against the ground truth: recall, precision,
    /// false alarms per ward-week, time to detect, with the seeds.
    Experiment(experiment_cmd::ExperimentArgs),
    /// Named, repeatable benchmark workloads (`--list` names them): a
    /// table of figures, and with `--json` the machine, the command and the
    /// figures as JSON.
    Bench(bench_cmd::BenchArgs),
    /// Two run reports side by side: ledger, latency, throughput, memory,
    /// CPU and detector scores, each with its change and a verdict;
    /// `--fail-if 'latency.p99 > +10%'` sets the exit code, for CI.
    Compare(compare_cmd::CompareArgs),
    /// A run report as one self-contained HTML page (`--html OUT.html`):
    /// throughput with the injected events, latency spectrum, the ledger
    /// per ward, faults beside detection, partition ownership; or the
    /// report's JSON Schema (`--schema`).
    Report(report_cmd::ReportArgs),
    /// Merge the part files of a sharded run (`run --shard I/N`) into one
    /// report: ledgers as set unions, latency as added histograms, alerts
    /// and scores over the whole mesh. A missing shard makes the run
    /// incomplete (exit code 6).
    Merge(shard_cmd::MergeArgs),
    /// Follow every sharded run on a broker from its shards' status
    /// messages: shards heard, phases, the whole run's figures; ends when
    /// every shard is done (or after --for).
    Watch(shard_cmd::WatchArgs),
    /// Check scenario files without running them.
    Validate(run_cmd::ValidateArgs),
    /// Apply an action to a running `vitalmesh run` (same names and fields
    /// as `[[event]]` entries), e.g. `vitalmesh inject partition ward=3 for=30s`.
    Inject(run_cmd::InjectArgs),
    /// The embedded broker process (started by `run`; not for direct use).
    #[command(hide = true)]
    Broker(run_cmd::BrokerArgs),
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are not errors; a refused command line is.
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() {
                run_cmd::EXIT_USAGE
            } else {
                0
            });
        }
    };
    let result = match cli.command {
        Command::Vitals(args) => vitals::run(&args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Run(args) => run_cmd::run(&args),
        Command::Broker(args) => run_cmd::broker(&args),
        Command::Validate(args) => run_cmd::validate(&args),
        Command::Experiment(args) => {
            experiment_cmd::run(&args).map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Detect(args) => detect_cmd::run(&args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Inject(args) => run_cmd::inject(&args),
        Command::Bench(args) => bench_cmd::run(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Compare(args) => compare_cmd::run(&args),
        Command::Merge(args) => shard_cmd::merge(&args),
        Command::Watch(args) => shard_cmd::watch(&args),
        Command::Report(args) => report_cmd::run(&args).map(|()| std::process::ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(run_cmd::EXIT_ERROR)
        }
    }
}

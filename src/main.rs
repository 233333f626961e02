//! `vitalmesh`: the command-line front end.

mod duration;
mod seed;
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Vitals(args) => vitals::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

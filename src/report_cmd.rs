//! `vitalmesh report RUN.json --html OUT.html`: a report as a page people
//! look at (`html_report`); `vitalmesh report --schema`: the report's JSON
//! Schema.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

/// Options of `vitalmesh report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// A report written by `vitalmesh run --report`.
    #[arg(required_unless_present = "schema")]
    report: Option<PathBuf>,
    /// Write it as one self-contained HTML page (charts inline, nothing
    /// loaded from the network).
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
    /// Print the JSON Schema of run reports instead.
    #[arg(long, conflicts_with_all = ["report", "html"])]
    schema: bool,
}

pub(crate) fn run(args: &ReportArgs) -> Result<()> {
    if args.schema {
        print!("{}", vitalmesh_sim::report::REPORT_JSON_SCHEMA);
        return Ok(());
    }
    let path = args
        .report
        .as_deref()
        .expect("clap: required unless --schema");
    let Some(out) = &args.html else {
        bail!("nothing to write; expected --html OUT.html");
    };
    let report = crate::compare_cmd::read_report("REPORT", path)?;
    let page = crate::html_report::render(&report)?;
    std::fs::write(out, page)
        .with_context(|| format!("--html: cannot write '{}'", out.display()))?;
    println!("HTML report  {}", out.display());
    Ok(())
}

//! `vitalmesh compare BASE.json NEW.json`: two reports side by side and
//! `--fail-if` thresholds that set the exit code. The figures, their
//! directions and the threshold grammar are `vitalmesh_sim::compare`'s;
//! this reads the files and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;
use vitalmesh_sim::compare::{self, Row, Threshold, Verdict};

use crate::run_cmd::{EXIT_ERROR, EXIT_SLO_FAILED};

/// Options of `vitalmesh compare`.
#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// The baseline report (`vitalmesh run --report`).
    base: PathBuf,
    /// The report to judge against it.
    new: PathBuf,
    /// Fail (exit code 3) if this holds, e.g. 'latency.p99 > +10%' (change
    /// in percent of the baseline), 'ledger.lost > +0' (change),
    /// 'latency.p99 > 250' (the new value). Repeat for more.
    #[arg(long = "fail-if", value_name = "'METRIC OP LIMIT'")]
    fail_if: Vec<String>,
}

/// The largest report read (a day of 10,000 nodes is a few MB).
const MAX_REPORT_BYTES: u64 = 256 * 1024 * 1024;

pub(crate) fn read_report(flag: &str, path: &Path) -> Result<Value> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{flag} '{}': cannot read it", path.display()))?;
    if !meta.is_file() || meta.len() > MAX_REPORT_BYTES {
        bail!(
            "{flag} '{}' is not a report; expected a JSON file written by `vitalmesh run --report`",
            path.display()
        );
    }
    let text = std::fs::read(path)
        .with_context(|| format!("{flag} '{}': cannot read it", path.display()))?;
    let value: Value = serde_json::from_slice(&text).map_err(|e| {
        anyhow::anyhow!(
            "{flag} '{}': line {}: not JSON ({e}); expected a report written by `vitalmesh run --report`",
            path.display(),
            e.line()
        )
    })?;
    match value.get("schema").and_then(Value::as_str) {
        Some(s) if s.starts_with("vitalmesh-report/") => Ok(value),
        other => bail!(
            "{flag} '{}': schema '{}' is not a vitalmesh report; expected 'vitalmesh-report/N'",
            path.display(),
            other.unwrap_or("none")
        ),
    }
}

/// `scenario 'x', seed N, real time, from <time>`.
fn describe(r: &Value) -> String {
    let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    format!(
        "'{}', seed {}, {} run of {:.0} s{}",
        text("scenario"),
        r.get("seed")
            .and_then(Value::as_u64)
            .map_or("?".into(), |s| s.to_string()),
        text("mode"),
        r.get("ran_for_s").and_then(Value::as_f64).unwrap_or(0.0),
        if r.get("interrupted").and_then(Value::as_bool) == Some(true) {
            " (interrupted)"
        } else {
            ""
        }
    )
}

fn change(row: &Row) -> String {
    match (row.change(), row.relative()) {
        (None, _) => String::new(),
        (Some(0.0), _) => "0".into(),
        (Some(_), Some(rel)) => format!("{:+.1} %", rel * 100.0),
        (Some(c), None) => format!("{c:+}"),
    }
}

fn verdict(row: &Row) -> &'static str {
    match row.verdict() {
        Verdict::Better => "better",
        Verdict::Worse => "WORSE",
        Verdict::Same => "",
        Verdict::Missing => "missing",
    }
}

pub(crate) fn run(args: &CompareArgs) -> Result<ExitCode> {
    // Thresholds first: a typo is refused before any file is read.
    let thresholds: Vec<Threshold> = args
        .fail_if
        .iter()
        .map(|t| Threshold::parse(t).map_err(|e| anyhow::anyhow!("--fail-if: {e}")))
        .collect::<Result<_>>()?;
    let base = read_report("BASE", &args.base)?;
    let new = read_report("NEW", &args.new)?;
    println!("base  {}  {}", args.base.display(), describe(&base));
    println!("new   {}  {}", args.new.display(), describe(&new));
    for key in ["scenario", "mode", "machine"] {
        // A report without the field (an older one, or a virtual run's
        // machine) says nothing either way.
        if let (Some(b), Some(n)) = (base.get(key), new.get(key))
            && b != n
        {
            println!("note: the {key}s differ; figures may not be comparable");
            if key == "machine" {
                for (which, r) in [("base", &base), ("new", &new)] {
                    if let Some(m) = r.get(key).filter(|m| m.is_object()) {
                        println!(
                            "      {which}: {} ({} cores)",
                            m["cpu"].as_str().unwrap_or("?"),
                            m["cores"]
                        );
                    }
                }
            }
        }
    }
    let rows = compare::rows(&base, &new);
    let shown: Vec<&Row> = rows
        .iter()
        .filter(|r| r.base.is_some() || r.new.is_some())
        .collect();
    let width = shown.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    println!();
    println!(
        "  {:<width$} {:>16} {:>16} {:>10}  verdict",
        "figure", "base", "new", "change"
    );
    for row in shown {
        println!(
            "  {:<width$} {:>16} {:>16} {:>10}  {}",
            row.name,
            compare::show(row.unit, row.base),
            compare::show(row.unit, row.new),
            change(row),
            verdict(row)
        );
    }
    if thresholds.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    let mut failed = 0;
    for t in &thresholds {
        match t.fails(&rows) {
            Ok(true) => {
                failed += 1;
                println!("  FAIL  {t}");
            }
            Ok(false) => println!("  pass  {t}"),
            Err(e) => {
                eprintln!("error: --fail-if {e}");
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        }
    }
    if failed > 0 {
        eprintln!("error: {failed} of {} thresholds failed", thresholds.len());
        return Ok(ExitCode::from(EXIT_SLO_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

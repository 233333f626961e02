//! `vitalmesh detect`: any population detector on a user's own series.
//!
//! A hospital analyst has real ward counts in a spreadsheet; this runs the
//! same detector code the aggregators run on them. Input is CSV with a
//! `count` column (and optionally `census` and `time`); output is CSV with
//! one row per input row: `index,count,statistic,threshold,alarm`, the
//! statistic empty while the detector warms up. CSV is read with the `csv`
//! crate: quoted fields and Windows line ends from a spreadsheet export
//! are its business, not ours.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use vitalmesh_core::detect::{Detector, Measure, Method, MethodConfig, Observation};

/// Options of `vitalmesh detect`.
#[derive(Debug, Args)]
pub(crate) struct DetectArgs {
    /// The method: c1, c2, c3, cusum, poisson_cusum or ewma.
    #[arg(long, value_parser = parse_method)]
    method: Method,
    /// A method parameter, e.g. `--param baseline=14 --param min_sigma=1`
    /// (repeatable). Every method takes `measure=count|proportion`; a
    /// proportion divides by the `census` column.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// CSV with a header row and a `count` column (optional: `census`,
    /// `time`). `-` reads standard input.
    file: PathBuf,
}

fn parse_method(name: &str) -> Result<Method, String> {
    Method::parse(name)
        .ok_or_else(|| format!("'{name}' is not a method; expected {}", Method::names()))
}

pub(crate) fn run(args: &DetectArgs) -> Result<()> {
    let mut config = MethodConfig::new(args.method);
    for p in &args.params {
        let Some((name, value)) = p.split_once('=') else {
            bail!("--param: '{p}' is not a parameter; expected NAME=VALUE, e.g. baseline=14");
        };
        config
            .set(name.trim(), value.trim())
            .map_err(|e| anyhow::anyhow!("--param {}: {e}", name.trim()))?;
    }
    config
        .check()
        .map_err(|e| anyhow::anyhow!("--param: {e}"))?;
    let name = args.file.display().to_string();
    let reader: Box<dyn std::io::Read> = if name == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("cannot read '{name}'; expected a CSV file"))?,
        )
    };
    let series = read_series(reader, &name, config.measure)?;
    let steps = Detector::run(config, &series);
    let mut out = BufWriter::new(std::io::stdout().lock());
    writeln!(out, "index,count,statistic,threshold,alarm")?;
    for (i, (obs, step)) in series.iter().zip(&steps).enumerate() {
        let num = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:.6}"));
        writeln!(
            out,
            "{i},{},{},{},{}",
            obs.count,
            num(step.statistic),
            num(step.threshold),
            step.alarm
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Reads the `count` (and `census`) columns; every problem names the file,
/// line and column.
fn read_series(
    reader: impl std::io::Read,
    name: &str,
    measure: Measure,
) -> Result<Vec<Observation>> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = csv
        .headers()
        .with_context(|| format!("{name}:1: cannot read the header row"))?
        .clone();
    let col = |n: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(n));
    let Some(count_col) = col("count") else {
        let found: Vec<String> = headers.iter().map(|h| format!("'{h}'")).collect();
        bail!(
            "{name}:1: no 'count' column (found {}); expected a header row naming a 'count' column",
            found.join(", ")
        );
    };
    let census_col = col("census");
    if measure == Measure::Proportion && census_col.is_none() {
        bail!(
            "{name}:1: measure=proportion needs a 'census' column; expected one in the header row"
        );
    }
    let mut out = Vec::new();
    for record in csv.records() {
        let record = record.with_context(|| format!("{name}: not valid CSV"))?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize, what: &str| -> Result<Option<f64>> {
            match record.get(i).map(str::trim) {
                None | Some("") => Ok(None),
                Some(v) => match v.parse::<f64>() {
                    Ok(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
                    _ => bail!(
                        "{name}:{line}: {what} '{v}' is not a count; expected a number of at least 0"
                    ),
                },
            }
        };
        let Some(count) = field(count_col, "count")? else {
            bail!("{name}:{line}: count is empty; expected a number of at least 0");
        };
        let census = match census_col {
            Some(c) => field(c, "census")?,
            None => None,
        };
        out.push(Observation { count, census });
    }
    if out.is_empty() {
        bail!("{name}: no rows after the header; expected one row per time bucket");
    }
    Ok(out)
}

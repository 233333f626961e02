//! Sharded runs from the command line: `vitalmesh merge` and
//! `vitalmesh run --local-shards N`.
//!
//! What a part holds and how parts merge is `vitalmesh_sim::merge`'s; a
//! shard itself is `vitalmesh run --shard I/N` (the mesh does the
//! splitting). This module reads and writes files and starts processes.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use vitalmesh_sim::merge::{self, Recipe, ShardPart};

use crate::run_cmd::{
    EXIT_ERROR, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_SLO_FAILED, EXIT_UNEXPLAINED, RunArgs,
};

/// Options of `vitalmesh merge`.
#[derive(Debug, Args)]
pub(crate) struct MergeArgs {
    /// The part files the shards wrote (`vitalmesh run --shard I/N`).
    #[arg(required = true)]
    parts: Vec<PathBuf>,
    /// Where to write the merged report.
    #[arg(long, default_value = "vitalmesh-report.json")]
    report: PathBuf,
    /// Also write the merged report as one self-contained HTML page.
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
}

/// Options of `vitalmesh watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The broker the shards meet on (one node of a cluster is enough),
    /// e.g. mqtt://127.0.0.1:1883.
    #[arg(long, value_name = "URL")]
    broker: String,
    /// Seconds between lines.
    #[arg(long, default_value_t = 2)]
    every: u64,
    /// The certificate authority (PEM) of a TLS broker (`mqtts://`).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Stop after this long (by default: once every shard heard from is
    /// done).
    #[arg(long = "for", value_name = "DURATION", value_parser = vitalmesh_scenario::duration::parse)]
    for_: Option<Duration>,
}

/// `vitalmesh watch`: the whole of every sharded run on a broker, from its
/// shards' status messages, without taking part in it.
pub(crate) fn watch(args: &WatchArgs) -> Result<ExitCode> {
    use std::net::ToSocketAddrs;
    use vitalmesh_mesh::mqtt::{ConnectOptions, Connection, Incoming, QoS};
    let first = args.broker.split(',').next().unwrap_or_default().trim();
    let url = vitalmesh_scenario::broker_url::parse(first)
        .map_err(|e| anyhow::anyhow!("--broker: {e}"))?;
    let tls = match (url.tls, &args.tls_ca) {
        (true, Some(ca)) => Some(vitalmesh_mesh::mqtt::TlsClient::from_ca_file(
            ca, &url.host,
        )?),
        (true, None) => bail!(
            "--broker: '{first}' needs the certificate authority its certificate chains to; expected --tls-ca FILE (PEM)"
        ),
        (false, Some(_)) => {
            bail!("--tls-ca: '{first}' is not a TLS listener; expected an mqtts:// broker")
        }
        (false, None) => None,
    };
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .with_context(|| format!("--broker: cannot resolve '{first}'"))?
        .next()
        .with_context(|| format!("--broker: '{first}' resolves to no address"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let topics = vitalmesh_wire::TopicScheme::new("vm").expect("the default root is valid");
        let options = ConnectOptions::new(format!("vm-watch-{}", std::process::id()), 15);
        let mut c = Connection::connect(
            addr,
            tls.as_ref(),
            &options,
            Duration::from_secs(5),
            64 * 1024,
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "--broker: cannot connect to {addr}: {e}; expected the MQTT listener the shards use"
            )
        })?;
        c.subscribe(&[(&topics.shard_filter(), QoS::AtMostOnce)]);
        eprintln!("watching {first} for sharded runs (vm/v1/shard/+)");
        let mut watch = vitalmesh_sim::shard::ShardWatch::default();
        let every = Duration::from_secs(args.every.max(1));
        let end = args.for_.map(|d| tokio::time::Instant::now() + d);
        let mut next = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                result = c.drive() => {
                    result.context("the broker closed the connection")?;
                    while let Some(incoming) = c.next_incoming()? {
                        if let Incoming::Message { payload, .. } = incoming {
                            watch.handle(&payload);
                        }
                    }
                }
                () = tokio::time::sleep_until(next) => {
                    next += every;
                    let lines = watch.lines();
                    if lines.is_empty() {
                        println!("no shard heard from yet");
                    }
                    for line in lines {
                        println!("{line}");
                    }
                    if watch.all_done() || end.is_some_and(|e| tokio::time::Instant::now() >= e) {
                        break;
                    }
                }
            }
        }
        c.close_gracefully(Duration::from_millis(500)).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The id the shards of one run share when none is given: the scenario,
/// the seed and the shard count, hashed (FNV-1a: the same in every
/// process and build, unlike the standard library's hasher).
pub(crate) fn run_id(recipe: &Recipe, seed: u64, count: u32) -> String {
    let text = serde_json::to_string(recipe).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text
        .bytes()
        .chain(seed.to_le_bytes())
        .chain(count.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The largest part file read.
const MAX_PART_BYTES: u64 = 1 << 30;

fn read_part(path: &Path) -> Result<ShardPart> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).with_context(|| format!("{name}: cannot read it"))?;
    if !meta.is_file() || meta.len() > MAX_PART_BYTES {
        bail!(
            "{name}: is not a part file; expected the JSON file `vitalmesh run --shard I/N` wrote"
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("{name}: cannot read it"))?;
    Ok(ShardPart::from_json(&name, &bytes)?)
}

/// Merges `parts` into `report` (and `html`), prints the summary and
/// returns the run's exit code.
fn merge_files(parts: &[PathBuf], report: &Path, html: Option<&Path>) -> Result<ExitCode> {
    let parts: Vec<(String, ShardPart)> = parts
        .iter()
        .map(|p| Ok((p.display().to_string(), read_part(p)?)))
        .collect::<Result<_>>()?;
    let merged = merge::merge(&parts)?;
    let mut json = serde_json::to_vec_pretty(&merged.report)?;
    json.push(b'\n');
    std::fs::write(report, &json)
        .with_context(|| format!("--report: cannot write '{}'", report.display()))?;
    let l = &merged.report["ledger"]["total"];
    let n = |k: &str| l[k].as_u64().unwrap_or(0);
    println!(
        "Merged {} of {} shards: {} nodes, produced {}, delivered {}, buffered {}, dropped {}, lost on crash {}, unexplained {}, duplicates {}",
        parts.len(),
        merged.report["shards"]["count"],
        merged.report["config"]["nodes"],
        n("produced"),
        n("delivered"),
        n("buffered"),
        n("dropped_overflow"),
        n("lost_on_crash"),
        n("unexplained"),
        n("duplicates"),
    );
    let e2e = &merged.report["latency"]["end_to_end"];
    println!(
        "End to end   p50 {} ms, p99 {} ms, max {} ms (histograms added across shards; clocks agree within ±{} ms)",
        e2e["p50_ms"],
        e2e["p99_ms"],
        e2e["max_ms"],
        merged.report["shards"]["latency_clock_error_bound_ms"]
            .as_f64()
            .map_or("?".into(), |b| format!("{b:.2}")),
    );
    println!("Report       {}", report.display());
    if let Some(out) = html {
        std::fs::write(out, crate::html_report::render(&merged.report)?)
            .with_context(|| format!("--html: cannot write '{}'", out.display()))?;
        println!("HTML report  {}", out.display());
    }
    if !merged.missing.is_empty() {
        let missing: Vec<String> = merged.missing.iter().map(u32::to_string).collect();
        eprintln!(
            "incomplete: shards {} left no part; the report covers the others' nodes, and samples they handed to the missing shards' aggregators cannot be checked",
            missing.join(", ")
        );
        return Ok(ExitCode::from(EXIT_INCOMPLETE));
    }
    if merged.unexplained > 0 {
        eprintln!(
            "error: {} samples are unexplained: produced but neither delivered, buffered, dropped nor lost",
            merged.unexplained
        );
        return Ok(ExitCode::from(EXIT_UNEXPLAINED));
    }
    if merged.interrupted {
        eprintln!("stopped early: a shard was interrupted");
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    if !merged.slo_failed.is_empty() {
        eprintln!("error: SLO failed: {}", merged.slo_failed.join(", "));
        return Ok(ExitCode::from(EXIT_SLO_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn merge(args: &MergeArgs) -> Result<ExitCode> {
    merge_files(&args.parts, &args.report, args.html.as_deref())
}

/// Flags of `run` a local shard must not inherit (the parent sets its
/// own), and whether each takes a value.
const PARENT_ONLY: [(&str, bool); 9] = [
    ("--local-shards", true),
    ("--report", true),
    ("--html", true),
    ("--hdr-log", true),
    ("--metrics", true),
    ("--control", true),
    ("--broker", true),
    ("--seed", true),
    ("--run-id", true),
];

/// The command line a local shard inherits: the parent's, without the
/// flags only the parent has.
fn inherited(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in argv {
        if skip_value {
            skip_value = false;
            continue;
        }
        let flag = arg.split('=').next().unwrap_or(arg);
        match PARENT_ONLY.iter().find(|(f, _)| *f == flag) {
            Some((_, takes)) => skip_value = *takes && !arg.contains('='),
            None => out.push(arg.clone()),
        }
    }
    out
}

/// `vitalmesh run --local-shards N`: N shard processes on this machine
/// against one broker, then the merge.
pub(crate) fn run_local(args: &RunArgs) -> Result<ExitCode> {
    let count = args.local_shards.unwrap_or(1);
    if !(1..=64).contains(&count) {
        bail!("--local-shards: '{count}' is not a shard count; expected 1 to 64");
    }
    let (scenario, seed) = crate::run_cmd::build_scenario(args)?;
    let report = args.report_path();
    let parts_dir = report.with_extension("parts");
    std::fs::create_dir_all(&parts_dir).with_context(|| {
        format!(
            "cannot create '{}' for the shards' parts and logs",
            parts_dir.display()
        )
    })?;
    // A broker for the run when none is named: mosquitto, one process
    // every shard connects to, holding one descriptor per client: it gets
    // the hard limit, as a shard does.
    vitalmesh_mesh::limits::raise_fd_limit();
    let mosquitto = match &args.broker {
        Some(_) => None,
        None => Some(vitalmesh_mesh::broker::mosquitto::Mosquitto::start().context(
            "--local-shards without --broker starts mosquitto; is it installed (apt-get install mosquitto)?",
        )?),
    };
    let broker = match (&args.broker, &mosquitto) {
        (Some(url), _) => url.clone(),
        (None, Some(m)) => m.url(),
        (None, None) => unreachable!("one or the other"),
    };
    let recipe = args.recipe()?;
    let id = args
        .run_id
        .clone()
        .unwrap_or_else(|| run_id(&recipe, seed, count));
    eprintln!(
        "vitalmesh: '{}' as {count} local shards against {broker} — {} nodes — seed {seed}; parts and logs in {}",
        scenario.name,
        scenario.population.nodes(),
        parts_dir.display()
    );
    let argv: Vec<String> = std::env::args().skip(2).collect();
    let program = crate::run_cmd::broker_program()?;
    let mut children: Vec<(u32, Child, PathBuf, PathBuf)> = Vec::new();
    for i in 0..count {
        let part = parts_dir.join(format!("part-{i}.json"));
        let log = parts_dir.join(format!("shard-{i}.log"));
        let _ = std::fs::remove_file(&part);
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create '{}'", log.display()))?;
        let child = std::process::Command::new(&program)
            .arg("run")
            .args(inherited(&argv))
            .args(["--shard", &format!("{i}/{count}")])
            .args(["--broker", &broker])
            .args(["--seed", &seed.to_string()])
            .args(["--run-id", &id])
            .arg("--report")
            .arg(&part)
            .arg("--control")
            .arg(parts_dir.join(format!("control-{i}.sock")))
            .arg("--headless")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting shard {i}"))?;
        children.push((i, child, part, log));
    }
    let every = Duration::from_secs(args.progress_every.max(1));
    let mut next = Instant::now() + every;
    let mut statuses: Vec<Option<std::process::ExitStatus>> = vec![None; children.len()];
    while statuses.iter().any(Option::is_none) {
        for (k, (_, child, _, _)) in children.iter_mut().enumerate() {
            if statuses[k].is_none() {
                statuses[k] = child.try_wait()?;
            }
        }
        if Instant::now() >= next {
            next = Instant::now() + every;
            for (i, _, _, log) in &children {
                if let Some(line) = last_line(log) {
                    eprintln!("shard {i}: {line}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut parts = Vec::new();
    for ((i, _, part, log), status) in children.iter().zip(&statuses) {
        let status = status.expect("every shard has ended");
        if part.is_file() {
            parts.push(part.clone());
        } else {
            eprintln!(
                "shard {i} left no part ({status}); its log: {}{}",
                log.display(),
                last_line(log).map_or(String::new(), |l| format!(" — {l}"))
            );
        }
    }
    drop(mosquitto);
    if parts.is_empty() {
        eprintln!(
            "error: no shard left a part; see the logs in {}",
            parts_dir.display()
        );
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    merge_files(&parts, &report, args.html.as_deref())
}

/// The last non-empty line of a log, if any.
fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_shard_inherits_the_command_line_but_not_the_parents_flags() {
        let argv: Vec<String> = [
            "s.toml",
            "--local-shards",
            "3",
            "--duration=20s",
            "--report",
            "r.json",
            "--broker=mqtt://x:1",
            "--seed",
            "7",
            "--headless",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(inherited(&argv), ["s.toml", "--duration=20s", "--headless"]);
    }

    #[test]
    fn run_ids_are_the_same_for_the_same_run_and_differ_otherwise() {
        let r = Recipe {
            flags: vitalmesh_scenario::MeshFlags {
                nodes: Some(30),
                ..Default::default()
            },
            ..Recipe::default()
        };
        assert_eq!(run_id(&r, 1, 3), run_id(&r.clone(), 1, 3));
        assert_ne!(run_id(&r, 1, 3), run_id(&r, 2, 3));
        assert_ne!(run_id(&r, 1, 3), run_id(&r, 1, 2));
    }
}

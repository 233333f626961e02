//! `vitalmesh vitals`: the pure pipeline on its own. Nodes sample in virtual
//! time, each sample goes through the authenticated wire envelope and back,
//! and is scored with NEWS2. Output is CSV on stdout.

use std::io::{BufWriter, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use vitalmesh_core::news2::{self, ParameterSet};
use vitalmesh_firmware::{LinkAction, Node, NodeConfig, PatientOptions};
use vitalmesh_wire::envelope::Keyring;
use vitalmesh_wire::{Acvpu, Body, NodeId, Partitioning, Timestamp, WireTopic, decode};

/// Options of `vitalmesh vitals`.
#[derive(Debug, Args)]
pub(crate) struct VitalsArgs {
    /// Number of patients.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Simulated time span.
    #[arg(long, default_value = "1h", value_parser = vitalmesh_scenario::duration::parse)]
    duration: Duration,
    /// Time between samples.
    #[arg(long, default_value = "5m", value_parser = vitalmesh_scenario::duration::parse)]
    interval: Duration,
    /// Master seed (drawn and printed when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// Give these nodes a fever starting at time zero (repeatable).
    #[arg(long = "fever", value_name = "NODE")]
    fever: Vec<u32>,
    /// Make these nodes' patients deteriorate from time zero (repeatable).
    #[arg(long = "deteriorate", value_name = "NODE")]
    deteriorate: Vec<u32>,
    /// Simulated start time, seconds since the Unix epoch (midnight UTC,
    /// 2026-01-01 by default, so circadian rhythms start at midnight).
    #[arg(long, default_value_t = 1_767_225_600)]
    start: u64,
}

pub(crate) fn run(args: &VitalsArgs) -> Result<()> {
    if args.nodes == 0 {
        bail!("--nodes: '0' is not enough; expected at least 1");
    }
    if args.interval.is_zero() {
        bail!("--interval: '0s' is too short; expected a positive duration such as '1s'");
    }
    for &n in args.fever.iter().chain(&args.deteriorate) {
        if n >= args.nodes {
            bail!(
                "node '{n}' does not exist; expected a node id below --nodes ({})",
                args.nodes
            );
        }
    }
    let seed = crate::seed::resolve(args.seed);
    let t0 = Timestamp::from_secs(args.start);
    let ring = Keyring::new(
        seed.to_le_bytes().repeat(4).try_into().expect("32 bytes"),
        args.nodes,
    );
    let partitioning = Partitioning::default();
    let config = NodeConfig {
        sample_interval: args.interval,
        patient: PatientOptions::default(),
        ..NodeConfig::default()
    };
    let mut nodes: Vec<Node> = (0..args.nodes)
        .map(|id| {
            let id = NodeId(id);
            let mut node = Node::new(
                id,
                partitioning.partition_of(id),
                config.clone(),
                seed,
                ring.node_credentials(id),
                t0,
            );
            node.handle_timeout(t0);
            while node.poll_link().is_some() {}
            node.handle_connected(t0);
            node
        })
        .collect();
    for &n in &args.fever {
        nodes[n as usize].start_fever(t0);
    }
    for &n in &args.deteriorate {
        nodes[n as usize].start_deterioration(t0);
    }

    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    writeln!(
        out,
        "time_s,node,seq,heart_rate,resp_rate,spo2,temperature_c,systolic,diastolic,consciousness,on_oxygen,news2,risk"
    )?;
    let end = t0 + args.duration;
    for node in &mut nodes {
        let mut now = t0;
        while now <= end {
            node.handle_timeout(now);
            while let Some(action) = node.poll_link() {
                if action == LinkAction::Connect {
                    node.handle_connected(now);
                }
            }
            while let Some(t) = node.poll_transmit(now) {
                let (partition, id) = (node.partition(), node.id());
                let topic = WireTopic::Data {
                    partition,
                    node: id,
                };
                let Body::Batch(batch) =
                    decode(&t.payload, &topic, &ring).context("decoding a node's own payload")?
                else {
                    bail!("a node sent something other than a batch");
                };
                for s in &batch.samples {
                    let v = &s.vitals;
                    let score = news2::score(v, ParameterSet::from_device_faults(s.faults));
                    let opt = |x: Option<u16>| x.map(|v| v.to_string()).unwrap_or_default();
                    writeln!(
                        out,
                        "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                        s.time.saturating_duration_since(t0).as_secs(),
                        s.node.0,
                        s.seq,
                        opt(v.heart_rate),
                        opt(v.resp_rate.map(u16::from)),
                        opt(v.spo2.map(u16::from)),
                        v.temp_decicelsius
                            .map(|t| format!("{:.1}", f64::from(t) / 10.0))
                            .unwrap_or_default(),
                        opt(v.systolic),
                        opt(v.diastolic),
                        v.consciousness.map(acvpu_letter).unwrap_or(""),
                        u8::from(v.on_oxygen),
                        score
                            .total()
                            .map(|t| t.to_string())
                            .unwrap_or_else(|| format!(">={}", score.known_total)),
                        score
                            .risk()
                            .map(|r| r.to_string())
                            .unwrap_or_else(|| "partial".into()),
                    )?;
                }
                let ack_key = ring.ack_key(id).context("a provisioned node")?;
                node.handle_ack(
                    &ack_key.ack(partition, id, t.first_seq + t.samples as u64),
                    now,
                );
            }
            match node.poll_timeout() {
                Some(next) => now = next,
                None => break,
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn acvpu_letter(c: Acvpu) -> &'static str {
    match c {
        Acvpu::Alert => "A",
        Acvpu::Confusion => "C",
        Acvpu::Voice => "V",
        Acvpu::Pain => "P",
        Acvpu::Unresponsive => "U",
    }
}

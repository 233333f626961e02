//! A direct postcard encoder for [`Batch`], the message every node sends
//! every second.
//!
//! It writes exactly the bytes `postcard::to_slice(&Body::Batch(..))` would
//! (postcard's format is specified and stable since 1.0), but without serde's
//! per-field indirection and postcard's per-varint `memcpy`, which together
//! cost more than generating the sample. The property test
//! `fast_encoding_matches_postcard` holds the two together: any field added to
//! the messages without updating this file fails it.

use crate::message::{Acvpu, Batch, Presence, Sample, SpO2Scale};

/// `Body::Relay`'s variant index.
pub(crate) const RELAY_VARIANT: u8 = 5;

/// Appends `Body::Relay(Relay { gateway, frames })` in postcard encoding,
/// from borrowed frames (a gateway relays what it holds without copying).
pub(crate) fn write_relay_body(out: &mut Vec<u8>, gateway: crate::GatewayId, frames: &[&[u8]]) {
    out.reserve(8 + frames.iter().map(|f| f.len() + 3).sum::<usize>());
    varint(out, u64::from(RELAY_VARIANT));
    varint(out, u64::from(gateway.0));
    varint(out, frames.len() as u64);
    for f in frames {
        varint(out, f.len() as u64);
        out.extend_from_slice(f);
    }
}

/// Appends `Body::Batch(batch)` in postcard encoding.
pub(crate) fn write_batch_body(out: &mut Vec<u8>, batch: &Batch) {
    out.reserve(16 + 40 * batch.samples.len());
    varint(out, 0); // Body::Batch variant index
    varint(out, u64::from(batch.node.0));
    varint(out, batch.held_from);
    varint(out, batch.samples.len() as u64);
    for s in &batch.samples {
        write_sample(out, s);
    }
    varint(
        out,
        match batch.presence {
            Presence::Monitoring => 0,
            Presence::BedEmpty => 1,
            Presence::Leaving => 2,
        },
    );
}

fn write_sample(out: &mut Vec<u8>, s: &Sample) {
    varint(out, u64::from(s.node.0));
    varint(out, s.seq);
    varint(out, s.time.as_micros());
    let v = &s.vitals;
    option(out, v.heart_rate, |o, x| varint(o, u64::from(x)));
    option(out, v.resp_rate, |o, x| o.push(x));
    option(out, v.spo2, |o, x| o.push(x));
    option(out, v.temp_decicelsius, |o, x| varint(o, zigzag(x)));
    option(out, v.systolic, |o, x| varint(o, u64::from(x)));
    option(out, v.diastolic, |o, x| varint(o, u64::from(x)));
    option(out, v.consciousness, |o, x| {
        varint(
            o,
            match x {
                Acvpu::Alert => 0,
                Acvpu::Confusion => 1,
                Acvpu::Voice => 2,
                Acvpu::Pain => 3,
                Acvpu::Unresponsive => 4,
            },
        );
    });
    out.push(u8::from(v.on_oxygen));
    varint(
        out,
        match v.spo2_scale {
            SpO2Scale::Scale1 => 0,
            SpO2Scale::Scale2 => 1,
        },
    );
    out.push(s.battery_pct);
    varint(out, u64::from(s.faults.0));
    varint(out, u64::from(s.admission));
}

fn option<T: Copy>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        None => out.push(0),
        Some(x) => {
            out.push(1);
            write(out, x);
        }
    }
}

/// LEB128, as postcard writes every integer wider than a byte.
fn varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn zigzag(x: i16) -> u64 {
    u64::from(((x << 1) ^ (x >> 15)) as u16)
}

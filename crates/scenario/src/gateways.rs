//! `[gateways]`: nodes that reach the broker through a bedside or ward hub
//! instead of a connection of their own, and the radio between them.
//!
//! ```toml
//! [gateways]
//! nodes_per_gateway = 100     # each ward's nodes, in runs of consecutive ids
//! flush = "20ms"              # longest a frame waits at the gateway for company
//! max_relay_bytes = 16384     # largest relay message
//! radio_delay = "3ms"         # one-way, node <-> gateway
//! radio_jitter = "2ms"
//! radio_loss = 0.01           # share of frames and acks lost in the air
//! dropouts_per_hour = 0.5     # per node: walks out of range
//! dropout_length = "20s"
//! ```

use std::time::Duration;

use toml::Spanned;
use vitalmesh_firmware::{GatewayConfig, ShortRangeConfig};
use vitalmesh_wire::envelope::{MAX_MESSAGE_BYTES, MIN_BATCH_BYTES};
use vitalmesh_wire::message::MAX_RELAY_FRAMES;
use vitalmesh_wire::{GatewayId, PartitionId};

use crate::error::Source;
use crate::raw::RawGateways;
use crate::{ScenarioError, duration};

/// Room a relay needs besides its largest frame (its own header, the
/// frame's length prefix, the tag), with margin.
pub const RELAY_HEADROOM_BYTES: u32 = 64;

/// How the population's gateways behave.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayProfile {
    /// Nodes behind each gateway.
    pub nodes_per_gateway: u32,
    /// Longest a frame waits at the gateway for others.
    pub flush: Duration,
    /// Largest relay envelope.
    pub max_relay_bytes: u32,
    /// The radio between gateway and nodes.
    pub radio: ShortRangeConfig,
}

impl GatewayProfile {
    /// The state machine's configuration for gateway `id`.
    pub fn config(&self, id: GatewayId, partition: PartitionId) -> GatewayConfig {
        GatewayConfig {
            id,
            partition,
            flush_after: self.flush,
            max_relay_bytes: self.max_relay_bytes as usize,
            short_range: self.radio,
            ..GatewayConfig::default()
        }
    }
}

/// Stage two of `[gateways]`; `max_batch_bytes` is the nodes' own limit
/// (one node frame must fit in a relay).
pub(crate) fn check(
    src: &Source,
    raw: &RawGateways,
    nodes_per_ward: u32,
    max_batch_bytes: u32,
    errors: &mut Vec<ScenarioError>,
) -> GatewayProfile {
    let defaults = GatewayConfig::default();
    let mut bad = |offset: usize, field: &str, message: String| {
        errors.push(src.invalid(offset, format!("gateways.{field}"), message));
    };
    let per = *raw.nodes_per_gateway.get_ref();
    let max_per = (MAX_RELAY_FRAMES as u32).min(nodes_per_ward.max(1));
    if per == 0 || per > max_per {
        bad(
            raw.nodes_per_gateway.span().start,
            "nodes_per_gateway",
            format!(
                "'{per}' is not possible; expected 1 to {max_per} (at most a ward, and at most {MAX_RELAY_FRAMES}, the frames one relay carries)"
            ),
        );
    }
    let mut dur = |v: &Option<Spanned<String>>,
                   field: &str,
                   range: (Duration, Duration),
                   default: Duration| {
        let Some(v) = v else { return default };
        match duration::parse(v.get_ref()) {
            Ok(d) if d >= range.0 && d <= range.1 => d,
            Ok(_) => {
                bad(
                    v.span().start,
                    field,
                    format!(
                        "'{}' is out of range; expected '{}' to '{}'",
                        v.get_ref(),
                        duration::format(range.0),
                        duration::format(range.1)
                    ),
                );
                default
            }
            Err(e) => {
                bad(v.span().start, field, e);
                default
            }
        }
    };
    let ms = Duration::from_millis;
    let flush = dur(&raw.flush, "flush", (ms(1), ms(1000)), defaults.flush_after);
    let radio_defaults = ShortRangeConfig::default();
    let delay = dur(
        &raw.radio_delay,
        "radio_delay",
        (Duration::ZERO, ms(1000)),
        radio_defaults.delay,
    );
    let jitter = dur(
        &raw.radio_jitter,
        "radio_jitter",
        (Duration::ZERO, ms(1000)),
        radio_defaults.jitter,
    );
    let dropout_length = dur(
        &raw.dropout_length,
        "dropout_length",
        (ms(100), Duration::from_secs(24 * 3600)),
        radio_defaults.dropout_length,
    );
    let mut bad = |offset: usize, field: &str, message: String| {
        errors.push(src.invalid(offset, format!("gateways.{field}"), message));
    };
    let min_relay = (max_batch_bytes + RELAY_HEADROOM_BYTES).max(2 * MIN_BATCH_BYTES as u32);
    let max_relay_bytes = match &raw.max_relay_bytes {
        Some(v) if !(min_relay..=MAX_MESSAGE_BYTES as u32).contains(v.get_ref()) => {
            bad(
                v.span().start,
                "max_relay_bytes",
                format!(
                    "'{}' cannot carry the nodes' largest batch; expected {min_relay} (population.profile.max_batch_bytes + {RELAY_HEADROOM_BYTES}) to {MAX_MESSAGE_BYTES} (the wire's largest message)",
                    v.get_ref()
                ),
            );
            min_relay
        }
        Some(v) => *v.get_ref(),
        None => (defaults.max_relay_bytes as u32).max(min_relay),
    };
    if max_relay_bytes > MAX_MESSAGE_BYTES as u32 {
        bad(
            raw.nodes_per_gateway.span().start,
            "max_relay_bytes",
            format!(
                "'{max_relay_bytes}' (needed for population.profile.max_batch_bytes '{max_batch_bytes}') exceeds the wire's largest message, {MAX_MESSAGE_BYTES}; lower max_batch_bytes"
            ),
        );
    }
    let loss = match &raw.radio_loss {
        Some(v) if !(0.0..=0.9).contains(v.get_ref()) => {
            bad(
                v.span().start,
                "radio_loss",
                format!(
                    "'{}' is not a loss share a link can work with; expected 0 to 0.9",
                    v.get_ref()
                ),
            );
            0.0
        }
        Some(v) => *v.get_ref(),
        None => radio_defaults.loss,
    };
    let dropouts_per_hour = match &raw.dropouts_per_hour {
        Some(v) if !(0.0..=3600.0).contains(v.get_ref()) => {
            bad(
                v.span().start,
                "dropouts_per_hour",
                format!(
                    "'{}' is not a rate; expected 0 to 3600 per node and hour",
                    v.get_ref()
                ),
            );
            0.0
        }
        Some(v) => *v.get_ref(),
        None => radio_defaults.dropouts_per_hour,
    };
    GatewayProfile {
        nodes_per_gateway: per.clamp(1, max_per),
        flush,
        max_relay_bytes,
        radio: ShortRangeConfig {
            delay,
            jitter,
            loss,
            dropouts_per_hour,
            dropout_length,
        },
    }
}

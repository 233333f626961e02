//! Stage one: the shape of a scenario file, as serde reads it. Unknown
//! fields are refused everywhere; values that stage two checks keep their
//! position ([`Spanned`]) so its messages can name the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScenario {
    pub(crate) scenario: RawMeta,
    pub(crate) population: RawPopulation,
    pub(crate) aggregators: Option<RawAggregators>,
    pub(crate) broker: Option<RawBroker>,
    #[serde(default)]
    pub(crate) load: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    pub(crate) event: Vec<Spanned<RawEntry>>,
    pub(crate) slo: Option<RawSlo>,
    #[serde(rename = "virtual")]
    pub(crate) virtual_model: Option<RawVirtual>,
    pub(crate) detection: Option<RawDetection>,
    pub(crate) gateways: Option<RawGateways>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateways {
    pub(crate) nodes_per_gateway: Spanned<u32>,
    pub(crate) flush: Option<Spanned<String>>,
    pub(crate) max_relay_bytes: Option<Spanned<u32>>,
    pub(crate) radio_delay: Option<Spanned<String>>,
    pub(crate) radio_jitter: Option<Spanned<String>>,
    pub(crate) radio_loss: Option<Spanned<f64>>,
    pub(crate) dropouts_per_hour: Option<Spanned<f64>>,
    pub(crate) dropout_length: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDetection {
    pub(crate) bucket: Option<Spanned<String>>,
    pub(crate) grace: Option<Spanned<String>>,
    pub(crate) assemble: Option<Spanned<String>>,
    pub(crate) baseline: Option<Spanned<String>>,
    pub(crate) epoch: Option<Spanned<String>>,
    pub(crate) patient_k: Option<Spanned<f64>>,
    pub(crate) patient_h: Option<Spanned<f64>>,
    pub(crate) risk_persistence: Option<Spanned<String>>,
    pub(crate) risk_readings: Option<Spanned<u32>>,
    pub(crate) risk_clear_after: Option<Spanned<String>>,
    pub(crate) hampel_sigmas: Option<Spanned<f64>>,
    pub(crate) noise_ratio: Option<Spanned<f64>>,
    pub(crate) clear_after: Option<Spanned<String>>,
    /// `[[detection.ward]]`: `name`, `method`, `series` and the method's
    /// own parameters, which only the method knows (so the table is read
    /// as a map and every key checked in stage two).
    #[serde(default)]
    pub(crate) ward: Vec<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVirtual {
    pub(crate) link_delay: Option<Spanned<String>>,
    pub(crate) link_jitter: Option<Spanned<String>>,
    pub(crate) broker_restart: Option<Spanned<String>>,
    pub(crate) broker_capacity: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMeta {
    pub(crate) name: Spanned<String>,
    pub(crate) description: Option<Spanned<String>>,
    pub(crate) seed: Option<u64>,
    pub(crate) duration: Spanned<String>,
    pub(crate) drain: Option<Spanned<String>>,
    pub(crate) start: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPopulation {
    pub(crate) wards: Spanned<u16>,
    pub(crate) nodes_per_ward: Spanned<u32>,
    pub(crate) oxygen_share: Option<Spanned<f64>>,
    pub(crate) scale2_share: Option<Spanned<f64>>,
    pub(crate) connect_rate: Option<Spanned<u32>>,
    pub(crate) profile: Option<RawProfile>,
    pub(crate) admissions: Option<RawAdmissions>,
    pub(crate) illness: Option<RawIllness>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmissions {
    pub(crate) occupancy: Option<Spanned<f64>>,
    pub(crate) ward_spread: Option<Spanned<f64>>,
    pub(crate) stay_median: Option<Spanned<String>>,
    pub(crate) stay_spread: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIllness {
    pub(crate) fever_per_patient_day: Option<Spanned<f64>>,
    pub(crate) deterioration_per_patient_day: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfile {
    pub(crate) sample_interval: Option<Spanned<String>>,
    pub(crate) buffer_bytes: Option<Spanned<u32>>,
    pub(crate) drop_policy: Option<Spanned<String>>,
    pub(crate) ack_timeout: Option<Spanned<String>>,
    pub(crate) max_batch_bytes: Option<Spanned<u32>>,
    pub(crate) battery_capacity_j: Option<Spanned<f64>>,
    pub(crate) battery_initial_level: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAggregators {
    pub(crate) count: Spanned<u16>,
    pub(crate) partitions: Option<Spanned<u16>>,
    pub(crate) max: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBroker {
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) listeners: Option<Spanned<u16>>,
    pub(crate) tls: Option<Spanned<bool>>,
}

/// One `[[load]]` or `[[event]]` entry, or one injected action: every field
/// any action may use. Stage two checks that exactly the fields the action
/// needs are present.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntry {
    pub(crate) at: Option<Spanned<String>>,
    pub(crate) action: Option<Spanned<String>>,
    pub(crate) ward: Option<Spanned<u16>>,
    pub(crate) count: Option<Spanned<u32>>,
    pub(crate) fraction: Option<Spanned<f64>>,
    pub(crate) nodes: Option<Spanned<Vec<u32>>>,
    pub(crate) aggregator: Option<Spanned<u16>>,
    #[serde(rename = "for")]
    pub(crate) for_: Option<Spanned<String>>,
    pub(crate) latency: Option<Spanned<String>>,
    pub(crate) jitter: Option<Spanned<String>>,
    pub(crate) share: Option<Spanned<f64>>,
    pub(crate) mode: Option<Spanned<String>>,
    pub(crate) sign: Option<Spanned<String>>,
    pub(crate) value: Option<Spanned<f64>>,
    pub(crate) per_hour: Option<Spanned<f64>>,
    pub(crate) probability: Option<Spanned<f64>>,
    pub(crate) magnitude: Option<Spanned<f64>>,
    pub(crate) multiplier: Option<Spanned<f64>>,
    pub(crate) attack_rate: Option<Spanned<f64>>,
    pub(crate) onset_median: Option<Spanned<String>>,
    pub(crate) onset_spread: Option<Spanned<f64>>,
    pub(crate) kind: Option<Spanned<String>>,
    pub(crate) messages: Option<Spanned<u32>>,
    pub(crate) connections: Option<Spanned<u32>>,
    pub(crate) rate: Option<Spanned<f64>>,
    pub(crate) interval: Option<Spanned<String>>,
    pub(crate) over: Option<Spanned<String>>,
    pub(crate) weight: Option<Spanned<u16>>,
}

impl RawEntry {
    /// Names and positions of the fields that are set (besides `at` and
    /// `action`).
    pub(crate) fn present(&self) -> Vec<(&'static str, usize)> {
        let mut out = Vec::new();
        macro_rules! check {
            ($($field:ident => $name:literal),* $(,)?) => {
                $( if let Some(v) = &self.$field { out.push(($name, v.span().start)); } )*
            };
        }
        check!(
            ward => "ward", count => "count", fraction => "fraction", nodes => "nodes",
            aggregator => "aggregator", for_ => "for", latency => "latency", jitter => "jitter",
            share => "share", mode => "mode", sign => "sign", value => "value",
            per_hour => "per_hour", probability => "probability", magnitude => "magnitude",
            multiplier => "multiplier", attack_rate => "attack_rate", onset_median => "onset_median",
            onset_spread => "onset_spread", kind => "kind", messages => "messages",
            connections => "connections", rate => "rate", interval => "interval", over => "over",
            weight => "weight",
        );
        out
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSlo {
    pub(crate) max_unexplained: Option<Spanned<f64>>,
    pub(crate) min_delivered_share: Option<Spanned<f64>>,
    pub(crate) max_latency_p50_ms: Option<Spanned<f64>>,
    pub(crate) max_latency_p99_ms: Option<Spanned<f64>>,
    pub(crate) max_latency_p999_ms: Option<Spanned<f64>>,
    pub(crate) max_latency_max_ms: Option<Spanned<f64>>,
    pub(crate) max_dropped_overflow: Option<Spanned<f64>>,
    pub(crate) max_lost_on_crash: Option<Spanned<f64>>,
    pub(crate) max_duplicates: Option<Spanned<f64>>,
    pub(crate) max_connect_failures: Option<Spanned<f64>>,
    pub(crate) max_false_node_down: Option<Spanned<f64>>,
    pub(crate) max_rejected: Option<Spanned<f64>>,
    pub(crate) min_rejected: Option<Spanned<f64>>,
    pub(crate) max_unplanned_broker_restarts: Option<Spanned<f64>>,
    pub(crate) min_outbreak_recall: Option<Spanned<f64>>,
    pub(crate) max_false_alarms_per_ward_day: Option<Spanned<f64>>,
    pub(crate) max_time_to_detect: Option<Spanned<String>>,
    pub(crate) min_sensor_fault_recall: Option<Spanned<f64>>,
    pub(crate) max_fevers_misflagged: Option<Spanned<f64>>,
    pub(crate) min_deterioration_early: Option<Spanned<f64>>,
    pub(crate) outbreak_detected_within: Option<Spanned<String>>,
}

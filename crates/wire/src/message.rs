//! The messages. Field order is the postcard wire order: append new fields
//! only in a new [`crate::WIRE_VERSION`].

use serde::{Deserialize, Serialize};

use crate::{AggregatorId, NodeId, PartitionId, Timestamp, WireError};

/// Largest number of samples in one [`Batch`]: keeps a backfill burst inside
/// the envelope size limit and bounds the work one message can cause.
pub const MAX_BATCH_SAMPLES: usize = 256;

/// Largest number of node acknowledgements in one [`AckBatch`].
pub const MAX_ACKS_PER_BATCH: usize = 4096;

/// Level of consciousness on the ACVPU scale (NEWS2 Chart 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Acvpu {
    /// Alert.
    Alert,
    /// New confusion.
    Confusion,
    /// Responds to voice.
    Voice,
    /// Responds to pain.
    Pain,
    /// Unresponsive.
    Unresponsive,
}

/// Which NEWS2 SpO2 scale applies to the patient (a clinical prescription,
/// not a measurement): scale 2 only for confirmed hypercapnic respiratory
/// failure with a target of 88–92 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SpO2Scale {
    /// Scale 1, the default.
    #[default]
    Scale1,
    /// Scale 2, hypercapnic respiratory failure.
    Scale2,
}

/// Faults the device itself detected and reports (probe off, no signal, low
/// battery). Silent faults such as a stuck sensor are *not* flagged: finding
/// those is the detectors' job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FaultFlags(pub u16);

impl FaultFlags {
    /// No heart-rate signal.
    pub const HEART_RATE_LOST: Self = Self(1 << 0);
    /// No respiratory-rate signal.
    pub const RESP_RATE_LOST: Self = Self(1 << 1);
    /// No SpO2 signal (probe off).
    pub const SPO2_LOST: Self = Self(1 << 2);
    /// No temperature signal.
    pub const TEMPERATURE_LOST: Self = Self(1 << 3);
    /// No blood-pressure reading.
    pub const BLOOD_PRESSURE_LOST: Self = Self(1 << 4);
    /// Battery below 15 %.
    pub const LOW_BATTERY: Self = Self(1 << 8);
    /// Bits defined in this wire version.
    pub const KNOWN: Self = Self(0b1_0001_1111);

    /// No flags.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Whether every flag in `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the flags in `other`.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for FaultFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// One set of vital signs as the device measured them, quantised to the
/// device's resolution. `None` means "no reading" (see [`FaultFlags`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Vitals {
    /// Pulse, beats per minute.
    pub heart_rate: Option<u16>,
    /// Respiration rate, breaths per minute.
    pub resp_rate: Option<u8>,
    /// Peripheral oxygen saturation, percent.
    pub spo2: Option<u8>,
    /// Temperature in tenths of a degree Celsius (371 = 37.1 °C).
    pub temp_decicelsius: Option<i16>,
    /// Systolic blood pressure, mmHg.
    pub systolic: Option<u16>,
    /// Diastolic blood pressure, mmHg.
    pub diastolic: Option<u16>,
    /// Level of consciousness, if assessed.
    pub consciousness: Option<Acvpu>,
    /// Whether the patient is on supplemental oxygen.
    pub on_oxygen: bool,
    /// Which SpO2 scale the patient is prescribed.
    pub spo2_scale: SpO2Scale,
}

/// One reading from one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sample {
    /// The node that produced it.
    pub node: NodeId,
    /// Per-node sequence number, from 0, never reused (kept across reboots).
    pub seq: u64,
    /// When the sample was *due* (not when it was sent): latency is measured
    /// from here, so a stalled node cannot hide its own delay.
    pub time: Timestamp,
    /// The measurements.
    pub vitals: Vitals,
    /// Battery level, percent (100 for mains-powered devices).
    pub battery_pct: u8,
    /// Faults the device detected.
    pub faults: FaultFlags,
}

/// Samples from one node, sent together: one live sample, or a backfill after
/// an outage. Every uplink from a node is a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The sending node; every sample carries the same id.
    pub node: NodeId,
    /// Every sequence number below this is acknowledged or gone for good
    /// (dropped on overflow, lost in a crash): the aggregator must not wait
    /// for it. This is how the receiver learns about losses at the node.
    pub held_from: u64,
    /// Samples in strictly increasing `seq` order, each `>= held_from`.
    pub samples: Vec<Sample>,
}

/// A cumulative acknowledgement for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeAck {
    /// The node acknowledged.
    pub node: NodeId,
    /// Every sequence number below this has been durably ingested.
    pub next_expected: u64,
}

/// Acknowledgements for the nodes of one partition, from the partition's
/// primary aggregator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckBatch {
    /// The partition whose nodes are acknowledged.
    pub partition: PartitionId,
    /// The acknowledging aggregator.
    pub aggregator: AggregatorId,
    /// At most one entry per node.
    pub acks: Vec<NodeAck>,
}

/// Life-cycle state an aggregator announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AggregatorState {
    /// Running and owning partitions.
    Alive,
    /// Shutting down cleanly; peers should take over now.
    Leaving,
    /// Gone: the broker publishes this as the aggregator's last will.
    Offline,
}

/// An aggregator heartbeat (or its last will).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AggregatorStatus {
    /// Who.
    pub aggregator: AggregatorId,
    /// Changes on every restart, so a stale will from an earlier life cannot
    /// declare a restarted aggregator dead.
    pub incarnation: u64,
    /// Heartbeat counter within this incarnation.
    pub beat: u64,
    /// Announced state.
    pub state: AggregatorState,
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Node → aggregators: samples.
    Batch(Batch),
    /// Aggregator → nodes: acknowledgements.
    Ack(AckBatch),
    /// Aggregator → aggregators: heartbeat or last will.
    Status(AggregatorStatus),
}

impl Body {
    /// Checks the rules that postcard's types cannot express. Called by the
    /// decoder on every message, and by the encoder so that a node can never
    /// emit something its peers would reject.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Self::Batch(b) => b.validate(),
            Self::Ack(a) => a.validate(),
            Self::Status(_) => Ok(()),
        }
    }
}

impl Batch {
    fn validate(&self) -> Result<(), WireError> {
        if self.samples.len() > MAX_BATCH_SAMPLES {
            return Err(WireError::invalid(
                "batch.samples",
                format!(
                    "'{}' samples; at most {MAX_BATCH_SAMPLES} are allowed",
                    self.samples.len()
                ),
            ));
        }
        let mut previous: Option<u64> = None;
        for (i, s) in self.samples.iter().enumerate() {
            if s.node != self.node {
                return Err(WireError::invalid(
                    format!("batch.samples[{i}].node"),
                    format!(
                        "'{}' differs from the batch's node '{}'",
                        s.node.0, self.node.0
                    ),
                ));
            }
            if s.seq < self.held_from {
                return Err(WireError::invalid(
                    format!("batch.samples[{i}].seq"),
                    format!("'{}' is below batch.held_from '{}'", s.seq, self.held_from),
                ));
            }
            if previous.is_some_and(|p| s.seq <= p) {
                return Err(WireError::invalid(
                    format!("batch.samples[{i}].seq"),
                    format!(
                        "'{}' is not above the previous sample's sequence number",
                        s.seq
                    ),
                ));
            }
            if !FaultFlags::KNOWN.contains(s.faults) {
                return Err(WireError::invalid(
                    format!("batch.samples[{i}].faults"),
                    format!(
                        "unknown flag bits '{:#06x}'",
                        s.faults.0 & !FaultFlags::KNOWN.0
                    ),
                ));
            }
            if s.battery_pct > 100 {
                return Err(WireError::invalid(
                    format!("batch.samples[{i}].battery_pct"),
                    format!("'{}' is above 100", s.battery_pct),
                ));
            }
            previous = Some(s.seq);
        }
        Ok(())
    }
}

impl AckBatch {
    fn validate(&self) -> Result<(), WireError> {
        if self.acks.len() > MAX_ACKS_PER_BATCH {
            return Err(WireError::invalid(
                "ack.acks",
                format!(
                    "'{}' entries; at most {MAX_ACKS_PER_BATCH} are allowed",
                    self.acks.len()
                ),
            ));
        }
        Ok(())
    }
}

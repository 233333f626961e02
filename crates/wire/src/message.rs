//! The messages. Field order is the postcard wire order: append new fields
//! only in a new [`crate::WIRE_VERSION`].

use serde::{Deserialize, Serialize};

use crate::{AggregatorId, GatewayId, NodeId, PartitionId, Timestamp, WireError};

/// Largest number of samples in one [`Batch`]: keeps a backfill burst inside
/// the envelope size limit and bounds the work one message can cause.
pub const MAX_BATCH_SAMPLES: usize = 256;

/// Largest number of node acknowledgements in one [`AckBatch`] (each is
/// about 27 bytes with its tag).
pub const MAX_ACKS_PER_BATCH: usize = 1024;

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

/// The continuous vital signs a device measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VitalSign {
    /// Pulse, bpm.
    HeartRate,
    /// Respiration rate, breaths/min.
    RespRate,
    /// Oxygen saturation, %.
    #[serde(rename = "spo2")]
    SpO2,
    /// Temperature, °C.
    Temperature,
    /// Systolic blood pressure, mmHg.
    Systolic,
    /// Diastolic blood pressure, mmHg.
    Diastolic,
}

impl VitalSign {
    /// Every sign, in index order.
    pub const ALL: [Self; 6] = [
        Self::HeartRate,
        Self::RespRate,
        Self::SpO2,
        Self::Temperature,
        Self::Systolic,
        Self::Diastolic,
    ];

    /// Position in per-sign arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Name as written in scenario files and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::HeartRate => "heart_rate",
            Self::RespRate => "resp_rate",
            Self::SpO2 => "spo2",
            Self::Temperature => "temperature",
            Self::Systolic => "systolic",
            Self::Diastolic => "diastolic",
        }
    }

    /// What a device can read, in the sign's natural unit (°C for
    /// temperature): readings outside are clipped, and a scenario's fault
    /// values must lie inside.
    pub const fn device_range(self) -> (f64, f64) {
        match self {
            Self::HeartRate => (20.0, 250.0),
            Self::RespRate => (0.0, 99.0),
            Self::SpO2 => (50.0, 100.0),
            Self::Temperature => (25.0, 45.0),
            Self::Systolic => (20.0, 300.0),
            Self::Diastolic => (10.0, 200.0),
        }
    }

    /// The natural unit, as reports write it.
    pub const fn unit(self) -> &'static str {
        match self {
            Self::HeartRate => "bpm",
            Self::RespRate => "breaths/min",
            Self::SpO2 => "%",
            Self::Temperature => "°C",
            Self::Systolic | Self::Diastolic => "mmHg",
        }
    }

    /// The device flag for a lost reading of this sign.
    pub const fn lost_flag(self) -> FaultFlags {
        match self {
            Self::HeartRate => FaultFlags::HEART_RATE_LOST,
            Self::RespRate => FaultFlags::RESP_RATE_LOST,
            Self::SpO2 => FaultFlags::SPO2_LOST,
            Self::Temperature => FaultFlags::TEMPERATURE_LOST,
            Self::Systolic | Self::Diastolic => FaultFlags::BLOOD_PRESSURE_LOST,
        }
    }
}

impl Vitals {
    /// The reading of `sign` in its natural unit (°C for temperature), if
    /// there is one.
    pub fn reading(&self, sign: VitalSign) -> Option<f64> {
        match sign {
            VitalSign::HeartRate => self.heart_rate.map(f64::from),
            VitalSign::RespRate => self.resp_rate.map(f64::from),
            VitalSign::SpO2 => self.spo2.map(f64::from),
            VitalSign::Temperature => self.temp_decicelsius.map(|t| f64::from(t) / 10.0),
            VitalSign::Systolic => self.systolic.map(f64::from),
            VitalSign::Diastolic => self.diastolic.map(f64::from),
        }
    }
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
    /// Which patient at this bed: the bed's admission number, from 0. A
    /// higher number is a new patient, whose own baseline starts afresh.
    pub admission: u32,
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
    /// What the node says about itself. A batch may carry no samples: an
    /// empty bed's heartbeat, or a leaving node's goodbye.
    pub presence: Presence,
}

/// What a node says about itself in every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Presence {
    /// Monitoring a patient.
    #[default]
    Monitoring,
    /// The bed is empty (the patient was discharged): the node is alive and
    /// connected but takes no samples until the next admission.
    BedEmpty,
    /// Goodbye: the node has delivered its backlog and switches off. Its
    /// silence from now on is not a failure.
    Leaving,
}

/// A cumulative acknowledgement for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeAck {
    /// The node acknowledged.
    pub node: NodeId,
    /// Every sequence number below this has been durably ingested.
    pub next_expected: u64,
    /// MAC under the node's ack key ([`crate::envelope::AckKey`]): the
    /// node believes this entry only if it verifies.
    pub tag: [u8; 16],
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

/// Largest number of patients in one [`WardReport`]; a bigger ward is
/// reported in chunks.
pub const MAX_WARD_REPORT_PATIENTS: usize = 4096;

/// Largest number of partitions a [`WardReport`] can cover.
pub const MAX_WARD_REPORT_PARTITIONS: usize = 4096;

/// What one patient looked like over one time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PatientBucket {
    /// The bed's node.
    pub node: NodeId,
    /// [`PatientBucket`] flag bits.
    pub flags: u8,
}

impl PatientBucket {
    /// Febrile over the bucket (most accepted temperatures ≥ 38.1 °C).
    pub const FEBRILE: u8 = 1 << 0;
    /// Febrile now, not in the previous bucket.
    pub const NEW_FEBRILE: u8 = 1 << 1;
    /// NEWS2 ≥ 5 over the bucket (most decided scores).
    pub const NEWS2_GE5: u8 = 1 << 2;
    /// NEWS2 ≥ 5 now, not in the previous bucket.
    pub const NEW_NEWS2_GE5: u8 = 1 << 3;
    /// Bits defined in this wire version.
    pub const KNOWN: u8 = 0b1111;

    /// Whether `flag` is set.
    pub const fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// One aggregator's view of one ward over one time bucket: every patient it
/// monitored there (the census) with what they looked like. The partitions
/// it covers let the receiver tell when every aggregator has reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WardReport {
    /// The reporting aggregator.
    pub aggregator: AggregatorId,
    /// The ward.
    pub ward: u16,
    /// Bucket length in seconds (every aggregator must agree).
    pub bucket_s: u32,
    /// Bucket number: its start is `bucket × bucket_s` seconds after the
    /// Unix epoch.
    pub bucket: u64,
    /// Partitions (primary or standby) whose patients this covers.
    pub partitions: Vec<u16>,
    /// This chunk's number, from 0.
    pub chunk: u16,
    /// How many chunks this aggregator sends for the ward and bucket.
    pub chunks: u16,
    /// The patients, by strictly increasing node id.
    pub patients: Vec<PatientBucket>,
}

impl WardReport {
    fn validate(&self) -> Result<(), WireError> {
        if self.bucket_s == 0 {
            return Err(WireError::invalid(
                "ward.bucket_s",
                "'0'; expected at least 1 second",
            ));
        }
        if self.chunks == 0 || self.chunk >= self.chunks {
            return Err(WireError::invalid(
                "ward.chunk",
                format!("'{}' of '{}' chunks", self.chunk, self.chunks),
            ));
        }
        if self.partitions.len() > MAX_WARD_REPORT_PARTITIONS {
            return Err(WireError::invalid(
                "ward.partitions",
                format!(
                    "'{}' entries; at most {MAX_WARD_REPORT_PARTITIONS} are allowed",
                    self.partitions.len()
                ),
            ));
        }
        if self.partitions.windows(2).any(|w| w[0] >= w[1]) {
            return Err(WireError::invalid(
                "ward.partitions",
                "not strictly increasing",
            ));
        }
        if self.patients.len() > MAX_WARD_REPORT_PATIENTS {
            return Err(WireError::invalid(
                "ward.patients",
                format!(
                    "'{}' entries; at most {MAX_WARD_REPORT_PATIENTS} are allowed",
                    self.patients.len()
                ),
            ));
        }
        if self.patients.windows(2).any(|w| w[0].node >= w[1].node) {
            return Err(WireError::invalid(
                "ward.patients",
                "not strictly increasing by node",
            ));
        }
        if let Some(p) = self
            .patients
            .iter()
            .find(|p| p.flags & !PatientBucket::KNOWN != 0)
        {
            return Err(WireError::invalid(
                "ward.patients.flags",
                format!(
                    "unknown flag bits '{:#04x}' for node '{}'",
                    p.flags & !PatientBucket::KNOWN,
                    p.node.0
                ),
            ));
        }
        Ok(())
    }
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
    /// Connected and learning the mesh, owning nothing yet: peers keep
    /// its partitions until it says `Alive`, so a hand-over never leaves
    /// a partition without an owner (appended: earlier states keep their
    /// encoding).
    Joining,
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
    /// Capacity weight (1 = an ordinary aggregator): its share of the
    /// partitions is proportional to it. Added in wire version 3.
    pub weight: u16,
    /// When it was sent, by the sender's clock (a will: when its
    /// connection started). Receivers refuse a heartbeat much older than
    /// their own clock: a capture played to an aggregator that has not
    /// heard the sender since it started. Added in wire version 4.
    pub sent_at: Timestamp,
}

/// Largest number of node frames in one [`Relay`].
pub const MAX_RELAY_FRAMES: usize = 1024;

/// A gateway's uplink: its nodes' own envelopes, byte for byte, as they
/// arrived over the short-range link. Each frame is a complete envelope
/// signed by its node, so an aggregator authenticates every node itself
/// and the gateway cannot alter or invent a node's samples; the relay's
/// own tag says which gateway forwarded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relay {
    /// The forwarding gateway.
    pub gateway: GatewayId,
    /// Node envelopes, each decoded on its own (a bad frame is rejected
    /// alone; the rest of the relay still counts).
    pub frames: Vec<Vec<u8>>,
}

impl Relay {
    fn validate(&self) -> Result<(), WireError> {
        crate::envelope::check_relay_frames(
            self.frames.len(),
            self.frames.iter().position(Vec::is_empty),
        )
    }
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Node → aggregators: samples.
    Batch(Batch),
    /// Aggregator → nodes: acknowledgements.
    Ack(AckBatch),
    /// Aggregator → aggregators: heartbeat or last will.
    Status(AggregatorStatus),
    /// Aggregator → anyone: an alert raised or cleared.
    Alert(crate::alert::AlertNotice),
    /// Aggregator → aggregators: one ward over one bucket.
    Ward(WardReport),
    /// Gateway → aggregators: its nodes' envelopes.
    Relay(Relay),
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
            Self::Alert(a) => a.validate(),
            Self::Ward(w) => w.validate(),
            Self::Relay(r) => r.validate(),
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

//! Ground truth: what really happened to the patients and the devices —
//! every fever (outbreak or background), every deterioration, every sensor
//! fault, every admission and discharge — with when it began and ended.
//! The detectors never see this; the scoring ([`crate::score`]) judges
//! them against it. A leaf module: the run writes it, the report and the
//! dashboard read it.

use serde::Serialize;
use vitalmesh_wire::VitalSign;

/// What an episode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeKind {
    /// A fever (a patient's).
    Fever,
    /// A slow deterioration (a patient's).
    Deterioration,
    /// A sensor fault (a device's).
    SensorFault,
}

/// One episode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Episode {
    /// What it is.
    pub kind: EpisodeKind,
    /// The bed's node.
    pub node: u32,
    /// Its ward.
    pub ward: u16,
    /// The patient's admission number (patient episodes).
    pub admission: u32,
    /// When it began, seconds since the nodes started.
    pub onset_s: f64,
    /// When it ended (the fever settled, the patient left, the fault was
    /// repaired); `None`: it outlasted the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
    /// What caused it: `background`, `event[3]`, `inject`, `dashboard`.
    pub source: String,
    /// The outbreak it belongs to, by index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbreak: Option<usize>,
    /// The faulty sign (`None` with a fault on every sign).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign: Option<VitalSign>,
    /// The fault mode (`stuck_at`, `drift`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
}

impl Episode {
    /// Whether it happened at all: a fever whose patient left before its
    /// onset never did.
    pub fn happened(&self) -> bool {
        self.end_s.is_none_or(|e| e > self.onset_s)
    }

    /// Whether it was going on at `t_s`.
    pub fn covers(&self, t_s: f64) -> bool {
        t_s >= self.onset_s && self.end_s.is_none_or(|e| t_s < e)
    }
}

/// One outbreak, as its cases make it up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outbreak {
    /// The ward.
    pub ward: u16,
    /// The entry that caused it.
    pub source: String,
    /// When the entry fired.
    pub at_s: f64,
    /// The first case's onset: time to detect is measured from here.
    pub onset_s: f64,
    /// The last case's end (or the run's).
    pub end_s: Option<f64>,
    /// Cases.
    pub cases: u32,
}

/// Everything that really happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GroundTruth {
    /// Episodes in the order they were decided.
    pub episodes: Vec<Episode>,
    /// Outbreaks.
    pub outbreaks: Vec<Outbreak>,
    /// Patients admitted during the run (beyond those in bed at the start).
    pub admissions: u64,
    /// Patients discharged.
    pub discharges: u64,
    /// Occupied bed-seconds over the run, per ward: the denominators of
    /// per-patient rates.
    pub occupied_bed_s: Vec<f64>,
}

impl GroundTruth {
    /// Episodes of `kind` that happened.
    pub fn of(&self, kind: EpisodeKind) -> impl Iterator<Item = &Episode> {
        self.episodes
            .iter()
            .filter(move |e| e.kind == kind && e.happened())
    }

    /// Occupied bed-days over the run.
    pub fn patient_days(&self) -> f64 {
        self.occupied_bed_s.iter().sum::<f64>() / 86_400.0
    }
}

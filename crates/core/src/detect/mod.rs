//! Detectors: what the aggregators conclude from the samples beyond a
//! single score — population aberrations per ward, slow deterioration per
//! patient, and broken sensors.
//!
//! Every detector is a pure state machine: observations and `now` in,
//! statistics and alarms out. Definitions, defaults and sources are in
//! `domain-science.md` §2 (population) and §5 (sensor faults); each module
//! says which.
//!
//! # Layout
//!
//! - [`method`]: the population methods and their parameters, in one table.
//! - [`series`]: EARS C1/C2/C3, CUSUM (standardised and Poisson), EWMA.
//! - [`ward`]: assembling a ward's series from every aggregator's reports,
//!   and running the population detectors on it.
//! - [`patient`]: per patient — NEWS2 escalation, a CUSUM against the
//!   patient's own baseline, sensor drift and coherence, bucket flags.
//! - [`sensor`]: per reading — impossible, spike, rate of change, stuck,
//!   noise and dropout checks.

pub mod method;
pub mod patient;
pub mod sensor;
pub mod series;
pub mod ward;

use serde::Serialize;

pub use method::{Measure, Method, MethodConfig, Param};
pub use patient::{PatientConfig, PatientEvent, PatientMonitor};
pub use sensor::{SensorConfig, SensorMonitor};
pub use series::{Detector, Observation, Step};
pub use ward::{WardBucket, WardConfig, WardCounts, WardDetection, WardDetectorSpec, WardSeries};

/// Everything the aggregators detect, configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DetectionConfig {
    /// Population detectors per ward.
    pub ward: WardConfig,
    /// Per-patient detectors.
    pub patient: PatientConfig,
    /// Sensor-fault checks.
    pub sensor: SensorConfig,
}

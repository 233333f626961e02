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

pub mod method;
pub mod series;

pub use method::{Measure, Method, MethodConfig, Param};
pub use series::{Detector, Observation, Step};

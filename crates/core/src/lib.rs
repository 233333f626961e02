//! Aggregator-side logic of vitalmesh: what an aggregator concludes from the
//! samples it ingests, and how aggregators share the mesh between them.
//!
//! # Promises
//!
//! - **Pure.** No I/O, no clock reads, no randomness: inputs are messages and
//!   `now`, outputs are values. The same logic runs over MQTT in real time
//!   and in virtual time.
//! - **Deterministic.** Ordered maps only; the same inputs give the same
//!   outputs in the same order.
//!
//! # Layout
//!
//! - [`aggregator`]: the aggregator state machine ([`Aggregator`]); start here.
//! - [`news2`]: NEWS2 scoring (RCP 2017), partial when inputs are missing or
//!   suspect.
//! - [`phi`]: the φ-accrual failure detector.
//! - [`membership`]: which aggregators are alive.
//! - [`rendezvous`]: partition → primary and standby by HRW hashing.
//! - [`population`]: the ward layout.
//! - [`alert`]: alerts and severities.
//! - [`detect`]: population, patient and sensor-fault detectors.
//! - [`incident`]: alerts grouped into incidents (Alertmanager-style).

#![warn(missing_docs)]

pub mod aggregator;
pub mod alert;
pub mod detect;
pub mod incident;
pub mod membership;
pub mod news2;
pub mod phi;
pub mod population;
pub mod rendezvous;
pub mod replay;

pub use aggregator::{
    Aggregator, AggregatorConfig, AggregatorStats, Delivery, Event, News2Five, Output, Rejection,
    Role,
};
pub use alert::{Alert, AlertKey, AlertKind, Evidence, Scope, SensorCheck, Severity};
pub use population::{Population, WardId};

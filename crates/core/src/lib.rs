//! Aggregator-side logic of vitalmesh: what an aggregator concludes from the
//! samples it ingests.
//!
//! # Promises
//!
//! - **Pure.** No I/O, no clock reads, no randomness: inputs are samples and
//!   `now`, outputs are values. The same logic runs over MQTT in real time
//!   and in virtual time.
//!
//! # Layout
//!
//! - [`news2`]: NEWS2 scoring (RCP 2017), partial when inputs are missing or
//!   suspect.

#![warn(missing_docs)]

pub mod news2;

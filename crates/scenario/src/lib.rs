//! Scenario files for vitalmesh: one reviewable TOML timeline of the
//! population, the load and the faults of an experiment.
//!
//! # Promises
//!
//! - **Pure.** No I/O besides reading the file ([`load`]); no clock, no
//!   global RNG. Selections and outbreak onsets come from the master seed
//!   ([`resolve`]), so a scenario is the same experiment every time.
//! - **Two-stage validation with precise errors.** Stage one is serde with
//!   unknown fields refused; stage two checks meaning. Every problem names
//!   the file, line, field path, the bad value in quotes and what was
//!   expected — all problems of a file at once.
//! - **One vocabulary.** `[[event]]` entries, `[[load]]` entries, live
//!   injection ([`parse_injection`]) and dashboard keys build the same
//!   [`Action`]s through the same checks.
//!
//! # Layout
//!
//! - [`validate`]: [`Scenario`], [`load`], [`parse`], [`parse_injection`].
//! - [`action`]: [`Action`] and selectors.
//! - [`resolve`]: selectors to nodes, outbreak onsets.
//! - [`slo`]: thresholds and their evaluation.
//! - [`flags`]: command-line settings validated as scenario values.
//! - [`duration`], [`broker_url`]: small parsers shared with the CLI.

#![warn(missing_docs)]

pub mod action;
pub mod broker_url;
pub mod duration;
mod error;
pub mod flags;
pub mod gateways;
mod raw;
pub mod resolve;
pub mod slo;
pub mod validate;

pub use action::{Action, Group, Limits, NodeSelector, Pick, RogueKind};

/// The fastest a node samples (profile, `sample_rate`, `burst`): a bedside
/// monitor's fastest numeric update is about this.
pub const MIN_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Checks a sampling interval `d`, written `written`, against
/// [`MIN_SAMPLE_INTERVAL`]: the one message for every place that sets one.
pub(crate) fn check_sample_interval(d: std::time::Duration, written: &str) -> Result<(), String> {
    if d < MIN_SAMPLE_INTERVAL {
        return Err(format!(
            "'{written}' is faster than any bedside monitor; expected at least '{}'",
            duration::format(MIN_SAMPLE_INTERVAL)
        ));
    }
    Ok(())
}

/// The largest scenario file read: real ones are a few kilobytes, and the
/// reader must not swallow a mistaken path (a log, `/dev/zero`) whole.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
pub use error::{ScenarioError, ScenarioErrors};
pub use flags::{MeshFlags, from_flags};
pub use raw::RawEntry;
pub use validate::{
    Admissions, BrokerChoice, DEFAULT_VIRTUAL_START_UNIX_S, Illness, NodeProfile, Scenario,
    Scheduled, VirtualModel, load, parse, parse_injection,
};

//! The sensor-node firmware model of vitalmesh: what a wearable or bedside
//! node samples, buffers, sends, drops, and how its patient's vitals evolve.
//!
//! # Promises
//!
//! - **Pure.** No I/O, no sockets, no clock reads, no global RNG. Time comes
//!   in as `now` on every input; randomness comes from per-(seed, node,
//!   purpose) ChaCha8 streams ([`rng`]).
//! - **Deterministic.** The same seed, configuration and input sequence give
//!   byte-identical uplink payloads, on any machine.
//! - **Accounted.** Every sample produced is acknowledged, buffered, dropped
//!   on overflow or lost in a crash — never two of these, never none
//!   ([`ledger::NodeLedger::balances`]).
//!
//! # Layout
//!
//! - [`node`]: the firmware state machine ([`Node`]); start here.
//! - [`physiology`]: the patient (baseline, circadian rhythm, OU noise,
//!   fever and deterioration episodes).
//! - [`sensor`]: device noise, quantisation and fault modes.
//! - [`buffer`]: the byte-bounded store-and-forward buffer and drop policy.
//! - [`flow`]: the congestion window and retransmission timeout.
//! - [`backoff`], [`battery`], [`ledger`], [`rng`].

#![warn(missing_docs)]

pub mod backoff;
pub mod battery;
pub mod buffer;
pub mod flow;
pub mod gateway;
pub mod ledger;
pub mod node;
pub mod physiology;
pub mod rng;
pub mod sensor;

pub use gateway::{
    GatewayCell, GatewayConfig, GatewayLedger, GatewayPower, RelayTransmit, ShortRangeConfig,
};
pub use node::{Link, LinkAction, Node, NodeConfig, NodeStatus, Power, Transmit};
pub use physiology::{PatientOptions, VitalSign};
pub use sensor::{FaultMode, SensorFault};

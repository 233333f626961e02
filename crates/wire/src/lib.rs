//! The bytes that cross the vitalmesh mesh: identifiers, the topic scheme and
//! the message codec.
//!
//! # Promises
//!
//! - **Pure.** No I/O, no clock reads, no randomness. Every function is a
//!   deterministic function of its arguments.
//! - **Decoding untrusted bytes never panics.** [`envelope::open`] returns a
//!   typed [`WireError`] for truncated, oversized, wrong-version, garbage,
//!   semantically invalid, forged, altered or misattributed input. This is checked by property tests
//!   and by the `cargo fuzz` target in `fuzz/`.
//! - **Stable across machines.** The encoding is postcard (its wire format is
//!   documented and stable since 1.0) inside a versioned, sealed envelope;
//!   partitions use a fixed-key hash ([`ids::stable_hash64`]), never `std`'s
//!   per-process random `RandomState`.
//!
//! # Layout
//!
//! - [`ids`]: [`NodeId`], [`AggregatorId`], [`PartitionId`], the partition
//!   function and the fixed-key hash.
//! - [`time`]: [`Timestamp`], microseconds since the Unix epoch.
//! - [`message`]: [`Sample`], [`Batch`], [`AckBatch`], [`AggregatorStatus`],
//!   [`WardReport`] and the [`Body`] that carries one of them.
//! - [`alert`]: scopes, severities and the published alert notice.
//! - [`envelope`]: the versioned, sealed (AES-128-GCM) byte layout.
//! - [`keys`]: the keys and broker credentials, all derived (HKDF) from one
//!   provisioning secret.
//! - [`topic`]: every MQTT topic vitalmesh uses, in one place.
//! - [`seq`]: [`SeqSet`], a compact set of sequence numbers (ranges).

#![warn(missing_docs)]

pub mod alert;
pub mod envelope;
mod error;
mod fast;
pub mod ids;
pub mod keys;
pub mod message;
pub mod seq;
pub mod time;
pub mod topic;

pub use alert::{AlertNotice, Scope, Severity};
pub use envelope::{
    AckKey, DeviceKey, Header, Keyring, NodeCredentials, Principal, ProvisioningSecret, Sealer,
    WIRE_VERSION, decode, open,
};
pub use error::WireError;
pub use ids::{AggregatorId, GatewayId, NodeId, PartitionId, Partitioning};
pub use message::{
    AckBatch, Acvpu, AggregatorState, AggregatorStatus, Batch, Body, FaultFlags, NodeAck,
    PatientBucket, Presence, Relay, Sample, SpO2Scale, VitalSign, Vitals, WardReport,
};
pub use seq::SeqSet;
pub use time::Timestamp;
pub use topic::{TopicScheme, WireTopic};

//! The meaning of a vitalmesh run, pure, and the virtual-time driver.
//!
//! # Promises
//!
//! - **Pure.** No tokio, no sockets, no clock reads, no global RNG, no file
//!   I/O. Time arrives as an argument; randomness comes from the master
//!   seed. The same inputs give the same report, byte for byte.
//! - **One meaning, two drivers.** What a run *is* — the schedule, which
//!   nodes, wards and aggregators an action touches and what it silences,
//!   the ledger, latency accounting, alert scoring against the timeline,
//!   SLOs, the report — lives here ([`Run`], [`Observer`], [`ledger`],
//!   [`report`]). The real-time MQTT shell (`vitalmesh-mesh`) and the
//!   virtual-time driver ([`virtual_time`]) only move bytes and time.
//! - **Every sample accounted for.** The ledger classifies every sequence
//!   number a node produced; anything it cannot explain is counted.
//!
//! # Layout
//!
//! - [`mod@run`]: [`Run`], the schedule and action semantics, commands for
//!   drivers, report assembly; with the bed census and background illness
//!   it plans (`census.rs`).
//! - [`observe`]: the observer (deliveries, latency per ward, alerts,
//!   ownership over time).
//! - [`truth`]: what really happened (episodes, outbreaks, admissions);
//!   [`score`]: every detector judged against it.
//! - [`ledger`], [`report`], [`timeline`], [`snapshot`], [`latency`],
//!   [`health`]: the data a run produces.
//! - [`virtual_time`]: the discrete-event driver with its modelled broker
//!   and network.
//! - [`compare`]: two reports side by side, and thresholds on the change;
//!   [`exposition`]: a snapshot as Prometheus text; [`shard`]: which part
//!   of a run a shard runs, and how the shards' ledgers merge.

#![warn(missing_docs)]

mod census;
pub mod compare;
pub mod experiment;
pub mod exposition;
pub mod health;
pub mod latency;
pub mod ledger;
pub mod merge;
pub mod observe;
pub mod report;
pub mod run;
pub mod score;
pub mod setup;
pub mod shard;
pub mod snapshot;
pub mod timeline;
pub mod truth;
pub mod virtual_time;

pub use health::NodeHealth;
pub use latency::Percentiles;
pub use observe::{AggregatorView, Observer};
pub use report::{Report, RunMode};
pub use run::{Command, GatewayOp, LinkOp, LinkTarget, NodeOp, ReportInputs, Run};
pub use snapshot::{Phase, RatePoint, Seconds, Snapshot, WardState};
pub use timeline::TimelineEntry;

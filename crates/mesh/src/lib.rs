//! The vitalmesh runtime: the thin shell that drives the pure node and
//! aggregator state machines over real MQTT.
//!
//! # Promises
//!
//! - **No domain logic here.** What nodes sample and send, what aggregators
//!   conclude, lives in `vitalmesh-firmware` and `vitalmesh-core`; this crate
//!   moves bytes and time between them and the broker, and measures.
//! - **Nothing is lost silently.** Every sample is accounted for at the end
//!   ([`ledger`]): delivered, still buffered, dropped on overflow, lost in a
//!   crash, or counted as unexplained.
//! - **Latency without coordinated omission.** End-to-end latency runs from
//!   a sample's *intended* time, so a stalled node or runtime shows up in
//!   the histogram instead of hiding.
//!
//! # Layout
//!
//! - [`mod@run`]: the real-time driver of the pure run of `vitalmesh-sim`
//!   ([`Mesh`], [`run()`], [`MeshConfig`]).
//! - [`broker`]: the embedded rumqttd (a supervised child process) or an
//!   external broker.
//! - [`mqtt`]: the device-class MQTT 3.1.1 client.
//! - `node_driver`, `aggregator_driver`: one task per node and aggregator.
//! - [`metrics`]: live counters. The observer, ledger and report are the
//!   pure `vitalmesh-sim`'s, re-exported here as [`ledger`] and [`report`].

pub mod aggregator_driver;
pub mod broker;
pub mod clock;
pub mod control;
mod error;
pub(crate) mod gateway_driver;
pub mod limits;
pub mod metrics;
pub mod mqtt;
pub mod node_driver;
pub mod procfs;
pub mod rogue;
pub mod run;
mod shard_link;

pub use error::MeshError;
pub use node_driver::NodeCommand;
pub use run::{Mesh, MeshCommand, MeshConfig, Outcome, RunControl, ShardPlan, run};
pub use vitalmesh_sim::{Phase, Snapshot, TimelineEntry, ledger, report};

//! A small MQTT 3.1.1 client for simulated devices.
//!
//! Why not rumqttc for the nodes: a simulated node must cost one file
//! descriptor and a few kilobytes (rumqttc measured 28 KB per client here),
//! and network faults must act on each client's real bytes (a partition
//! stalls them, latency delays them), which needs the socket in our hands;
//! rumqttc keeps its `Network` private. The protocol surface a telemetry
//! device needs is small: see [`codec`]. rumqttc is still used where an
//! independent client is the point: the broker canary and the tests.

pub mod codec;
pub mod connection;

pub use codec::{ConnectOptions, QoS, Will};
pub use connection::{Connection, Incoming};

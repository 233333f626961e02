//! A small MQTT 3.1.1 client for simulated devices.
//!
//! Why not rumqttc for the nodes: a simulated node must cost one file
//! descriptor and a few kilobytes (rumqttc measured 28 KB per client here),
//! and network faults must act on each client's real bytes (a partition
//! stalls them, latency delays them), which needs the socket in our hands;
//! rumqttc keeps its `Network` private. The protocol surface a telemetry
//! device needs is small: see [`codec`]. Backoff lives in the firmware
//! model and unacknowledged samples in its buffer, so nothing depends on a
//! client library's reconnect or queueing behaviour. rumqttc stays in the
//! tests as an independent client that reads the mesh's traffic.

pub mod codec;
pub mod connection;
pub mod link;
pub mod tls;

pub use codec::{ConnectOptions, QoS, Will};
pub use connection::{Connection, Incoming};
pub use link::LinkConditions;
pub use tls::{RunCertificates, TlsClient};

//! Live measurements shared between the runtime's tasks: counters, the node
//! health table and lock-sharded HDR histograms (one per node task would
//! cost ~180 KB each: 1.8 GB at 10,000 nodes).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

pub use vitalmesh_sim::NodeHealth;
use vitalmesh_sim::latency::{latency_histogram, record_latency};

/// A histogram many tasks record into: one lock per shard, merged on read.
#[derive(Debug)]
pub struct ShardedHistogram {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl ShardedHistogram {
    /// `shards` independent locks.
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(latency_histogram()))
                .collect(),
        }
    }

    /// Records into the shard picked by `key`.
    pub fn record(&self, key: usize, d: Duration) {
        let shard = &self.shards[key % self.shards.len()];
        record_latency(&mut shard.lock().unwrap_or_else(|p| p.into_inner()), d);
    }

    /// All shards merged.
    pub fn snapshot(&self) -> Histogram<u64> {
        let mut out = latency_histogram();
        for s in &self.shards {
            out.add(&*s.lock().unwrap_or_else(|p| p.into_inner()))
                .expect("same bounds");
        }
        out
    }
}

/// Why an established connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The broker closed the socket.
    ClosedByBroker,
    /// No PINGRESP within the keep-alive.
    KeepAliveTimeout,
    /// The broker sent something that is not valid MQTT for us.
    ProtocolError,
    /// A socket error (reset, broken pipe).
    SocketError,
}

impl DisconnectReason {
    /// Number of reasons.
    pub const COUNT: usize = 4;
    /// Every reason, in index order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::ClosedByBroker,
        Self::KeepAliveTimeout,
        Self::ProtocolError,
        Self::SocketError,
    ];

    /// Classifies a connection error.
    pub fn of(e: &crate::MeshError) -> Self {
        use crate::MeshError as E;
        match e {
            E::ConnectionClosed => Self::ClosedByBroker,
            E::Timeout(_) => Self::KeepAliveTimeout,
            E::Protocol(_) | E::PacketTooLarge { .. } => Self::ProtocolError,
            _ => Self::SocketError,
        }
    }

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClosedByBroker => "closed_by_broker",
            Self::KeepAliveTimeout => "keep_alive_timeout",
            Self::ProtocolError => "protocol_error",
            Self::SocketError => "socket_error",
        }
    }
}

/// Counters every task updates; read by progress and snapshots.
#[derive(Debug)]
pub struct LiveCounters {
    /// Samples taken by nodes.
    pub produced: AtomicU64,
    /// Samples handed to MQTT, counting re-sends.
    pub published: AtomicU64,
    /// PUBACKs received by nodes.
    pub broker_acked: AtomicU64,
    /// Samples released by end-to-end acknowledgements.
    pub e2e_acked: AtomicU64,
    /// Nodes connected now.
    pub connected: AtomicI64,
    /// Most nodes connected at once.
    pub peak_connected: AtomicI64,
    /// Connection attempts.
    pub connect_attempts: AtomicU64,
    /// Connection attempts that failed.
    pub connect_failures: AtomicU64,
    /// Established connections that dropped.
    pub disconnects: AtomicU64,
    /// Why they dropped, indexed by [`DisconnectReason`].
    pub disconnect_reasons: [AtomicU64; DisconnectReason::COUNT],
    /// Samples held in node buffers now.
    pub buffered: AtomicI64,
    /// Samples evicted from full node buffers.
    pub dropped_overflow: AtomicU64,
    /// Samples lost in node crashes.
    pub lost_on_crash: AtomicU64,
    /// Node→broker publish-to-PUBACK latency.
    pub publish_ack_latency: ShardedHistogram,
    health: Vec<AtomicU8>,
}

impl LiveCounters {
    /// Counters for `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Self {
            produced: AtomicU64::new(0),
            published: AtomicU64::new(0),
            broker_acked: AtomicU64::new(0),
            e2e_acked: AtomicU64::new(0),
            connected: AtomicI64::new(0),
            peak_connected: AtomicI64::new(0),
            connect_attempts: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            disconnect_reasons: Default::default(),
            buffered: AtomicI64::new(0),
            dropped_overflow: AtomicU64::new(0),
            lost_on_crash: AtomicU64::new(0),
            publish_ack_latency: ShardedHistogram::new(16),
            health: (0..nodes)
                .map(|_| AtomicU8::new(NodeHealth::Pending as u8))
                .collect(),
        }
    }

    /// Adds one connected node.
    pub fn node_connected(&self) {
        let now = self.connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_connected.fetch_max(now, Ordering::Relaxed);
    }

    /// Sets a node's health.
    pub fn set_health(&self, node: usize, health: NodeHealth) {
        if let Some(h) = self.health.get(node) {
            h.store(health as u8, Ordering::Relaxed);
        }
    }

    /// Every node's health, by node id.
    pub fn health(&self) -> Vec<NodeHealth> {
        self.health
            .iter()
            .map(|h| NodeHealth::from_u8(h.load(Ordering::Relaxed)))
            .collect()
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

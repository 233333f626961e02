//! Alerts: what the aggregators tell the people watching.

use std::time::Duration;

use serde::Serialize;
use vitalmesh_wire::{AggregatorId, NodeId, Timestamp};

use crate::membership::DownReason;
use crate::news2::Risk;
use crate::population::WardId;

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Something recovered or is worth knowing.
    Info,
    /// Needs attention.
    Warning,
    /// Needs attention now.
    Critical,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AlertKind {
    /// A patient's NEWS2 risk escalated and stayed there (persistence filter).
    PatientRisk {
        /// The patient's node.
        node: NodeId,
        /// Its ward.
        ward: WardId,
        /// The persistent risk band reached.
        risk: Risk,
        /// Aggregate NEWS2 (of the known items) of the triggering sample.
        news2: u8,
        /// When that sample was taken.
        sampled_at: Timestamp,
    },
    /// A node went silent (φ-accrual over the threshold).
    NodeDown {
        /// The node.
        node: NodeId,
        /// Its ward.
        ward: WardId,
        /// Its last message.
        last_seen: Timestamp,
    },
    /// A silent node is heard from again.
    NodeUp {
        /// The node.
        node: NodeId,
        /// Its ward.
        ward: WardId,
        /// How long it was reported down.
        down_for: Duration,
    },
    /// An aggregator left, dropped or went silent; its partitions moved.
    AggregatorDown {
        /// The aggregator.
        aggregator: AggregatorId,
        /// The evidence.
        reason: DownReason,
    },
    /// An aggregator is back; partitions rebalance.
    AggregatorUp {
        /// The aggregator.
        aggregator: AggregatorId,
    },
    /// An aggregator cannot hear its own heartbeats through the broker: it
    /// is cut off, so it stops judging nodes and peers (their silence is
    /// its own) until it hears itself again.
    AggregatorIsolated {
        /// The aggregator.
        aggregator: AggregatorId,
        /// When it last heard itself.
        last_heard: Timestamp,
    },
}

impl AlertKind {
    /// The kind's name, as its serde tag spells it (`node_down`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::PatientRisk { .. } => "patient_risk",
            Self::NodeDown { .. } => "node_down",
            Self::NodeUp { .. } => "node_up",
            Self::AggregatorDown { .. } => "aggregator_down",
            Self::AggregatorUp { .. } => "aggregator_up",
            Self::AggregatorIsolated { .. } => "aggregator_isolated",
        }
    }
}

/// An alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// When it was raised.
    pub at: Timestamp,
    /// Who raised it.
    pub raised_by: AggregatorId,
    /// What it is about.
    #[serde(flatten)]
    pub kind: AlertKind,
}

impl Alert {
    /// How urgent it is.
    pub fn severity(&self) -> Severity {
        match self.kind {
            AlertKind::PatientRisk {
                risk: Risk::High, ..
            } => Severity::Critical,
            AlertKind::PatientRisk { .. }
            | AlertKind::NodeDown { .. }
            | AlertKind::AggregatorDown { .. }
            | AlertKind::AggregatorIsolated { .. } => Severity::Warning,
            AlertKind::NodeUp { .. } | AlertKind::AggregatorUp { .. } => Severity::Info,
        }
    }
}

//! What an alert looks like on the wire: the scope and severity every alert
//! has, and [`AlertNotice`], the self-describing message aggregators publish
//! on the alerts topic for whoever watches (a pager, a dashboard,
//! `mosquitto_sub`). The aggregator's own, richer alert type lives in
//! `vitalmesh-core`; a notice is its published form.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{AggregatorId, NodeId, Timestamp, WireError};

/// How urgent an alert is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Something recovered or is worth knowing.
    #[default]
    Info,
    /// Needs attention.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// As shown to people.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// What an alert is about. (Externally tagged, serde's default: postcard
/// cannot decode the internally tagged form.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A patient (the one at the node's bed now).
    Patient {
        /// The bed's node.
        node: NodeId,
        /// Its ward.
        ward: u16,
    },
    /// A device: the node itself, not its patient.
    Node {
        /// The node.
        node: NodeId,
        /// Its ward.
        ward: u16,
    },
    /// A whole ward.
    Ward {
        /// The ward.
        ward: u16,
    },
    /// An aggregator.
    Aggregator {
        /// The aggregator.
        aggregator: AggregatorId,
    },
    /// The broker.
    Broker,
}

impl Scope {
    /// The ward, for scopes inside one.
    pub const fn ward(&self) -> Option<u16> {
        match self {
            Self::Patient { ward, .. } | Self::Node { ward, .. } | Self::Ward { ward } => {
                Some(*ward)
            }
            Self::Aggregator { .. } | Self::Broker => None,
        }
    }

    /// The node, for patient and node scopes.
    pub const fn node(&self) -> Option<NodeId> {
        match self {
            Self::Patient { node, .. } | Self::Node { node, .. } => Some(*node),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Patient { node, ward } => write!(f, "patient at node {} (ward {ward})", node.0),
            Self::Node { node, ward } => write!(f, "node {} (ward {ward})", node.0),
            Self::Ward { ward } => write!(f, "ward {ward}"),
            Self::Aggregator { aggregator } => write!(f, "aggregator {}", aggregator.0),
            Self::Broker => f.write_str("the broker"),
        }
    }
}

/// Longest `kind` of a notice.
pub const MAX_KIND_CHARS: usize = 32;
/// Longest `summary` of a notice.
pub const MAX_SUMMARY_CHARS: usize = 240;

/// An alert as published on the alerts topic: raised, or cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertNotice {
    /// The aggregator that publishes it (and signs it).
    pub aggregator: AggregatorId,
    /// A stable name: `patient_risk`, `ward_anomaly`, `check_sensor`, …
    pub kind: String,
    /// What it is about.
    pub scope: Scope,
    /// How urgent.
    pub severity: Severity,
    /// When it was raised.
    pub raised_at: Timestamp,
    /// When it cleared; `None` while it holds.
    pub cleared_at: Option<Timestamp>,
    /// The statistic that decided it, if one did.
    pub statistic: Option<f64>,
    /// What the statistic was compared with.
    pub threshold: Option<f64>,
    /// The stretch of time the statistic covers.
    pub window: Option<(Timestamp, Timestamp)>,
    /// One line for people.
    pub summary: String,
}

impl AlertNotice {
    pub(crate) fn validate(&self) -> Result<(), WireError> {
        let text = |field: &str, s: &str, max: usize| {
            if s.chars().count() > max {
                Err(WireError::invalid(
                    field,
                    format!(
                        "{} characters; at most {max} are allowed",
                        s.chars().count()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        text("alert.kind", &self.kind, MAX_KIND_CHARS)?;
        text("alert.summary", &self.summary, MAX_SUMMARY_CHARS)?;
        for (field, x) in [
            ("alert.statistic", self.statistic),
            ("alert.threshold", self.threshold),
        ] {
            if x.is_some_and(|x| !x.is_finite()) {
                return Err(WireError::invalid(field, "not a finite number"));
            }
        }
        if self.window.is_some_and(|(a, b)| b < a) {
            return Err(WireError::invalid("alert.window", "ends before it starts"));
        }
        Ok(())
    }
}

//! Alerts: what the aggregators tell the people watching.
//!
//! One type for every alert: a [`AlertKind`] (what was concluded, with the
//! details that belong to that conclusion), a [`Scope`] (patient, node,
//! ward, aggregator or broker), a [`Severity`], when it was raised and by
//! whom, the [`Evidence`] behind it (statistic, threshold, window) and,
//! once it stops holding, when it cleared. An alert's identity is its
//! [`AlertKey`]: raising and clearing are two events of the same key, so a
//! standby promoted to primary can clear what the old primary raised.
//!
//! Aggregators publish every raise and clear on the alerts topic as an
//! [`AlertNotice`] ([`Alert::notice`]); the observer folds them into
//! incidents (`crate::incident`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vitalmesh_wire::{AggregatorId, AlertNotice, NodeId, Timestamp, VitalSign};

pub use vitalmesh_wire::{Scope, Severity};

use crate::detect::{Method, WardSeries};
use crate::membership::DownReason;
use crate::news2::Risk;

/// The statistic behind an alert.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// What was measured (a CUSUM sum, a z-score, a NEWS2 total, a run
    /// length …).
    pub statistic: f64,
    /// What it was compared with.
    pub threshold: f64,
    /// The stretch of sample time it covers.
    pub window: (Timestamp, Timestamp),
}

/// Which sensor check found a fault (`domain-science.md` §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorCheck {
    /// Outside the physiological or device range.
    Impossible,
    /// Isolated outliers against the recent median (Hampel).
    Spike,
    /// The same value for longer than physiology allows.
    Stuck,
    /// A step faster than physiology allows.
    RateOfChange,
    /// Spread far above the patient's own.
    Noise,
    /// A slow one-sign trend the other signs do not share.
    Drift,
    /// Temperature up while heart and respiratory rate stay flat.
    Incoherent,
    /// The device keeps losing the signal.
    Dropout,
}

impl SensorCheck {
    /// Every check, in report order.
    pub const ALL: [Self; 8] = [
        Self::Impossible,
        Self::Spike,
        Self::Stuck,
        Self::RateOfChange,
        Self::Noise,
        Self::Drift,
        Self::Incoherent,
        Self::Dropout,
    ];

    /// The name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Impossible => "impossible",
            Self::Spike => "spike",
            Self::Stuck => "stuck",
            Self::RateOfChange => "rate_of_change",
            Self::Noise => "noise",
            Self::Drift => "drift",
            Self::Incoherent => "incoherent",
            Self::Dropout => "dropout",
        }
    }
}

/// What an alert concludes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AlertKind {
    /// A patient's NEWS2 band held for the persistence time (RCP 2017
    /// Chart 2, "single red 3" included).
    PatientRisk {
        /// The band that held.
        band: Risk,
        /// The lowest decided score over the persistence window: a score
        /// in `band` (for low–medium, one with a red item).
        news2: u8,
    },
    /// A patient drifts away from their own baseline in the direction of
    /// deterioration (per-patient CUSUM), before NEWS2 says so.
    Deterioration,
    /// A sensor is suspect: its readings are kept out of NEWS2 and the
    /// ward counts until it clears.
    CheckSensor {
        /// The sign.
        sign: VitalSign,
        /// The check that found it.
        check: SensorCheck,
    },
    /// A ward's series is out of control.
    WardAnomaly {
        /// The detector's position in the run's list.
        detector: u8,
        /// Its method.
        method: Method,
        /// The series it watches.
        series: WardSeries,
    },
    /// A node went silent (φ-accrual over the threshold).
    NodeDown {
        /// Its last message.
        last_seen: Timestamp,
    },
    /// A node said goodbye and switched off: not a failure.
    NodeLeft,
    /// An aggregator dropped or went silent; its partitions moved.
    AggregatorDown {
        /// The evidence.
        reason: DownReason,
    },
    /// An aggregator said goodbye; its partitions moved.
    AggregatorLeft,
    /// An aggregator cannot hear its own heartbeats through the broker: it
    /// is cut off, so it stops judging nodes and peers (their silence is
    /// its own) until it hears itself again.
    AggregatorIsolated {
        /// When it last heard itself.
        last_heard: Timestamp,
    },
}

impl AlertKind {
    /// The kind's name, as its serde tag spells it (`node_down`, …).
    pub const fn name(&self) -> &'static str {
        match self {
            Self::PatientRisk { .. } => "patient_risk",
            Self::Deterioration => "deterioration",
            Self::CheckSensor { .. } => "check_sensor",
            Self::WardAnomaly { .. } => "ward_anomaly",
            Self::NodeDown { .. } => "node_down",
            Self::NodeLeft => "node_left",
            Self::AggregatorDown { .. } => "aggregator_down",
            Self::AggregatorLeft => "aggregator_left",
            Self::AggregatorIsolated { .. } => "aggregator_isolated",
        }
    }

    /// How urgent a raise of this kind is.
    pub const fn severity(&self) -> Severity {
        match self {
            Self::PatientRisk {
                band: Risk::High, ..
            } => Severity::Critical,
            Self::PatientRisk { .. }
            | Self::Deterioration
            | Self::CheckSensor { .. }
            | Self::WardAnomaly { .. }
            | Self::NodeDown { .. }
            | Self::AggregatorDown { .. }
            | Self::AggregatorIsolated { .. } => Severity::Warning,
            Self::NodeLeft | Self::AggregatorLeft => Severity::Info,
        }
    }
}

/// An alert's identity: two events with the same key are the same alert
/// (raised, then cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlertKey {
    /// The kind's name.
    pub kind: &'static str,
    /// What it is about.
    pub scope: Scope,
    /// What tells two alerts of one kind and scope apart: the sign of a
    /// sensor alert, the detector of a ward alert.
    pub detail: u8,
}

/// An alert, raised or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What it concludes.
    #[serde(flatten)]
    pub kind: AlertKind,
    /// What it is about.
    pub scope: Scope,
    /// How urgent.
    pub severity: Severity,
    /// When it was raised.
    pub raised_at: Timestamp,
    /// Who raised it.
    pub raised_by: AggregatorId,
    /// The statistic behind it, if one decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// When it stopped holding (`None` while it holds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<Timestamp>,
}

impl Alert {
    /// A new alert of `kind` about `scope`, raised at `at` by `by`.
    pub fn raise(kind: AlertKind, scope: Scope, at: Timestamp, by: AggregatorId) -> Self {
        Self {
            severity: kind.severity(),
            kind,
            scope,
            raised_at: at,
            raised_by: by,
            evidence: None,
            cleared_at: None,
        }
    }

    /// With evidence.
    #[must_use]
    pub fn with_evidence(mut self, evidence: Evidence) -> Self {
        self.evidence = Some(evidence);
        self
    }

    /// Its identity.
    pub fn key(&self) -> AlertKey {
        AlertKey {
            kind: self.kind.name(),
            scope: self.scope,
            detail: match self.kind {
                AlertKind::CheckSensor { sign, .. } => sign as u8,
                AlertKind::WardAnomaly { detector, .. } => detector,
                _ => 0,
            },
        }
    }

    /// Whether it still holds.
    pub fn is_active(&self) -> bool {
        self.cleared_at.is_none()
    }

    /// The node it concerns, for patient and node scopes.
    pub fn node(&self) -> Option<NodeId> {
        self.scope.node()
    }

    /// How long it held (`None` while it holds).
    pub fn duration(&self) -> Option<Duration> {
        self.cleared_at
            .map(|c| c.saturating_duration_since(self.raised_at))
    }

    /// Its published form.
    pub fn notice(&self) -> AlertNotice {
        let mut summary = self.to_string();
        if summary.chars().count() > vitalmesh_wire::alert::MAX_SUMMARY_CHARS {
            summary = summary
                .chars()
                .take(vitalmesh_wire::alert::MAX_SUMMARY_CHARS)
                .collect();
        }
        AlertNotice {
            aggregator: self.raised_by,
            kind: self.kind.name().into(),
            scope: self.scope,
            severity: self.severity,
            raised_at: self.raised_at,
            cleared_at: self.cleared_at,
            statistic: self.evidence.map(|e| e.statistic).filter(|x| x.is_finite()),
            threshold: self.evidence.map(|e| e.threshold).filter(|x| x.is_finite()),
            window: self.evidence.map(|e| e.window).filter(|(a, b)| a <= b),
            summary,
        }
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            AlertKind::PatientRisk { band, news2 } => {
                write!(f, "{}: NEWS2 {news2}, {band} risk", self.scope)?
            }
            AlertKind::Deterioration => {
                write!(f, "{}: deteriorating against own baseline", self.scope)?
            }
            AlertKind::CheckSensor { sign, check } => write!(
                f,
                "{}: check the {} sensor ({})",
                self.scope,
                sign.name(),
                check.name()
            )?,
            AlertKind::WardAnomaly { method, series, .. } => write!(
                f,
                "{}: {} above expected ({method})",
                self.scope,
                series.label()
            )?,
            AlertKind::NodeDown { .. } => write!(f, "{} down", self.scope)?,
            AlertKind::NodeLeft => write!(f, "{} left", self.scope)?,
            AlertKind::AggregatorDown { reason } => {
                write!(f, "{} down ({})", self.scope, reason.as_str())?
            }
            AlertKind::AggregatorLeft => write!(f, "{} left", self.scope)?,
            AlertKind::AggregatorIsolated { .. } => {
                write!(f, "{} cut off from the broker", self.scope)?
            }
        }
        if let Some(e) = self.evidence {
            write!(f, " [{:.2} vs {:.2}]", e.statistic, e.threshold)?;
        }
        if self.cleared_at.is_some() {
            f.write_str(" — cleared")?;
        }
        Ok(())
    }
}

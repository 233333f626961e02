//! The timeline: everything done to the mesh on purpose, in order — the
//! ground truth detectors are scored against. A leaf module, so the control
//! socket, the report and both drivers can name it without importing each
//! other.

use serde::{Deserialize, Serialize};

/// Something that happened to the mesh on purpose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Seconds since the nodes started.
    pub at_s: f64,
    /// `event[3]`, `load[0]`, `inject`, `dashboard`, or `scheduled end`.
    pub source: String,
    /// The action's name.
    pub action: String,
    /// What happened, in words.
    pub description: String,
    /// Nodes affected, by id.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub nodes: Vec<u32>,
    /// Wards affected.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub wards: Vec<u16>,
    /// Aggregator affected.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub aggregator: Option<u16>,
    /// Every aggregator affected, when an action touches several
    /// (`add_aggregator`, `remove_aggregator`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub aggregators: Vec<u16>,
    /// For outbreaks: (node, onset in seconds since the nodes started).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub onsets: Vec<(u32, f64)>,
    /// The action as data.
    pub detail: serde_json::Value,
    /// Why it could not be applied, if it could not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

impl TimelineEntry {
    /// An entry with nothing affected yet.
    pub fn new(at_s: f64, source: &str, action: &str, description: String) -> Self {
        Self {
            at_s,
            source: source.into(),
            action: action.into(),
            description,
            nodes: Vec::new(),
            wards: Vec::new(),
            aggregator: None,
            aggregators: Vec::new(),
            onsets: Vec::new(),
            detail: serde_json::Value::Null,
            error: None,
        }
    }

    /// The line a console shows for it: a refused action says so.
    pub fn console_line(&self) -> String {
        match &self.error {
            None => format!(
                "[{:>5.0}s] {}: {}",
                self.at_s, self.source, self.description
            ),
            Some(e) => format!(
                "[{:>5.0}s] {}: refused: {} ({e})",
                self.at_s, self.source, self.description
            ),
        }
    }
}

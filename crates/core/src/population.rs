//! How nodes are grouped into wards.

use std::fmt;

use serde::{Deserialize, Serialize};
use vitalmesh_wire::NodeId;

/// A ward (a group of beds; the unit of outbreak detection and of many
/// faults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WardId(pub u16);

impl fmt::Display for WardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ward {}", self.0)
    }
}

/// The population layout: node ids are assigned ward by ward, so ward `w`
/// holds nodes `w·per_ward .. (w+1)·per_ward`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Population {
    /// Number of wards.
    pub wards: u16,
    /// Nodes per ward.
    pub nodes_per_ward: u32,
}

impl Population {
    /// Total nodes.
    pub fn nodes(&self) -> u32 {
        u32::from(self.wards) * self.nodes_per_ward
    }

    /// The ward of `node`.
    pub fn ward_of(&self, node: NodeId) -> WardId {
        let w = node.0 / self.nodes_per_ward.max(1);
        WardId(w.min(u32::from(self.wards.saturating_sub(1))) as u16)
    }

    /// The nodes of `ward`.
    pub fn nodes_of(&self, ward: WardId) -> impl Iterator<Item = NodeId> {
        let start = u32::from(ward.0) * self.nodes_per_ward;
        (start..start + self.nodes_per_ward).map(NodeId)
    }

    /// Every node.
    pub fn all_nodes(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes()).map(NodeId)
    }
}

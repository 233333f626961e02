//! How nodes are grouped into wards.

use std::fmt;

use serde::{Deserialize, Serialize};
use vitalmesh_wire::{GatewayId, NodeId, PartitionId, Partitioning};

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
///
/// With gateways, each ward's nodes are split into runs of
/// `nodes_per_gateway` consecutive ids, one gateway each (the last one of a
/// ward may serve fewer); gateway ids are assigned ward by ward too. The
/// layout is arithmetic so that every aggregator can tell, without a table,
/// which gateway may relay a node and which partition it is in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Population {
    /// Number of wards.
    pub wards: u16,
    /// Nodes per ward.
    pub nodes_per_ward: u32,
    /// Nodes behind each gateway; 0: every node connects directly.
    #[serde(default)]
    pub nodes_per_gateway: u32,
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

    /// Whether nodes sit behind gateways.
    pub fn has_gateways(&self) -> bool {
        self.nodes_per_gateway > 0
    }

    /// Gateways per ward (0 without gateways).
    pub fn gateways_per_ward(&self) -> u32 {
        if self.nodes_per_gateway == 0 {
            0
        } else {
            self.nodes_per_ward.div_ceil(self.nodes_per_gateway)
        }
    }

    /// Total gateways.
    pub fn gateways(&self) -> u32 {
        u32::from(self.wards) * self.gateways_per_ward()
    }

    /// The gateway `node` talks to, if it is not direct.
    pub fn gateway_of(&self, node: NodeId) -> Option<GatewayId> {
        if self.nodes_per_gateway == 0 || node.0 >= self.nodes() {
            return None;
        }
        let ward = self.ward_of(node);
        let within = node.0 - u32::from(ward.0) * self.nodes_per_ward;
        Some(GatewayId(
            u32::from(ward.0) * self.gateways_per_ward() + within / self.nodes_per_gateway,
        ))
    }

    /// The ward `gateway` serves.
    pub fn ward_of_gateway(&self, gateway: GatewayId) -> WardId {
        WardId((gateway.0 / self.gateways_per_ward().max(1)) as u16)
    }

    /// The nodes behind `gateway`, consecutive ids.
    pub fn nodes_of_gateway(&self, gateway: GatewayId) -> std::ops::Range<u32> {
        let per_ward = self.gateways_per_ward().max(1);
        let ward = gateway.0 / per_ward;
        let start = ward * self.nodes_per_ward + (gateway.0 % per_ward) * self.nodes_per_gateway;
        let ward_end = (ward + 1) * self.nodes_per_ward;
        start.min(ward_end)..(start + self.nodes_per_gateway).min(ward_end)
    }

    /// The gateways of `ward`.
    pub fn gateways_of(&self, ward: WardId) -> impl Iterator<Item = GatewayId> {
        let per_ward = self.gateways_per_ward();
        let start = u32::from(ward.0) * per_ward;
        (start..start + per_ward).map(GatewayId)
    }

    /// The partition `node` publishes in: its own, or its gateway's, which
    /// every node behind that gateway shares.
    pub fn partition_of(&self, node: NodeId, partitioning: Partitioning) -> PartitionId {
        match self.gateway_of(node) {
            Some(g) => partitioning.partition_of_gateway(g),
            None => partitioning.partition_of(node),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_split_each_ward_into_runs_of_consecutive_nodes() {
        let p = Population {
            wards: 3,
            nodes_per_ward: 250,
            nodes_per_gateway: 100,
        };
        assert_eq!(p.gateways_per_ward(), 3);
        assert_eq!(p.gateways(), 9);
        let mut seen = 0;
        for g in (0..p.gateways()).map(GatewayId) {
            let nodes = p.nodes_of_gateway(g);
            assert!(!nodes.is_empty());
            for n in nodes.clone() {
                assert_eq!(p.gateway_of(NodeId(n)), Some(g));
                assert_eq!(p.ward_of(NodeId(n)), p.ward_of_gateway(g));
            }
            seen += nodes.len();
        }
        assert_eq!(seen, 750, "every node behind exactly one gateway");
        // The last gateway of a ward serves the remainder.
        assert_eq!(p.nodes_of_gateway(GatewayId(2)), 200..250);
        assert_eq!(p.nodes_of_gateway(GatewayId(3)), 250..350);
        assert_eq!(p.gateways_of(WardId(1)).collect::<Vec<_>>().len(), 3);
        assert_eq!(p.gateway_of(NodeId(750)), None, "out of range");
    }

    #[test]
    fn a_gateways_nodes_share_its_partition_and_direct_nodes_keep_theirs() {
        let parts = Partitioning::default();
        let direct = Population {
            wards: 2,
            nodes_per_ward: 50,
            nodes_per_gateway: 0,
        };
        let behind = Population {
            nodes_per_gateway: 25,
            ..direct
        };
        for n in (0..100).map(NodeId) {
            assert_eq!(direct.gateway_of(n), None);
            assert_eq!(direct.partition_of(n, parts), parts.partition_of(n));
            let g = behind.gateway_of(n).expect("attached");
            assert_eq!(behind.partition_of(n, parts), parts.partition_of_gateway(g));
        }
    }
}

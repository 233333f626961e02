//! What a dashboard colours a node by: what the node itself knows (the
//! aggregators' verdicts come from alerts). One classification for both
//! drivers.

use serde::Serialize;
use vitalmesh_firmware::{Link, Node, Power};
use vitalmesh_wire::Timestamp;

/// A node's health as the node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum NodeHealth {
    /// Not started yet.
    Pending = 0,
    /// Connected, buffer near empty.
    Healthy = 1,
    /// Holding unacknowledged samples (offline, or acks are slow).
    Buffering = 2,
    /// Not connected (connecting or backing off).
    Offline = 3,
    /// Battery below 15 %.
    LowBattery = 4,
    /// A sensor fault is active (ground truth).
    SensorFault = 5,
    /// Crashed.
    Crashed = 6,
    /// Battery empty.
    Flat = 7,
    /// Stopped at the end of the run.
    Stopped = 8,
    /// Connected, no patient in the bed.
    Empty = 9,
    /// Behind a gateway, out of its radio's range.
    OutOfRange = 10,
}

impl NodeHealth {
    /// The value stored as `v` (`Pending` for anything unknown).
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Healthy,
            2 => Self::Buffering,
            3 => Self::Offline,
            4 => Self::LowBattery,
            5 => Self::SensorFault,
            6 => Self::Crashed,
            7 => Self::Flat,
            8 => Self::Stopped,
            9 => Self::Empty,
            10 => Self::OutOfRange,
            _ => Self::Pending,
        }
    }

    /// Classifies a running node at `now`.
    pub fn of(node: &Node, now: Timestamp) -> Self {
        let s = node.status(now);
        match s.power {
            Power::Crashed => Self::Crashed,
            Power::Flat => Self::Flat,
            Power::Off => Self::Stopped,
            Power::Rebooting { .. } => Self::Offline,
            Power::On if s.battery_pct < vitalmesh_firmware::battery::LOW_BATTERY_PCT => {
                Self::LowBattery
            }
            Power::On if s.sensor_fault => Self::SensorFault,
            Power::On if s.bed_empty && s.link == Link::Online => Self::Empty,
            Power::On if s.link != Link::Online => {
                if s.buffered > 0 {
                    Self::Buffering
                } else {
                    Self::Offline
                }
            }
            // More than a few seconds of samples waiting: acks are not coming.
            Power::On if s.buffered > 5 => Self::Buffering,
            Power::On => Self::Healthy,
        }
    }
}

//! Battery drain: per sample, per transmission (plus per byte) and idle.
//!
//! Costs are model choices in the range of BLE wearables; they matter for
//! relative behaviour (a node that retransmits a lot dies sooner), not as
//! absolute device figures. Mains-powered bedside nodes have no battery.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use vitalmesh_wire::Timestamp;

/// Battery capacity and costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatteryConfig {
    /// Full charge, joules (a 300 mAh 3.7 V cell ≈ 4000 J).
    pub capacity_j: f64,
    /// Initial charge, fraction of capacity.
    pub initial_level: f64,
    /// Cost of taking one sample, millijoules.
    pub sample_mj: f64,
    /// Fixed cost of one radio transmission, millijoules.
    pub transmit_mj: f64,
    /// Extra cost per transmitted byte, microjoules.
    pub per_byte_uj: f64,
    /// Idle draw, milliwatts.
    pub idle_mw: f64,
}

impl Default for BatteryConfig {
    fn default() -> Self {
        Self {
            capacity_j: 4000.0,
            initial_level: 1.0,
            sample_mj: 0.5,
            transmit_mj: 2.0,
            per_byte_uj: 10.0,
            idle_mw: 1.0,
        }
    }
}

/// Level below which samples carry the low-battery flag.
pub const LOW_BATTERY_PCT: u8 = 15;

/// A battery, or mains power.
#[derive(Debug, Clone)]
pub struct Battery {
    config: Option<BatteryConfig>,
    remaining_j: f64,
    idle_since: Option<Timestamp>,
}

impl Battery {
    /// A battery with `config`, or mains power if `None`.
    pub fn new(config: Option<BatteryConfig>) -> Self {
        let remaining_j = config.map_or(f64::INFINITY, |c| {
            c.capacity_j * c.initial_level.clamp(0.0, 1.0)
        });
        Self {
            config,
            remaining_j,
            idle_since: None,
        }
    }

    /// Charge in percent (100 on mains).
    pub fn level_pct(&self) -> u8 {
        match self.config {
            None => 100,
            Some(c) => ((self.remaining_j / c.capacity_j) * 100.0)
                .ceil()
                .clamp(0.0, 100.0) as u8,
        }
    }

    /// Whether the battery is empty.
    pub fn is_flat(&self) -> bool {
        self.remaining_j <= 0.0
    }

    /// Charges idle drain up to `now`.
    pub fn settle(&mut self, now: Timestamp) {
        if let Some(c) = self.config {
            let since = self.idle_since.unwrap_or(now);
            let idle: Duration = now.saturating_duration_since(since);
            self.remaining_j -= c.idle_mw * 1e-3 * idle.as_secs_f64();
        }
        self.idle_since = Some(self.idle_since.map_or(now, |s| s.max(now)));
    }

    /// Charges one sample.
    pub fn charge_sample(&mut self) {
        if let Some(c) = self.config {
            self.remaining_j -= c.sample_mj * 1e-3;
        }
    }

    /// Charges one transmission of `bytes`.
    pub fn charge_transmit(&mut self, bytes: usize) {
        if let Some(c) = self.config {
            self.remaining_j -= c.transmit_mj * 1e-3 + c.per_byte_uj * 1e-6 * bytes as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mains_power_never_drains() {
        let mut b = Battery::new(None);
        b.settle(Timestamp::from_secs(0));
        b.settle(Timestamp::from_secs(10_000_000));
        b.charge_transmit(1_000_000);
        assert_eq!(b.level_pct(), 100);
        assert!(!b.is_flat());
    }

    #[test]
    fn idle_sampling_and_transmission_all_drain() {
        let config = BatteryConfig {
            capacity_j: 1.0,
            ..BatteryConfig::default()
        };
        let mut b = Battery::new(Some(config));
        b.settle(Timestamp::from_secs(0));
        b.settle(Timestamp::from_secs(500)); // 1 mW × 500 s = 0.5 J
        assert_eq!(b.level_pct(), 50);
        for _ in 0..400 {
            b.charge_sample(); // 0.2 J
        }
        assert_eq!(b.level_pct(), 30);
        b.charge_transmit(30_000); // 2 mJ + 0.3 J
        assert!(b.level_pct() <= 1);
        b.charge_transmit(10_000);
        assert!(b.is_flat());
        assert_eq!(b.level_pct(), 0);
    }
}

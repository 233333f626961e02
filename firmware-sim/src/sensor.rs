//! The measuring device: device noise, quantisation and sensor faults.
//!
//! Fault modes follow the taxonomy of Sharma et al. 2010 (SHORT = spike,
//! NOISE, CONSTANT = stuck-at) plus drift and dropout for body sensors
//! (`domain-science.md` §5). Only dropout is visible to the device itself
//! (no signal → no reading and a [`FaultFlags`] bit); stuck-at, drift, spike
//! and noise are *silent*, as they are in real devices. Finding those is the
//! detectors' job, and the simulator keeps the ground truth.
//!
//! [^18]: Pulse-oximeter accuracy per ISO 80601-2-61, FDA 510(k) K212665 summary

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vitalmesh_wire::{FaultFlags, NodeId, Timestamp, Vitals};

use crate::physiology::{PatientProfile, TrueVitals, VitalSign};
use crate::rng::{self, Draw, Purpose};

/// A sensor fault mode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum FaultMode {
    /// The reading freezes: at `value`, or at the last reading if `None`.
    StuckAt {
        /// Frozen value in the sign's unit; `None` holds the last reading.
        value: Option<f64>,
    },
    /// An offset that grows linearly from the fault's start.
    Drift {
        /// Units of the sign per hour (e.g. °C/h).
        per_hour: f64,
    },
    /// Isolated outliers that revert at the next sample.
    Spike {
        /// Chance per sample.
        probability: f64,
        /// Size in the sign's unit; the sign of each spike is random.
        magnitude: f64,
    },
    /// No reading (probe off, lost signal); the device flags it.
    Dropout {
        /// Chance per sample.
        probability: f64,
    },
    /// Device noise inflated by a factor.
    Noise {
        /// Multiplier on the device's noise SD (> 1).
        multiplier: f64,
    },
}

/// A fault on one sign, or on all signs, over a time window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SensorFault {
    /// Affected sign; `None` means every sign.
    pub sign: Option<VitalSign>,
    /// What goes wrong.
    pub mode: FaultMode,
    /// Start.
    pub since: Timestamp,
    /// End, if it heals.
    pub until: Option<Timestamp>,
}

impl SensorFault {
    fn applies(&self, sign: VitalSign, t: Timestamp) -> bool {
        self.sign.is_none_or(|s| s == sign) && t >= self.since && self.until.is_none_or(|u| t < u)
    }
}

/// Device accuracy per sign (model choice from the cited accuracy claims:
/// pulse ±3 bpm and SpO2 ±2 % per ISO 80601-2-61, read as ±2 SD; see the
/// module docs for the source).
const DEVICE_NOISE_SD: [f64; 6] = [1.5, 0.5, 1.0, 0.05, 2.0, 2.0];

const LOST_FLAG: [FaultFlags; 6] = [
    FaultFlags::HEART_RATE_LOST,
    FaultFlags::RESP_RATE_LOST,
    FaultFlags::SPO2_LOST,
    FaultFlags::TEMPERATURE_LOST,
    FaultFlags::BLOOD_PRESSURE_LOST,
    FaultFlags::BLOOD_PRESSURE_LOST,
];

/// One node's measuring device.
#[derive(Debug, Clone)]
pub struct Sensor {
    faults: Vec<SensorFault>,
    /// Last reading per sign, in device units, for stuck-at faults.
    last_reading: [Option<f64>; 6],
    rng: ChaCha8Rng,
}

impl Sensor {
    /// The device of `node` under `seed`.
    pub fn new(seed: u64, node: NodeId) -> Self {
        Self {
            faults: Vec::new(),
            last_reading: [None; 6],
            rng: rng::stream(seed, node, Purpose::Sensor),
        }
    }

    /// Adds a fault.
    pub fn inject(&mut self, fault: SensorFault) {
        self.faults.push(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// Faults active at `t`.
    pub fn active_faults(&self, t: Timestamp) -> impl Iterator<Item = &SensorFault> {
        self.faults
            .iter()
            .filter(move |f| t >= f.since && f.until.is_none_or(|u| t < u))
    }

    /// Measures `truth` at `t`: noise, faults, quantisation.
    pub fn measure(
        &mut self,
        truth: &TrueVitals,
        profile: &PatientProfile,
        t: Timestamp,
    ) -> (Vitals, FaultFlags) {
        // Healed faults are forgotten so the per-sample loop stays short.
        self.faults.retain(|f| f.until.is_none_or(|u| t < u));
        let mut flags = FaultFlags::empty();
        let mut readings = [None; 6];
        for sign in VitalSign::ALL {
            let i = sign.index();
            let mut noise_sd = DEVICE_NOISE_SD[i];
            let mut offset = 0.0;
            let mut stuck = None;
            let mut lost = false;
            for fault in self.faults.iter().filter(|f| f.applies(sign, t)) {
                match fault.mode {
                    FaultMode::Noise { multiplier } => noise_sd *= multiplier.max(0.0),
                    FaultMode::Drift { per_hour } => {
                        offset += per_hour * t.saturating_duration_since(fault.since).as_secs_f64()
                            / 3600.0;
                    }
                    FaultMode::Spike {
                        probability,
                        magnitude,
                    } => {
                        if self.rng.chance(probability) {
                            offset += if self.rng.chance(0.5) {
                                magnitude
                            } else {
                                -magnitude
                            };
                        }
                    }
                    FaultMode::StuckAt { value } => {
                        stuck = Some(value.or(self.last_reading[i]));
                    }
                    FaultMode::Dropout { probability } => lost |= self.rng.chance(probability),
                }
            }
            // Draw the device noise even when unused, so a fault on one sign
            // does not shift the noise of the others.
            let noise = self.rng.normal(0.0, noise_sd);
            if lost {
                flags.insert(LOST_FLAG[i]);
                continue;
            }
            let raw = match stuck {
                Some(Some(frozen)) => frozen,
                _ => truth.values[i] + noise + offset,
            };
            let reading = quantise(sign, raw);
            self.last_reading[i] = Some(reading);
            readings[i] = Some(reading);
        }
        let vitals = Vitals {
            heart_rate: readings[0].map(|v| v as u16),
            resp_rate: readings[1].map(|v| v as u8),
            spo2: readings[2].map(|v| v as u8),
            temp_decicelsius: readings[3].map(|v| round_positive(v * 10.0) as i16),
            systolic: readings[4].map(|v| v as u16),
            diastolic: readings[5].map(|v| v as u16),
            consciousness: Some(truth.consciousness),
            on_oxygen: profile.on_oxygen,
            spo2_scale: profile.spo2_scale,
        };
        (vitals, flags)
    }
}

/// Clips to the device range and rounds to its resolution (0.1 °C for
/// temperature, whole units otherwise).
fn quantise(sign: VitalSign, value: f64) -> f64 {
    let (lo, hi) = sign.device_range();
    let v = value.clamp(lo, hi);
    match sign {
        VitalSign::Temperature => round_positive(v * 10.0) / 10.0,
        _ => round_positive(v),
    }
}

/// Rounds half up. Every device range is positive, so truncating `x + 0.5`
/// is exact, and unlike `f64::round` it compiles to two instructions rather
/// than a libm call on baseline x86-64.
fn round_positive(x: f64) -> f64 {
    debug_assert!(x >= 0.0);
    (x + 0.5) as u64 as f64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::physiology::{PatientOptions, Physiology};

    const T0: Timestamp = Timestamp::from_secs(1_767_225_600);

    fn setup() -> (Physiology, Sensor) {
        (
            Physiology::new(5, NodeId(1), PatientOptions::default(), 0),
            Sensor::new(5, NodeId(1)),
        )
    }

    fn run(p: &mut Physiology, s: &mut Sensor, secs: u64) -> Vec<(Vitals, FaultFlags)> {
        run_from(p, s, 0, secs)
    }

    fn run_from(
        p: &mut Physiology,
        s: &mut Sensor,
        from: u64,
        secs: u64,
    ) -> Vec<(Vitals, FaultFlags)> {
        (from..from + secs)
            .map(|k| {
                let t = T0 + Duration::from_secs(k);
                let truth = p.at(t);
                s.measure(&truth, &p.profile().clone(), t)
            })
            .collect()
    }

    #[test]
    fn readings_are_quantised_and_in_device_range() {
        let (mut p, mut s) = setup();
        for (v, flags) in run(&mut p, &mut s, 600) {
            assert!(flags.is_empty());
            let hr = v.heart_rate.unwrap();
            assert!((20..=250).contains(&hr));
            assert!(v.spo2.unwrap() <= 100);
        }
    }

    #[test]
    fn stuck_at_freezes_the_last_reading_of_one_sign_only() {
        let (mut p, mut s) = setup();
        run(&mut p, &mut s, 10);
        s.inject(SensorFault {
            sign: Some(VitalSign::HeartRate),
            mode: FaultMode::StuckAt { value: None },
            since: T0 + Duration::from_secs(10),
            until: None,
        });
        let out = run_from(&mut p, &mut s, 10, 300);
        let hrs: Vec<u16> = out.iter().map(|(v, _)| v.heart_rate.unwrap()).collect();
        assert!(hrs.windows(2).all(|w| w[0] == w[1]));
        let sbp: std::collections::HashSet<u16> =
            out.iter().map(|(v, _)| v.systolic.unwrap()).collect();
        assert!(sbp.len() > 3, "other signs keep varying");
    }

    #[test]
    fn dropout_removes_readings_and_flags_them() {
        let (mut p, mut s) = setup();
        s.inject(SensorFault {
            sign: Some(VitalSign::SpO2),
            mode: FaultMode::Dropout { probability: 1.0 },
            since: T0,
            until: Some(T0 + Duration::from_secs(5)),
        });
        let out = run(&mut p, &mut s, 10);
        for (k, (v, flags)) in out.iter().enumerate() {
            assert_eq!(v.spo2.is_none(), k < 5, "t={k}");
            assert_eq!(flags.contains(FaultFlags::SPO2_LOST), k < 5);
        }
    }

    #[test]
    fn drift_grows_linearly() {
        let (mut p1, mut s1) = setup();
        let (mut p2, mut s2) = setup();
        s2.inject(SensorFault {
            sign: Some(VitalSign::Temperature),
            mode: FaultMode::Drift { per_hour: 3.6 },
            since: T0,
            until: None,
        });
        let clean = run(&mut p1, &mut s1, 1001);
        let drifted = run(&mut p2, &mut s2, 1001);
        let diff = f64::from(
            drifted[1000].0.temp_decicelsius.unwrap() - clean[1000].0.temp_decicelsius.unwrap(),
        ) / 10.0;
        assert!((diff - 1.0).abs() <= 0.11, "{diff}");
    }

    #[test]
    fn spikes_and_noise_raise_the_spread() {
        let spread = |mode: Option<FaultMode>| {
            let (mut p, mut s) = setup();
            if let Some(mode) = mode {
                s.inject(SensorFault {
                    sign: Some(VitalSign::HeartRate),
                    mode,
                    since: T0,
                    until: None,
                });
            }
            let out = run(&mut p, &mut s, 2000);
            let d: Vec<f64> = out
                .windows(2)
                .map(|w| {
                    f64::from(w[1].0.heart_rate.unwrap()) - f64::from(w[0].0.heart_rate.unwrap())
                })
                .collect();
            (d.iter().map(|x| x * x).sum::<f64>() / d.len() as f64).sqrt()
        };
        let base = spread(None);
        assert!(spread(Some(FaultMode::Noise { multiplier: 5.0 })) > 3.0 * base);
        assert!(
            spread(Some(FaultMode::Spike {
                probability: 0.1,
                magnitude: 40.0
            })) > 3.0 * base
        );
    }
}

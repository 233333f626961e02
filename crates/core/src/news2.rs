//! NEWS2, the Royal College of Physicians' National Early Warning Score 2
//! (2017): the Chart 1 scoring table, the aggregate score and the clinical
//! response bands with their precedence (`domain-science.md` §1).
//!
//! A parameter that is missing, or whose reading is flagged as a sensor fault,
//! is *not* scored as normal: the result is a [`Score`] that knows it is
//! partial, and it never reports a low risk it cannot prove.

use std::fmt;

use serde::{Deserialize, Serialize};
use vitalmesh_wire::{Acvpu, FaultFlags, SpO2Scale, Vitals};

/// The seven NEWS2 parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameter {
    /// Respiration rate.
    RespRate,
    /// SpO2 on the prescribed scale.
    SpO2,
    /// Air or supplemental oxygen.
    AirOrOxygen,
    /// Systolic blood pressure.
    Systolic,
    /// Pulse.
    Pulse,
    /// Consciousness (ACVPU).
    Consciousness,
    /// Temperature.
    Temperature,
}

impl Parameter {
    /// Every parameter, in Chart 1 order.
    pub const ALL: [Self; 7] = [
        Self::RespRate,
        Self::SpO2,
        Self::AirOrOxygen,
        Self::Systolic,
        Self::Pulse,
        Self::Consciousness,
        Self::Temperature,
    ];
}

/// A set of parameters (bit per [`Parameter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct ParameterSet(u8);

impl ParameterSet {
    /// The empty set.
    pub const EMPTY: Self = Self(0);

    /// Adds `p`.
    pub fn insert(&mut self, p: Parameter) {
        self.0 |= 1 << p as u8;
    }

    /// Whether `p` is in the set.
    pub fn contains(self, p: Parameter) -> bool {
        self.0 & (1 << p as u8) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Members, in Chart 1 order.
    pub fn iter(self) -> impl Iterator<Item = Parameter> {
        Parameter::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    /// The parameters whose readings a device flagged as lost.
    pub fn from_device_faults(flags: FaultFlags) -> Self {
        let mut s = Self::EMPTY;
        for (flag, p) in [
            (FaultFlags::RESP_RATE_LOST, Parameter::RespRate),
            (FaultFlags::SPO2_LOST, Parameter::SpO2),
            (FaultFlags::BLOOD_PRESSURE_LOST, Parameter::Systolic),
            (FaultFlags::HEART_RATE_LOST, Parameter::Pulse),
            (FaultFlags::TEMPERATURE_LOST, Parameter::Temperature),
        ] {
            if flags.contains(flag) {
                s.insert(p);
            }
        }
        s
    }
}

impl FromIterator<Parameter> for ParameterSet {
    fn from_iter<I: IntoIterator<Item = Parameter>>(iter: I) -> Self {
        let mut s = Self::EMPTY;
        for p in iter {
            s.insert(p);
        }
        s
    }
}

/// Clinical risk (Chart 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Aggregate 0–4 with no single red score.
    Low,
    /// A score of 3 in a single parameter ("red score").
    LowMedium,
    /// Aggregate 5–6: the key threshold.
    Medium,
    /// Aggregate 7 or more.
    High,
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Low => "low",
            Self::LowMedium => "low-medium",
            Self::Medium => "medium",
            Self::High => "high",
        })
    }
}

/// The clinical response a score triggers (Charts 2 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Aggregate 0: routine monitoring, at least 12-hourly.
    Routine,
    /// Aggregate 1–4: a registered nurse assesses; 4–6-hourly.
    NurseAssessment,
    /// A red score: urgent ward-based response; hourly.
    UrgentWardResponse,
    /// Aggregate 5–6: urgent clinical review; hourly; monitored area.
    UrgentResponse,
    /// Aggregate ≥ 7: emergency assessment by a critical-care team; continuous.
    EmergencyResponse,
}

/// A NEWS2 assessment of one set of vitals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Score {
    /// Item score per parameter, in Chart 1 order; `None` where unusable.
    pub items: [Option<u8>; 7],
    /// Sum of the known items.
    pub known_total: u8,
    /// Parameters that could not be scored.
    pub missing: ParameterSet,
}

impl Score {
    /// Whether all seven parameters were scored.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// The aggregate, if complete.
    pub fn total(&self) -> Option<u8> {
        self.is_complete().then_some(self.known_total)
    }

    fn has_red(&self) -> bool {
        self.items.contains(&Some(3))
    }

    /// The risk band, with the precedence ≥7 High, 5–6 Medium, any single 3
    /// Low–medium, else Low.
    ///
    /// For a partial score this is `Some` only when the known items already
    /// decide it (the missing ones can only add points): that is, High. It is
    /// never a Low the missing readings could contradict.
    pub fn risk(&self) -> Option<Risk> {
        if self.is_complete() || self.known_total >= 7 {
            Some(self.risk_at_least())
        } else {
            None
        }
    }

    /// The lowest risk consistent with the known items: the exact risk when
    /// complete, a floor when partial.
    pub fn risk_at_least(&self) -> Risk {
        match self.known_total {
            7.. => Risk::High,
            5..=6 => Risk::Medium,
            _ if self.has_red() => Risk::LowMedium,
            _ => Risk::Low,
        }
    }

    /// The response the score triggers, if the score is decided.
    pub fn response(&self) -> Option<Response> {
        Some(match self.risk()? {
            Risk::High => Response::EmergencyResponse,
            Risk::Medium => Response::UrgentResponse,
            Risk::LowMedium => Response::UrgentWardResponse,
            Risk::Low if self.known_total == 0 => Response::Routine,
            Risk::Low => Response::NurseAssessment,
        })
    }
}

/// Scores `vitals`. Parameters in `unusable` (device-flagged or
/// detector-suspected readings) count as missing.
pub fn score(vitals: &Vitals, unusable: ParameterSet) -> Score {
    let usable = |p: Parameter| !unusable.contains(p);
    let items = [
        vitals
            .resp_rate
            .filter(|_| usable(Parameter::RespRate))
            .map(resp_rate),
        vitals
            .spo2
            .filter(|_| usable(Parameter::SpO2))
            .map(|s| spo2(s, vitals.spo2_scale, vitals.on_oxygen)),
        usable(Parameter::AirOrOxygen).then_some(if vitals.on_oxygen { 2 } else { 0 }),
        vitals
            .systolic
            .filter(|_| usable(Parameter::Systolic))
            .map(systolic),
        vitals
            .heart_rate
            .filter(|_| usable(Parameter::Pulse))
            .map(pulse),
        vitals
            .consciousness
            .filter(|_| usable(Parameter::Consciousness))
            .map(consciousness),
        vitals
            .temp_decicelsius
            .filter(|_| usable(Parameter::Temperature))
            .map(temperature),
    ];
    let mut missing = ParameterSet::EMPTY;
    for (p, item) in Parameter::ALL.into_iter().zip(items) {
        if item.is_none() {
            missing.insert(p);
        }
    }
    Score {
        items,
        known_total: items.iter().flatten().sum(),
        missing,
    }
}

/// Respiration rate item.
pub const fn resp_rate(rr: u8) -> u8 {
    match rr {
        0..=8 => 3,
        9..=11 => 1,
        12..=20 => 0,
        21..=24 => 2,
        _ => 3,
    }
}

/// SpO2 item on the given scale. On scale 2, high saturations score only
/// while on oxygen (over-oxygenation risk).
pub const fn spo2(spo2: u8, scale: SpO2Scale, on_oxygen: bool) -> u8 {
    match scale {
        SpO2Scale::Scale1 => match spo2 {
            0..=91 => 3,
            92..=93 => 2,
            94..=95 => 1,
            _ => 0,
        },
        SpO2Scale::Scale2 => match (spo2, on_oxygen) {
            (0..=83, _) => 3,
            (84..=85, _) => 2,
            (86..=87, _) => 1,
            (88..=92, _) | (_, false) => 0,
            (93..=94, true) => 1,
            (95..=96, true) => 2,
            (_, true) => 3,
        },
    }
}

/// Systolic blood pressure item.
pub const fn systolic(sbp: u16) -> u8 {
    match sbp {
        0..=90 => 3,
        91..=100 => 2,
        101..=110 => 1,
        111..=219 => 0,
        _ => 3,
    }
}

/// Pulse item.
pub const fn pulse(hr: u16) -> u8 {
    match hr {
        0..=40 => 3,
        41..=50 => 1,
        51..=90 => 0,
        91..=110 => 1,
        111..=130 => 2,
        _ => 3,
    }
}

/// Consciousness item: any new confusion, voice, pain or unresponsive is 3.
pub const fn consciousness(c: Acvpu) -> u8 {
    match c {
        Acvpu::Alert => 0,
        Acvpu::Confusion | Acvpu::Voice | Acvpu::Pain | Acvpu::Unresponsive => 3,
    }
}

/// Temperature item from tenths of a degree (already rounded to 0.1 °C):
/// ≤35.0 → 3; 35.1–36.0 → 1; 36.1–38.0 → 0; 38.1–39.0 → 1; ≥39.1 → 2.
pub const fn temperature(decicelsius: i16) -> u8 {
    match decicelsius {
        i16::MIN..=350 => 3,
        351..=360 => 1,
        361..=380 => 0,
        381..=390 => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn vitals(
        rr: u8,
        spo2: u8,
        scale: u8,
        o2: bool,
        sbp: u16,
        hr: u16,
        c: Acvpu,
        temp: f64,
    ) -> Vitals {
        Vitals {
            heart_rate: Some(hr),
            resp_rate: Some(rr),
            spo2: Some(spo2),
            temp_decicelsius: Some((temp * 10.0).round() as i16),
            systolic: Some(sbp),
            diastolic: Some(70),
            consciousness: Some(c),
            on_oxygen: o2,
            spo2_scale: if scale == 2 {
                SpO2Scale::Scale2
            } else {
                SpO2Scale::Scale1
            },
        }
    }

    /// The ten vectors of `domain-science.md` §1.3, with item scores.
    #[test]
    fn the_ten_reference_vectors() {
        use Acvpu::*;
        let cases: [(Vitals, [u8; 7], u8, Risk); 10] = [
            (
                vitals(16, 98, 1, false, 120, 72, Alert, 37.0),
                [0, 0, 0, 0, 0, 0, 0],
                0,
                Risk::Low,
            ),
            (
                vitals(22, 95, 1, false, 115, 105, Alert, 38.6),
                [2, 1, 0, 0, 1, 0, 1],
                5,
                Risk::Medium,
            ),
            (
                vitals(18, 97, 1, false, 125, 80, Confusion, 37.0),
                [0, 0, 0, 0, 0, 3, 0],
                3,
                Risk::LowMedium,
            ),
            (
                vitals(26, 91, 1, true, 88, 125, Voice, 39.5),
                [3, 3, 2, 3, 2, 3, 2],
                18,
                Risk::High,
            ),
            (
                vitals(20, 90, 2, true, 130, 88, Alert, 36.8),
                [0, 0, 2, 0, 0, 0, 0],
                2,
                Risk::Low,
            ),
            (
                vitals(18, 97, 2, true, 130, 80, Alert, 37.0),
                [0, 3, 2, 0, 0, 0, 0],
                5,
                Risk::Medium,
            ),
            (
                vitals(18, 97, 2, false, 130, 80, Alert, 37.0),
                [0, 0, 0, 0, 0, 0, 0],
                0,
                Risk::Low,
            ),
            (
                vitals(21, 94, 1, false, 110, 91, Alert, 38.1),
                [2, 1, 0, 1, 1, 0, 1],
                6,
                Risk::Medium,
            ),
            (
                vitals(8, 96, 1, false, 220, 131, Alert, 35.0),
                [3, 0, 0, 3, 3, 0, 3],
                12,
                Risk::High,
            ),
            (
                vitals(24, 92, 1, true, 101, 50, Alert, 39.0),
                [2, 2, 2, 1, 1, 0, 1],
                9,
                Risk::High,
            ),
        ];
        for (i, (v, items, total, risk)) in cases.iter().enumerate() {
            let s = score(v, ParameterSet::EMPTY);
            assert_eq!(s.items.map(Option::unwrap), *items, "vector {}", i + 1);
            assert_eq!(s.total(), Some(*total), "vector {}", i + 1);
            assert_eq!(s.risk(), Some(*risk), "vector {}", i + 1);
        }
    }

    #[test]
    fn boundary_pairs() {
        for (a, b, sa, sb) in [(8, 9, 3, 1), (11, 12, 1, 0), (20, 21, 0, 2), (24, 25, 2, 3)] {
            assert_eq!((resp_rate(a), resp_rate(b)), (sa, sb), "RR {a}/{b}");
        }
        for (a, b, sa, sb) in [
            (40, 41, 3, 1),
            (50, 51, 1, 0),
            (90, 91, 0, 1),
            (110, 111, 1, 2),
            (130, 131, 2, 3),
        ] {
            assert_eq!((pulse(a), pulse(b)), (sa, sb), "HR {a}/{b}");
        }
        for (a, b, sa, sb) in [
            (90, 91, 3, 2),
            (100, 101, 2, 1),
            (110, 111, 1, 0),
            (219, 220, 0, 3),
        ] {
            assert_eq!((systolic(a), systolic(b)), (sa, sb), "SBP {a}/{b}");
        }
        for (a, b, sa, sb) in [
            (350, 351, 3, 1),
            (360, 361, 1, 0),
            (380, 381, 0, 1),
            (390, 391, 1, 2),
        ] {
            assert_eq!((temperature(a), temperature(b)), (sa, sb), "T {a}/{b}");
        }
        for (a, b, sa, sb) in [(91, 92, 3, 2), (93, 94, 2, 1), (95, 96, 1, 0)] {
            let s = |x| spo2(x, SpO2Scale::Scale1, false);
            assert_eq!((s(a), s(b)), (sa, sb), "SpO2 scale 1 {a}/{b}");
        }
        for (a, b, sa, sb) in [
            (83, 84, 3, 2),
            (85, 86, 2, 1),
            (87, 88, 1, 0),
            (92, 93, 0, 1),
            (94, 95, 1, 2),
            (96, 97, 2, 3),
        ] {
            let s = |x| spo2(x, SpO2Scale::Scale2, true);
            assert_eq!((s(a), s(b)), (sa, sb), "SpO2 scale 2 on O2 {a}/{b}");
        }
        for x in 88..=100 {
            assert_eq!(spo2(x, SpO2Scale::Scale2, false), 0, "scale 2 on air, {x}");
        }
    }

    #[test]
    fn a_missing_reading_never_yields_a_low_score() {
        let mut v = vitals(16, 98, 1, false, 120, 72, Acvpu::Alert, 37.0);
        v.heart_rate = None;
        let s = score(&v, ParameterSet::EMPTY);
        assert!(!s.is_complete());
        assert_eq!(s.total(), None);
        assert_eq!(s.risk(), None, "a partial score must not claim low risk");
        assert_eq!(s.response(), None);
        assert_eq!(s.missing.iter().collect::<Vec<_>>(), [Parameter::Pulse]);
    }

    #[test]
    fn fault_flagged_readings_are_excluded_even_if_present() {
        let v = vitals(16, 80, 1, false, 120, 72, Acvpu::Alert, 37.0);
        let flagged = ParameterSet::from_device_faults(FaultFlags::SPO2_LOST);
        let s = score(&v, flagged);
        assert_eq!(s.items[1], None);
        assert_eq!(s.known_total, 0, "the suspect SpO2 of 80 % is not scored");
        assert_eq!(s.risk(), None);
    }

    #[test]
    fn a_partial_score_that_is_already_high_is_reported_high() {
        let mut v = vitals(26, 91, 1, true, 88, 125, Acvpu::Voice, 39.5);
        v.temp_decicelsius = None;
        let s = score(&v, ParameterSet::EMPTY);
        assert_eq!(s.risk(), Some(Risk::High));
        assert_eq!(s.response(), Some(Response::EmergencyResponse));
    }

    #[test]
    fn the_floor_of_a_partial_score_uses_the_same_precedence() {
        let mut v = vitals(18, 97, 1, false, 125, 80, Acvpu::Confusion, 37.0);
        v.systolic = None;
        let s = score(&v, ParameterSet::EMPTY);
        assert_eq!(s.risk(), None);
        assert_eq!(s.risk_at_least(), Risk::LowMedium);
    }

    #[test]
    fn responses_follow_the_bands() {
        let r = |v: Vitals| score(&v, ParameterSet::EMPTY).response().unwrap();
        assert_eq!(
            r(vitals(16, 98, 1, false, 120, 72, Acvpu::Alert, 37.0)),
            Response::Routine
        );
        assert_eq!(
            r(vitals(20, 90, 2, true, 130, 88, Acvpu::Alert, 36.8)),
            Response::NurseAssessment
        );
        assert_eq!(
            r(vitals(18, 97, 1, false, 125, 80, Acvpu::Confusion, 37.0)),
            Response::UrgentWardResponse
        );
        assert_eq!(
            r(vitals(22, 95, 1, false, 115, 105, Acvpu::Alert, 38.6)),
            Response::UrgentResponse
        );
    }
}

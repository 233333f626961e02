//! A patient's true vital signs over time.
//!
//! Per vital sign: `value(t) = baseline + circadian(t) + OU(t) + episode(t)`,
//! clipped to physiological bounds. Device noise and quantisation are added
//! later by [`crate::sensor`]. Parameters follow `domain-science.md` §3
//! (sources cited per item below); everything marked *model choice* is ours.
//!
//! | Sign  | Baseline draw                  | Circadian                               | OU σ, τ          |
//! |-------|--------------------------------|-----------------------------------------|------------------|
//! | HR    | N(72, 10²) clipped 50–100 [^13] | ±5 % cosine, trough 05:00 [^15]          | 3 bpm, 2 min     |
//! | RR    | N(16, 2²) clipped 12–20        | none                                    | 1.5 /min, 5 min  |
//! | SpO2  | N(97.5, 1²) ≤ 100 [^20]         | none                                    | 0.7 %, 1 min     |
//! | Temp  | N(36.8, 0.4²) [^14]             | ±0.25 °C, nadir 06:00, peak 18:00 [^14]  | 0.05 °C, 30 min  |
//! | SBP   | N(120, 12²) [^13][^20]           | ±5 %, trough 03:00 (≈10 % night dip)    | 5 mmHg, 10 min   |
//! | DBP   | N(75, 8²)                      | as SBP                                  | 4 mmHg, 10 min   |
//!
//! The OU (Ornstein–Uhlenbeck) term is sampled exactly at arbitrary time
//! steps: `x' = x·a + σ·√(1−a²)·z` with `a = exp(−Δt/τ)`, so its stationary SD
//! is σ whatever the sample rate.
//!
//! Episodes:
//! - **Fever** ([`FeverEpisode`]): logistic rise of +1.0 to +2.5 °C over 1–3 h,
//!   lasting 1–3 days (model choice). Heart rate rises 8–10 bpm/°C
//!   (+8.5 bpm/°C in Karjalainen & Viitasalo 1986 [^19]; +7.2 in Jensen et al.
//!   2019 [^21]) and respiration 1.4 /min/°C [^21], with per-patient jitter. The
//!   circadian rhythm persists during fever [^43].
//! - **Deterioration** ([`DeteriorationEpisode`]): over a 6–12 h ramp each
//!   sign moves linearly from the patient's own baseline to a target in
//!   NEWS2's upper bands (RR 26 /min, HR 115 bpm, SBP 95 mmHg, SpO2 92 %, or
//!   85 % on scale 2), with new confusion over the last quarter. From an
//!   average baseline that is about RR +1 /h, HR +4 /h, SBP −3 mmHg/h,
//!   SpO2 −0.6 %/h, close to the §3.2 rates; fixing targets rather than rates
//!   makes NEWS2 pass 5 around mid-ramp and 7 before the end *whatever the
//!   baseline* (with fixed rates a patient with a low baseline can plateau at
//!   5–6). Model choice.
//!
//! Reference numbers are those of `domain-science.md`.
//!
//! [^13]: AHA, heart rate: <https://www.heart.org/en/health-topics/high-blood-pressure/the-facts-about-high-blood-pressure/all-about-heart-rate-pulse>; ACC/AHA 2017 BP guideline, <https://doi.org/10.1161/HYP.0000000000000065>
//! [^14]: Mackowiak et al., JAMA 1992;268:1578–80, <https://doi.org/10.1001/jama.1992.03490120092034>
//! [^15]: Speed et al., PLOS Digit Health 2023, <https://doi.org/10.1371/journal.pdig.0000236>
//! [^19]: Karjalainen & Viitasalo, Fever and cardiac rhythm, Arch Intern Med 1986
//! [^20]: Synthea `biometrics.yml`, <https://github.com/synthetichealth/synthea>
//! [^21]: Jensen et al., Acute Med 2019, doi:10.52964/amja.0766
//! [^43]: Del Bene, Temperature, in Clinical Methods (3rd ed., 1990), ch. 218

use std::f64::consts::TAU;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vitalmesh_wire::{Acvpu, NodeId, SpO2Scale, Timestamp};

use crate::rng::{self, Draw, Purpose};

pub use vitalmesh_wire::VitalSign;

/// True (noise-free, unquantised) vital signs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrueVitals {
    /// Indexed by [`VitalSign::index`].
    pub values: [f64; 6],
    /// Level of consciousness.
    pub consciousness: Acvpu,
}

impl TrueVitals {
    /// The value of one sign.
    pub fn get(&self, sign: VitalSign) -> f64 {
        self.values[sign.index()]
    }
}

/// What a patient is like: drawn once per node.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientProfile {
    /// Resting baseline per sign.
    pub baseline: [f64; 6],
    /// Shift of the circadian clock, hours (chronotype; model choice N(0, 0.5²)).
    pub circadian_shift_h: f64,
    /// Fever coupling of heart rate, bpm per °C.
    pub fever_hr_per_c: f64,
    /// Fever coupling of respiration, breaths/min per °C.
    pub fever_rr_per_c: f64,
    /// On supplemental oxygen.
    pub on_oxygen: bool,
    /// Prescribed SpO2 scale.
    pub spo2_scale: SpO2Scale,
}

/// Clinical facts about a patient that the population, not chance, decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientOptions {
    /// On supplemental oxygen.
    pub on_oxygen: bool,
    /// Hypercapnic respiratory failure: NEWS2 SpO2 scale 2, target 88–92 %.
    pub spo2_scale2: bool,
}

impl PatientOptions {
    /// Decides, reproducibly from `(seed, node, admission)`, whether a
    /// patient is on oxygen and on SpO2 scale 2, given the population's
    /// shares.
    pub fn assign(
        seed: u64,
        node: NodeId,
        admission: u32,
        oxygen_share: f64,
        scale2_share: f64,
    ) -> Self {
        let mut rng = rng::patient_stream(seed, node, admission, Purpose::Scenario);
        Self {
            on_oxygen: rng.chance(oxygen_share),
            spo2_scale2: rng.chance(scale2_share),
        }
    }
}

impl PatientProfile {
    /// The profile of the `admission`-th patient at `node`'s bed: the one
    /// [`Physiology::admitted`] draws, without the rest of the model (the
    /// run needs a patient's baseline temperature to plan a fever).
    pub fn of(seed: u64, node: NodeId, admission: u32, options: PatientOptions) -> Self {
        let mut rng = rng::patient_stream(seed, node, admission, Purpose::Physiology);
        Self::draw(&mut rng, options)
    }

    /// Draws a patient.
    pub fn draw(rng: &mut ChaCha8Rng, options: PatientOptions) -> Self {
        let spo2 = if options.spo2_scale2 {
            rng.normal(90.0, 1.5).clamp(88.0, 92.0)
        } else {
            rng.normal(97.5, 1.0).clamp(95.0, 100.0)
        };
        let baseline = [
            rng.normal(72.0, 10.0).clamp(50.0, 100.0),
            rng.normal(16.0, 2.0).clamp(12.0, 20.0),
            spo2,
            rng.normal(36.8, 0.4).clamp(35.8, 37.6),
            rng.normal(120.0, 12.0).clamp(95.0, 160.0),
            rng.normal(75.0, 8.0).clamp(55.0, 100.0),
        ];
        Self {
            baseline,
            circadian_shift_h: rng.normal(0.0, 0.5).clamp(-1.5, 1.5),
            fever_hr_per_c: rng.uniform(8.0, 10.0),
            fever_rr_per_c: rng.normal(1.4, 0.15).clamp(1.0, 1.8),
            on_oxygen: options.on_oxygen,
            spo2_scale: if options.spo2_scale2 {
                SpO2Scale::Scale2
            } else {
                SpO2Scale::Scale1
            },
        }
    }
}

/// How one sign follows the clock.
#[derive(Debug, Clone, Copy)]
enum Circadian {
    None,
    /// `baseline × (1 + amplitude·cos(θ − θpeak))`.
    Relative {
        amplitude: f64,
        peak_hour: f64,
    },
    /// `baseline + amplitude·cos(θ − θpeak)`.
    Absolute {
        amplitude: f64,
        peak_hour: f64,
    },
}

/// Per-sign model constants (see the table in the module docs).
struct SignModel {
    circadian: Circadian,
    ou_sd: f64,
    ou_tau_s: f64,
    /// Physiological clip bounds.
    bounds: (f64, f64),
}

const MODELS: [SignModel; 6] = [
    SignModel {
        circadian: Circadian::Relative {
            amplitude: 0.05,
            peak_hour: 17.0,
        },
        ou_sd: 3.0,
        ou_tau_s: 120.0,
        bounds: (25.0, 220.0),
    },
    SignModel {
        circadian: Circadian::None,
        ou_sd: 1.5,
        ou_tau_s: 300.0,
        bounds: (4.0, 60.0),
    },
    SignModel {
        circadian: Circadian::None,
        ou_sd: 0.7,
        ou_tau_s: 60.0,
        bounds: (60.0, 100.0),
    },
    SignModel {
        circadian: Circadian::Absolute {
            amplitude: 0.25,
            peak_hour: 18.0,
        },
        ou_sd: 0.05,
        ou_tau_s: 1800.0,
        bounds: (33.0, 42.5),
    },
    SignModel {
        circadian: Circadian::Relative {
            amplitude: 0.05,
            peak_hour: 15.0,
        },
        ou_sd: 5.0,
        ou_tau_s: 600.0,
        bounds: (50.0, 250.0),
    },
    SignModel {
        circadian: Circadian::Relative {
            amplitude: 0.05,
            peak_hour: 15.0,
        },
        ou_sd: 4.0,
        ou_tau_s: 600.0,
        bounds: (30.0, 150.0),
    },
];

/// An exactly discretised Ornstein–Uhlenbeck process with mean 0.
#[derive(Debug, Clone)]
struct Ou {
    sd: f64,
    tau_s: f64,
    x: f64,
    /// `(Δt, a, σ√(1−a²))` for the last step size: nodes sample at a fixed
    /// rate, so `exp` runs once per rate change rather than per sample.
    cached: (f64, f64, f64),
}

impl Ou {
    fn new(sd: f64, tau_s: f64, rng: &mut ChaCha8Rng) -> Self {
        Self {
            sd,
            tau_s,
            x: rng.normal(0.0, sd),
            cached: (f64::NAN, 0.0, 0.0),
        }
    }

    fn step(&mut self, dt_s: f64, rng: &mut ChaCha8Rng) -> f64 {
        if dt_s > 0.0 {
            if dt_s != self.cached.0 {
                let a = (-dt_s / self.tau_s).exp();
                self.cached = (dt_s, a, self.sd * (1.0 - a * a).sqrt());
            }
            let (_, a, innovation_sd) = self.cached;
            self.x = self.x * a + rng.normal(0.0, innovation_sd);
        }
        self.x
    }
}

/// A fever: a logistic rise to `peak_rise_c`, a plateau, a logistic fall.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeverEpisode {
    /// When the temperature starts to rise.
    pub onset: Timestamp,
    /// Temperature rise at the plateau, °C.
    pub peak_rise_c: f64,
    /// 10 %→90 % rise time.
    pub rise: Duration,
    /// Time at the plateau.
    pub plateau: Duration,
    /// 90 %→10 % fall time (defervescence).
    pub fall: Duration,
}

impl FeverEpisode {
    /// Lowest plateau temperature of a drawn fever, °C: a fever is febrile by
    /// definition, even at the circadian nadir (model choice).
    pub const MIN_PEAK_C: f64 = 38.5;

    /// Draws a fever starting at `onset` (`domain-science.md` §3.2):
    /// +1.0–2.5 °C but at least up to [`Self::MIN_PEAK_C`] from
    /// `baseline_c`, rise 1–3 h, lasting 1–3 days, falling over 2–6 h.
    pub fn draw(onset: Timestamp, baseline_c: f64, rng: &mut ChaCha8Rng) -> Self {
        Self {
            onset,
            peak_rise_c: rng.uniform(1.0, 2.5).max(Self::MIN_PEAK_C - baseline_c),
            rise: Duration::from_secs_f64(rng.uniform(1.0, 3.0) * 3600.0),
            plateau: Duration::from_secs_f64(rng.uniform(1.0, 3.0) * 86_400.0),
            fall: Duration::from_secs_f64(rng.uniform(2.0, 6.0) * 3600.0),
        }
    }

    /// Temperature offset at `t`, °C.
    ///
    /// Two logistics: the rise is centred at `onset + rise` (so the offset is
    /// about 1 % of the peak at onset and goes 10 %→90 % over `rise`), the
    /// fall is centred `plateau` later and takes `fall` from 90 % to 10 %.
    pub fn offset_c(&self, t: Timestamp) -> f64 {
        if t < self.onset {
            return 0.0;
        }
        let since = t.saturating_duration_since(self.onset).as_secs_f64();
        let rise = self.rise.as_secs_f64().max(1.0);
        let fall = self.fall.as_secs_f64().max(1.0);
        // A logistic goes from 10 % to 90 % over 2·ln 9 ≈ 4.394 scale units.
        let up = logistic((since - rise) / (rise / 4.394));
        let down = logistic((since - rise - self.plateau.as_secs_f64()) / (fall / 4.394));
        self.peak_rise_c * up * (1.0 - down)
    }

    /// When the episode is over (offset about 1 % of the peak).
    pub fn end(&self) -> Timestamp {
        self.onset + self.rise + self.plateau + self.fall + self.fall
    }
}

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Slow deterioration toward NEWS2 ≥ 5 and then ≥ 7.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeteriorationEpisode {
    /// When the decline starts.
    pub onset: Timestamp,
    /// How long the decline lasts before it plateaus (6–12 h by default).
    pub ramp: Duration,
}

impl DeteriorationEpisode {
    /// Where each sign ends up, indexed by [`VitalSign::index`] (`None`: the
    /// sign is left alone). SpO2 is for scale 1; see [`Self::SPO2_TARGET_SCALE2`].
    pub const TARGETS: [Option<f64>; 6] = [
        Some(115.0),
        Some(26.0),
        Some(92.0),
        None,
        Some(95.0),
        Some(58.0),
    ];
    /// SpO2 target for scale-2 patients, whose baseline is 88–92 %.
    pub const SPO2_TARGET_SCALE2: f64 = 85.0;
    /// New confusion appears after this share of the ramp.
    pub const CONFUSION_AFTER: f64 = 0.75;

    /// Draws a deterioration starting at `onset`, ramp 6–12 h.
    pub fn draw(onset: Timestamp, rng: &mut ChaCha8Rng) -> Self {
        Self {
            onset,
            ramp: Duration::from_secs_f64(rng.uniform(6.0, 12.0) * 3600.0),
        }
    }

    /// Share of the ramp done at `t`: 0 before onset, 1 after the ramp.
    pub fn progress(&self, t: Timestamp) -> f64 {
        if t < self.onset {
            return 0.0;
        }
        let ramp = self.ramp.as_secs_f64().max(1.0);
        (t.saturating_duration_since(self.onset).as_secs_f64() / ramp).min(1.0)
    }

    fn confused(&self, t: Timestamp) -> bool {
        t >= self.onset && self.progress(t) >= Self::CONFUSION_AFTER
    }
}

/// A health event in a patient's course.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Episode {
    /// A fever.
    Fever(FeverEpisode),
    /// Slow deterioration.
    Deterioration(DeteriorationEpisode),
}

/// One patient's physiology, advanced by the caller's clock.
#[derive(Debug, Clone)]
pub struct Physiology {
    profile: PatientProfile,
    ou: [Ou; 6],
    /// `(cos, sin)` of each sign's circadian peak angle, including the
    /// patient's chronotype shift, so a sample costs one `sin_cos`.
    peaks: [(f64, f64); 6],
    last: Option<Timestamp>,
    episodes: Vec<Episode>,
    rng: ChaCha8Rng,
    utc_offset_s: i64,
    /// `(local minute of day, sin θ, cos θ)` of the last call. The rhythm is
    /// evaluated once per minute: it moves by less than 0.02 bpm or 0.002 °C
    /// in a minute, far below device resolution, and `sin_cos` per sample
    /// would cost more than the rest of the model.
    clock: (i64, f64, f64),
}

impl Physiology {
    /// The first patient of `node` under `seed`.
    pub fn new(seed: u64, node: NodeId, options: PatientOptions, utc_offset_s: i64) -> Self {
        Self::admitted(seed, node, 0, options, utc_offset_s)
    }

    /// The `admission`-th patient at `node`'s bed under `seed`.
    pub fn admitted(
        seed: u64,
        node: NodeId,
        admission: u32,
        options: PatientOptions,
        utc_offset_s: i64,
    ) -> Self {
        let mut rng = rng::patient_stream(seed, node, admission, Purpose::Physiology);
        let profile = PatientProfile::draw(&mut rng, options);
        let ou = std::array::from_fn(|i| Ou::new(MODELS[i].ou_sd, MODELS[i].ou_tau_s, &mut rng));
        let peaks = std::array::from_fn(|i| match MODELS[i].circadian {
            Circadian::None => (1.0, 0.0),
            Circadian::Relative { peak_hour, .. } | Circadian::Absolute { peak_hour, .. } => {
                let angle = (peak_hour + profile.circadian_shift_h) / 24.0 * TAU;
                (angle.cos(), angle.sin())
            }
        });
        Self {
            profile,
            ou,
            peaks,
            last: None,
            episodes: Vec::new(),
            rng,
            utc_offset_s,
            clock: (-1, 0.0, 1.0),
        }
    }

    /// The patient's profile.
    pub fn profile(&self) -> &PatientProfile {
        &self.profile
    }

    /// Active and scheduled episodes.
    pub fn episodes(&self) -> &[Episode] {
        &self.episodes
    }

    /// Adds an episode (it may start in the future).
    pub fn add_episode(&mut self, episode: Episode) {
        self.episodes.push(episode);
    }

    /// The true vital signs at `t`. Calls must come in non-decreasing `t`;
    /// an earlier `t` is treated as no time passing.
    pub fn at(&mut self, t: Timestamp) -> TrueVitals {
        let dt_s = match self.last {
            Some(last) => t.saturating_duration_since(last).as_secs_f64(),
            None => 0.0,
        };
        self.last = Some(self.last.map_or(t, |last| last.max(t)));

        let local_s = (t.as_micros() / 1_000_000) as i64 + self.utc_offset_s;
        let minute = local_s.rem_euclid(86_400) / 60;
        if minute != self.clock.0 {
            let (sin, cos) = (minute as f64 / 1440.0 * TAU).sin_cos();
            self.clock = (minute, sin, cos);
        }
        let (_, sin_t, cos_t) = self.clock;

        let mut values = [0.0; 6];
        for (i, value) in values.iter_mut().enumerate() {
            let base = self.profile.baseline[i];
            let (cos_p, sin_p) = self.peaks[i];
            let wave = cos_t * cos_p + sin_t * sin_p;
            let circadian = match MODELS[i].circadian {
                Circadian::None => 0.0,
                Circadian::Relative { amplitude, .. } => base * amplitude * wave,
                Circadian::Absolute { amplitude, .. } => amplitude * wave,
            };
            *value = base + circadian + self.ou[i].step(dt_s, &mut self.rng);
        }

        let mut consciousness = Acvpu::Alert;
        for episode in &self.episodes {
            match episode {
                Episode::Fever(f) => {
                    let dt = f.offset_c(t);
                    values[VitalSign::Temperature.index()] += dt;
                    values[VitalSign::HeartRate.index()] += self.profile.fever_hr_per_c * dt;
                    values[VitalSign::RespRate.index()] += self.profile.fever_rr_per_c * dt;
                }
                Episode::Deterioration(d) => {
                    let progress = d.progress(t);
                    for (i, target) in DeteriorationEpisode::TARGETS.iter().enumerate() {
                        let target = match (VitalSign::ALL[i], self.profile.spo2_scale) {
                            (VitalSign::SpO2, SpO2Scale::Scale2) => {
                                Some(DeteriorationEpisode::SPO2_TARGET_SCALE2)
                            }
                            _ => *target,
                        };
                        if let Some(target) = target {
                            values[i] += progress * (target - self.profile.baseline[i]);
                        }
                    }
                    if d.confused(t) {
                        consciousness = Acvpu::Confusion;
                    }
                }
            }
        }

        for (i, value) in values.iter_mut().enumerate() {
            let (lo, hi) = MODELS[i].bounds;
            *value = value.clamp(lo, hi);
        }
        // Keep a physiological pulse pressure.
        let sbp = values[VitalSign::Systolic.index()];
        let dbp = &mut values[VitalSign::Diastolic.index()];
        *dbp = dbp.min(sbp - 15.0);

        TrueVitals {
            values,
            consciousness,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY0: Timestamp = Timestamp::from_secs(1_767_225_600); // 2026-01-01 00:00 UTC

    fn patient(node: u32) -> Physiology {
        Physiology::new(99, NodeId(node), PatientOptions::default(), 0)
    }

    /// Mean of a sign at a given hour across many patients and days.
    fn mean_at_hour(sign: VitalSign, hour: u64) -> f64 {
        let mut sum = 0.0;
        let mut n = 0.0;
        for node in 0..200 {
            let mut p = patient(node);
            for day in 0..3 {
                let t = DAY0 + Duration::from_secs(day * 86_400 + hour * 3600);
                sum += p.at(t).get(sign);
                n += 1.0;
            }
        }
        sum / n
    }

    #[test]
    fn population_means_match_the_cited_baselines() {
        let hr = mean_at_hour(VitalSign::HeartRate, 11);
        let temp = mean_at_hour(VitalSign::Temperature, 12);
        let spo2 = mean_at_hour(VitalSign::SpO2, 12);
        assert!((hr - 72.0).abs() < 3.0, "hr {hr}");
        assert!((temp - 36.8).abs() < 0.15, "temp {temp}");
        assert!((spo2 - 97.5).abs() < 0.5, "spo2 {spo2}");
    }

    #[test]
    fn circadian_rhythm_has_the_cited_phase() {
        // Temperature: nadir ~06:00 below peak ~18:00 by about 2 × 0.25 °C.
        let swing =
            mean_at_hour(VitalSign::Temperature, 18) - mean_at_hour(VitalSign::Temperature, 6);
        assert!((0.3..0.7).contains(&swing), "temperature swing {swing}");
        // Heart rate: trough in the early morning, roughly ±5 %.
        let hr_swing =
            mean_at_hour(VitalSign::HeartRate, 17) - mean_at_hour(VitalSign::HeartRate, 5);
        assert!(
            (4.0..11.0).contains(&hr_swing),
            "heart-rate swing {hr_swing}"
        );
        // Blood pressure dips about 10 % at night.
        let day = mean_at_hour(VitalSign::Systolic, 15);
        let night = mean_at_hour(VitalSign::Systolic, 3);
        assert!(
            (0.85..0.95).contains(&(night / day)),
            "night/day {}",
            night / day
        );
    }

    #[test]
    fn ou_noise_has_its_stationary_sd_at_any_sample_rate() {
        for step_s in [1, 60] {
            let mut p = patient(5);
            let mut xs = Vec::new();
            for k in 0..20_000u64 {
                let t = DAY0 + Duration::from_secs(k * step_s);
                p.at(t);
                xs.push(p.ou[VitalSign::SpO2.index()].x);
            }
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
            assert!((sd - 0.7).abs() < 0.12, "step {step_s}s: sd {sd}");
        }
    }

    #[test]
    fn fever_couples_heart_rate_and_respiration_to_temperature() {
        let onset = DAY0 + Duration::from_secs(3600);
        let fever = FeverEpisode {
            onset,
            peak_rise_c: 2.0,
            rise: Duration::from_secs(2 * 3600),
            plateau: Duration::from_secs(86_400),
            fall: Duration::from_secs(4 * 3600),
        };
        assert!(fever.offset_c(onset) < 0.03);
        assert!((fever.offset_c(onset + Duration::from_secs(2 * 3600)) - 1.0).abs() < 0.01);
        assert!((fever.offset_c(onset + Duration::from_secs(5 * 3600)) - 2.0).abs() < 0.01);
        assert!(fever.offset_c(fever.end()) < 0.03);

        let t = onset + Duration::from_secs(8 * 3600);
        let mut healthy = patient(11);
        let mut sick = patient(11);
        sick.add_episode(Episode::Fever(fever));
        let (h, s) = (healthy.at(t), sick.at(t));
        let d_temp = s.get(VitalSign::Temperature) - h.get(VitalSign::Temperature);
        let d_hr = s.get(VitalSign::HeartRate) - h.get(VitalSign::HeartRate);
        let d_rr = s.get(VitalSign::RespRate) - h.get(VitalSign::RespRate);
        assert!((d_temp - 2.0).abs() < 0.02, "{d_temp}");
        assert!((16.0..=20.0).contains(&d_hr), "HR +{d_hr} for +2 °C");
        assert!((2.0..=3.6).contains(&d_rr), "RR +{d_rr} for +2 °C");
    }

    #[test]
    fn deterioration_moves_every_baseline_to_its_targets_then_plateaus() {
        let onset = DAY0;
        let d = DeteriorationEpisode {
            onset,
            ramp: Duration::from_secs(8 * 3600),
        };
        let at = |h: u64| onset + Duration::from_secs(h * 3600);
        for node in 0..50 {
            let mut healthy = patient(node);
            let mut sick = patient(node);
            sick.add_episode(Episode::Deterioration(d));
            let base = sick.profile().baseline;
            let rr = VitalSign::RespRate.index();
            let (h4, s4) = (healthy.at(at(4)), sick.at(at(4)));
            assert!((s4.values[rr] - h4.values[rr] - 0.5 * (26.0 - base[rr])).abs() < 1e-9);
            assert_eq!(s4.consciousness, Acvpu::Alert);
            healthy.at(at(7));
            assert_eq!(sick.at(at(7)).consciousness, Acvpu::Confusion);
            for h in [8, 12] {
                let (hh, ss) = (healthy.at(at(h)), sick.at(at(h)));
                let sbp = VitalSign::Systolic.index();
                assert!(
                    (ss.values[sbp] - hh.values[sbp] - (95.0 - base[sbp])).abs() < 1e-9,
                    "plateau at {h} h"
                );
            }
        }
    }

    #[test]
    fn scale_two_patients_sit_in_their_target_range() {
        let p = Physiology::new(
            1,
            NodeId(1),
            PatientOptions {
                on_oxygen: true,
                spo2_scale2: true,
            },
            0,
        );
        let base = p.profile().baseline[VitalSign::SpO2.index()];
        assert!((88.0..=92.0).contains(&base));
        assert_eq!(p.profile().spo2_scale, SpO2Scale::Scale2);
    }
}

//! Sensor-fault checks: is this reading the patient, or the device?
//!
//! Per vital sign, on every reading (`domain-science.md` §5, Sharma et al.
//! 2010's SHORT / NOISE / CONSTANT taxonomy plus drift and dropout):
//!
//! | Check | Signature | Rule (defaults in [`SensorConfig::default`]) |
//! |---|---|---|
//! | impossible | outside physiology | hard range, e.g. HR 20–250, T 30–43 °C |
//! | spike | an isolated outlier | Hampel: `|x − median| > nσ · max(1.4826·MAD, floor)` over the previous readings, or a step over the sign's limit, that the next reading reverts; the second in 60 readings alerts |
//! | rate of change | a step physiology cannot make | a temperature step over 0.4 °C (+0.1 °C a minute) that the next reading keeps |
//! | stuck | the same value too long | run length ≥ samples *and* ≥ duration per sign |
//! | noise | spread far above the patient's own | robust SD of the last twenty first differences > ratio × the learned one, five readings in a row |
//! | dropout | the device keeps losing the signal | ≥ 3 lost readings in the last 10 |
//!
//! Drift and incoherence need the other signs and a baseline; the patient
//! monitor ([`crate::detect::patient`]) decides them and sets them here
//! ([`SensorMonitor::set_external`]).
//!
//! A reading that fails a check is *suspect*: it is kept out of NEWS2 and
//! the ward counts. A sign with an active "check sensor" alert is
//! *quarantined*: all its readings are suspect until the alert clears
//! (quiet for [`SensorConfig::clear_after`] and at least
//! [`SensorConfig::clear_readings`] readings).
//!
//! Thresholds are stricter than the textbook ones (Hampel's nσ = 3, say)
//! because a check runs on every reading of every patient: 1,000 patients
//! sampled once a minute give 8.6 million readings a day, and a rule that
//! misfires once in a thousand would page someone every ten seconds.

use std::time::Duration;

use serde::Serialize;
use vitalmesh_wire::{Sample, Timestamp, VitalSign};

use crate::alert::{Evidence, SensorCheck};

/// Per-sign thresholds, indexed by [`VitalSign::index`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SensorConfig {
    /// Plausible range per sign (inclusive).
    pub range: [(f64, f64); 6],
    /// Readings before the current one that the Hampel median looks at.
    pub hampel_window: usize,
    /// Hampel threshold in robust SDs.
    pub hampel_sigmas: f64,
    /// Floor on the robust SD per sign (physiological short-term spread).
    pub sigma_floor: [f64; 6],
    /// Outliers among the last [`Self::spike_window`] readings that raise
    /// an alert.
    pub spike_count: u32,
    /// Readings the spike count looks back over (at most 64).
    pub spike_window: u32,
    /// Largest step per sign: `base` plus `per_minute` × minutes between
    /// readings (capped at an hour).
    pub max_step: [(f64, f64); 6],
    /// Signs for which a step that persists is a fault: those no
    /// physiology moves that fast (temperature).
    pub step_alerts: [bool; 6],
    /// Stuck: identical readings at least this many …
    pub stuck_readings: [u32; 6],
    /// … and for at least this long.
    pub stuck_for: [Duration; 6],
    /// Noise: SD of recent first differences over the learned one.
    pub noise_ratio: f64,
    /// Floor on the learned (robust) first-difference SD per sign.
    pub noise_floor: [f64; 6],
    /// Lost readings among the last [`Self::dropout_window`] that alert.
    pub dropout_count: u32,
    /// Samples the dropout count looks back over (at most 16).
    pub dropout_window: u32,
    /// A quarantined sign clears after this long without findings …
    pub clear_after: Duration,
    /// … and at least this many clean readings.
    pub clear_readings: u32,
}

impl Default for SensorConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        Self {
            // HR, RR, SpO2, T, SBP (domain-science.md §5); DBP ours.
            range: [
                (20.0, 250.0),
                (2.0, 70.0),
                (50.0, 100.0),
                (30.0, 43.0),
                (40.0, 280.0),
                (20.0, 200.0),
            ],
            hampel_window: 6,
            hampel_sigmas: 5.0,
            sigma_floor: [3.0, 1.5, 1.5, 0.15, 5.0, 4.0],
            spike_count: 2,
            spike_window: 60,
            // Temperature: 0.5 °C within a minute (domain-science.md §5).
            max_step: [
                (25.0, 10.0),
                (8.0, 3.0),
                (6.0, 2.0),
                (0.4, 0.1),
                (35.0, 10.0),
                (25.0, 8.0),
            ],
            step_alerts: [false, false, false, true, false, false],
            stuck_readings: [10, 25, 20, 40, 10, 10],
            stuck_for: [
                minutes(1),
                minutes(10),
                minutes(10),
                minutes(60),
                minutes(1),
                minutes(1),
            ],
            noise_ratio: 3.0,
            noise_floor: [3.0, 1.0, 1.5, 0.1, 4.0, 3.0],
            dropout_count: 3,
            dropout_window: 10,
            clear_after: minutes(30),
            clear_readings: 10,
        }
    }
}

/// What the checks made of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Readings {
    /// Accepted readings per sign (`None`: missing or suspect).
    pub accepted: [Option<f64>; 6],
    /// Readings that passed this sample's checks, quarantined signs
    /// included: what drift and coherence are judged on, so a quarantined
    /// sign can be seen to recover.
    pub plausible: [Option<f64>; 6],
    /// Signs whose reading is suspect (bit per [`VitalSign::index`]).
    pub suspect: u8,
    /// Signs the device reported lost.
    pub lost: u8,
}

/// A change in a sign's "check sensor" state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SensorEvent {
    /// The sign is suspect from now on.
    Raise {
        /// The sign.
        sign: VitalSign,
        /// The check that found it.
        check: SensorCheck,
        /// The statistic.
        evidence: Evidence,
    },
    /// The sign looks healthy again.
    Clear {
        /// The sign.
        sign: VitalSign,
        /// The check whose alert clears.
        check: SensorCheck,
    },
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    check: SensorCheck,
    /// For a rate-of-change fault: the level before the jump. The sign
    /// stays quarantined until readings come back near it.
    jumped_from: Option<f32>,
    /// When the last finding (or persisting condition) was seen.
    last_finding: Timestamp,
    /// Clean readings since then.
    clean: u32,
}

const WINDOW: usize = 8;
const DIFFS: usize = 20;
/// Readings in a row the noise ratio must exceed its threshold: a real
/// noise fault persists, a natural burst of variability soon passes.
const NOISE_PERSIST: u8 = 5;
/// Readings over which a sign's own spread is learnt before noise is
/// judged against it.
const NOISE_LEARNING: u32 = 20;

#[derive(Debug, Clone)]
struct Sign {
    /// Recent present readings, a ring.
    window: [f32; WINDOW],
    len: u8,
    next: u8,
    /// The last present reading and its time.
    prev: Option<(f32, Timestamp)>,
    /// The last accepted reading: steps are measured from here.
    anchor: Option<(f32, Timestamp)>,
    /// An odd reading, waiting for the next one to say whether it was a
    /// spike (it reverts) or a new level (it stays).
    pending: Option<f32>,
    run_value: f32,
    run_len: u32,
    run_since: Timestamp,
    /// Confirmed spikes among the last 64 present readings, newest in bit 0.
    spikes: u64,
    /// Lost flags of the last 16 samples, newest in bit 0.
    lost: u16,
    diffs: [f32; DIFFS],
    diffs_len: u8,
    diffs_next: u8,
    /// Sum of `diffs`, kept as they come and go.
    diff_sum: f32,
    /// Learned robust SD of first differences (EWMA), and from how many
    /// windows.
    diff_sd: f32,
    diff_learned: u32,
    /// Readings in a row with nothing odd about them.
    calm: u32,
    /// Readings in a row whose noise ratio was over the threshold.
    noisy: u8,
    /// The level before the last confirmed jump.
    jumped_from: Option<f32>,
    fault: Option<Fault>,
    /// Drift or incoherence, as the patient monitor judges it.
    external: Option<SensorCheck>,
}

impl Sign {
    fn new() -> Self {
        Self {
            window: [0.0; WINDOW],
            len: 0,
            next: 0,
            prev: None,
            anchor: None,
            pending: None,
            run_value: f32::NAN,
            run_len: 0,
            run_since: Timestamp::EPOCH,
            spikes: 0,
            lost: 0,
            diffs: [0.0; DIFFS],
            diffs_len: 0,
            diffs_next: 0,
            diff_sum: 0.0,
            diff_sd: f32::NAN,
            diff_learned: 0,
            calm: 0,
            noisy: 0,
            jumped_from: None,
            fault: None,
            external: None,
        }
    }
}

/// One device's sensor checks.
#[derive(Debug, Clone)]
pub struct SensorMonitor {
    signs: [Sign; 6],
}

impl Default for SensorMonitor {
    fn default() -> Self {
        Self {
            signs: std::array::from_fn(|_| Sign::new()),
        }
    }
}

/// What one check concluded about one reading.
struct Finding {
    check: SensorCheck,
    statistic: f64,
    threshold: f64,
    /// Whether it alerts now (a persisting condition) or only marks the
    /// reading suspect (a lone outlier).
    alerts: bool,
}

impl SensorMonitor {
    /// Whether `sign` is quarantined.
    pub fn is_quarantined(&self, sign: VitalSign) -> bool {
        let s = &self.signs[sign.index()];
        s.fault.is_some() || s.external.is_some()
    }

    /// Checks every sign of `sample` (taken at `sample.time`), appending
    /// alert changes to `events`.
    pub fn observe(
        &mut self,
        sample: &Sample,
        config: &SensorConfig,
        events: &mut Vec<SensorEvent>,
    ) -> Readings {
        let mut out = Readings::default();
        let t = sample.time;
        for sign in VitalSign::ALL {
            let i = sign.index();
            let bit = 1u8 << i;
            let s = &mut self.signs[i];
            let lost = sample.faults.contains(sign.lost_flag());
            s.lost = (s.lost << 1) | u16::from(lost);
            let reading = sample.vitals.reading(sign);
            let finding = match reading {
                Some(x) => check_reading(s, sign, x, t, config),
                None => {
                    if lost {
                        out.lost |= bit;
                    }
                    let window = config.dropout_window.clamp(1, 16);
                    let recent = (s.lost & ((1u32 << window) - 1) as u16).count_ones();
                    (recent >= config.dropout_count).then_some(Finding {
                        check: SensorCheck::Dropout,
                        statistic: f64::from(recent),
                        threshold: f64::from(config.dropout_count),
                        alerts: true,
                    })
                }
            };
            let had_finding = finding.is_some();
            let suspect = had_finding || s.fault.is_some() || s.external.is_some();
            update_fault(s, sign, finding, reading.is_some(), t, config, events);
            if let Some(x) = reading {
                if !had_finding && s.fault.is_none() {
                    out.plausible[i] = Some(x);
                }
                if suspect || s.fault.is_some() || s.external.is_some() {
                    out.suspect |= bit;
                } else {
                    out.accepted[i] = Some(x);
                }
            }
        }
        out
    }

    /// A new patient at the bed: the readings so far were someone else's,
    /// so every window starts again (a new patient's temperature is not a
    /// sensor's jump). The device's own faults stay; drift and incoherence
    /// were judged against the previous patient and clear.
    pub fn new_patient(&mut self, events: &mut Vec<SensorEvent>) {
        for sign in VitalSign::ALL {
            let s = &mut self.signs[sign.index()];
            let (fault, external) = (s.fault, s.external);
            *s = Sign::new();
            s.fault = fault;
            if let (Some(check), None) = (external, fault) {
                events.push(SensorEvent::Clear { sign, check });
            }
        }
    }

    /// Drift or incoherence of `sign` as the patient monitor judges it, from
    /// `now` (`None`: it no longer holds). Returns the alert change, if any.
    pub fn set_external(
        &mut self,
        sign: VitalSign,
        check: Option<SensorCheck>,
        evidence: Evidence,
    ) -> Option<SensorEvent> {
        let s = &mut self.signs[sign.index()];
        let was = s.external.or(s.fault.map(|f| f.check));
        s.external = check;
        let is = s.fault.is_some() || s.external.is_some();
        match (was, is, check) {
            (None, true, Some(check)) => Some(SensorEvent::Raise {
                sign,
                check,
                evidence,
            }),
            (Some(check), false, _) => Some(SensorEvent::Clear { sign, check }),
            _ => None,
        }
    }
}

/// Keeps the stronger of two findings: one that alerts over one that only
/// marks the reading, otherwise the first.
fn consider(current: &mut Option<Finding>, new: Finding) {
    if current.as_ref().is_none_or(|c| !c.alerts && new.alerts) {
        *current = Some(new);
    }
}

/// Runs the reading checks; updates the windows.
///
/// An outlier against the recent median (Hampel), or a step beyond the
/// sign's step limit, makes the reading suspect at once and waits for the
/// next reading to say what it was:
///
/// - the next reading is back near the old level: it was a **spike**
///   (counted; the second spike in the window alerts);
/// - the next reading stays at the new level: the level really moved. For
///   temperature, which no physiology moves that fast, that is a
///   **rate-of-change** fault; for the other signs it is accepted — heart
///   rate can jump forty beats in a second at the onset of atrial
///   fibrillation, and quarantining it then would hide the deterioration
///   the mesh exists to see. The window restarts at the new level.
fn check_reading(
    s: &mut Sign,
    sign: VitalSign,
    x: f64,
    t: Timestamp,
    c: &SensorConfig,
) -> Option<Finding> {
    let i = sign.index();
    let xf = x as f32;
    let mut finding = None;

    // Impossible values.
    let (lo, hi) = c.range[i];
    if !(lo..=hi).contains(&x) {
        finding = Some(Finding {
            check: SensorCheck::Impossible,
            statistic: x,
            threshold: if x < lo { lo } else { hi },
            alerts: true,
        });
    }

    // Hampel against the previous readings.
    let floor = c.sigma_floor[i];
    let mut outlier: Option<(f64, f64)> = None;
    let n = usize::from(s.len).min(c.hampel_window.min(WINDOW));
    if n >= 3 {
        let at = |k: usize| (usize::from(s.next) + WINDOW - 1 - k) % WINDOW;
        // The median lies between the window's extremes, so a reading
        // within nσ × floor of both cannot be an outlier: nearly every
        // reading is settled here, without copying or sorting.
        let (lo_w, hi_w) = (0..n)
            .map(|k| s.window[at(k)])
            .fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let reach = (x - f64::from(lo_w)).abs().max((x - f64::from(hi_w)).abs());
        let mut w = [0f32; WINDOW];
        let w = &mut w[..n];
        let med = if reach > c.hampel_sigmas * floor {
            for (k, slot) in w.iter_mut().enumerate() {
                *slot = s.window[at(k)];
            }
            median(w)
        } else {
            x
        };
        let dev = (x - med).abs();
        // Only a deviation beyond nσ × floor can be an outlier, so the MAD
        // (a second sort) is computed for the rare candidates only.
        if dev > c.hampel_sigmas * floor {
            for v in w.iter_mut() {
                *v = (f64::from(*v) - med).abs() as f32;
            }
            let sigma = (1.4826 * median(w)).max(floor);
            if dev > c.hampel_sigmas * sigma {
                outlier = Some((dev / sigma, c.hampel_sigmas));
            }
        }
    }
    // A step from the last accepted reading beyond the sign's limit.
    let (base, per_minute) = c.max_step[i];
    let step = s.anchor.and_then(|(a, at)| {
        let minutes = (t.saturating_duration_since(at).as_secs_f64() / 60.0).min(60.0);
        let limit = base + per_minute * minutes;
        let step = (x - f64::from(a)).abs();
        (step > limit).then_some((step, limit))
    });
    let odd = outlier.or(step);

    let mut spike_done = false;
    match (s.pending, odd) {
        (Some(p), Some(_)) if f64::from((xf - p).abs()) <= c.hampel_sigmas * floor / 2.0 => {
            // The odd reading before this one was not alone: a new level.
            let jump = s.anchor.map_or(0.0, |(a, _)| f64::from((xf - a).abs()));
            s.jumped_from = s.anchor.map(|(a, _)| a);
            if c.step_alerts[i] && jump > base {
                consider(
                    &mut finding,
                    Finding {
                        check: SensorCheck::RateOfChange,
                        statistic: jump,
                        threshold: base,
                        alerts: true,
                    },
                );
            }
            s.len = 0;
            s.anchor = None;
            s.pending = None;
        }
        (_, Some((statistic, threshold))) => {
            s.pending = Some(xf);
            consider(
                &mut finding,
                Finding {
                    check: SensorCheck::Spike,
                    statistic,
                    threshold,
                    alerts: false,
                },
            );
        }
        (Some(_), None) => {
            // The odd reading before this one stood alone: a spike.
            s.pending = None;
            spike_done = true;
        }
        (None, None) => {}
    }
    s.spikes = (s.spikes << 1) | u64::from(spike_done);
    let window = c.spike_window.clamp(1, 64);
    let mask = if window == 64 {
        u64::MAX
    } else {
        (1u64 << window) - 1
    };
    let spikes = (s.spikes & mask).count_ones();
    if spike_done && spikes >= c.spike_count {
        consider(
            &mut finding,
            Finding {
                check: SensorCheck::Spike,
                statistic: f64::from(spikes),
                threshold: f64::from(c.spike_count),
                alerts: true,
            },
        );
    }

    // Stuck: identical readings (a reading at the device's ceiling, SpO2
    // 100 %, can be flat in health and does not count).
    if xf == s.run_value && x < hi {
        s.run_len += 1;
    } else {
        s.run_value = xf;
        s.run_len = 1;
        s.run_since = t;
    }
    if s.run_len >= c.stuck_readings[i]
        && t.saturating_duration_since(s.run_since) >= c.stuck_for[i]
    {
        consider(
            &mut finding,
            Finding {
                check: SensorCheck::Stuck,
                statistic: f64::from(s.run_len),
                threshold: f64::from(c.stuck_readings[i]),
                alerts: true,
            },
        );
    }

    // Noise: the robust spread of recent first differences (median
    // absolute difference / 0.6745, so one spike or one step does not
    // count) against the patient's own, learnt slowly from calm stretches.
    // The median is computed only when the mean says it could be high
    // (a median is at most twice the mean of non-negative values).
    if odd.is_some() || finding.is_some() {
        s.calm = 0;
    } else {
        s.calm = s.calm.saturating_add(1);
    }
    if let Some((p, _)) = s.prev {
        let d = (xf - p).abs();
        s.diff_sum += d - s.diffs[usize::from(s.diffs_next)];
        s.diffs[usize::from(s.diffs_next)] = d;
        s.diffs_next = ((usize::from(s.diffs_next) + 1) % DIFFS) as u8;
        s.diffs_len = (s.diffs_len + 1).min(DIFFS as u8);
        if usize::from(s.diffs_len) == DIFFS {
            let mean = f64::from(s.diff_sum.max(0.0)) / DIFFS as f64;
            let learned = f64::from(s.diff_sd.max(c.noise_floor[i] as f32));
            let mut noisy = false;
            if s.diff_learned >= NOISE_LEARNING && 2.0 * mean / 0.6745 > c.noise_ratio * learned {
                let mut sorted = s.diffs;
                let ratio = median(&mut sorted) / 0.6745 / learned;
                noisy = ratio > c.noise_ratio;
                s.noisy = if noisy { s.noisy.saturating_add(1) } else { 0 };
                if s.noisy >= NOISE_PERSIST {
                    consider(
                        &mut finding,
                        Finding {
                            check: SensorCheck::Noise,
                            statistic: ratio,
                            threshold: c.noise_ratio,
                            alerts: true,
                        },
                    );
                }
            }
            if !noisy {
                s.noisy = 0;
            }
            // Learn from windows with nothing odd in them: the mean absolute
            // difference × √(π/2) estimates the same SD as the median does.
            if s.fault.is_none() && s.calm as usize > DIFFS {
                let sd = (mean * 1.2533) as f32;
                s.diff_learned += 1;
                s.diff_sd = if s.diff_sd.is_nan() {
                    sd
                } else {
                    0.99 * s.diff_sd + 0.01 * sd
                };
            }
        }
    }

    s.window[usize::from(s.next)] = xf;
    s.next = ((usize::from(s.next) + 1) % WINDOW) as u8;
    s.len = (s.len + 1).min(WINDOW as u8);
    s.prev = Some((xf, t));
    if s.pending.is_none() && finding.as_ref().is_none_or(|f| !f.alerts) {
        s.anchor = Some((xf, t));
    }
    finding
}

/// Raises, keeps or clears the sign's alert given this sample's finding.
fn update_fault(
    s: &mut Sign,
    sign: VitalSign,
    finding: Option<Finding>,
    present: bool,
    t: Timestamp,
    c: &SensorConfig,
    events: &mut Vec<SensorEvent>,
) {
    match (finding, &mut s.fault) {
        (Some(f), None) if f.alerts => {
            let external = s.external.is_some();
            s.fault = Some(Fault {
                check: f.check,
                jumped_from: (f.check == SensorCheck::RateOfChange)
                    .then_some(s.jumped_from)
                    .flatten(),
                last_finding: t,
                clean: 0,
            });
            if !external {
                events.push(SensorEvent::Raise {
                    sign,
                    check: f.check,
                    evidence: Evidence {
                        statistic: f.statistic,
                        threshold: f.threshold,
                        window: (s.run_since.min(t), t),
                    },
                });
            }
        }
        (Some(_), Some(fault)) => {
            fault.last_finding = t;
            fault.clean = 0;
        }
        (None, Some(fault)) => {
            if present {
                fault.clean += 1;
            }
            let stuck_on =
                fault.check == SensorCheck::Stuck && s.run_len >= c.stuck_readings[sign.index()];
            let still_jumped = match (fault.jumped_from, s.prev) {
                (Some(from), Some((now, _))) => {
                    f64::from((now - from).abs()) > c.max_step[sign.index()].0
                }
                _ => false,
            };
            if stuck_on || still_jumped {
                fault.last_finding = t;
                fault.clean = 0;
            }
            if fault.clean >= c.clear_readings
                && t.saturating_duration_since(fault.last_finding) >= c.clear_after
            {
                let check = fault.check;
                s.fault = None;
                if s.external.is_none() {
                    events.push(SensorEvent::Clear { sign, check });
                }
            }
        }
        (Some(_), None) | (None, None) => {}
    }
}

/// The median of a small slice (sorted in place).
fn median(v: &mut [f32]) -> f64 {
    v.sort_unstable_by(f32::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        f64::from(v[n / 2])
    } else {
        (f64::from(v[n / 2 - 1]) + f64::from(v[n / 2])) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use vitalmesh_wire::{FaultFlags, NodeId, Vitals};

    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_767_225_600);

    fn sample(k: u64, every_s: u64, hr: u16, temp_dc: i16) -> Sample {
        Sample {
            node: NodeId(1),
            seq: k,
            time: T0 + Duration::from_secs(k * every_s),
            vitals: Vitals {
                heart_rate: Some(hr),
                resp_rate: Some(16 + (k % 3) as u8),
                spo2: Some(96 + (k % 3) as u8),
                temp_decicelsius: Some(temp_dc),
                systolic: Some(120 + (k % 7) as u16),
                diastolic: Some(75 + (k % 5) as u16),
                consciousness: None,
                on_oxygen: false,
                spo2_scale: Default::default(),
            },
            battery_pct: 100,
            faults: FaultFlags::empty(),
            admission: 0,
        }
    }

    /// Heart rate wandering 70–76, temperature 36.8–37.0: healthy.
    fn healthy(k: u64) -> (u16, i16) {
        (70 + ((k * 3) % 7) as u16, 368 + (k % 3) as i16)
    }

    fn run(samples: impl Iterator<Item = Sample>) -> (Vec<Readings>, Vec<(u64, SensorEvent)>) {
        let mut m = SensorMonitor::default();
        let c = SensorConfig::default();
        let mut events = Vec::new();
        let mut readings = Vec::new();
        for s in samples {
            let mut e = Vec::new();
            readings.push(m.observe(&s, &c, &mut e));
            events.extend(e.into_iter().map(|e| (s.seq, e)));
        }
        (readings, events)
    }

    fn raised(events: &[(u64, SensorEvent)]) -> Vec<(u64, VitalSign, SensorCheck)> {
        events
            .iter()
            .filter_map(|(k, e)| match e {
                SensorEvent::Raise { sign, check, .. } => Some((*k, *sign, *check)),
                SensorEvent::Clear { .. } => None,
            })
            .collect()
    }

    #[test]
    fn healthy_readings_are_all_accepted() {
        let (r, e) = run((0..2000).map(|k| {
            let (hr, t) = healthy(k);
            let hr = hr + [0, 2, 5, 1, 3, 0, 4][(k % 7) as usize];
            sample(k, 60, hr, t)
        }));
        assert!(e.is_empty(), "{e:?}");
        assert!(
            r.iter()
                .all(|r| r.suspect == 0 && r.accepted.iter().all(Option::is_some))
        );
    }

    #[test]
    fn a_lone_spike_is_suspect_but_a_second_one_alerts() {
        let (r, e) = run((0..100).map(|k| {
            let (hr, t) = healthy(k);
            let hr = if k == 30 || k == 70 { hr + 40 } else { hr };
            sample(k, 60, hr, t)
        }));
        let hr = 1 << VitalSign::HeartRate.index();
        assert_eq!(r[30].suspect, hr, "the spike itself");
        assert_eq!(r[31].suspect, 0, "the reading after it is fine");
        // The second spike is confirmed when the reading after it reverts.
        assert_eq!(raised(&e), [(71, VitalSign::HeartRate, SensorCheck::Spike)]);
        assert!(r[72].suspect & hr != 0, "quarantined after the alert");
    }

    #[test]
    fn a_temperature_jump_that_stays_is_a_rate_of_change_fault() {
        let (r, e) = run((0..60).map(|k| {
            let (hr, t) = healthy(k);
            sample(k, 60, hr, if k >= 20 { 410 } else { t })
        }));
        assert_eq!(
            raised(&e),
            [(21, VitalSign::Temperature, SensorCheck::RateOfChange)]
        );
        let temp = 1 << VitalSign::Temperature.index();
        assert!(
            r[20..]
                .iter()
                .all(|r| r.suspect & temp != 0 && r.accepted[3].is_none())
        );
    }

    #[test]
    fn a_heart_rate_that_jumps_and_stays_is_believed_after_one_reading() {
        // Atrial fibrillation: 72 → 140 in one beat, and it stays.
        let (r, e) = run((0..60).map(|k| {
            let (hr, t) = healthy(k);
            sample(k, 60, if k >= 20 { 140 + (k % 3) as u16 } else { hr }, t)
        }));
        assert!(e.is_empty(), "{e:?}");
        let hr = 1 << VitalSign::HeartRate.index();
        assert_eq!(
            r[20].suspect, hr,
            "the first reading of the new level waits"
        );
        assert!(
            r[21..].iter().all(|r| r.suspect == 0),
            "then it is believed"
        );
    }

    #[test]
    fn a_stuck_sign_alerts_after_its_run_length_and_clears_when_it_moves() {
        let (_, e) = run((0..200).map(|k| {
            let (hr, t) = healthy(k);
            sample(k, 60, if (50..120).contains(&k) { 72 } else { hr }, t)
        }));
        let raised = raised(&e);
        assert_eq!(raised.len(), 1);
        let (k, sign, check) = raised[0];
        assert_eq!((sign, check), (VitalSign::HeartRate, SensorCheck::Stuck));
        assert!((59..=60).contains(&k), "ten identical readings: {k}");
        let cleared: Vec<u64> = e
            .iter()
            .filter(|(_, e)| matches!(e, SensorEvent::Clear { .. }))
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(cleared.len(), 1);
        assert!(
            cleared[0] >= 149,
            "30 clean minutes after it moved: {}",
            cleared[0]
        );
    }

    #[test]
    fn noise_is_measured_against_the_patients_own_spread() {
        let (_, e) = run((0..300).map(|k| {
            let (hr, t) = healthy(k);
            let wild = [0i32, 14, -13, 12, -15, 13, -12][(k % 7) as usize];
            let hr = if k >= 200 {
                (i32::from(hr) + wild) as u16
            } else {
                hr
            };
            sample(k, 60, hr, t)
        }));
        let r = raised(&e);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!((r[0].1, r[0].2), (VitalSign::HeartRate, SensorCheck::Noise));
        assert!(r[0].0 >= 210 && r[0].0 < 225, "{r:?}");
    }

    #[test]
    fn repeated_dropouts_alert_and_impossible_values_alert_at_once() {
        let (r, e) = run((0..40).map(|k| {
            let (hr, t) = healthy(k);
            let mut s = sample(k, 60, hr, t);
            if k >= 10 && k % 2 == 0 {
                s.vitals.spo2 = None;
                s.faults.insert(FaultFlags::SPO2_LOST);
            }
            if k == 30 {
                s.vitals.resp_rate = Some(90);
            }
            s
        }));
        assert_eq!(
            raised(&e),
            [
                (14, VitalSign::SpO2, SensorCheck::Dropout),
                (30, VitalSign::RespRate, SensorCheck::Impossible)
            ]
        );
        assert_eq!(r[12].lost, 1 << VitalSign::SpO2.index());
    }
}

//! Per patient: is this patient worsening, and is it the patient?
//!
//! One [`PatientMonitor`] per bed, fed every sample (in sample-time order
//! per node, as the aggregator de-duplicates them). It:
//!
//! 1. runs the sensor checks ([`crate::detect::sensor`]) and keeps suspect
//!    readings out of everything below;
//! 2. scores NEWS2 (RCP 2017) on the readings it trusts and escalates by
//!    band — high (≥ 7), medium (5–6), low–medium (a single red 3) — once a
//!    band has held for the persistence time (5 minutes) *and* a number of
//!    readings, and clears only after half an hour below it. NEWS2 was
//!    made for observations taken hours apart; scored on every reading of a
//!    continuous monitor, a score hovering at a band's edge would otherwise
//!    page and un-page all night;
//! 3. learns the patient's own baseline over the first hours of the
//!    admission (mean and spread of 10-minute epoch means per sign), then
//!    runs a one-sided CUSUM on the epoch's deterioration score — the mean
//!    of the standardised deviations of heart rate (up), respiratory rate
//!    (up), systolic pressure (down) and SpO2 (down) — and alerts when it
//!    crosses `h`, typically hours before NEWS2 reaches 5
//!    (`domain-science.md` §2.3, per-patient use; §3.2 deterioration);
//! 4. tells sensors from physiology by coherence (§5): a sign far from the
//!    patient's baseline while every other sign stays near it is drift; a
//!    temperature risen by a degree or more with heart and respiratory
//!    rates flat (real fever adds 7–10 bpm and 1.4 breaths/min per °C) is
//!    an incoherent sensor. Either quarantines the sign;
//! 5. summarises each time bucket for the ward detectors (febrile, NEWS2 ≥
//!    5 — by most readings of the bucket's last quarter — and whether each
//!    is new since the previous bucket).
//!
//! Epochs make the statistics independent of the sample rate: a node
//! sampling every second and one sampling every minute both contribute one
//! value per sign per epoch, so the CUSUM's false-alarm rate does not
//! depend on how chatty a device is.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use vitalmesh_wire::{PatientBucket, Sample, Timestamp, VitalSign};

use crate::alert::{AlertKind, Evidence, SensorCheck};
use crate::detect::sensor::{SensorConfig, SensorEvent, SensorMonitor};
use crate::news2::{self, Parameter, ParameterSet, Risk};

/// Per-patient thresholds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientConfig {
    /// A NEWS2 band must hold this long (sample time) before it alerts …
    pub risk_persistence: Duration,
    /// … and over at least this many decided scores.
    pub risk_readings: u32,
    /// An escalation clears after the score has stayed below its band
    /// this long (hysteresis, so a score hovering at a band's edge does not
    /// page and un-page all night).
    pub risk_clear_after: Duration,
    /// How long the patient's own baseline is learnt after admission.
    /// Four hours (24 epochs) rather than the 6–24 h of `domain-science.md`
    /// §2.3: a patient who starts to deteriorate before their baseline is
    /// learnt is missed, and on the tuning seeds (101–104 of
    /// `deterioration.toml`) four hours caught more deteriorations before
    /// NEWS2 ≥ 5 than six at the same false-alarm rate (DETECTION.md).
    pub baseline: Duration,
    /// Epoch length: readings are averaged per epoch.
    pub epoch: Duration,
    /// Deterioration CUSUM reference value (SD units).
    pub k: f64,
    /// Deterioration CUSUM decision interval.
    pub h: f64,
    /// Floor on the SD of epoch means per sign (a clinically small change).
    pub sigma_floor: [f64; 6],
    /// A sign this many SDs from baseline …
    pub drift_z: f64,
    /// … with every other sign at most this share of its deviation (in SD
    /// units) is drifting.
    pub drift_isolation: f64,
    /// Temperature risen at least this much (°C) …
    pub fever_rise_c: f64,
    /// … with heart rate up less than this per °C …
    pub fever_hr_per_c: f64,
    /// … and respiration up less than this per °C is incoherent.
    pub fever_rr_per_c: f64,
    /// Epochs in a row a drift or incoherence must hold to alert.
    pub sensor_epochs: u32,
}

impl Default for PatientConfig {
    fn default() -> Self {
        Self {
            risk_persistence: Duration::from_secs(300),
            risk_readings: 3,
            risk_clear_after: Duration::from_secs(1800),
            baseline: Duration::from_secs(4 * 3600),
            epoch: Duration::from_secs(600),
            k: 0.5,
            h: 4.5,
            sigma_floor: [3.0, 1.0, 0.7, 0.15, 5.0, 4.0],
            drift_z: 4.0,
            drift_isolation: 0.25,
            fever_rise_c: 1.0,
            fever_hr_per_c: 3.0,
            fever_rr_per_c: 0.5,
            sensor_epochs: 3,
        }
    }
}

/// Signs whose coherence is judged (diastolic follows systolic).
const COUPLED: [VitalSign; 5] = [
    VitalSign::HeartRate,
    VitalSign::RespRate,
    VitalSign::SpO2,
    VitalSign::Temperature,
    VitalSign::Systolic,
];

/// The deterioration direction per sign (+1 up, −1 down, 0 not used).
const WORSE: [f64; 6] = [1.0, 1.0, -1.0, 0.0, -1.0, 0.0];

/// The NEWS2 parameter a sign scores, if any.
const fn parameter(sign: VitalSign) -> Option<Parameter> {
    match sign {
        VitalSign::HeartRate => Some(Parameter::Pulse),
        VitalSign::RespRate => Some(Parameter::RespRate),
        VitalSign::SpO2 => Some(Parameter::SpO2),
        VitalSign::Temperature => Some(Parameter::Temperature),
        VitalSign::Systolic => Some(Parameter::Systolic),
        VitalSign::Diastolic => None,
    }
}

/// Risk bands that alert, lowest first.
const ALERT_BANDS: [Risk; 3] = [Risk::LowMedium, Risk::Medium, Risk::High];

/// Something the monitor concluded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PatientEvent {
    /// An alert of this kind about the patient (or its sensor) is raised.
    Raise(AlertKind, Option<Evidence>),
    /// The alert of this kind (and sign, for sensors) no longer holds.
    Clear(AlertKind),
    /// NEWS2 first held at 5 or more in this admission (a medium or high
    /// escalation): what scoring measures early warnings against.
    News2ReachedFive {
        /// When the sample was taken.
        sampled_at: Timestamp,
    },
}

/// What one accepted sample said, for the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// The NEWS2 score of the trusted readings.
    pub score: news2::Score,
    /// Signs whose reading was suspect.
    pub suspect: u8,
}

#[derive(Debug, Clone, Copy, Default)]
struct Accumulator {
    sum: f64,
    n: u32,
}

/// Per-sign statistics of epoch means over the baseline period.
#[derive(Debug, Clone, Copy, Default)]
struct Welford {
    n: u32,
    mean: f64,
    m2: f64,
}

impl Welford {
    fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / f64::from(self.n);
        self.m2 += d * (x - self.mean);
    }

    fn sd(&self) -> f64 {
        if self.n > 1 {
            (self.m2 / f64::from(self.n - 1)).sqrt()
        } else {
            0.0
        }
    }
}

/// One bucket's tallies for the ward report: over the whole bucket, and
/// over its last quarter, which decides (the patient's state when the
/// bucket closes, as a ward census is taken at an hour, not averaged over
/// it; the whole bucket stands in if the last quarter had no reading).
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    index: u64,
    whole: Tally,
    last_quarter: Tally,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    temps: u32,
    febrile: u32,
    scored: u32,
    ge5: u32,
}

impl Tally {
    fn add(&mut self, temp: Option<f64>, score: &news2::Score) {
        if let Some(temp) = temp {
            self.temps += 1;
            self.febrile += u32::from(temp >= 38.1 - 1e-9);
        }
        // A partial score of 5 or more is at least 5 whatever is missing;
        // below 5 only a complete score decides.
        if score.known_total >= 5 || score.is_complete() {
            self.scored += 1;
            self.ge5 += u32::from(score.known_total >= 5);
        }
    }
}

/// The patient at one bed, as one aggregator sees them.
#[derive(Debug, Clone)]
pub struct PatientMonitor {
    admission: u32,
    sensor: SensorMonitor,
    /// Per alerting band: since when (and over how many decided scores)
    /// every decided score has been at or above it, and the lowest total
    /// over that stretch.
    band_since: [Option<(Timestamp, u32, u8)>; 3],
    alerted: Option<Risk>,
    calm_since: Option<Timestamp>,
    reached_five: bool,
    /// When the admission's first sample was taken.
    first: Option<Timestamp>,
    epoch: u64,
    epoch_acc: [Accumulator; 6],
    baseline: [Welford; 6],
    baseline_done: bool,
    /// Deterioration CUSUM and whether it is alerting.
    cusum: f64,
    deteriorating: bool,
    cusum_since: Option<Timestamp>,
    /// Per coupled sign: epochs in a row it looked like drift.
    drift_run: [u32; 6],
    incoherent_run: u32,
    /// Open buckets (at most two: backfill can still land in the previous).
    buckets: VecDeque<Bucket>,
    /// Flags of the last closed bucket, for "new since".
    last_flags: u8,
    last_closed: Option<u64>,
}

impl PatientMonitor {
    /// A monitor for admission `admission`, before its first sample.
    pub fn new(admission: u32) -> Self {
        Self {
            admission,
            sensor: SensorMonitor::default(),
            band_since: [None; 3],
            alerted: None,
            calm_since: None,
            reached_five: false,
            first: None,
            epoch: 0,
            epoch_acc: [Accumulator::default(); 6],
            baseline: [Welford::default(); 6],
            baseline_done: false,
            cusum: 0.0,
            deteriorating: false,
            cusum_since: None,
            drift_run: [0; 6],
            incoherent_run: 0,
            buckets: VecDeque::new(),
            last_flags: 0,
            last_closed: None,
        }
    }

    /// The admission it follows.
    pub fn admission(&self) -> u32 {
        self.admission
    }

    /// A new patient at the bed: everything about the patient starts over;
    /// the device's sensor state stays (a broken probe stays broken).
    /// Alerts about the previous patient are cleared.
    pub fn admit(&mut self, admission: u32, events: &mut Vec<PatientEvent>) {
        if self.alerted.is_some() {
            events.push(PatientEvent::Clear(AlertKind::PatientRisk {
                band: Risk::Low,
                news2: 0,
            }));
        }
        if self.deteriorating {
            events.push(PatientEvent::Clear(AlertKind::Deterioration));
        }
        let mut sensor = std::mem::take(&mut self.sensor);
        let mut cleared = Vec::new();
        sensor.new_patient(&mut cleared);
        push_sensor_events(&cleared, events);
        *self = Self::new(admission);
        self.sensor = sensor;
    }

    /// Whether `sign`'s sensor is quarantined.
    pub fn sensor_quarantined(&self, sign: VitalSign) -> bool {
        self.sensor.is_quarantined(sign)
    }

    /// The deterioration CUSUM now.
    pub fn deterioration_statistic(&self) -> f64 {
        self.cusum
    }

    /// One sample of this admission, in sample-time order.
    pub fn observe(
        &mut self,
        sample: &Sample,
        patient: &PatientConfig,
        sensors: &SensorConfig,
        bucket_len: Duration,
        events: &mut Vec<PatientEvent>,
    ) -> Assessment {
        let t = sample.time;
        self.first.get_or_insert(t);
        let mut sensor_events = Vec::new();
        let readings = self.sensor.observe(sample, sensors, &mut sensor_events);
        push_sensor_events(&sensor_events, events);

        // NEWS2 on the trusted readings only.
        let mut unusable = ParameterSet::from_device_faults(sample.faults);
        for sign in VitalSign::ALL {
            if readings.accepted[sign.index()].is_none() {
                if let Some(p) = parameter(sign) {
                    unusable.insert(p);
                }
            }
        }
        let score = news2::score(&sample.vitals, unusable);
        self.escalate(&score, t, patient, events);

        // Epochs of trusted readings.
        let epoch_len = patient.epoch.as_micros().max(1) as u64;
        let epoch = t.as_micros() / epoch_len;
        if epoch != self.epoch {
            if self.epoch_acc.iter().any(|a| a.n > 0) {
                self.close_epoch(epoch_len, patient, events);
            }
            self.epoch = epoch;
            self.epoch_acc = [Accumulator::default(); 6];
        }
        for (acc, x) in self.epoch_acc.iter_mut().zip(readings.plausible) {
            if let Some(x) = x {
                acc.sum += x;
                acc.n += 1;
            }
        }

        // Bucket tallies of trusted readings.
        let bucket_us = bucket_len.as_micros().max(1) as u64;
        let bucket = t.as_micros() / bucket_us;
        let late = t.as_micros() % bucket_us >= bucket_us / 4 * 3;
        if self.last_closed.is_none_or(|c| bucket > c) {
            let b = match self.buckets.iter_mut().find(|b| b.index == bucket) {
                Some(b) => b,
                None => {
                    if self.buckets.len() == 2 {
                        self.buckets.pop_front();
                    }
                    self.buckets.push_back(Bucket {
                        index: bucket,
                        ..Bucket::default()
                    });
                    self.buckets.back_mut().expect("just pushed")
                }
            };
            let temp = readings.accepted[VitalSign::Temperature.index()];
            b.whole.add(temp, &score);
            if late {
                b.last_quarter.add(temp, &score);
            }
        }
        Assessment {
            score,
            suspect: readings.suspect,
        }
    }

    /// Closes bucket `index`: the patient's flags, or `None` if the patient
    /// had no sample in it (not in the census).
    pub fn close_bucket(&mut self, index: u64) -> Option<u8> {
        if self.last_closed.is_some_and(|c| index <= c) {
            return None;
        }
        let pos = self.buckets.iter().position(|b| b.index == index);
        let bucket = pos.map(|p| self.buckets.remove(p).expect("found"));
        self.buckets.retain(|b| b.index > index);
        let previous = if self.last_closed == Some(index.wrapping_sub(1)) {
            self.last_flags
        } else {
            0
        };
        self.last_closed = Some(index);
        let Some(b) = bucket else {
            self.last_flags = 0;
            return None;
        };
        let temps = if b.last_quarter.temps > 0 {
            b.last_quarter
        } else {
            b.whole
        };
        let scores = if b.last_quarter.scored > 0 {
            b.last_quarter
        } else {
            b.whole
        };
        let mut flags = 0;
        if temps.temps > 0 && 2 * temps.febrile >= temps.temps {
            flags |= PatientBucket::FEBRILE;
            if previous & PatientBucket::FEBRILE == 0 {
                flags |= PatientBucket::NEW_FEBRILE;
            }
        }
        if scores.scored > 0 && 2 * scores.ge5 >= scores.scored {
            flags |= PatientBucket::NEWS2_GE5;
            if previous & PatientBucket::NEWS2_GE5 == 0 {
                flags |= PatientBucket::NEW_NEWS2_GE5;
            }
        }
        self.last_flags = flags;
        Some(flags)
    }

    fn escalate(
        &mut self,
        score: &news2::Score,
        t: Timestamp,
        c: &PatientConfig,
        events: &mut Vec<PatientEvent>,
    ) {
        let Some(now_risk) = score.risk() else {
            return; // a partial score decides nothing
        };
        for (since, band) in self.band_since.iter_mut().zip(ALERT_BANDS) {
            if now_risk >= band {
                let (_, n, low) = since.get_or_insert((t, 0, u8::MAX));
                *n += 1;
                *low = (*low).min(score.known_total);
            } else {
                *since = None;
            }
        }
        // The highest band that has held long enough.
        let held = ALERT_BANDS
            .into_iter()
            .zip(self.band_since)
            .rfind(|(_, s)| {
                s.is_some_and(|(at, n, _)| {
                    n >= c.risk_readings && t.saturating_duration_since(at) >= c.risk_persistence
                })
            });
        if let Some((band, Some((at, _, low)))) = held {
            if self.alerted.is_none_or(|a| band > a) {
                if self.alerted.is_some() {
                    events.push(PatientEvent::Clear(AlertKind::PatientRisk {
                        band,
                        news2: low,
                    }));
                }
                self.alerted = Some(band);
                self.calm_since = None;
                if band >= Risk::Medium && !self.reached_five {
                    // NEWS2 ≥ 5, held: the reference an early warning is
                    // measured against (from when the held stretch began).
                    self.reached_five = true;
                    events.push(PatientEvent::News2ReachedFive { sampled_at: at });
                }
                let threshold = match band {
                    Risk::High => 7.0,
                    Risk::Medium => 5.0,
                    _ => 3.0,
                };
                events.push(PatientEvent::Raise(
                    AlertKind::PatientRisk { band, news2: low },
                    Some(Evidence {
                        statistic: f64::from(low),
                        threshold,
                        window: (at, t),
                    }),
                ));
                return;
            }
        }
        if let Some(alerted) = self.alerted {
            if now_risk < alerted {
                let calm = *self.calm_since.get_or_insert(t);
                if t.saturating_duration_since(calm) >= c.risk_clear_after {
                    self.alerted = None;
                    self.calm_since = None;
                    events.push(PatientEvent::Clear(AlertKind::PatientRisk {
                        band: alerted,
                        news2: score.known_total,
                    }));
                }
            } else {
                self.calm_since = None;
            }
        }
    }

    fn close_epoch(&mut self, epoch_len: u64, c: &PatientConfig, events: &mut Vec<PatientEvent>) {
        let start = Timestamp::from_micros(self.epoch * epoch_len);
        let end = Timestamp::from_micros((self.epoch + 1) * epoch_len);
        let means: [Option<f64>; 6] = std::array::from_fn(|i| {
            (self.epoch_acc[i].n > 0)
                .then(|| self.epoch_acc[i].sum / f64::from(self.epoch_acc[i].n))
        });
        let first = self.first.unwrap_or(start);
        if !self.baseline_done {
            for (i, (w, m)) in self.baseline.iter_mut().zip(means).enumerate() {
                if let Some(m) = m.filter(|_| !self.sensor.is_quarantined(VitalSign::ALL[i])) {
                    w.push(m);
                }
            }
            if end.saturating_duration_since(first) >= c.baseline {
                self.baseline_done = true;
            }
            return;
        }
        // Standardised deviation of each sign from the patient's baseline.
        let z: [Option<f64>; 6] = std::array::from_fn(|i| {
            let b = &self.baseline[i];
            let m = means[i]?;
            (b.n >= 2).then(|| (m - b.mean) / b.sd().max(c.sigma_floor[i]))
        });
        let deviation: [Option<f64>; 6] = std::array::from_fn(|i| {
            Some(means[i]? - self.baseline[i].mean).filter(|_| self.baseline[i].n >= 2)
        });

        // Coherence: a single sign far out on its own is the sensor.
        for sign in COUPLED {
            let i = sign.index();
            let Some(zi) = z[i] else { continue };
            let others = COUPLED
                .iter()
                .filter(|o| **o != sign)
                .filter_map(|o| z[o.index()])
                .fold(0.0f64, |m, zj| m.max(zj.abs()));
            let fever_like = sign == VitalSign::Temperature && zi > 0.0;
            let drifting =
                !fever_like && zi.abs() >= c.drift_z && others <= c.drift_isolation * zi.abs();
            self.drift_run[i] = if drifting { self.drift_run[i] + 1 } else { 0 };
            let evidence = Evidence {
                statistic: zi,
                threshold: c.drift_z * zi.signum(),
                window: (start, end),
            };
            if self.drift_run[i] == c.sensor_epochs {
                if let Some(e) = self
                    .sensor
                    .set_external(sign, Some(SensorCheck::Drift), evidence)
                {
                    push_sensor_events(&[e], events);
                }
            } else if self.drift_run[i] == 0
                && self.sensor.is_quarantined(sign)
                && zi.abs() < c.drift_z / 2.0
            {
                if let Some(e) = self.sensor.set_external(sign, None, evidence) {
                    push_sensor_events(&[e], events);
                }
            }
        }
        if let (Some(dt), hr, rr) = (
            deviation[VitalSign::Temperature.index()],
            deviation[VitalSign::HeartRate.index()],
            deviation[VitalSign::RespRate.index()],
        ) {
            let incoherent = dt >= c.fever_rise_c
                && hr.is_none_or(|hr| hr < c.fever_hr_per_c * dt)
                && rr.is_none_or(|rr| rr < c.fever_rr_per_c * dt);
            self.incoherent_run = if incoherent {
                self.incoherent_run + 1
            } else {
                0
            };
            let evidence = Evidence {
                statistic: dt,
                threshold: c.fever_rise_c,
                window: (start, end),
            };
            if self.incoherent_run == c.sensor_epochs {
                let e = self.sensor.set_external(
                    VitalSign::Temperature,
                    Some(SensorCheck::Incoherent),
                    evidence,
                );
                if let Some(e) = e {
                    push_sensor_events(&[e], events);
                }
            } else if self.incoherent_run == 0 && dt < c.fever_rise_c / 2.0 {
                if let Some(e) = self
                    .sensor
                    .set_external(VitalSign::Temperature, None, evidence)
                {
                    push_sensor_events(&[e], events);
                }
            }
        }

        // Deterioration: the mean deviation in the worse direction over the
        // signs still trusted.
        let (sum, n) = (0..6)
            .filter(|&i| WORSE[i] != 0.0 && !self.sensor.is_quarantined(VitalSign::ALL[i]))
            .filter_map(|i| z[i].map(|z| WORSE[i] * z))
            .fold((0.0, 0u32), |(s, n), z| (s + z, n + 1));
        if n == 0 {
            return;
        }
        let score = sum / f64::from(n);
        if self.cusum == 0.0 {
            self.cusum_since = Some(start);
        }
        self.cusum = (self.cusum + score - c.k).max(0.0);
        if !self.deteriorating && self.cusum >= c.h {
            self.deteriorating = true;
            events.push(PatientEvent::Raise(
                AlertKind::Deterioration,
                Some(Evidence {
                    statistic: self.cusum,
                    threshold: c.h,
                    window: (self.cusum_since.unwrap_or(start), end),
                }),
            ));
        } else if self.deteriorating && self.cusum == 0.0 {
            self.deteriorating = false;
            events.push(PatientEvent::Clear(AlertKind::Deterioration));
        }
    }
}

fn push_sensor_events(sensor: &[SensorEvent], events: &mut Vec<PatientEvent>) {
    for e in sensor {
        events.push(match *e {
            SensorEvent::Raise {
                sign,
                check,
                evidence,
            } => PatientEvent::Raise(AlertKind::CheckSensor { sign, check }, Some(evidence)),
            SensorEvent::Clear { sign, check } => {
                PatientEvent::Clear(AlertKind::CheckSensor { sign, check })
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use vitalmesh_firmware::physiology::{DeteriorationEpisode, Episode, FeverEpisode};
    use vitalmesh_firmware::{FaultMode, LinkAction, Node, NodeConfig, SensorFault};
    use vitalmesh_wire::envelope::Keyring;
    use vitalmesh_wire::{Body, NodeId, PartitionId, WireTopic, decode};

    use super::*;
    use crate::news2::Parameter;

    const T0: Timestamp = Timestamp::from_secs(1_767_225_600);
    const MINUTE: Duration = Duration::from_secs(60);

    fn keys() -> &'static Keyring {
        static RING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
        RING.get_or_init(|| Keyring::new(*b"patient-monitor!patient-monitor!", 1000))
    }

    /// A real node sampling once a minute, its samples as they would arrive.
    struct Bed {
        node: Node,
        now: Timestamp,
    }

    impl Bed {
        fn new(id: u32, seed: u64) -> Self {
            let config = NodeConfig {
                sample_interval: MINUTE,
                ..NodeConfig::default()
            };
            let credentials = keys().node_credentials(NodeId(id));
            Self {
                node: Node::new(NodeId(id), PartitionId(0), config, seed, credentials, T0),
                now: T0,
            }
        }

        /// The samples of the next `d`.
        fn run(&mut self, d: Duration) -> Vec<Sample> {
            let until = self.now + d;
            let mut out = Vec::new();
            while let Some(t) = self.node.poll_timeout().filter(|t| *t <= until) {
                self.now = t.max(self.now);
                self.node.handle_timeout(self.now);
                while let Some(a) = self.node.poll_link() {
                    if a == LinkAction::Connect {
                        self.node.handle_connected(self.now);
                    }
                }
                while let Some(tx) = self.node.poll_transmit(self.now) {
                    let id = self.node.id();
                    let topic = WireTopic::Data {
                        partition: PartitionId(0),
                        node: id,
                    };
                    let Ok(Body::Batch(b)) = decode(&tx.payload, &topic, keys()) else {
                        panic!("a node's own batch decodes")
                    };
                    let ack = keys().ack_key(id).expect("provisioned").ack(
                        PartitionId(0),
                        id,
                        tx.first_seq + tx.samples as u64,
                    );
                    self.node.handle_ack(&ack, self.now);
                    out.extend(b.samples);
                }
            }
            self.now = until;
            out
        }
    }

    struct Watch {
        monitor: PatientMonitor,
        patient: PatientConfig,
        sensors: SensorConfig,
        events: Vec<(Timestamp, PatientEvent)>,
    }

    impl Watch {
        fn new() -> Self {
            Self {
                monitor: PatientMonitor::new(0),
                patient: PatientConfig::default(),
                sensors: SensorConfig::default(),
                events: Vec::new(),
            }
        }

        fn feed(&mut self, samples: &[Sample]) -> Vec<Assessment> {
            samples
                .iter()
                .map(|s| {
                    let mut e = Vec::new();
                    let a = self.monitor.observe(
                        s,
                        &self.patient,
                        &self.sensors,
                        Duration::from_secs(3600),
                        &mut e,
                    );
                    self.events.extend(e.into_iter().map(|e| (s.time, e)));
                    a
                })
                .collect()
        }

        fn raised(&self) -> Vec<(Timestamp, AlertKind)> {
            self.events
                .iter()
                .filter_map(|(t, e)| match e {
                    PatientEvent::Raise(k, _) => Some((*t, *k)),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn a_suspect_reading_never_reaches_news2_or_the_ward_counts() {
        let mut bed = Bed::new(3, 11);
        let mut w = Watch::new();
        w.feed(&bed.run(Duration::from_secs(5 * 3600)));
        // The probe jumps to 41 °C and stays there.
        bed.node.inject_fault(SensorFault {
            sign: Some(VitalSign::Temperature),
            mode: FaultMode::StuckAt { value: Some(41.0) },
            since: bed.now,
            until: None,
        });
        let samples = bed.run(Duration::from_secs(3 * 3600));
        let assessed = w.feed(&samples);
        let temp = Parameter::Temperature as usize;
        for (s, a) in samples.iter().zip(&assessed) {
            assert_eq!(
                s.vitals.temp_decicelsius,
                Some(410),
                "the device reads 41 °C"
            );
            assert_eq!(a.score.items[temp], None, "kept out of NEWS2");
            assert!(a.suspect & (1 << VitalSign::Temperature.index()) != 0);
        }
        assert!(
            w.raised().iter().any(|(_, k)| matches!(
                k,
                AlertKind::CheckSensor {
                    sign: VitalSign::Temperature,
                    ..
                }
            )),
            "{:?}",
            w.raised()
        );
        // Nor the ward: no bucket of those hours counts the patient febrile.
        let first = samples[0].time.as_micros() / 3_600_000_000 + 1;
        for b in first..first + 2 {
            let flags = w.monitor.close_bucket(b).expect("in the census");
            assert_eq!(flags & PatientBucket::FEBRILE, 0, "bucket {b}");
        }
    }

    #[test]
    fn a_real_fever_is_counted_and_not_called_a_sensor_fault() {
        let mut bed = Bed::new(4, 12);
        let mut w = Watch::new();
        w.feed(&bed.run(Duration::from_secs(5 * 3600)));
        let baseline = bed.node.physiology().profile().baseline[VitalSign::Temperature.index()];
        let mut rng = vitalmesh_firmware::rng::stream(
            1,
            NodeId(4),
            vitalmesh_firmware::rng::Purpose::Episode,
        );
        let fever = FeverEpisode {
            onset: bed.now,
            ..FeverEpisode::draw(bed.now, baseline, &mut rng)
        };
        bed.node.add_episode(Episode::Fever(fever));
        let samples = bed.run(Duration::from_secs(10 * 3600));
        w.feed(&samples);
        assert!(
            !w.raised()
                .iter()
                .any(|(_, k)| matches!(k, AlertKind::CheckSensor { .. })),
            "{:?}",
            w.raised()
        );
        let last = samples.last().unwrap().time.as_micros() / 3_600_000_000;
        let flags = w.monitor.close_bucket(last - 1).expect("in the census");
        assert!(flags & PatientBucket::FEBRILE != 0, "febrile by now");
    }

    #[test]
    fn a_temperature_drift_with_no_heart_or_breathing_response_is_the_sensor() {
        let mut bed = Bed::new(5, 13);
        let mut w = Watch::new();
        w.feed(&bed.run(Duration::from_secs(5 * 3600)));
        let start = bed.now;
        bed.node.inject_fault(SensorFault {
            sign: Some(VitalSign::Temperature),
            mode: FaultMode::Drift { per_hour: 0.5 },
            since: start,
            until: None,
        });
        w.feed(&bed.run(Duration::from_secs(6 * 3600)));
        let flagged: Vec<_> = w
            .raised()
            .into_iter()
            .filter(|(_, k)| {
                matches!(
                    k,
                    AlertKind::CheckSensor {
                        sign: VitalSign::Temperature,
                        check: SensorCheck::Incoherent
                    }
                )
            })
            .collect();
        assert_eq!(flagged.len(), 1, "{:?}", w.raised());
        let after = flagged[0].0.saturating_duration_since(start);
        assert!(after < Duration::from_secs(4 * 3600), "{after:?}");
    }

    #[test]
    fn a_slow_deterioration_is_flagged_before_news2_holds_at_five() {
        let mut flagged_first = 0;
        for seed in 0..10 {
            let mut bed = Bed::new(6, 100 + seed);
            let mut w = Watch::new();
            w.feed(&bed.run(Duration::from_secs(5 * 3600)));
            bed.node
                .add_episode(Episode::Deterioration(DeteriorationEpisode {
                    onset: bed.now,
                    ramp: Duration::from_secs(8 * 3600),
                }));
            w.feed(&bed.run(Duration::from_secs(10 * 3600)));
            let worse = w
                .raised()
                .iter()
                .find(|(_, k)| matches!(k, AlertKind::Deterioration))
                .map(|(t, _)| *t);
            let five = w.events.iter().find_map(|(_, e)| match e {
                PatientEvent::News2ReachedFive { sampled_at } => Some(*sampled_at),
                _ => None,
            });
            assert!(worse.is_some(), "seed {seed}: {:?}", w.raised());
            if let (Some(a), Some(f)) = (worse, five) {
                flagged_first += u32::from(a < f);
            }
        }
        assert!(flagged_first >= 8, "{flagged_first} of 10 ahead of NEWS2");
    }

    #[test]
    fn a_risk_alert_carries_one_band_and_a_score_in_it() {
        // Scores along a stay: every raise's score must lie in its band.
        let scores = [0u8, 2, 5, 5, 6, 5, 7, 9, 8, 7, 7, 6, 5, 3, 2, 1];
        let mut m = PatientMonitor::new(0);
        let c = PatientConfig {
            risk_persistence: Duration::from_secs(120),
            risk_clear_after: Duration::from_secs(120),
            ..PatientConfig::default()
        };
        let mut events = Vec::new();
        for (i, &total) in scores.iter().cycle().take(200).enumerate() {
            let score = news2::Score {
                items: [
                    Some(total.min(3)),
                    Some(total.saturating_sub(3).min(3)),
                    Some(0),
                    Some(total.saturating_sub(6)),
                    Some(0),
                    Some(0),
                    Some(0),
                ],
                known_total: total,
                missing: ParameterSet::EMPTY,
            };
            m.escalate(&score, T0 + MINUTE * (i as u32), &c, &mut events);
        }
        let raises: Vec<(Risk, u8)> = events
            .iter()
            .filter_map(|e| match e {
                PatientEvent::Raise(AlertKind::PatientRisk { band, news2 }, _) => {
                    Some((*band, *news2))
                }
                _ => None,
            })
            .collect();
        assert!(!raises.is_empty());
        for (band, score) in raises {
            match band {
                Risk::High => assert!(score >= 7, "{band:?} {score}"),
                Risk::Medium => assert!((5..=6).contains(&score), "{band:?} {score}"),
                _ => assert!(score <= 4, "{band:?} {score}"),
            }
        }
    }
}

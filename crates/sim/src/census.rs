//! Who is in which bed, and who falls ill without anyone's doing: the
//! admissions, discharges and background illness of a run, planned from
//! the seed.
//!
//! With `[population.admissions]` each bed alternates between a patient
//! (a lognormal length of stay) and standing empty (an exponential gap
//! whose mean makes the ward's occupancy come out right on average).
//! Discharges fall in the late morning (around 11:00, 09:00–17:00) and
//! admissions in the afternoon and evening (around 17:00, 11:00–24:00), so
//! the census moves by the hour; each ward's occupancy is drawn around the
//! scenario's, so it moves by the ward too. Without the section every bed
//! holds one patient for the whole run.
//!
//! `[population.illness]` gives each patient background fevers (a Poisson
//! process over the stay, a new fever only after the last has settled) and
//! deteriorations. Each is planned at admission from the admission's own
//! random stream, so a patient's illness does not depend on anyone else's.

use std::collections::BTreeMap;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use vitalmesh_firmware::PatientOptions;
use vitalmesh_firmware::physiology::{DeteriorationEpisode, FeverEpisode, PatientProfile};
use vitalmesh_firmware::rng::{self, Draw, Purpose};
use vitalmesh_scenario::{Admissions, Illness, Scenario};
use vitalmesh_wire::{NodeId, Timestamp, VitalSign};

/// What happens to a bed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BedEvent {
    /// The patient goes home.
    Discharge,
    /// A new patient arrives.
    Admit,
    /// The patient's fever begins.
    Fever(FeverEpisode),
    /// The patient starts to deteriorate over this ramp.
    Deteriorate(Duration),
}

/// A planned event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Planned {
    /// When, since the nodes started.
    pub(crate) at: Duration,
    /// Which bed.
    pub(crate) node: u32,
    /// The admission it concerns (stale once the bed has another patient).
    pub(crate) admission: u32,
    /// What.
    pub(crate) event: BedEvent,
}

/// A bed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bed {
    pub(crate) occupied: bool,
    pub(crate) admission: u32,
    pub(crate) options: PatientOptions,
    /// Since when its current state holds, seconds.
    pub(crate) since_s: f64,
    /// After the current patient leaves: (gap in seconds, admission hour).
    next_gap: (f64, f64),
}

/// The beds of a run.
#[derive(Debug, Clone)]
pub(crate) struct Census {
    seed: u64,
    origin_unix_s: u64,
    admissions: Option<Admissions>,
    illness: Illness,
    oxygen_share: f64,
    scale2_share: f64,
    nodes_per_ward: u32,
    ward_occupancy: Vec<f64>,
    pub(crate) beds: Vec<Bed>,
    /// Nothing is planned beyond the end of the run.
    horizon_s: f64,
    plan: BTreeMap<(Duration, u64), Planned>,
    next_key: u64,
    /// Occupied bed-seconds so far, per ward (up to each bed's `since_s`).
    pub(crate) occupied_s: Vec<f64>,
}

const DAY_S: f64 = 86_400.0;

impl Census {
    pub(crate) fn new(scenario: &Scenario, seed: u64) -> Self {
        let p = scenario.population;
        let ward_occupancy = (0..p.wards)
            .map(|w| match scenario.admissions {
                None => 1.0,
                Some(a) => {
                    let mut rng =
                        rng::stream(seed, NodeId((1 << 31) | u32::from(w)), Purpose::Census);
                    (a.occupancy + a.ward_spread * (2.0 * rng.unit() - 1.0)).clamp(0.05, 1.0)
                }
            })
            .collect();
        let beds = (0..p.nodes())
            .map(|n| Bed {
                occupied: true,
                admission: 0,
                options: PatientOptions::assign(
                    seed,
                    NodeId(n),
                    0,
                    scenario.oxygen_share,
                    scenario.scale2_share,
                ),
                since_s: 0.0,
                next_gap: (0.0, 17.0),
            })
            .collect();
        Self {
            seed,
            origin_unix_s: scenario.start_unix_s,
            admissions: scenario.admissions,
            illness: scenario.illness,
            oxygen_share: scenario.oxygen_share,
            scale2_share: scenario.scale2_share,
            nodes_per_ward: p.nodes_per_ward.max(1),
            ward_occupancy,
            beds,
            horizon_s: (scenario.duration + scenario.drain).as_secs_f64(),
            plan: BTreeMap::new(),
            next_key: 0,
            occupied_s: vec![0.0; usize::from(p.wards)],
        }
    }

    /// Decides who is in bed at time zero (wall clock `origin_unix_s`) and
    /// plans their stays and illness.
    pub(crate) fn begin(&mut self, origin_unix_s: u64) {
        self.origin_unix_s = origin_unix_s;
        for n in 0..self.beds.len() as u32 {
            let ward = (n / self.nodes_per_ward) as usize;
            let occupancy = self.ward_occupancy.get(ward).copied().unwrap_or(1.0);
            let mut rng = rng::patient_stream(self.seed, NodeId(n), 0, Purpose::Census);
            let Some(a) = self.admissions else {
                self.plan_illness(n, 0.0, f64::INFINITY);
                continue;
            };
            let (stay, discharge_hour, gap, admit_hour) = self.draw_stay(&mut rng, a, occupancy);
            self.beds[n as usize].next_gap = (gap, admit_hour);
            if rng.chance(occupancy) {
                // In bed already: some of the stay is behind them.
                let left = self.snap(stay * rng.unit(), discharge_hour, 0.0);
                self.plan(left, n, 0, BedEvent::Discharge);
                self.plan_illness(n, 0.0, left);
            } else {
                self.beds[n as usize].occupied = false;
                let at = self.snap(gap * rng.unit(), admit_hour, 0.0);
                self.plan(at, n, 0, BedEvent::Admit);
            }
        }
    }

    /// When the next planned event is due.
    pub(crate) fn poll_timeout(&self) -> Option<Duration> {
        self.plan.keys().next().map(|(at, _)| *at)
    }

    /// The next event due at `elapsed`, still valid for its bed.
    pub(crate) fn pop_due(&mut self, elapsed: Duration) -> Option<Planned> {
        loop {
            let (&key, _) = self
                .plan
                .iter()
                .next()
                .filter(|((at, _), _)| *at <= elapsed)?;
            let p = self.plan.remove(&key).expect("just seen");
            let bed = &self.beds[p.node as usize];
            let valid = match p.event {
                BedEvent::Admit => !bed.occupied,
                _ => bed.occupied && bed.admission == p.admission,
            };
            if valid {
                return Some(p);
            }
        }
    }

    /// Puts an event back for later (its node has not started yet).
    pub(crate) fn postpone(&mut self, mut p: Planned, to: Duration) {
        p.at = to;
        self.plan(p.at.as_secs_f64(), p.node, p.admission, p.event);
    }

    /// A bed empties at `at_s`.
    pub(crate) fn discharge(&mut self, node: u32, at_s: f64) {
        self.settle(node, at_s);
        let bed = &mut self.beds[node as usize];
        bed.occupied = false;
        let (gap, hour) = bed.next_gap;
        let admission = bed.admission;
        if self.admissions.is_some() {
            let next = self.snap(at_s + gap, hour, at_s + 1800.0);
            self.plan(next, node, admission, BedEvent::Admit);
        }
    }

    /// A new patient takes bed `node` at `at_s`; their clinical facts.
    pub(crate) fn admit(&mut self, node: u32, at_s: f64) -> PatientOptions {
        self.settle(node, at_s);
        let ward = (node / self.nodes_per_ward) as usize;
        let occupancy = self.ward_occupancy.get(ward).copied().unwrap_or(1.0);
        let admission = self.beds[node as usize].admission + 1;
        let options = PatientOptions::assign(
            self.seed,
            NodeId(node),
            admission,
            self.oxygen_share,
            self.scale2_share,
        );
        {
            let bed = &mut self.beds[node as usize];
            bed.occupied = true;
            bed.admission = admission;
            bed.options = options;
        }
        if let Some(a) = self.admissions {
            let mut rng = rng::patient_stream(self.seed, NodeId(node), admission, Purpose::Census);
            let (stay, discharge_hour, gap, admit_hour) = self.draw_stay(&mut rng, a, occupancy);
            self.beds[node as usize].next_gap = (gap, admit_hour);
            let leave = self.snap(at_s + stay, discharge_hour, at_s + 2.0 * 3600.0);
            self.plan(leave, node, admission, BedEvent::Discharge);
            self.plan_illness(node, at_s, leave);
        }
        options
    }

    /// Adds the occupied time of `node` up to `at_s`.
    pub(crate) fn settle(&mut self, node: u32, at_s: f64) {
        let ward = (node / self.nodes_per_ward) as usize;
        let bed = &mut self.beds[node as usize];
        if bed.occupied {
            if let Some(w) = self.occupied_s.get_mut(ward) {
                *w += (at_s - bed.since_s).max(0.0);
            }
        }
        bed.since_s = at_s;
    }

    /// The baseline temperature of a bed's current patient, °C.
    pub(crate) fn baseline_temperature(&self, node: u32) -> f64 {
        let bed = &self.beds[node as usize];
        PatientProfile::of(self.seed, NodeId(node), bed.admission, bed.options).baseline
            [VitalSign::Temperature.index()]
    }

    /// (stay, discharge hour, gap, admission hour), seconds and hours.
    fn draw_stay(
        &self,
        rng: &mut ChaCha8Rng,
        a: Admissions,
        occupancy: f64,
    ) -> (f64, f64, f64, f64) {
        let median = a.stay_median.as_secs_f64();
        let stay = median * (a.stay_spread * rng.normal(0.0, 1.0)).exp().min(20.0);
        let mean_stay = median * (a.stay_spread * a.stay_spread / 2.0).exp();
        let mean_gap = mean_stay * (1.0 - occupancy) / occupancy;
        let gap = -mean_gap * (1.0 - rng.unit()).max(1e-12).ln();
        let discharge_hour = rng.normal(11.0, 1.5).clamp(9.0, 17.0);
        let admit_hour = rng.normal(17.0, 3.0).clamp(11.0, 23.9);
        (stay, discharge_hour, gap, admit_hour)
    }

    /// `raw_s` moved to `hour` o'clock of its day (UTC), and a day later if
    /// that falls before `not_before_s`.
    fn snap(&self, raw_s: f64, hour: f64, not_before_s: f64) -> f64 {
        let origin = self.origin_unix_s as f64;
        let day = ((origin + raw_s) / DAY_S).floor();
        let mut t = day * DAY_S + hour * 3600.0 - origin;
        while t < not_before_s {
            t += DAY_S;
        }
        t.max(0.0)
    }

    fn plan(&mut self, at_s: f64, node: u32, admission: u32, event: BedEvent) {
        if at_s > self.horizon_s {
            return;
        }
        // Whole microseconds: the drivers' clocks count in them, and a time
        // between two ticks would never be reached.
        let at = Duration::from_micros((at_s.max(0.0) * 1e6).ceil() as u64);
        self.plan.insert(
            (at, self.next_key),
            Planned {
                at,
                node,
                admission,
                event,
            },
        );
        self.next_key += 1;
    }

    /// Background fevers and deteriorations of the bed's current patient
    /// between `from_s` and `until_s`.
    fn plan_illness(&mut self, node: u32, from_s: f64, until_s: f64) {
        let (fever, worse) = (
            self.illness.fever_per_patient_day,
            self.illness.deterioration_per_patient_day,
        );
        if fever <= 0.0 && worse <= 0.0 {
            return;
        }
        let until_s = until_s.min(self.horizon_s);
        let admission = self.beds[node as usize].admission;
        let mut rng = rng::patient_stream(self.seed, NodeId(node), admission, Purpose::Illness);
        let exp = |rng: &mut ChaCha8Rng, per_day: f64| -> f64 {
            -(DAY_S / per_day) * (1.0 - rng.unit()).max(1e-12).ln()
        };
        if fever > 0.0 {
            let baseline = self.baseline_temperature(node);
            let mut t = from_s + exp(&mut rng, fever);
            while t < until_s {
                let f = FeverEpisode::draw(Timestamp::EPOCH, baseline, &mut rng);
                self.plan(t, node, admission, BedEvent::Fever(f));
                let length = f
                    .end()
                    .saturating_duration_since(Timestamp::EPOCH)
                    .as_secs_f64();
                t += length + exp(&mut rng, fever);
            }
        }
        if worse > 0.0 {
            let t = from_s + exp(&mut rng, worse);
            if t < until_s {
                let d = DeteriorationEpisode::draw(Timestamp::EPOCH, &mut rng);
                self.plan(t, node, admission, BedEvent::Deteriorate(d.ramp));
            }
        }
    }
}

//! Per ward: are more patients febrile (or scoring ≥ 5) than this ward's
//! recent past says they should be?
//!
//! A ward's patients are spread over every aggregator (partitions follow
//! node ids, not wards), so the series is assembled from all of them. At
//! the end of each time bucket (plus a grace period for late samples) every
//! aggregator publishes a [`WardReport`] per ward: each patient it monitors
//! there, primary or standby, with the patient's flags for the bucket
//! ([`crate::detect::patient`]). Every aggregator subscribes to every
//! ward's reports and assembles them ([`WardDetection`]): patients are
//! merged by node id, so a patient reported by both its primary and its
//! standby counts once, and the bucket is complete when the reports cover
//! every partition (or when the assembly window times out). Each
//! aggregator then runs the same detectors on the same series, so when the
//! ward's owner (rendezvous hashing over the live aggregators) fails, the
//! next owner has the same history and alerts in its place.
//!
//! The counts per bucket: the census (patients monitored), febrile
//! patients, new febrile patients (not febrile in the previous bucket),
//! patients with NEWS2 ≥ 5 and new ones (`domain-science.md` §2).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vitalmesh_wire::{AggregatorId, NodeId, PatientBucket, Timestamp, WardReport};

use crate::detect::method::{Method, MethodConfig, quoted_list};
use crate::detect::series::{Detector, Observation, Step};

/// Which count a ward detector watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WardSeries {
    /// Febrile patients (most accepted temperatures ≥ 38.1 °C).
    Febrile,
    /// Patients febrile in this bucket and not the previous one.
    NewFebrile,
    /// Patients with NEWS2 ≥ 5.
    News2Ge5,
    /// Patients with NEWS2 ≥ 5 in this bucket and not the previous one.
    NewNews2Ge5,
}

impl WardSeries {
    /// Every series.
    pub const ALL: [Self; 4] = [
        Self::Febrile,
        Self::NewFebrile,
        Self::News2Ge5,
        Self::NewNews2Ge5,
    ];

    /// The name in files and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Febrile => "febrile",
            Self::NewFebrile => "new_febrile",
            Self::News2Ge5 => "news2_ge5",
            Self::NewNews2Ge5 => "new_news2_ge5",
        }
    }

    /// As shown to people.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Febrile => "febrile patients",
            Self::NewFebrile => "new febrile patients",
            Self::News2Ge5 => "patients with NEWS2 ≥ 5",
            Self::NewNews2Ge5 => "new NEWS2 ≥ 5 transitions",
        }
    }

    /// The series called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The names, quoted, for messages.
    pub fn names() -> String {
        quoted_list(&Self::ALL.map(Self::name))
    }

    const fn flag(self) -> u8 {
        match self {
            Self::Febrile => PatientBucket::FEBRILE,
            Self::NewFebrile => PatientBucket::NEW_FEBRILE,
            Self::News2Ge5 => PatientBucket::NEWS2_GE5,
            Self::NewNews2Ge5 => PatientBucket::NEW_NEWS2_GE5,
        }
    }
}

/// One ward detector: a method on a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WardDetectorSpec {
    /// Its name in reports (`c1`, `cusum_proportion`, …).
    pub name: String,
    /// What it watches.
    pub series: WardSeries,
    /// How.
    pub method: MethodConfig,
}

impl WardDetectorSpec {
    /// `method` with its defaults on `series`, named after the method.
    pub fn new(method: Method, series: WardSeries) -> Self {
        Self {
            name: method.name().into(),
            series,
            method: MethodConfig::new(method),
        }
    }
}

/// Ward-level detection settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WardConfig {
    /// Bucket length.
    pub bucket: Duration,
    /// Samples may arrive this long after their bucket ends (backfill).
    pub grace: Duration,
    /// After the grace period, how long to wait for every aggregator's
    /// report before the bucket is judged on what arrived.
    pub assemble: Duration,
    /// The detectors, in report order.
    pub detectors: Vec<WardDetectorSpec>,
}

impl Default for WardConfig {
    /// Hourly buckets, and every method on new febrile patients.
    fn default() -> Self {
        Self {
            bucket: Duration::from_secs(3600),
            grace: Duration::from_secs(120),
            assemble: Duration::from_secs(60),
            detectors: Method::ALL
                .into_iter()
                .map(|m| WardDetectorSpec::new(m, WardSeries::NewFebrile))
                .collect(),
        }
    }
}

impl WardConfig {
    /// Bucket number of `t`.
    pub fn bucket_of(&self, t: Timestamp) -> u64 {
        t.as_micros() / self.bucket_us()
    }

    /// Start of bucket `b`.
    pub fn bucket_start(&self, b: u64) -> Timestamp {
        Timestamp::from_micros(b.saturating_mul(self.bucket_us()))
    }

    fn bucket_us(&self) -> u64 {
        self.bucket.as_micros().max(1) as u64
    }

    /// When every aggregator closes bucket `b` and reports it.
    pub fn report_at(&self, b: u64) -> Timestamp {
        self.bucket_start(b + 1) + self.grace
    }

    /// When bucket `b` is judged on what arrived, complete or not.
    pub fn judge_by(&self, b: u64) -> Timestamp {
        self.report_at(b) + self.assemble
    }
}

/// A ward's counts over one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WardCounts {
    /// Patients monitored.
    pub census: u32,
    /// Febrile.
    pub febrile: u32,
    /// Newly febrile.
    pub new_febrile: u32,
    /// NEWS2 ≥ 5.
    pub news2_ge5: u32,
    /// Newly NEWS2 ≥ 5.
    pub new_news2_ge5: u32,
}

impl WardCounts {
    /// The count of `series`.
    pub fn get(&self, series: WardSeries) -> u32 {
        match series {
            WardSeries::Febrile => self.febrile,
            WardSeries::NewFebrile => self.new_febrile,
            WardSeries::News2Ge5 => self.news2_ge5,
            WardSeries::NewNews2Ge5 => self.new_news2_ge5,
        }
    }

    fn add(&mut self, flags: u8) {
        self.census += 1;
        for s in WardSeries::ALL {
            if flags & s.flag() != 0 {
                match s {
                    WardSeries::Febrile => self.febrile += 1,
                    WardSeries::NewFebrile => self.new_febrile += 1,
                    WardSeries::News2Ge5 => self.news2_ge5 += 1,
                    WardSeries::NewNews2Ge5 => self.new_news2_ge5 += 1,
                }
            }
        }
    }
}

/// A ward's bucket, judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WardBucket {
    /// The ward.
    pub ward: u16,
    /// Bucket number.
    pub bucket: u64,
    /// Its start.
    pub start: Timestamp,
    /// Its end.
    pub end: Timestamp,
    /// The counts (`None`: no aggregator reported; the detectors skip it).
    pub counts: Option<WardCounts>,
    /// Whether every partition was covered.
    pub complete: bool,
    /// Per detector, in configuration order.
    pub steps: Vec<Step>,
    /// Per detector: the alarm started (`Some(true)`) or ended
    /// (`Some(false)`) with this bucket.
    pub changes: Vec<Option<bool>>,
}

/// Reports arriving for one ward and bucket.
#[derive(Debug, Clone, Default)]
struct Assembly {
    patients: BTreeMap<NodeId, u8>,
    covered: BTreeSet<u16>,
    /// Per aggregator: chunks expected and received.
    chunks: BTreeMap<AggregatorId, (u16, BTreeSet<u16>)>,
}

impl Assembly {
    fn complete(&self, partitions: u16) -> bool {
        self.covered.len() == usize::from(partitions)
            && self
                .chunks
                .values()
                .all(|(expected, got)| got.len() == usize::from(*expected))
    }
}

#[derive(Debug, Clone)]
struct WardState {
    pending: BTreeMap<u64, Assembly>,
    /// The next bucket to judge (`None` until the first report).
    next: Option<u64>,
    detectors: Vec<Detector>,
    alarming: Vec<bool>,
}

/// Why a ward report was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportRefused {
    /// A ward this mesh does not have.
    UnknownWard,
    /// Another bucket length: the aggregators disagree on configuration.
    BucketMismatch,
    /// For a bucket already judged.
    Late,
}

/// Every ward's assembly and detectors, as one aggregator keeps them.
#[derive(Debug, Clone)]
pub struct WardDetection {
    config: WardConfig,
    partitions: u16,
    wards: Vec<WardState>,
    /// A report arrived since the last poll.
    dirty: bool,
    /// The earliest bucket any ward waits to judge: the aggregator asks for
    /// the next deadline after every message, and twenty wards each time
    /// would add up.
    earliest: Option<u64>,
}

impl WardDetection {
    /// Detection for `wards` wards over `partitions` partitions.
    pub fn new(config: WardConfig, wards: u16, partitions: u16) -> Self {
        let state = WardState {
            pending: BTreeMap::new(),
            next: None,
            detectors: config
                .detectors
                .iter()
                .map(|d| Detector::new(d.method))
                .collect(),
            alarming: vec![false; config.detectors.len()],
        };
        Self {
            partitions,
            wards: vec![state; usize::from(wards)],
            config,
            dirty: false,
            earliest: None,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &WardConfig {
        &self.config
    }

    /// Takes in one aggregator's report.
    ///
    /// # Errors
    ///
    /// Why the report was not used.
    pub fn handle_report(&mut self, r: &WardReport) -> Result<(), ReportRefused> {
        if u64::from(r.bucket_s) != self.config.bucket.as_secs() {
            return Err(ReportRefused::BucketMismatch);
        }
        let Some(ward) = self.wards.get_mut(usize::from(r.ward)) else {
            return Err(ReportRefused::UnknownWard);
        };
        if ward.next.is_some_and(|n| r.bucket < n) {
            return Err(ReportRefused::Late);
        }
        if ward.next.is_none() {
            ward.next = Some(r.bucket);
            self.earliest = Some(self.earliest.map_or(r.bucket, |e| e.min(r.bucket)));
        }
        self.dirty = true;
        let a = ward.pending.entry(r.bucket).or_default();
        for p in &r.patients {
            *a.patients.entry(p.node).or_default() |= p.flags;
        }
        a.covered.extend(r.partitions.iter().copied());
        a.chunks
            .entry(r.aggregator)
            .or_insert_with(|| (r.chunks, BTreeSet::new()))
            .1
            .insert(r.chunk);
        Ok(())
    }

    /// When [`Self::poll`] next has something to judge (a bucket may also
    /// complete earlier, when its last report arrives: poll then too).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.earliest.map(|b| self.config.judge_by(b))
    }

    /// Whether a report since the last poll may have completed a bucket.
    fn maybe_complete(&self) -> bool {
        self.wards.iter().any(|w| {
            w.next
                .and_then(|b| w.pending.get(&b))
                .is_some_and(|a| a.complete(self.partitions))
        })
    }

    /// Judges every bucket that is complete, or whose assembly window has
    /// passed, in bucket order per ward.
    pub fn poll(&mut self, now: Timestamp, out: &mut Vec<WardBucket>) {
        let due = self
            .earliest
            .is_some_and(|b| now >= self.config.judge_by(b));
        if !(due || self.dirty && self.maybe_complete()) {
            self.dirty = false;
            return;
        }
        self.dirty = false;
        let partitions = self.partitions;
        for (w, ward) in self.wards.iter_mut().enumerate() {
            while let Some(b) = ward.next {
                let complete = ward.pending.get(&b).is_some_and(|a| a.complete(partitions));
                if !complete && now < self.config.judge_by(b) {
                    break;
                }
                let assembly = ward.pending.remove(&b);
                let counts = assembly.as_ref().map(|a| {
                    let mut c = WardCounts::default();
                    for &flags in a.patients.values() {
                        c.add(flags);
                    }
                    c
                });
                let mut steps = Vec::with_capacity(ward.detectors.len());
                let mut changes = Vec::with_capacity(ward.detectors.len());
                for ((d, spec), alarming) in ward
                    .detectors
                    .iter_mut()
                    .zip(&self.config.detectors)
                    .zip(ward.alarming.iter_mut())
                {
                    let step = match counts {
                        Some(c) => d.step(Observation {
                            count: f64::from(c.get(spec.series)),
                            census: Some(f64::from(c.census)),
                        }),
                        None => Step::default(),
                    };
                    let change = (step.alarm != *alarming).then_some(step.alarm);
                    *alarming = step.alarm;
                    steps.push(step);
                    changes.push(change);
                }
                out.push(WardBucket {
                    ward: w as u16,
                    bucket: b,
                    start: self.config.bucket_start(b),
                    end: self.config.bucket_start(b + 1),
                    counts,
                    complete,
                    steps,
                    changes,
                });
                ward.next = Some(b + 1);
            }
        }
        self.earliest = self.wards.iter().filter_map(|w| w.next).min();
    }
}

/// The owner of `ward` among `live` (rendezvous hashing, as partitions):
/// the one aggregator that alerts on it.
pub fn owner(ward: u16, live: &BTreeSet<AggregatorId>) -> Option<AggregatorId> {
    use vitalmesh_wire::ids::{HashDomain, stable_hash64};
    live.iter().copied().max_by_key(|a| {
        let mut key = [0u8; 5];
        key[0] = b'w';
        key[1..3].copy_from_slice(&ward.to_le_bytes());
        key[3..].copy_from_slice(&a.0.to_le_bytes());
        (stable_hash64(HashDomain::Rendezvous, &key), u16::MAX - a.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(agg: u16, bucket: u64, partitions: &[u16], patients: &[(u32, u8)]) -> WardReport {
        WardReport {
            aggregator: AggregatorId(agg),
            ward: 1,
            bucket_s: 3600,
            bucket,
            partitions: partitions.to_vec(),
            chunk: 0,
            chunks: 1,
            patients: patients
                .iter()
                .map(|&(n, flags)| PatientBucket {
                    node: NodeId(n),
                    flags,
                })
                .collect(),
        }
    }

    const F: u8 = PatientBucket::FEBRILE;
    const NF: u8 = PatientBucket::FEBRILE | PatientBucket::NEW_FEBRILE;

    #[test]
    fn reports_merge_by_patient_and_a_bucket_completes_when_every_partition_is_covered() {
        let mut d = WardDetection::new(WardConfig::default(), 3, 4);
        let b = 490_000;
        let mut out = Vec::new();
        // Primary of partitions 0–1 and standby of 2; a patient (node 7)
        // appears in both its primary's and its standby's report.
        d.handle_report(&report(0, b, &[0, 1, 2], &[(5, 0), (7, NF)]))
            .unwrap();
        d.poll(Timestamp::EPOCH, &mut out);
        assert!(out.is_empty(), "partition 3 not yet covered");
        d.handle_report(&report(1, b, &[2, 3], &[(7, F), (9, F)]))
            .unwrap();
        d.poll(Timestamp::EPOCH, &mut out);
        assert_eq!(out.len(), 1);
        let c = out[0].counts.unwrap();
        assert_eq!((c.census, c.febrile, c.new_febrile), (3, 2, 1));
        assert!(out[0].complete);
        assert_eq!(
            d.handle_report(&report(1, b, &[2, 3], &[])),
            Err(ReportRefused::Late)
        );
    }

    #[test]
    fn an_incomplete_bucket_is_judged_once_its_window_has_passed() {
        let config = WardConfig::default();
        let b = 490_000;
        let mut d = WardDetection::new(config.clone(), 3, 4);
        d.handle_report(&report(0, b, &[0, 1], &[(5, F)])).unwrap();
        let mut out = Vec::new();
        d.poll(config.judge_by(b) - Duration::from_secs(1), &mut out);
        assert!(out.is_empty());
        assert_eq!(d.poll_timeout(), Some(config.judge_by(b)));
        d.poll(config.judge_by(b), &mut out);
        assert_eq!(out.len(), 1);
        assert!(!out[0].complete);
        assert_eq!(out[0].counts.unwrap().febrile, 1);
        // The next bucket had no report at all: a gap the detectors skip.
        d.poll(config.judge_by(b + 1), &mut out);
        assert_eq!(out[1].counts, None);
        assert!(out[1].steps.iter().all(|s| s.statistic.is_none()));
    }

    #[test]
    fn detectors_alarm_on_a_surge_and_say_when_the_alarm_starts_and_ends() {
        let config = WardConfig {
            detectors: vec![WardDetectorSpec::new(Method::C1, WardSeries::NewFebrile)],
            ..WardConfig::default()
        };
        let mut d = WardDetection::new(config, 2, 1);
        let mut out = Vec::new();
        let new_cases = [0, 1, 0, 0, 1, 0, 0, 6, 0, 0];
        for (k, &n) in new_cases.iter().enumerate() {
            let patients: Vec<(u32, u8)> =
                (0..40).map(|p| (p, if p < n { NF } else { 0 })).collect();
            d.handle_report(&report(0, 100 + k as u64, &[0], &patients))
                .unwrap();
            d.poll(Timestamp::EPOCH, &mut out);
        }
        let alarms: Vec<(u64, Option<bool>)> =
            out.iter().map(|b| (b.bucket, b.changes[0])).collect();
        assert_eq!(alarms[7], (107, Some(true)), "{alarms:?}");
        assert_eq!(alarms[8], (108, Some(false)));
        assert!(alarms[..7].iter().all(|(_, c)| c.is_none()));
    }

    #[test]
    fn every_ward_has_one_owner_and_losing_it_moves_only_its_wards() {
        let live: BTreeSet<AggregatorId> = (0..4).map(AggregatorId).collect();
        let owners: Vec<AggregatorId> = (0..40).map(|w| owner(w, &live).unwrap()).collect();
        for a in 0..4 {
            assert!(owners.contains(&AggregatorId(a)), "load spreads");
        }
        let mut fewer = live.clone();
        fewer.remove(&AggregatorId(2));
        for (w, &o) in owners.iter().enumerate() {
            let after = owner(w as u16, &fewer).unwrap();
            if o != AggregatorId(2) {
                assert_eq!(after, o, "ward {w} keeps its owner");
            }
        }
    }
}

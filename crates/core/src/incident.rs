//! Incidents: alerts folded into what a person should look at.
//!
//! Alerts are precise and numerous; a person wants one line per problem.
//! As Alertmanager groups alerts by labels and waits `group_wait` before
//! notifying, so that a burst arrives as one notification, the
//! [`IncidentBook`] groups alerts into [`Incident`]s:
//!
//! - **Infrastructure.** Node-down alerts are held for `group_wait` and
//!   grouped per ward: most of a ward going down at once is one "ward 2
//!   unreachable" incident (a switch, a gateway, a partition — not a
//!   hundred patients); several wards at once are one "mesh unreachable"
//!   incident. A handful of nodes is "ward 2: 3 nodes down". Aggregator
//!   alerts are one incident per aggregator.
//! - **Patients.** Risk and deterioration alerts of one patient are one
//!   incident.
//! - **Sensors.** Check-sensor alerts of one device are one incident.
//! - **Wards.** Every population detector's alert on one ward is one
//!   "outbreak suspected" incident, however many detectors agree.
//!
//! An incident lists its member alerts, takes the worst severity among
//! them, and closes when all of them have cleared. An alert that arrives
//! for a closed group opens a new incident.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use vitalmesh_wire::{AggregatorId, Scope, Severity, Timestamp};

use crate::alert::{Alert, AlertKey, AlertKind};
use crate::population::Population;

/// How alerts are grouped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IncidentConfig {
    /// How long node-down alerts wait for their neighbours.
    pub group_wait: Duration,
    /// A ward is "unreachable" when at least this share of its nodes …
    pub ward_share: f64,
    /// … and at least this many went down together.
    pub ward_min: u32,
    /// Wards unreachable at once that make the whole mesh unreachable.
    pub mesh_wards: u32,
}

impl Default for IncidentConfig {
    /// Alertmanager's `group_wait` default is 30 s; node-down alerts of one
    /// fault arrive within about a second of each other, so 5 s is enough
    /// and keeps the incident prompt.
    fn default() -> Self {
        Self {
            group_wait: Duration::from_secs(5),
            ward_share: 0.5,
            ward_min: 5,
            mesh_wards: 3,
        }
    }
}

/// What an incident is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Nodes, aggregators, the broker: the mesh itself.
    Infrastructure,
    /// One patient.
    Patient,
    /// One device's sensors.
    Sensor,
    /// A ward's population.
    Ward,
}

/// A member alert.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Member {
    /// The alert's kind.
    pub kind: &'static str,
    /// What it is about.
    pub scope: Scope,
    /// When it was raised.
    pub raised_at: Timestamp,
    /// When it cleared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<Timestamp>,
}

/// A problem, and the alerts that make it up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Number, in opening order.
    pub id: u32,
    /// One line for people.
    pub title: String,
    /// What it is about.
    pub category: Category,
    /// Where.
    pub scope: Scope,
    /// The worst member's severity.
    pub severity: Severity,
    /// When its first member was raised.
    pub opened_at: Timestamp,
    /// When its last member cleared (`None` while open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Timestamp>,
    /// Its alerts.
    pub members: Vec<Member>,
}

impl Incident {
    /// Whether it is still open.
    pub fn is_open(&self) -> bool {
        self.closed_at.is_none()
    }

    /// Members still holding.
    pub fn active_members(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.cleared_at.is_none())
            .count()
    }
}

/// Where an alert belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum GroupKey {
    NodesDown(u16),
    NodesLeft(u16),
    Patient(u32),
    Sensor(u32),
    Ward(u16),
    Aggregator(AggregatorId),
}

/// Node-down alerts waiting for `group_wait`.
#[derive(Debug, Clone)]
struct Pending {
    first: Timestamp,
    alerts: Vec<Alert>,
}

/// Every incident of a run.
#[derive(Debug, Clone)]
pub struct IncidentBook {
    config: IncidentConfig,
    population: Population,
    incidents: Vec<Incident>,
    /// Open incidents by group.
    open: BTreeMap<GroupKey, usize>,
    /// Which incident each active alert belongs to.
    member_of: BTreeMap<AlertKey, (usize, usize)>,
    pending: BTreeMap<u16, Pending>,
    /// Open "mesh unreachable" incident, if any.
    mesh: Option<usize>,
}

impl IncidentBook {
    /// An empty book for `population`.
    pub fn new(config: IncidentConfig, population: Population) -> Self {
        Self {
            config,
            population,
            incidents: Vec::new(),
            open: BTreeMap::new(),
            member_of: BTreeMap::new(),
            pending: BTreeMap::new(),
            mesh: None,
        }
    }

    /// Every incident, in opening order.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    /// Open incidents.
    pub fn open(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.iter().filter(|i| i.is_open())
    }

    /// When [`Self::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.pending
            .values()
            .map(|p| p.first + self.config.group_wait)
            .min()
    }

    /// An alert raised or cleared at `now`.
    pub fn handle(&mut self, alert: &Alert, now: Timestamp) {
        let key = alert.key();
        if alert.cleared_at.is_some() {
            self.on_clear(key, alert.cleared_at.unwrap_or(now));
            return;
        }
        if self.member_of.contains_key(&key) {
            return; // already a member (a second raiser of the same alert)
        }
        match alert.kind {
            AlertKind::NodeDown { .. } => {
                let ward = alert.scope.ward().unwrap_or(0);
                // A node-down that joins an open outage of its ward joins it.
                if let Some(&i) = self.open.get(&GroupKey::NodesDown(ward)) {
                    self.add(i, alert);
                    return;
                }
                self.pending
                    .entry(ward)
                    .or_insert_with(|| Pending {
                        first: alert.raised_at,
                        alerts: Vec::new(),
                    })
                    .alerts
                    .push(*alert);
            }
            _ => {
                let (group, category, scope, title) = describe(alert);
                match self.open.get(&group) {
                    Some(&i) => self.add(i, alert),
                    None => {
                        let i = self.open_incident(category, scope, title, alert.raised_at);
                        self.open.insert(group, i);
                        self.add(i, alert);
                    }
                }
            }
        }
    }

    /// Groups the node-down alerts that have waited long enough.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let due: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.first + self.config.group_wait)
            .map(|(&w, _)| w)
            .collect();
        if due.is_empty() {
            return;
        }
        let per_ward = self.population.nodes_per_ward.max(1);
        let threshold = (f64::from(per_ward) * self.config.ward_share)
            .ceil()
            .max(f64::from(self.config.ward_min)) as usize;
        let unreachable: Vec<u16> = due
            .iter()
            .copied()
            .filter(|w| self.pending[w].alerts.len() >= threshold.min(per_ward as usize))
            .collect();
        let mesh_wide = unreachable.len() as u32 >= self.config.mesh_wards;
        if mesh_wide && self.mesh.is_none() {
            let first = unreachable
                .iter()
                .map(|w| self.pending[w].first)
                .min()
                .unwrap_or(now);
            let title = format!(
                "mesh unreachable: {} wards lost their nodes at once",
                unreachable.len()
            );
            self.mesh =
                Some(self.open_incident(Category::Infrastructure, Scope::Broker, title, first));
        }
        for w in due {
            let Some(p) = self.pending.remove(&w) else {
                continue;
            };
            let group = GroupKey::NodesDown(w);
            let i = match (mesh_wide && unreachable.contains(&w), self.mesh) {
                (true, Some(m)) => m,
                _ => {
                    let n = p.alerts.len();
                    let title = if unreachable.contains(&w) {
                        format!("ward {w} unreachable: {n} of {per_ward} nodes down at once")
                    } else if n == 1 {
                        let node = p.alerts[0].scope.node().map_or(0, |n| n.0);
                        format!("ward {w} node {node}: down")
                    } else {
                        format!("ward {w}: {n} nodes down")
                    };
                    self.open_incident(
                        Category::Infrastructure,
                        Scope::Ward { ward: w },
                        title,
                        p.first,
                    )
                }
            };
            self.open.insert(group, i);
            for a in &p.alerts {
                self.add(i, a);
            }
        }
    }

    fn open_incident(
        &mut self,
        category: Category,
        scope: Scope,
        title: String,
        at: Timestamp,
    ) -> usize {
        self.incidents.push(Incident {
            id: self.incidents.len() as u32 + 1,
            title,
            category,
            scope,
            severity: Severity::Info,
            opened_at: at,
            closed_at: None,
            members: Vec::new(),
        });
        self.incidents.len() - 1
    }

    fn add(&mut self, i: usize, alert: &Alert) {
        let incident = &mut self.incidents[i];
        incident.severity = incident.severity.max(alert.severity);
        incident.members.push(Member {
            kind: alert.kind.name(),
            scope: alert.scope,
            raised_at: alert.raised_at,
            cleared_at: None,
        });
        self.member_of
            .insert(alert.key(), (i, incident.members.len() - 1));
    }

    fn on_clear(&mut self, key: AlertKey, at: Timestamp) {
        // A node-down still waiting to be grouped just leaves the queue.
        if key.kind == "node_down" {
            if let Some(w) = key.scope.ward() {
                if let Some(p) = self.pending.get_mut(&w) {
                    p.alerts.retain(|a| a.key() != key);
                    if p.alerts.is_empty() {
                        self.pending.remove(&w);
                    }
                }
            }
        }
        let Some((i, m)) = self.member_of.remove(&key) else {
            return;
        };
        let incident = &mut self.incidents[i];
        incident.members[m].cleared_at = Some(at);
        if incident.active_members() == 0 {
            incident.closed_at = Some(at);
            self.open.retain(|_, &mut j| j != i);
            if self.mesh == Some(i) {
                self.mesh = None;
            }
        }
    }
}

/// The group, category, scope and title of an alert that is not a
/// node-down.
fn describe(alert: &Alert) -> (GroupKey, Category, Scope, String) {
    let node = alert.scope.node().map_or(0, |n| n.0);
    let ward = alert.scope.ward().unwrap_or(0);
    match alert.kind {
        AlertKind::PatientRisk { .. } | AlertKind::Deterioration => (
            GroupKey::Patient(node),
            Category::Patient,
            Scope::Patient {
                node: vitalmesh_wire::NodeId(node),
                ward,
            },
            format!("ward {ward} node {node}: patient worsening"),
        ),
        AlertKind::CheckSensor { .. } => (
            GroupKey::Sensor(node),
            Category::Sensor,
            alert.scope,
            format!("ward {ward} node {node}: check the sensors"),
        ),
        AlertKind::WardAnomaly { .. } => (
            GroupKey::Ward(ward),
            Category::Ward,
            Scope::Ward { ward },
            format!("ward {ward}: outbreak suspected"),
        ),
        AlertKind::NodeLeft => (
            GroupKey::NodesLeft(ward),
            Category::Infrastructure,
            Scope::Ward { ward },
            format!("ward {ward}: nodes left"),
        ),
        AlertKind::NodeDown { .. } => unreachable!("grouped by ward"),
        AlertKind::AggregatorDown { .. }
        | AlertKind::AggregatorLeft
        | AlertKind::AggregatorIsolated { .. } => {
            let a = match alert.scope {
                Scope::Aggregator { aggregator } => aggregator,
                _ => alert.raised_by,
            };
            (
                GroupKey::Aggregator(a),
                Category::Infrastructure,
                alert.scope,
                format!(
                    "aggregator {} {}",
                    a.0,
                    match alert.kind {
                        AlertKind::AggregatorLeft => "left",
                        AlertKind::AggregatorIsolated { .. } => "cut off from the broker",
                        _ => "down",
                    }
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use vitalmesh_wire::NodeId;

    use super::*;
    use crate::alert::SensorCheck;
    use crate::detect::{Method, WardSeries};
    use crate::membership::DownReason;

    const T0: Timestamp = Timestamp::from_secs(1_000_000);

    fn at(ms: u64) -> Timestamp {
        T0 + Duration::from_millis(ms)
    }

    fn population() -> Population {
        Population {
            wards: 5,
            nodes_per_ward: 100,
            nodes_per_gateway: 0,
        }
    }

    fn node_down(node: u32, t: Timestamp) -> Alert {
        Alert::raise(
            AlertKind::NodeDown { last_seen: T0 },
            Scope::Node {
                node: NodeId(node),
                ward: (node / 100) as u16,
            },
            t,
            AggregatorId(0),
        )
    }

    fn cleared(mut a: Alert, t: Timestamp) -> Alert {
        a.cleared_at = Some(t);
        a
    }

    #[test]
    fn a_hundred_nodes_down_in_one_ward_are_one_infrastructure_incident() {
        let mut book = IncidentBook::new(IncidentConfig::default(), population());
        for n in 200..300 {
            book.handle(&node_down(n, at(u64::from(n - 200) * 7)), at(0));
        }
        assert!(book.incidents().is_empty(), "held for group_wait");
        book.handle_timeout(at(4_999));
        assert!(
            book.incidents().is_empty(),
            "group_wait counts from the first"
        );
        book.handle_timeout(at(5_000));
        let i = &book.incidents()[0];
        assert_eq!(book.incidents().len(), 1);
        assert_eq!(i.category, Category::Infrastructure);
        assert_eq!(i.scope, Scope::Ward { ward: 2 });
        assert_eq!(i.title, "ward 2 unreachable: 100 of 100 nodes down at once");
        assert_eq!(i.members.len(), 100);
        // A straggler joins; the incident closes when the last one clears.
        book.handle(&node_down(250, at(9_000)), at(9_000));
        assert_eq!(book.incidents()[0].members.len(), 100, "already a member");
        for n in 200..300 {
            book.handle(&cleared(node_down(n, at(0)), at(60_000)), at(60_000));
        }
        assert_eq!(book.incidents()[0].closed_at, Some(at(60_000)));
        assert_eq!(book.open().count(), 0);
    }

    #[test]
    fn a_few_nodes_are_a_small_incident_and_many_wards_are_the_mesh() {
        let mut book = IncidentBook::new(IncidentConfig::default(), population());
        for n in [101, 105] {
            book.handle(&node_down(n, at(0)), at(0));
        }
        book.handle_timeout(at(6_000));
        assert_eq!(book.incidents()[0].title, "ward 1: 2 nodes down");
        for w in [0, 2, 3] {
            for n in 0..80 {
                book.handle(&node_down(w * 100 + n, at(10_000)), at(10_000));
            }
        }
        book.handle_timeout(at(16_000));
        assert_eq!(book.incidents().len(), 2);
        let mesh = &book.incidents()[1];
        assert_eq!(mesh.scope, Scope::Broker);
        assert_eq!(mesh.members.len(), 240);
    }

    #[test]
    fn a_patients_alerts_are_one_incident_and_sensors_are_another() {
        let mut book = IncidentBook::new(IncidentConfig::default(), population());
        let patient = Scope::Patient {
            node: NodeId(7),
            ward: 0,
        };
        let device = Scope::Node {
            node: NodeId(7),
            ward: 0,
        };
        let risk = Alert::raise(
            AlertKind::PatientRisk {
                band: crate::news2::Risk::Medium,
                news2: 5,
            },
            patient,
            at(0),
            AggregatorId(1),
        );
        let worse = Alert::raise(AlertKind::Deterioration, patient, at(1), AggregatorId(1));
        let sensor = Alert::raise(
            AlertKind::CheckSensor {
                sign: vitalmesh_wire::VitalSign::SpO2,
                check: SensorCheck::Drift,
            },
            device,
            at(2),
            AggregatorId(1),
        );
        for a in [risk, worse, sensor] {
            book.handle(&a, a.raised_at);
        }
        let cats: Vec<(Category, usize)> = book
            .incidents()
            .iter()
            .map(|i| (i.category, i.members.len()))
            .collect();
        assert_eq!(cats, [(Category::Patient, 2), (Category::Sensor, 1)]);
        assert_eq!(book.incidents()[0].severity, Severity::Warning);
    }

    #[test]
    fn ward_detectors_agreeing_make_one_incident() {
        let mut book = IncidentBook::new(IncidentConfig::default(), population());
        for (d, m) in [(0u8, Method::C1), (3, Method::Cusum)] {
            let a = Alert::raise(
                AlertKind::WardAnomaly {
                    detector: d,
                    method: m,
                    series: WardSeries::NewFebrile,
                },
                Scope::Ward { ward: 3 },
                at(u64::from(d)),
                AggregatorId(0),
            );
            book.handle(&a, a.raised_at);
        }
        assert_eq!(book.incidents().len(), 1);
        assert_eq!(book.incidents()[0].title, "ward 3: outbreak suspected");
        let down = Alert::raise(
            AlertKind::AggregatorDown {
                reason: DownReason::Silent,
            },
            Scope::Aggregator {
                aggregator: AggregatorId(2),
            },
            at(5),
            AggregatorId(0),
        );
        book.handle(&down, at(5));
        assert_eq!(book.incidents()[1].title, "aggregator 2 down");
    }
}

//! Command-line settings as scenario values.
//!
//! A run without a scenario file builds its [`Scenario`] from flags through
//! the same two-stage validation as a file ([`from_flags`]): the flags are
//! written as TOML, parsed, and any problem is reported against the flag
//! that set the value. Flags that override a file (`--duration`,
//! `--connect-rate`, `--broker`) are checked as the same value in the file
//! would be ([`Scenario::with_duration`] and friends). Nothing is "fixed"
//! silently: `--nodes 0`, `--wards 0`, `--duration 0s` and node counts that
//! do not split evenly over the wards are refused.

use std::time::Duration;

use crate::validate::{BrokerChoice, Scenario};
use crate::{Action, ScenarioError, ScenarioErrors, duration, parse};

/// Nodes of a run without a scenario file.
pub const DEFAULT_NODES: u32 = 1000;
/// Wards of a run without a scenario file.
pub const DEFAULT_WARDS: u16 = 10;
/// How long a run without a scenario file lasts.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(60);

/// The mesh-shaping flags of `vitalmesh run` (serialisable: a sharded run's
/// part file records them, so the merge builds the same scenario).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MeshFlags {
    /// `--nodes`.
    pub nodes: Option<u32>,
    /// `--wards`.
    pub wards: Option<u16>,
    /// `--aggregators`.
    pub aggregators: Option<u16>,
    /// `--partitions`.
    pub partitions: Option<u16>,
    /// `--sample-interval`.
    pub sample_interval: Option<Duration>,
}

impl MeshFlags {
    /// Refuses the flags a scenario file owns, naming the section to edit.
    pub fn refuse_with_file(&self, file: &str) -> Result<(), ScenarioErrors> {
        let owned = [
            ("--nodes", self.nodes.is_some(), "population"),
            ("--wards", self.wards.is_some(), "population"),
            ("--aggregators", self.aggregators.is_some(), "aggregators"),
            ("--partitions", self.partitions.is_some(), "aggregators"),
            (
                "--sample-interval",
                self.sample_interval.is_some(),
                "population.profile",
            ),
        ];
        let errors: Vec<ScenarioError> = owned
            .iter()
            .filter(|(_, given, _)| *given)
            .map(|(flag, _, section)| ScenarioError::Flag {
                flag: (*flag).into(),
                message: format!("set by the scenario; edit [{section}] in '{file}' instead"),
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ScenarioErrors(errors))
        }
    }
}

/// The scenario of a run without a file: 1,000 nodes in 10 wards, 4
/// aggregators, 60 s, unless flags say otherwise; validated like a file.
pub fn from_flags(
    flags: &MeshFlags,
    run_for: Option<Duration>,
) -> Result<Scenario, ScenarioErrors> {
    let wards = flags.wards.unwrap_or(DEFAULT_WARDS);
    let nodes = flags.nodes.unwrap_or(DEFAULT_NODES);
    let mut errors = Vec::new();
    let per_ward = if wards == 0 {
        // Let validation word it, against --wards.
        nodes
    } else if nodes % u32::from(wards) != 0 {
        let (flag, message) = if flags.nodes.is_some() {
            (
                "--nodes",
                format!(
                    "'{nodes}' does not split evenly over {wards} wards; expected a multiple of {wards}, e.g. '{}'",
                    (nodes / u32::from(wards)).max(1) * u32::from(wards)
                ),
            )
        } else {
            (
                "--wards",
                format!(
                    "'{wards}' does not divide the {nodes} nodes evenly; expected a divisor of {nodes}, or --nodes as a multiple of {wards}"
                ),
            )
        };
        errors.push(ScenarioError::Flag {
            flag: flag.into(),
            message,
        });
        1
    } else {
        nodes / u32::from(wards)
    };
    // Each generated line remembers the flag that set it, so a validation
    // message can name the flag instead of a line of a file nobody wrote.
    let mut lines: Vec<(String, &'static str)> = Vec::new();
    let mut line = |text: String, flag: &'static str| lines.push((text, flag));
    line("[scenario]".into(), "");
    line("name = \"default\"".into(), "");
    line(
        format!(
            "duration = \"{}\"",
            duration::format(run_for.unwrap_or(DEFAULT_DURATION))
        ),
        "--duration",
    );
    line("[population]".into(), "");
    line(format!("wards = {wards}"), "--wards");
    line(format!("nodes_per_ward = {per_ward}"), "--nodes");
    if let Some(i) = flags.sample_interval {
        line("[population.profile]".into(), "");
        line(
            format!("sample_interval = \"{}\"", duration::format(i)),
            "--sample-interval",
        );
    }
    if flags.aggregators.is_some() || flags.partitions.is_some() {
        line("[aggregators]".into(), "");
        line(
            format!("count = {}", flags.aggregators.unwrap_or(4)),
            "--aggregators",
        );
        if let Some(p) = flags.partitions {
            line(format!("partitions = {p}"), "--partitions");
        }
    }
    let text: String = lines.iter().map(|(l, _)| format!("{l}\n")).collect();
    match parse("command line", &text) {
        Ok(s) if errors.is_empty() => Ok(s),
        Ok(_) => Err(ScenarioErrors(errors)),
        Err(ScenarioErrors(found)) => {
            for e in found {
                errors.push(match e {
                    ScenarioError::Invalid { line, message, .. }
                    | ScenarioError::Syntax { line, message, .. } => ScenarioError::Flag {
                        flag: lines
                            .get(line.saturating_sub(1))
                            .map_or("", |(_, f)| f)
                            .into(),
                        message,
                    },
                    other => other,
                });
            }
            Err(ScenarioErrors(errors))
        }
    }
}

impl Scenario {
    /// The scenario run for `d` instead (`--duration`): refused if zero, or
    /// if it would cut off a scheduled action, as the same file with that
    /// duration would be.
    pub fn with_duration(mut self, d: Duration) -> Result<Self, ScenarioErrors> {
        let flag = |message: String| {
            ScenarioErrors::from(ScenarioError::Flag {
                flag: "--duration".into(),
                message,
            })
        };
        if d.is_zero() {
            return Err(flag(format!(
                "'{}' is zero; expected a positive duration",
                duration::format(d)
            )));
        }
        if let Some(late) = self
            .load
            .iter()
            .chain(&self.events)
            .filter(|e| e.at >= d)
            .min_by_key(|e| e.at)
        {
            return Err(flag(format!(
                "'{}' ends before {} at '{}' in '{}'; expected a duration longer than its last scheduled action",
                duration::format(d),
                late.origin,
                duration::format(late.at),
                self.file
            )));
        }
        self.duration = d;
        Ok(self)
    }

    /// The scenario with nodes connecting at `rate` per second
    /// (`--connect-rate`).
    pub fn with_connect_rate(mut self, rate: u32) -> Result<Self, ScenarioErrors> {
        if rate == 0 {
            return Err(ScenarioError::Flag {
                flag: "--connect-rate".into(),
                message: "'0' would never connect a node; expected at least 1 per second".into(),
            }
            .into());
        }
        self.connect_rate = rate;
        Ok(self)
    }

    /// The scenario over TLS (`--tls`): refused on a plain `mqtt://`
    /// external broker, whose URL says otherwise.
    pub fn with_tls(mut self) -> Result<Self, ScenarioErrors> {
        if let (BrokerChoice::External { host, port }, false) = (&self.broker, self.broker_tls) {
            return Err(ScenarioError::Flag {
                flag: "--tls".into(),
                message: format!(
                    "the broker 'mqtt://{host}:{port}' is plain MQTT; expected an 'mqtts://' url for a broker reached over TLS"
                ),
            }
            .into());
        }
        self.broker_tls = true;
        Ok(self)
    }

    /// The scenario on an existing broker (`--broker`): refused if the
    /// scenario restarts the broker, which only the embedded one can do.
    pub fn with_external_broker(
        mut self,
        url: crate::broker_url::BrokerUrl,
    ) -> Result<Self, ScenarioErrors> {
        if let Some(s) = self
            .load
            .iter()
            .chain(&self.events)
            .find(|s| matches!(s.action, Action::RestartBroker))
        {
            return Err(ScenarioError::Flag {
                flag: "--broker".into(),
                message: format!(
                    "{} in '{}' restarts the broker, which only the embedded one can do",
                    s.origin, self.file
                ),
            }
            .into());
        }
        self.broker = BrokerChoice::External {
            host: url.host,
            port: url.port,
        };
        self.broker_tls = url.tls;
        Ok(self)
    }

    /// Checks that the virtual-time driver can model everything this
    /// scenario does; every entry it cannot is named with its line.
    pub fn check_virtual(&self) -> Result<(), ScenarioErrors> {
        let mut errors: Vec<ScenarioError> = self
            .load
            .iter()
            .chain(&self.events)
            .filter_map(|s| {
                s.action
                    .not_modelled_in_virtual_time()
                    .map(|why| ScenarioError::Invalid {
                        file: self.file.clone(),
                        line: s.line,
                        path: format!("{}.action", s.origin),
                        message: format!("'{}' cannot run in virtual time: {why}", s.action.name()),
                    })
            })
            .collect();
        if let BrokerChoice::External { host, port } = &self.broker {
            errors.push(ScenarioError::Flag {
                flag: "--virtual".into(),
                message: format!(
                    "the broker '{}://{host}:{port}' is real; virtual time models its own broker; remove [broker] url or --broker, or run without --virtual",
                    if self.broker_tls { "mqtts" } else { "mqtt" }
                ),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ScenarioErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<Scenario, ScenarioErrors>) -> String {
        r.expect_err("refused").to_string()
    }

    #[test]
    fn no_flags_give_the_documented_default_mesh() {
        let s = from_flags(&MeshFlags::default(), None).unwrap();
        assert_eq!(s.population.nodes(), DEFAULT_NODES);
        assert_eq!(s.population.wards, DEFAULT_WARDS);
        assert_eq!(s.aggregators, 4);
        assert_eq!(s.duration, DEFAULT_DURATION);
    }

    #[test]
    fn values_a_file_would_refuse_are_refused_against_their_flag() {
        let f = |nodes, wards| MeshFlags {
            nodes,
            wards,
            ..MeshFlags::default()
        };
        let m = message(from_flags(&f(Some(0), None), None));
        assert!(m.starts_with("--nodes: '0' is not enough"), "{m}");
        let m = message(from_flags(&f(None, Some(0)), None));
        assert!(m.starts_with("--wards: '0' is not enough"), "{m}");
        let m = message(from_flags(&f(Some(10), Some(20)), None));
        assert!(
            m.contains("--nodes: '10' does not split evenly over 20 wards"),
            "{m}"
        );
        let m = message(from_flags(&f(None, Some(7)), None));
        assert!(
            m.starts_with("--wards: '7' does not divide the 1000 nodes"),
            "{m}"
        );
        let m = message(from_flags(&MeshFlags::default(), Some(Duration::ZERO)));
        assert!(m.starts_with("--duration: '0s' is zero"), "{m}");
        let m = message(from_flags(
            &MeshFlags {
                aggregators: Some(0),
                ..MeshFlags::default()
            },
            None,
        ));
        assert!(m.starts_with("--aggregators: '0' is out of range"), "{m}");
        let s = from_flags(&f(Some(40), Some(4)), None).unwrap();
        assert_eq!((s.population.wards, s.population.nodes_per_ward), (4, 10));
    }

    #[test]
    fn overrides_are_checked_like_the_file() {
        let s = from_flags(&MeshFlags::default(), None).unwrap();
        let m = message(s.clone().with_duration(Duration::ZERO));
        assert!(m.starts_with("--duration: '0s' is zero"), "{m}");
        let m = message(s.clone().with_connect_rate(0));
        assert!(m.starts_with("--connect-rate: '0'"), "{m}");
        assert_eq!(
            s.with_duration(Duration::from_secs(5)).unwrap().duration,
            Duration::from_secs(5)
        );
    }
}

//! Stage two: from the shape to a [`Scenario`] that makes sense, with every
//! problem reported (not just the first), each naming file, line, field
//! path, the bad value and what was expected.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};
use vitalmesh_core::Population;
use vitalmesh_core::aggregator::AggregatorConfig;
use vitalmesh_firmware::NodeConfig;
use vitalmesh_firmware::battery::BatteryConfig;
use vitalmesh_firmware::buffer::{DropPolicy, RECORD_BYTES};
use vitalmesh_wire::envelope::{MAX_MESSAGE_BYTES, MIN_BATCH_BYTES};

use crate::action::{Action, EntryCheck, EntryKind, Limits, parse_entry};
use crate::error::Source;
use crate::gateways::GatewayProfile;
use crate::raw::{RawDetection, RawEntry, RawScenario, RawSlo};
use crate::slo::{Slo, SloMetric};
use crate::{ScenarioError, ScenarioErrors, broker_url, duration};
use vitalmesh_core::detect::{DetectionConfig, Method, MethodConfig, WardDetectorSpec, WardSeries};

/// Node behaviour every node of the population shares.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeProfile {
    /// Time between samples.
    pub sample_interval: Duration,
    /// Store-and-forward buffer, bytes.
    pub buffer_bytes: u32,
    /// What to drop when full.
    pub drop_policy: DropPolicy,
    /// Shortest wait for acknowledgement progress before re-sending.
    pub ack_timeout: Duration,
    /// Most bytes in one uplink message.
    pub max_batch_bytes: u32,
    /// Battery, or mains power.
    pub battery: Option<BatteryConfig>,
}

impl Default for NodeProfile {
    /// The firmware's own defaults: one source of truth.
    fn default() -> Self {
        let n = NodeConfig::default();
        Self {
            sample_interval: n.sample_interval,
            buffer_bytes: n.buffer_bytes,
            drop_policy: n.drop_policy,
            ack_timeout: n.ack_timeout,
            max_batch_bytes: n.max_batch_bytes as u32,
            battery: n.battery,
        }
    }
}

impl NodeProfile {
    /// Sets the fields this profile owns on a node's configuration.
    pub fn apply(&self, config: &mut NodeConfig) {
        config.sample_interval = self.sample_interval;
        config.buffer_bytes = self.buffer_bytes;
        config.drop_policy = self.drop_policy;
        config.ack_timeout = self.ack_timeout;
        config.max_batch_bytes = self.max_batch_bytes as usize;
        config.battery = self.battery;
    }
}

/// Which broker a scenario uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerChoice {
    /// The embedded rumqttd.
    Embedded {
        /// Listener count (chosen from the node count if `None`).
        listeners: Option<u16>,
    },
    /// An existing broker.
    External {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
}

/// An action at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    /// When, from the start of the run.
    pub at: Duration,
    /// What.
    pub action: Action,
    /// `load[i]` or `event[i]`, for the timeline.
    pub origin: String,
    /// Line of the entry in its file.
    pub line: usize,
}

/// How the virtual-time driver models the network and the broker
/// (`[virtual]`; a real-time run measures these instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualModel {
    /// One-way delay of every client's link to the broker.
    pub link_delay: Duration,
    /// Uniform jitter (±) on that delay, at most the delay.
    pub link_jitter: Duration,
    /// How long a restarted broker is down before it accepts connections.
    pub broker_restart: Duration,
    /// Copies the broker delivers to subscribers per second (publishes are
    /// acknowledged on receipt and queue for delivery), or `None` for a
    /// broker that is never the bottleneck.
    pub broker_capacity: Option<u32>,
}

impl Default for VirtualModel {
    fn default() -> Self {
        Self {
            link_delay: Duration::from_millis(2),
            link_jitter: Duration::from_millis(1),
            broker_restart: Duration::from_millis(500),
            broker_capacity: None,
        }
    }
}

/// How beds fill and empty (`[population.admissions]`): each bed holds a
/// patient for a lognormal length of stay, then stands empty until the
/// next admission, so that on average `occupancy` of the beds are full.
/// Discharges fall in the late morning and admissions in the afternoon and
/// evening, so the census moves by the hour as well as by the ward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admissions {
    /// Mean share of beds occupied.
    pub occupancy: f64,
    /// Wards differ: each ward's occupancy is drawn within ± this.
    pub ward_spread: f64,
    /// Median length of stay.
    pub stay_median: Duration,
    /// Lognormal σ of the length of stay.
    pub stay_spread: f64,
}

impl Default for Admissions {
    /// 85 % occupancy (NHS England's general and acute beds run at 85–95 %),
    /// wards ± 10 %, a median stay of four days (acute medical wards:
    /// mean 4–5 days), σ 0.6.
    fn default() -> Self {
        Self {
            occupancy: 0.85,
            ward_spread: 0.1,
            stay_median: Duration::from_secs(4 * 86_400),
            stay_spread: 0.6,
        }
    }
}

/// Illness among inpatients that no scenario event caused
/// (`[population.illness]`): the background every detector must see past.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Illness {
    /// New fevers per occupied bed-day (a Poisson process per patient).
    pub fever_per_patient_day: f64,
    /// New deteriorations per occupied bed-day.
    pub deterioration_per_patient_day: f64,
}

/// The fewest deliveries per second a modelled broker may have:
/// below this even a small mesh's heartbeats and acknowledgements queue up.
pub const MIN_BROKER_CAPACITY: u32 = 1_000;

/// 2026-01-01T00:00:00Z: when a virtual run's clock starts unless the
/// scenario says otherwise (`[scenario] start`).
pub const DEFAULT_VIRTUAL_START_UNIX_S: u64 = 1_767_225_600;

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The file it came from.
    pub file: String,
    /// Name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Master seed, if fixed.
    pub seed: Option<u64>,
    /// How long nodes run.
    pub duration: Duration,
    /// How long buffers may drain at the end.
    pub drain: Duration,
    /// Wards and nodes.
    pub population: Population,
    /// Share of patients on oxygen.
    pub oxygen_share: f64,
    /// Share of patients on SpO2 scale 2.
    pub scale2_share: f64,
    /// Connections per second when nodes start.
    pub connect_rate: u32,
    /// Node behaviour.
    pub profile: NodeProfile,
    /// Aggregators.
    pub aggregators: u16,
    /// Partitions.
    pub partitions: u16,
    /// Broker.
    pub broker: BrokerChoice,
    /// Whether clients reach the broker over TLS (`[broker] tls = true`,
    /// an `mqtts://` url, or `--tls`).
    pub broker_tls: bool,
    /// `[[load]]` entries, by time.
    pub load: Vec<Scheduled>,
    /// `[[event]]` entries, by time.
    pub events: Vec<Scheduled>,
    /// Pass/fail thresholds.
    pub slos: Vec<Slo>,
    /// Wall-clock time (Unix seconds, UTC) at which a virtual run starts:
    /// the patients' time of day, and the report's start time.
    pub start_unix_s: u64,
    /// The network and broker model of a virtual run.
    pub virtual_model: VirtualModel,
    /// How beds fill and empty; `None`: every bed holds one patient for
    /// the whole run.
    pub admissions: Option<Admissions>,
    /// Background illness.
    pub illness: Illness,
    /// What the aggregators detect, and how.
    pub detection: DetectionConfig,
    /// Gateways (`[gateways]`), if the nodes sit behind them.
    pub gateways: Option<GatewayProfile>,
    /// Aggregator slots (`[aggregators] max`): ids `0..slots`, of which the
    /// first `aggregators` start with the run and `add_aggregator` starts
    /// more.
    pub aggregator_slots: u16,
    /// The provisioning secret every key and broker password derives
    /// from, when a provisioning file gives it (`--provisioning`); `None`
    /// draws it from the seed. Never in a scenario file: secrets do not
    /// belong in reviewable timelines.
    pub provisioning: Option<vitalmesh_wire::ProvisioningSecret>,
}

impl Scenario {
    /// What an injected action is checked against.
    pub fn limits(&self) -> Limits {
        Limits {
            wards: self.population.wards,
            nodes_per_ward: self.population.nodes_per_ward,
            aggregators: self.aggregator_slots,
            external_broker: matches!(self.broker, BrokerChoice::External { .. }),
            gateways_per_ward: self.population.gateways_per_ward(),
        }
    }
}

/// Reads and validates a scenario file.
///
/// Refuses what is not a scenario before reading it whole: anything but a
/// regular file (a device such as `/dev/zero` reads forever), anything over
/// [`crate::MAX_FILE_BYTES`], and text that is not UTF-8 (naming the line).
pub fn load(path: &Path) -> Result<Scenario, ScenarioErrors> {
    use std::io::Read;
    let file = path.display().to_string();
    let refuse = |reason: String| ScenarioError::Read {
        file: file.clone(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| refuse(format!("cannot read: {e}")))?;
    let meta = f
        .metadata()
        .map_err(|e| refuse(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(
            refuse("is not a regular file; expected a scenario's .toml file".into()).into(),
        );
    }
    let limit = crate::MAX_FILE_BYTES;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(refuse(format!(
            "is larger than {} KiB; expected a scenario of a few kilobytes",
            limit / 1024
        ))
        .into());
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        ScenarioError::Syntax {
            file: file.clone(),
            line,
            path: String::new(),
            message: format!(
                "byte '{:#04x}' is not UTF-8; expected UTF-8 text",
                bytes[at]
            ),
        }
    })?;
    parse(&file, &text)
}

/// Validates scenario text; `file` names it in messages.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioErrors> {
    let src = Source::new(file, text);
    let raw: RawScenario = toml::from_str(text).map_err(|e| syntax_error(&src, text, &e))?;
    let mut errors = Vec::new();
    let scenario = check(&src, raw, &mut errors);
    match scenario {
        Some(s) if errors.is_empty() => Ok(s),
        _ => Err(ScenarioErrors(errors)),
    }
}

/// Parses one action for live injection: the same fields as an `[[event]]`
/// or `[[load]]` entry, without `at` (it happens now).
pub fn parse_injection(text: &str, limits: &Limits) -> Result<Action, ScenarioErrors> {
    let src = Source::new("inject", text);
    let raw: RawEntry = toml::from_str(text).map_err(|e| syntax_error(&src, text, &e))?;
    let mut errors = Vec::new();
    if let Some(at) = &raw.at {
        errors.push(src.invalid(
            at.span().start,
            "inject.at",
            format!(
                "'{}' is not used: an injected action happens now",
                at.get_ref()
            ),
        ));
    }
    let mut c = EntryCheck {
        src: &src,
        path: "inject".into(),
        limits,
        errors: &mut errors,
        at: 0,
    };
    let action = parse_entry(&mut c, &raw, EntryKind::Inject);
    match action {
        Some(a) if errors.is_empty() => Ok(a),
        _ => Err(ScenarioErrors(errors)),
    }
}

/// A stage-one (serde) error, with the line and the field path it is at.
fn syntax_error(src: &Source, text: &str, e: &toml::de::Error) -> ScenarioErrors {
    let offset = e.span().map_or(0, |s| s.start);
    let mut path = e
        .span()
        .and_then(|span| path_at(text, &span))
        .map(|p| format!("{p}: "))
        .unwrap_or_default();
    let mut message = readable(e.message());
    if message == "duplicate key" {
        // The span is the repeated key itself: name it.
        let key = e
            .span()
            .and_then(|s| text.get(s))
            .map(|k| k.trim().trim_matches('"'))
            .unwrap_or_default();
        message = format!("'{key}' is given twice; expected each key once");
    }
    if let Some(section) = message
        .strip_prefix("missing field '")
        .and_then(|rest| rest.strip_suffix('\''))
        .filter(|f| *f == "scenario" || *f == "population")
    {
        // A top-level section is missing: the error's span points at
        // whatever came first, which is not to blame.
        path = String::new();
        message = format!("no [{section}] section; expected one (see scenarios/quickstart.toml)");
    }
    ScenarioError::Syntax {
        file: src.file.clone(),
        line: src.line(offset),
        path,
        message,
    }
    .into()
}

/// serde's wording, with the quoting style of every other message, and
/// Rust's type names in words.
fn readable(message: &str) -> String {
    let mut m = message.trim().replace('`', "'");
    for (ty, words) in [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number from 0 up"),
        ("usize", "a whole number from 0 up"),
        ("i64", "a whole number"),
        ("f64", "a number"),
    ] {
        if let Some(head) = m.strip_suffix(&format!("expected {ty}")) {
            m = format!("{head}expected {words}");
        }
    }
    if let Some(rest) = m.strip_prefix("unknown field ") {
        if let Some((field, expected)) = rest.split_once(", expected ") {
            return format!("{field} is not a known field; expected {expected}");
        }
    }
    if let Some(rest) = m.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!("{found} has the wrong type; expected {expected}");
        }
    }
    m
}

/// The dotted path (`event[2].at`) of the innermost key or value at
/// `span`, found by a depth-first search of the spanned document tree (a
/// `[section]`'s own span covers only its header, so spans cannot prune).
fn path_at(text: &str, span: &Range<usize>) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    find_in_table(doc.get_ref(), span.start).map(|parts| parts.concat())
}

fn contains(s: Range<usize>, offset: usize) -> bool {
    s.start <= offset && offset < s.end.max(s.start + 1)
}

fn find_in_table(table: &DeTable<'_>, offset: usize) -> Option<Vec<String>> {
    for (key, value) in table {
        let name = key.get_ref().to_string();
        if let Some(mut inner) = find_in_value(value, offset) {
            let sep = if inner.first().is_some_and(|f| f.starts_with('[')) {
                ""
            } else {
                "."
            };
            inner.insert(0, name);
            if inner.len() > 1 && sep == "." {
                inner.insert(1, ".".into());
            }
            return Some(inner);
        }
        if contains(key.span(), offset) || contains(value.span(), offset) {
            return Some(vec![name]);
        }
    }
    None
}

fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize) -> Option<Vec<String>> {
    match value.get_ref() {
        DeValue::Table(t) => find_in_table(t, offset),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let index = format!("[{i}]");
            match find_in_value(item, offset) {
                Some(mut inner) => {
                    inner.insert(0, ".".into());
                    inner.insert(0, index);
                    Some(inner)
                }
                None => contains(item.span(), offset).then(|| vec![index]),
            }
        }),
        _ => None,
    }
}

fn check(src: &Source, raw: RawScenario, errors: &mut Vec<ScenarioError>) -> Option<Scenario> {
    let mut ok = true;
    let bad = |errors: &mut Vec<ScenarioError>, offset: usize, path: &str, msg: String| {
        errors.push(src.invalid(offset, path, msg));
    };
    let dur =
        |errors: &mut Vec<ScenarioError>, v: &Spanned<String>, path: &str| -> Option<Duration> {
            match duration::parse(v.get_ref()) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    errors.push(src.invalid(
                        v.span().start,
                        path,
                        format!("'{}' is zero; expected a positive duration", v.get_ref()),
                    ));
                    None
                }
                Err(e) => {
                    errors.push(src.invalid(v.span().start, path, e));
                    None
                }
            }
        };

    // [scenario]
    let meta = &raw.scenario;
    if meta.name.get_ref().trim().is_empty() {
        bad(
            errors,
            meta.name.span().start,
            "scenario.name",
            "'' is empty; expected a name for reports".into(),
        );
        ok = false;
    }
    // Names and descriptions reach terminals: an escape sequence in them
    // could clear the screen or rewrite what the user reads.
    let texts = [
        Some(("scenario.name", &meta.name)),
        meta.description
            .as_ref()
            .map(|d| ("scenario.description", d)),
    ];
    for (path, text) in texts.into_iter().flatten() {
        if text.get_ref().chars().any(|c| c.is_control() && c != '\n') {
            bad(
                errors,
                text.span().start,
                path,
                format!(
                    "'{}' holds a control character; expected printable text",
                    text.get_ref().escape_debug()
                ),
            );
            ok = false;
        }
    }
    let duration = dur(errors, &meta.duration, "scenario.duration");
    let drain = match &meta.drain {
        Some(d) => dur(errors, d, "scenario.drain"),
        None => Some(Duration::from_secs(5)),
    };
    let start_unix_s = match &meta.start {
        Some(v) => match parse_utc(v.get_ref()) {
            Ok(t) => t,
            Err(e) => {
                bad(errors, v.span().start, "scenario.start", e);
                DEFAULT_VIRTUAL_START_UNIX_S
            }
        },
        None => DEFAULT_VIRTUAL_START_UNIX_S,
    };
    let mut virtual_model = VirtualModel::default();
    if let Some(v) = &raw.virtual_model {
        let nonneg = |errors: &mut Vec<ScenarioError>, v: &Spanned<String>, path: &str| {
            duration::parse(v.get_ref())
                .map_err(|e| errors.push(src.invalid(v.span().start, path, e)))
                .ok()
        };
        if let Some(d) = v
            .link_delay
            .as_ref()
            .and_then(|d| nonneg(errors, d, "virtual.link_delay"))
        {
            virtual_model.link_delay = d;
        }
        if let Some(j) = &v.link_jitter {
            if let Some(d) = nonneg(errors, j, "virtual.link_jitter") {
                if d > virtual_model.link_delay {
                    bad(
                        errors,
                        j.span().start,
                        "virtual.link_jitter",
                        format!(
                            "'{}' is more than the link delay '{}'; expected at most the delay (a message cannot arrive before it was sent)",
                            j.get_ref(),
                            duration::format(virtual_model.link_delay)
                        ),
                    );
                }
                virtual_model.link_jitter = d.min(virtual_model.link_delay);
            }
        } else {
            virtual_model.link_jitter = virtual_model.link_jitter.min(virtual_model.link_delay);
        }
        if let Some(d) = v
            .broker_restart
            .as_ref()
            .and_then(|d| dur(errors, d, "virtual.broker_restart"))
        {
            virtual_model.broker_restart = d;
        }
        if let Some(c) = &v.broker_capacity {
            if *c.get_ref() < MIN_BROKER_CAPACITY {
                bad(
                    errors,
                    c.span().start,
                    "virtual.broker_capacity",
                    format!(
                        "'{}' deliveries per second cannot carry even a small mesh's heartbeats and acknowledgements; expected at least {MIN_BROKER_CAPACITY}",
                        c.get_ref()
                    ),
                );
            }
            virtual_model.broker_capacity = Some(*c.get_ref());
        }
    }

    // [population]
    let p = &raw.population;
    let wards = *p.wards.get_ref();
    let per_ward = *p.nodes_per_ward.get_ref();
    if wards == 0 {
        bad(
            errors,
            p.wards.span().start,
            "population.wards",
            "'0' is not enough; expected at least 1".into(),
        );
        ok = false;
    }
    if per_ward == 0 {
        bad(
            errors,
            p.nodes_per_ward.span().start,
            "population.nodes_per_ward",
            "'0' is not enough; expected at least 1".into(),
        );
        ok = false;
    }
    let nodes = u64::from(wards) * u64::from(per_ward);
    if nodes > 1_000_000 {
        bad(
            errors,
            p.nodes_per_ward.span().start,
            "population.nodes_per_ward",
            format!("'{per_ward}' makes {nodes} nodes; expected at most 1000000 in total"),
        );
        ok = false;
    }
    let share = |errors: &mut Vec<ScenarioError>,
                 v: &Option<Spanned<f64>>,
                 path: &str,
                 default: f64|
     -> f64 {
        match v {
            Some(x) if !(0.0..=1.0).contains(x.get_ref()) => {
                errors.push(src.invalid(
                    x.span().start,
                    path,
                    format!(
                        "'{}' is not a share; expected a number from 0 to 1",
                        x.get_ref()
                    ),
                ));
                default
            }
            Some(x) => *x.get_ref(),
            None => default,
        }
    };
    let oxygen_share = share(errors, &p.oxygen_share, "population.oxygen_share", 0.1);
    let scale2_share = share(errors, &p.scale2_share, "population.scale2_share", 0.02);
    let connect_rate = match &p.connect_rate {
        Some(r) if *r.get_ref() == 0 => {
            bad(
                errors,
                r.span().start,
                "population.connect_rate",
                "'0' would never connect a node; expected at least 1 per second".into(),
            );
            1
        }
        Some(r) => *r.get_ref(),
        None => 1000,
    };
    let mut profile = NodeProfile::default();
    if let Some(pr) = &p.profile {
        if let Some(v) = &pr.sample_interval {
            if let Some(d) = dur(errors, v, "population.profile.sample_interval") {
                if let Err(e) = crate::check_sample_interval(d, v.get_ref()) {
                    bad(
                        errors,
                        v.span().start,
                        "population.profile.sample_interval",
                        e,
                    );
                }
                profile.sample_interval = d;
            }
        }
        if let Some(v) = &pr.buffer_bytes {
            if *v.get_ref() < RECORD_BYTES {
                bad(
                    errors,
                    v.span().start,
                    "population.profile.buffer_bytes",
                    format!(
                        "'{}' cannot hold one sample; expected at least {RECORD_BYTES} bytes",
                        v.get_ref()
                    ),
                );
            }
            profile.buffer_bytes = *v.get_ref();
        }
        if let Some(v) = &pr.drop_policy {
            profile.drop_policy = match v.get_ref().as_str() {
                "drop_oldest" => DropPolicy::DropOldest,
                "drop_newest" => DropPolicy::DropNewest,
                other => {
                    bad(
                        errors,
                        v.span().start,
                        "population.profile.drop_policy",
                        format!(
                            "'{other}' is not a drop policy; expected 'drop_oldest' or 'drop_newest'"
                        ),
                    );
                    DropPolicy::DropOldest
                }
            };
        }
        if let Some(v) = &pr.ack_timeout {
            if let Some(d) = dur(errors, v, "population.profile.ack_timeout") {
                // Aggregators ack once an interval: a node that gives up
                // sooner sends everything twice.
                let interval = AggregatorConfig::DEFAULT_ACK_INTERVAL;
                if d < interval {
                    bad(
                        errors,
                        v.span().start,
                        "population.profile.ack_timeout",
                        format!(
                            "'{}' is shorter than the aggregators' ack interval; expected at least '{}'",
                            v.get_ref(),
                            duration::format(interval)
                        ),
                    );
                }
                profile.ack_timeout = d;
            }
        }
        if let Some(v) = &pr.max_batch_bytes {
            let bytes = *v.get_ref();
            if !(MIN_BATCH_BYTES..=MAX_MESSAGE_BYTES).contains(&(bytes as usize)) {
                bad(
                    errors,
                    v.span().start,
                    "population.profile.max_batch_bytes",
                    format!(
                        "'{bytes}' is outside what one message can carry; expected {MIN_BATCH_BYTES} (one sample with room to spare) to {MAX_MESSAGE_BYTES} (the wire's largest message)"
                    ),
                );
            }
            profile.max_batch_bytes = bytes;
        }
        match (&pr.battery_capacity_j, &pr.battery_initial_level) {
            (Some(cap), level) => {
                if !(*cap.get_ref() > 0.0 && cap.get_ref().is_finite()) {
                    bad(
                        errors,
                        cap.span().start,
                        "population.profile.battery_capacity_j",
                        format!(
                            "'{}' is not a capacity; expected joules above 0",
                            cap.get_ref()
                        ),
                    );
                }
                let initial_level = level.as_ref().map_or(1.0, |l| *l.get_ref());
                if let Some(l) = level {
                    if !(*l.get_ref() > 0.0 && *l.get_ref() <= 1.0) {
                        bad(
                            errors,
                            l.span().start,
                            "population.profile.battery_initial_level",
                            format!(
                                "'{}' is not a charge level; expected above 0 and at most 1",
                                l.get_ref()
                            ),
                        );
                    }
                }
                profile.battery = Some(BatteryConfig {
                    capacity_j: *cap.get_ref(),
                    initial_level,
                    ..BatteryConfig::default()
                });
            }
            (None, Some(l)) => bad(
                errors,
                l.span().start,
                "population.profile.battery_initial_level",
                format!(
                    "'{}' needs battery_capacity_j; nodes without a capacity are mains-powered",
                    l.get_ref()
                ),
            ),
            (None, None) => {}
        }
    }

    let admissions = p.admissions.as_ref().map(|a| {
        let mut out = Admissions::default();
        if let Some(v) = &a.occupancy {
            match *v.get_ref() {
                x if x > 0.0 && x <= 1.0 => out.occupancy = x,
                x => bad(
                    errors,
                    v.span().start,
                    "population.admissions.occupancy",
                    format!("'{x}' is not a share of beds; expected above 0 and at most 1"),
                ),
            }
        }
        if let Some(v) = &a.ward_spread {
            match *v.get_ref() {
                x if (0.0..=0.5).contains(&x) => out.ward_spread = x,
                x => bad(
                    errors,
                    v.span().start,
                    "population.admissions.ward_spread",
                    format!("'{x}' is not a spread; expected 0 to 0.5"),
                ),
            }
        }
        if let Some(v) = &a.stay_median {
            if let Some(d) = dur(errors, v, "population.admissions.stay_median") {
                if d < Duration::from_secs(3600) {
                    bad(
                        errors,
                        v.span().start,
                        "population.admissions.stay_median",
                        format!(
                            "'{}' is shorter than any inpatient stay; expected at least '1h'",
                            v.get_ref()
                        ),
                    );
                } else {
                    out.stay_median = d;
                }
            }
        }
        if let Some(v) = &a.stay_spread {
            match *v.get_ref() {
                x if (0.0..=3.0).contains(&x) => out.stay_spread = x,
                x => bad(
                    errors,
                    v.span().start,
                    "population.admissions.stay_spread",
                    format!("'{x}' is not a spread; expected a lognormal σ from 0 to 3"),
                ),
            }
        }
        out
    });
    let mut illness = Illness::default();
    if let Some(i) = &p.illness {
        let rate = |errors: &mut Vec<ScenarioError>, v: &Option<Spanned<f64>>, path: &str| match v {
            Some(x) if !(x.get_ref().is_finite() && (0.0..=5.0).contains(x.get_ref())) => {
                errors.push(src.invalid(
                    x.span().start,
                    path,
                    format!(
                        "'{}' is not a rate; expected 0 to 5 per patient-day",
                        x.get_ref()
                    ),
                ));
                0.0
            }
            Some(x) => *x.get_ref(),
            None => 0.0,
        };
        illness.fever_per_patient_day = rate(
            errors,
            &i.fever_per_patient_day,
            "population.illness.fever_per_patient_day",
        );
        illness.deterioration_per_patient_day = rate(
            errors,
            &i.deterioration_per_patient_day,
            "population.illness.deterioration_per_patient_day",
        );
    }
    let detection = match &raw.detection {
        Some(d) => check_detection(src, d, errors),
        None => DetectionConfig::default(),
    };

    // [aggregators], [broker]
    let (aggregators, partitions, aggregator_slots) = match &raw.aggregators {
        Some(a) => {
            let count = *a.count.get_ref();
            if count == 0 || count > 256 {
                bad(
                    errors,
                    a.count.span().start,
                    "aggregators.count",
                    format!("'{count}' is out of range; expected 1 to 256"),
                );
                ok = false;
            }
            let partitions = match &a.partitions {
                Some(p) if *p.get_ref() == 0 || *p.get_ref() > 4096 => {
                    bad(
                        errors,
                        p.span().start,
                        "aggregators.partitions",
                        format!("'{}' is out of range; expected 1 to 4096", p.get_ref()),
                    );
                    64
                }
                Some(p) => *p.get_ref(),
                None => 64,
            };
            let slots = match &a.max {
                Some(m) if *m.get_ref() < count || *m.get_ref() > 256 => {
                    bad(
                        errors,
                        m.span().start,
                        "aggregators.max",
                        format!(
                            "'{}' is out of range; expected {count} (the starting count) to 256",
                            m.get_ref()
                        ),
                    );
                    count
                }
                Some(m) => *m.get_ref(),
                None => count,
            };
            (count, partitions, slots)
        }
        None => (4, 64, 4),
    };
    let broker = match &raw.broker {
        Some(b) => match (&b.url, &b.listeners) {
            (Some(url), listeners) => {
                if let Some(l) = listeners {
                    bad(
                        errors,
                        l.span().start,
                        "broker.listeners",
                        format!(
                            "'{}' is not used with an external broker ([broker] url)",
                            l.get_ref()
                        ),
                    );
                }
                match broker_url::parse(url.get_ref()) {
                    Ok(parsed) => {
                        if let Some(t) = b.tls.as_ref().filter(|t| *t.get_ref() != parsed.tls) {
                            bad(
                                errors,
                                t.span().start,
                                "broker.tls",
                                format!(
                                    "'{}' contradicts the url '{}'; expected the url's scheme to say it ('mqtts://' is TLS), or no tls",
                                    t.get_ref(),
                                    url.get_ref()
                                ),
                            );
                        }
                        BrokerChoice::External {
                            host: parsed.host,
                            port: parsed.port,
                        }
                    }
                    Err(e) => {
                        bad(errors, url.span().start, "broker.url", e);
                        BrokerChoice::Embedded { listeners: None }
                    }
                }
            }
            (None, Some(l)) if *l.get_ref() == 0 || *l.get_ref() > 16 => {
                bad(
                    errors,
                    l.span().start,
                    "broker.listeners",
                    format!("'{}' is out of range; expected 1 to 16", l.get_ref()),
                );
                BrokerChoice::Embedded { listeners: None }
            }
            (None, listeners) => BrokerChoice::Embedded {
                listeners: listeners.as_ref().map(|l| *l.get_ref()),
            },
        },
        None => BrokerChoice::Embedded { listeners: None },
    };

    let broker_tls = raw.broker.as_ref().is_some_and(|b| {
        b.tls.as_ref().is_some_and(|t| *t.get_ref())
            || b.url
                .as_ref()
                .and_then(|u| broker_url::parse(u.get_ref()).ok())
                .is_some_and(|u| u.tls)
    });

    if !ok {
        return None;
    }
    let gateways = raw
        .gateways
        .as_ref()
        .map(|g| crate::gateways::check(src, g, per_ward, profile.max_batch_bytes, errors));
    let population = Population {
        wards,
        nodes_per_ward: per_ward,
        nodes_per_gateway: gateways.as_ref().map_or(0, |g| g.nodes_per_gateway),
    };
    let limits = Limits {
        wards,
        nodes_per_ward: per_ward,
        aggregators: aggregator_slots,
        external_broker: matches!(broker, BrokerChoice::External { .. }),
        gateways_per_ward: population.gateways_per_ward(),
    };

    // [[load]] and [[event]]
    let schedule = |errors: &mut Vec<ScenarioError>,
                    entries: &[Spanned<RawEntry>],
                    kind: EntryKind,
                    name: &str|
     -> Vec<Scheduled> {
        let mut out = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let path = format!("{name}[{i}]");
            let e = entry.get_ref();
            let at = match &e.at {
                None => {
                    errors.push(src.invalid(
                        entry.span().start,
                        format!("{path}.at"),
                        "missing; expected when it happens, e.g. '90s'".to_owned(),
                    ));
                    None
                }
                Some(at) => {
                    match duration::parse(at.get_ref()) {
                        Err(msg) => {
                            errors.push(src.invalid(at.span().start, format!("{path}.at"), msg));
                            None
                        }
                        Ok(t) => {
                            match duration {
                                Some(end) if t > end => {
                                    errors.push(src.invalid(
                                        at.span().start,
                                        format!("{path}.at"),
                                        format!(
                                            "'{}' is after the scenario end '{}'",
                                            at.get_ref(),
                                            meta.duration.get_ref()
                                        ),
                                    ));
                                    None
                                }
                                Some(end) if t == end => {
                                    errors.push(src.invalid(at.span().start, format!("{path}.at"), format!("'{}' is at the scenario end; expected a time before '{}'", at.get_ref(), meta.duration.get_ref())));
                                    None
                                }
                                _ => Some(t),
                            }
                        }
                    }
                }
            };
            let mut c = EntryCheck {
                src,
                path: path.clone(),
                limits: &limits,
                errors,
                at: entry.span().start,
            };
            let action = parse_entry(&mut c, e, kind);
            if let (Some(at), Some(action)) = (at, action) {
                out.push(Scheduled {
                    at,
                    action,
                    origin: path,
                    line: src.line(entry.span().start),
                });
            }
        }
        out.sort_by_key(|s| s.at);
        out
    };
    let load = schedule(errors, &raw.load, EntryKind::Load, "load");
    let events = schedule(errors, &raw.event, EntryKind::Event, "event");
    // A restart needs something to restart: walk the timeline.
    let mut down = std::collections::BTreeSet::new();
    for e in &events {
        match e.action {
            Action::KillAggregator { aggregator } => {
                down.insert(aggregator);
            }
            Action::RestartAggregator { aggregator } if !down.remove(&aggregator) => {
                errors.push(ScenarioError::Invalid {
                    file: src.file.clone(),
                    line: e.line,
                    path: format!("{}.aggregator", e.origin),
                    message: format!(
                        "'{aggregator}' is not down at '{}'; expected a kill_aggregator of it before",
                        duration::format(e.at)
                    ),
                });
            }
            _ => {}
        }
    }
    let ramped: u64 = load
        .iter()
        .map(|s| match s.action {
            Action::Ramp { count: Some(n), .. } => u64::from(n),
            _ => 0,
        })
        .sum();
    if ramped > nodes {
        let first = raw.load.iter().find(|l| {
            l.get_ref()
                .action
                .as_ref()
                .is_some_and(|a| a.get_ref() == "ramp")
        });
        let offset = first.map_or(0, |l| l.span().start);
        errors.push(src.invalid(
            offset,
            "load",
            format!("ramps start '{ramped}' nodes; the population has {nodes}"),
        ));
    }

    let slos = match &raw.slo {
        Some(s) => check_slo(src, s, errors),
        None => Vec::new(),
    };

    Some(Scenario {
        file: src.file.clone(),
        name: meta.name.get_ref().clone(),
        description: meta
            .description
            .as_ref()
            .map(|d| d.get_ref().clone())
            .unwrap_or_default(),
        seed: meta.seed,
        duration: duration?,
        drain: drain?,
        population,
        gateways,
        aggregator_slots,
        oxygen_share,
        scale2_share,
        connect_rate,
        profile,
        aggregators,
        partitions,
        broker,
        load,
        events,
        slos,
        start_unix_s,
        virtual_model,
        admissions,
        illness,
        detection,
        provisioning: None,
        broker_tls,
    })
}

/// `[detection]` and its `[[detection.ward]]` entries.
fn check_detection(
    src: &Source,
    d: &RawDetection,
    errors: &mut Vec<ScenarioError>,
) -> DetectionConfig {
    let mut out = DetectionConfig::default();
    let dur = |errors: &mut Vec<ScenarioError>,
               v: &Option<Spanned<String>>,
               path: &str,
               min: Duration|
     -> Option<Duration> {
        let v = v.as_ref()?;
        match duration::parse(v.get_ref()) {
            Ok(d) if d >= min => Some(d),
            Ok(_) => {
                errors.push(src.invalid(
                    v.span().start,
                    path,
                    format!(
                        "'{}' is too short; expected at least '{}'",
                        v.get_ref(),
                        duration::format(min)
                    ),
                ));
                None
            }
            Err(e) => {
                errors.push(src.invalid(v.span().start, path, e));
                None
            }
        }
    };
    let second = Duration::from_secs(1);
    if let Some(b) = dur(errors, &d.bucket, "detection.bucket", second) {
        if b > Duration::from_secs(7 * 86_400) || b.subsec_nanos() != 0 {
            let v = d.bucket.as_ref().expect("parsed above");
            errors.push(src.invalid(
                v.span().start,
                "detection.bucket",
                format!(
                    "'{}' is not a bucket length; expected whole seconds up to '7d'",
                    v.get_ref()
                ),
            ));
        } else {
            out.ward.bucket = b;
        }
    }
    if let Some(g) = dur(errors, &d.grace, "detection.grace", Duration::ZERO) {
        out.ward.grace = g;
    }
    if let Some(a) = dur(errors, &d.assemble, "detection.assemble", Duration::ZERO) {
        out.ward.assemble = a;
    }
    if let Some(e) = dur(errors, &d.epoch, "detection.epoch", second) {
        out.patient.epoch = e;
    }
    if let Some(b) = dur(errors, &d.baseline, "detection.baseline", second) {
        out.patient.baseline = b;
    }
    if out.patient.baseline < out.patient.epoch * 2 {
        let at = d
            .baseline
            .as_ref()
            .or(d.epoch.as_ref())
            .map_or(0, |v| v.span().start);
        errors.push(src.invalid(
            at,
            "detection.baseline",
            format!(
                "'{}' is less than two epochs of '{}'; expected a baseline of at least two epochs",
                duration::format(out.patient.baseline),
                duration::format(out.patient.epoch)
            ),
        ));
    }
    if let Some(r) = dur(
        errors,
        &d.risk_persistence,
        "detection.risk_persistence",
        Duration::ZERO,
    ) {
        out.patient.risk_persistence = r;
    }
    if let Some(r) = dur(
        errors,
        &d.risk_clear_after,
        "detection.risk_clear_after",
        Duration::ZERO,
    ) {
        out.patient.risk_clear_after = r;
    }
    if let Some(c) = dur(
        errors,
        &d.clear_after,
        "detection.clear_after",
        Duration::ZERO,
    ) {
        out.sensor.clear_after = c;
    }
    let positive = |errors: &mut Vec<ScenarioError>,
                    v: &Option<Spanned<f64>>,
                    path: &str,
                    min: f64,
                    what: &str|
     -> Option<f64> {
        let v = v.as_ref()?;
        let x = *v.get_ref();
        if x.is_finite() && x > min && x <= 1e6 {
            Some(x)
        } else {
            errors.push(src.invalid(v.span().start, path, format!("'{x}' is not {what}")));
            None
        }
    };
    if let Some(k) = positive(
        errors,
        &d.patient_k,
        "detection.patient_k",
        -1e-12,
        "a reference value; expected a number of at least 0",
    ) {
        out.patient.k = k;
    }
    if let Some(h) = positive(
        errors,
        &d.patient_h,
        "detection.patient_h",
        0.0,
        "a decision interval; expected a number above 0",
    ) {
        out.patient.h = h;
    }
    if let Some(h) = positive(
        errors,
        &d.hampel_sigmas,
        "detection.hampel_sigmas",
        0.0,
        "a threshold; expected a number of SDs above 0",
    ) {
        out.sensor.hampel_sigmas = h;
    }
    if let Some(r) = positive(
        errors,
        &d.noise_ratio,
        "detection.noise_ratio",
        1.0,
        "a ratio; expected a number above 1",
    ) {
        out.sensor.noise_ratio = r;
    }
    if let Some(n) = &d.risk_readings {
        match *n.get_ref() {
            0 => errors.push(src.invalid(
                n.span().start,
                "detection.risk_readings",
                "'0' is not enough; expected at least 1 reading",
            )),
            n => out.patient.risk_readings = n,
        }
    }
    if !d.ward.is_empty() {
        out.ward.detectors = check_ward_detectors(src, &d.ward, errors);
    }
    out
}

/// A TOML value as the user wrote it, near enough for a message.
fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "[…]".into(),
        toml::Value::Table(_) => "{…}".into(),
    }
}

/// The `[[detection.ward]]` entries: a method, the series it watches, a
/// name, and the method's parameters (any other key).
fn check_ward_detectors(
    src: &Source,
    entries: &[Spanned<std::collections::BTreeMap<String, Spanned<toml::Value>>>],
    errors: &mut Vec<ScenarioError>,
) -> Vec<WardDetectorSpec> {
    const MAX: usize = 32;
    let mut out: Vec<WardDetectorSpec> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("detection.ward[{i}]");
        let table = entry.get_ref();
        let text = |v: &Spanned<toml::Value>| -> Option<String> {
            match v.get_ref() {
                toml::Value::String(s) => Some(s.clone()),
                toml::Value::Integer(n) => Some(n.to_string()),
                toml::Value::Float(x) => Some(x.to_string()),
                toml::Value::Boolean(b) => Some(b.to_string()),
                _ => None,
            }
        };
        let Some(m) = table.get("method") else {
            errors.push(src.invalid(
                entry.span().start,
                format!("{path}.method"),
                format!("missing; expected one of {}", Method::names()),
            ));
            continue;
        };
        let Some(method) = text(m).as_deref().and_then(Method::parse) else {
            errors.push(src.invalid(
                m.span().start,
                format!("{path}.method"),
                format!(
                    "'{}' is not a method; expected one of {}",
                    text(m).unwrap_or_default(),
                    Method::names()
                ),
            ));
            continue;
        };
        let series = match table.get("series") {
            None => WardSeries::NewFebrile,
            Some(v) => match text(v).as_deref().and_then(WardSeries::parse) {
                Some(s) => s,
                None => {
                    errors.push(src.invalid(
                        v.span().start,
                        format!("{path}.series"),
                        format!(
                            "'{}' is not a ward series; expected {}",
                            text(v).unwrap_or_default(),
                            WardSeries::names()
                        ),
                    ));
                    continue;
                }
            },
        };
        let name = match table.get("name") {
            None => method.name().to_owned(),
            Some(v) => match v.get_ref() {
                toml::Value::String(s) if !s.trim().is_empty() && s.len() <= 32 => s.clone(),
                other => {
                    errors.push(src.invalid(
                        v.span().start,
                        format!("{path}.name"),
                        format!(
                            "'{}' is not a detector name; expected 1 to 32 characters",
                            show(other)
                        ),
                    ));
                    continue;
                }
            },
        };
        let mut config = MethodConfig::new(method);
        let mut ok = true;
        for (key, value) in table {
            if matches!(key.as_str(), "method" | "series" | "name") {
                continue;
            }
            let result = match text(value) {
                Some(t) => config.set(key, &t),
                None => Err(format!(
                    "'{}' is not a parameter value; expected a number, a string or true/false",
                    show(value.get_ref())
                )),
            };
            if let Err(e) = result {
                errors.push(src.invalid(value.span().start, format!("{path}.{key}"), e));
                ok = false;
            }
        }
        if let Err(e) = config.check() {
            errors.push(src.invalid(entry.span().start, path.clone(), e));
            ok = false;
        }
        if out.iter().any(|d| d.name == name) {
            let at = table
                .get("name")
                .map_or(entry.span().start, |v| v.span().start);
            errors.push(src.invalid(at, format!("{path}.name"), format!("'{name}' is used by an earlier detector; expected a name of its own (give one with name = \"...\")")));
            ok = false;
        }
        if ok {
            out.push(WardDetectorSpec {
                name,
                series,
                method: config,
            });
        }
    }
    if out.len() > MAX {
        errors.push(src.invalid(
            entries[MAX].span().start,
            format!("detection.ward[{MAX}]"),
            format!("'{}' detectors; expected at most {MAX}", entries.len()),
        ));
        out.truncate(MAX);
    }
    out
}

/// Parses an RFC 3339 UTC time of the form `2026-01-05T08:00:00Z` into
/// Unix seconds (days from the civil calendar, Howard Hinnant's algorithm:
/// a dozen lines do not justify a date-time crate in a pure crate).
fn parse_utc(text: &str) -> Result<u64, String> {
    let expected = "expected a UTC time such as '2026-01-05T08:00:00Z'";
    let bad = || format!("'{text}' is not a time; {expected}");
    let b = text.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return Err(bad());
    }
    let num =
        |r: Range<usize>| -> Result<u64, String> { text[r].parse::<u64>().map_err(|_| bad()) };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || d == 0
        || d > days_in[(m - 1) as usize]
        || hh > 23
        || mm > 59
        || ss > 59
    {
        return Err(format!(
            "'{text}' is not a valid date and time from 1970 on; {expected}"
        ));
    }
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn check_slo(src: &Source, s: &RawSlo, errors: &mut Vec<ScenarioError>) -> Vec<Slo> {
    let mut out = Vec::new();
    let fields = [
        (&s.max_unexplained, SloMetric::MaxUnexplained),
        (&s.min_delivered_share, SloMetric::MinDeliveredShare),
        (&s.max_latency_p50_ms, SloMetric::MaxLatencyP50Ms),
        (&s.max_latency_p99_ms, SloMetric::MaxLatencyP99Ms),
        (&s.max_latency_p999_ms, SloMetric::MaxLatencyP999Ms),
        (&s.max_latency_max_ms, SloMetric::MaxLatencyMaxMs),
        (&s.max_dropped_overflow, SloMetric::MaxDroppedOverflow),
        (&s.max_lost_on_crash, SloMetric::MaxLostOnCrash),
        (&s.max_duplicates, SloMetric::MaxDuplicates),
        (&s.max_connect_failures, SloMetric::MaxConnectFailures),
        (&s.max_false_node_down, SloMetric::MaxFalseNodeDown),
        (&s.max_rejected, SloMetric::MaxRejected),
        (&s.min_rejected, SloMetric::MinRejected),
        (
            &s.max_unplanned_broker_restarts,
            SloMetric::MaxUnplannedBrokerRestarts,
        ),
        (&s.min_outbreak_recall, SloMetric::MinOutbreakRecall),
        (
            &s.max_false_alarms_per_ward_day,
            SloMetric::MaxFalseAlarmsPerWardDay,
        ),
        (&s.min_sensor_fault_recall, SloMetric::MinSensorFaultRecall),
        (&s.max_fevers_misflagged, SloMetric::MaxFeversMisflagged),
        (&s.min_deterioration_early, SloMetric::MinDeteriorationEarly),
    ];
    for (value, metric) in fields {
        let Some(v) = value else { continue };
        let x = *v.get_ref();
        let valid = x.is_finite() && x >= 0.0 && (!metric.is_share() || x <= 1.0);
        if !valid {
            let expected = if metric.is_share() {
                "a share from 0 to 1"
            } else {
                "a number of at least 0"
            };
            errors.push(src.invalid(
                v.span().start,
                format!("slo.{}", metric.name()),
                format!("'{x}' is not a threshold; expected {expected}"),
            ));
            continue;
        }
        out.push(Slo { metric, limit: x });
    }
    if let Some(v) = &s.max_time_to_detect {
        match duration::parse(v.get_ref()) {
            Ok(d) => out.push(Slo {
                metric: SloMetric::MaxTimeToDetect,
                limit: d.as_secs_f64(),
            }),
            Err(e) => errors.push(src.invalid(v.span().start, "slo.max_time_to_detect", e)),
        }
    }
    if let Some(v) = &s.outbreak_detected_within {
        errors.push(src.invalid(
            v.span().start,
            "slo.outbreak_detected_within",
            format!("'{}' is not a threshold of this version; expected max_time_to_detect = '{}' (median time from an outbreak's first onset to its first ward alert)", v.get_ref(), v.get_ref()),
        ));
    }
    out
}

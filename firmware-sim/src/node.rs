//! The sensor-node firmware as a state machine.
//!
//! # Driving a node
//!
//! The caller (the MQTT runtime, or a virtual-time simulator) owns the clock
//! and the network. It feeds inputs with `handle_*` and reacts to outputs from
//! `poll_*`, in the style of `quinn-proto`:
//!
//! 1. Inputs: [`Node::handle_timeout`], [`Node::handle_connected`],
//!    [`Node::handle_disconnected`], [`Node::handle_ack`], and commands such
//!    as [`Node::crash`], [`Node::restart`], [`Node::reboot`],
//!    [`Node::inject_fault`], [`Node::add_episode`].
//! 2. After any input, drain [`Node::poll_link`] (connect or disconnect) and
//!    [`Node::poll_transmit`] (payloads to publish on [`Node::partition`]'s
//!    data topic) while there is capacity to send, then sleep until
//!    [`Node::poll_timeout`].
//!
//! Every input carries `now`; the node never reads a clock. Given the same
//! seed, configuration and inputs, it produces byte-identical output.
//!
//! # Delivery
//!
//! A sample is buffered when taken and stays buffered until an aggregator
//! acknowledges it ([`Node::handle_ack`], cumulative). On each new connection
//! the node sends everything unacknowledged (backfill, in batches of at most
//! `max_batch_samples` samples and `max_batch_bytes` bytes). Batches in
//! flight are bounded by a congestion window ([`crate::flow`]): while it is
//! full, samples wait in the buffer and leave together in the next batch.
//! If no acknowledgement progress arrives within the retransmission timeout
//! (measured round trips, never below `ack_timeout`), the node re-sends what
//! is unacknowledged (go-back-N) under a halved window and a doubled
//! timeout; the receiver de-duplicates. Each batch carries `held_from` so the
//! receiver learns which sequence numbers the node no longer holds.
//!
//! # Patients and presence
//!
//! A node is a bed's monitor. Patients come and go ([`Node::admit`],
//! [`Node::discharge`]); each sample carries the admission number of the
//! patient it measured, so a receiver starts a new baseline for a new
//! patient. An empty bed's node takes no samples but heartbeats on its
//! sample grid (an empty batch saying [`Presence::BedEmpty`]). A node that
//! leaves ([`Node::shut_down`]) delivers its backlog, says goodbye
//! ([`Presence::Leaving`]) with its last transmit, and switches off: its
//! silence after that is not a failure.

use std::collections::VecDeque;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use vitalmesh_wire::envelope::{self, AckKey, NodeCredentials, Sealer};
use vitalmesh_wire::message::MAX_BATCH_SAMPLES;
use vitalmesh_wire::{
    Batch, Body, FaultFlags, NodeId, PartitionId, Presence, Sample, Timestamp, WireTopic,
};

use crate::backoff::{Backoff, BackoffConfig};
use crate::battery::{Battery, BatteryConfig, LOW_BATTERY_PCT};
use crate::buffer::{DropPolicy, SampleBuffer, Stored};
use crate::flow::{FlowConfig, FlowControl};
use crate::ledger::NodeLedger;
use crate::physiology::{
    DeteriorationEpisode, Episode, FeverEpisode, PatientOptions, Physiology, VitalSign,
};
use crate::rng::{self, Draw, Purpose};
use crate::sensor::{Sensor, SensorFault};

/// Longest a node with unacknowledged samples and a full congestion window
/// stays silent: then it sends an empty batch, so its aggregator's φ-accrual
/// keeps hearing it.
pub const QUIET_HEARTBEAT: Duration = Duration::from_secs(2);

/// How a node behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Time between samples.
    pub sample_interval: Duration,
    /// RAM for the store-and-forward buffer, bytes.
    pub buffer_bytes: u32,
    /// What to drop when the buffer is full.
    pub drop_policy: DropPolicy,
    /// Most samples in one uplink batch.
    pub max_batch_samples: usize,
    /// Most bytes in one uplink message (the whole envelope); at most the
    /// broker's maximum packet size less the MQTT header and topic.
    pub max_batch_bytes: usize,
    /// The congestion window's limits.
    pub flow: FlowConfig,
    /// Shortest wait for acknowledgement progress before re-sending (the
    /// wait grows with measured round trips).
    pub ack_timeout: Duration,
    /// Cap on the doubled ack timeout.
    pub max_ack_timeout: Duration,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// Battery, or `None` for mains power.
    pub battery: Option<BatteryConfig>,
    /// Clinical facts about the patient.
    pub patient: PatientOptions,
    /// Patient's local time offset from UTC, for circadian rhythms.
    pub utc_offset_s: i64,
    /// How long a clean reboot takes.
    pub reboot_time: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            sample_interval: Duration::from_secs(1),
            buffer_bytes: 16 * 1024,
            drop_policy: DropPolicy::DropOldest,
            max_batch_samples: 64,
            max_batch_bytes: 8 * 1024,
            flow: FlowConfig::default(),
            ack_timeout: Duration::from_secs(5),
            max_ack_timeout: Duration::from_secs(60),
            backoff: BackoffConfig::default(),
            battery: None,
            patient: PatientOptions::default(),
            utc_offset_s: 0,
            reboot_time: Duration::from_secs(2),
        }
    }
}

/// Whether the node is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Running.
    On,
    /// Rebooting cleanly until the given time; the buffer survives.
    Rebooting {
        /// When it is back.
        until: Timestamp,
    },
    /// Crashed; RAM is gone. Needs [`Node::restart`].
    Crashed,
    /// Battery empty. Needs [`Node::restart`] (a charged battery).
    Flat,
    /// Switched off cleanly after delivering its backlog
    /// ([`Node::shut_down`]). [`Node::restart`] switches it on again.
    Off,
}

/// The node's view of its broker connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Not connected; will try again at `retry_at` ([`Timestamp::MAX`]: not
    /// while powered down).
    Offline {
        /// Next connection attempt.
        retry_at: Timestamp,
    },
    /// Asked the runtime to connect; waiting for the outcome.
    Connecting,
    /// Connected.
    Online,
}

/// What the runtime must do with the node's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAction {
    /// Open a connection, then report [`Node::handle_connected`] or
    /// [`Node::handle_disconnected`].
    Connect,
    /// Close the connection: cleanly (MQTT DISCONNECT) or by dropping the
    /// socket as a crash would.
    Disconnect {
        /// Whether to say goodbye.
        graceful: bool,
    },
}

/// One uplink payload to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The envelope bytes.
    pub payload: Vec<u8>,
    /// Sequence number of the first sample in it.
    pub first_seq: u64,
    /// Number of samples in it.
    pub samples: usize,
}

/// A summary for dashboards and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatus {
    /// Power state.
    pub power: Power,
    /// Link state.
    pub link: Link,
    /// Samples held, unacknowledged.
    pub buffered: usize,
    /// Buffer capacity in samples.
    pub buffer_capacity: usize,
    /// Battery level.
    pub battery_pct: u8,
    /// Whether a sensor fault is active (ground truth, not visible on the wire).
    pub sensor_fault: bool,
    /// Whether the bed is empty (no patient; the node only heartbeats).
    pub bed_empty: bool,
}

/// One sensor node.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    partition: PartitionId,
    config: NodeConfig,
    /// Seals uplinks; its epoch is the boot count.
    sealer: Sealer,
    /// Checks that an ack is really for this node.
    ack_key: AckKey,
    physiology: Physiology,
    sensor: Sensor,
    buffer: SampleBuffer,
    battery: Battery,
    ledger: NodeLedger,
    backoff: Backoff,
    network_rng: ChaCha8Rng,
    episode_rng: ChaCha8Rng,
    power: Power,
    link: Link,
    /// Offset of this node's sampling grid within one interval, so that nodes
    /// do not all sample in the same millisecond.
    phase: Duration,
    /// Whether the node takes samples (off at the end of a run, while the
    /// backlog drains).
    sampling: bool,
    /// Switching off once the buffer is empty.
    leaving: bool,
    /// The backlog is delivered: the goodbye goes out with the next
    /// transmit, then the node switches off.
    goodbye_due: bool,
    /// The master seed, for the patients admitted later.
    seed: u64,
    /// The current patient's admission number at this bed.
    admission: u32,
    /// No patient: the node heartbeats on its sample grid instead of
    /// sampling.
    bed_empty: bool,
    /// An empty bed's heartbeat is due.
    heartbeat_due: bool,
    next_sample_at: Timestamp,
    next_seq: u64,
    /// Next sequence number to send on this connection.
    send_cursor: u64,
    /// Highest cumulative acknowledgement seen.
    acked_up_to: u64,
    retransmit_at: Option<Timestamp>,
    /// End (exclusive) of the highest sequence number ever sent: a batch
    /// starting below it is a re-send.
    sent_up_to: u64,
    /// The congestion window and retransmission timeout.
    flow: FlowControl,
    /// When it last transmitted anything.
    last_transmit_at: Timestamp,
    link_actions: VecDeque<LinkAction>,
    /// Reused to build batches without allocating per sample.
    scratch: Vec<Sample>,
}

impl Node {
    /// A node that starts at `now`, offline, and connects at its first
    /// timeout. `credentials` are its provisioned keys.
    pub fn new(
        id: NodeId,
        partition: PartitionId,
        config: NodeConfig,
        seed: u64,
        credentials: NodeCredentials,
        now: Timestamp,
    ) -> Self {
        let mut network_rng = rng::stream(seed, id, Purpose::Network);
        let interval_us = config.sample_interval.as_micros().max(1) as f64;
        let phase = Duration::from_micros((network_rng.unit() * interval_us) as u64);
        let flow = FlowControl::new(config.flow);
        let mut node = Self {
            id,
            partition,
            physiology: Physiology::new(seed, id, config.patient, config.utc_offset_s),
            sensor: Sensor::new(seed, id),
            buffer: SampleBuffer::new(config.buffer_bytes, config.drop_policy),
            battery: Battery::new(config.battery),
            backoff: Backoff::new(config.backoff),
            episode_rng: rng::stream(seed, id, Purpose::Episode),
            network_rng,
            config,
            sealer: Sealer::new(credentials.device, envelope::Principal::Node(id), 0),
            ack_key: credentials.ack,
            ledger: NodeLedger::default(),
            power: Power::On,
            link: Link::Offline { retry_at: now },
            phase,
            sampling: true,
            leaving: false,
            goodbye_due: false,
            seed,
            admission: 0,
            bed_empty: false,
            heartbeat_due: false,
            next_sample_at: now,
            next_seq: 0,
            send_cursor: 0,
            acked_up_to: 0,
            retransmit_at: None,
            sent_up_to: 0,
            flow,
            last_transmit_at: now,
            link_actions: VecDeque::new(),
            scratch: Vec::new(),
        };
        node.next_sample_at = node.next_grid_point_after(now);
        node.battery.settle(now);
        node
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The partition whose data topic this node publishes on.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// Its configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Its accounting.
    pub fn ledger(&self) -> &NodeLedger {
        &self.ledger
    }

    /// Samples held, oldest first.
    pub fn buffered(&self) -> impl Iterator<Item = &Sample> {
        self.buffer.iter()
    }

    /// How many samples it holds, unacknowledged (cheaper than
    /// [`Node::status`], which a driver would otherwise call per event).
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// The patient model (ground truth).
    pub fn physiology(&self) -> &Physiology {
        &self.physiology
    }

    /// The current patient's admission number at this bed (0: the first).
    pub fn admission(&self) -> u32 {
        self.admission
    }

    /// Its power state.
    pub fn power(&self) -> Power {
        self.power
    }

    /// Whether the bed is empty.
    pub fn is_bed_empty(&self) -> bool {
        self.bed_empty
    }

    /// Next sequence number to be produced (= samples produced so far).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// A summary of its state at `now`.
    pub fn status(&self, now: Timestamp) -> NodeStatus {
        NodeStatus {
            power: self.power,
            link: self.link,
            buffered: self.buffer.len(),
            buffer_capacity: self.buffer.capacity(),
            battery_pct: self.battery.level_pct(),
            sensor_fault: self.sensor.active_faults(now).next().is_some(),
            bed_empty: self.bed_empty,
        }
    }

    // ---- inputs ----------------------------------------------------------

    /// Advances to `now`: takes every sample due, fires the ack and reconnect
    /// timers.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if let Power::Rebooting { until } = self.power {
            if now >= until {
                self.boot(now);
            }
        }
        if self.power != Power::On {
            return;
        }
        while self.next_sample_at <= now && self.power == Power::On {
            let due = self.next_sample_at;
            self.next_sample_at = due + self.config.sample_interval;
            if self.bed_empty || !self.sampling {
                // No sample, but still alive: a heartbeat on the same grid,
                // so that the silence of a drained node or an empty bed is
                // never mistaken for a failure.
                self.heartbeat_due = true;
            } else {
                self.take_sample(due);
            }
        }
        if self.power != Power::On {
            return;
        }
        match self.link {
            Link::Offline { retry_at } if now >= retry_at => {
                self.link = Link::Connecting;
                self.link_actions.push_back(LinkAction::Connect);
            }
            Link::Online if self.retransmit_at.is_some_and(|at| now >= at) => {
                // No progress: assume everything in flight is lost and re-send
                // it all; the receiver de-duplicates.
                self.flow.on_timeout();
                self.ledger.retransmission_rounds += 1;
                self.send_cursor = self.held_from();
                self.retransmit_at = None;
            }
            _ => {}
        }
    }

    /// The connection the node asked for is up.
    pub fn handle_connected(&mut self, _now: Timestamp) {
        if self.power != Power::On || self.link == Link::Online {
            return;
        }
        self.link = Link::Online;
        self.backoff.reset();
        self.ledger.connects += 1;
        // Anything sent on the previous connection may be lost: backfill.
        self.flow.on_new_connection();
        self.send_cursor = self.held_from();
        self.retransmit_at = None;
    }

    /// The connection failed or dropped. Schedules a reconnect with backoff.
    pub fn handle_disconnected(&mut self, now: Timestamp) {
        if matches!(self.link, Link::Offline { .. }) {
            return;
        }
        self.ledger.disconnects += 1;
        self.retransmit_at = None;
        let retry_at = if self.power == Power::On {
            now + self.backoff.next_delay(&mut self.network_rng)
        } else {
            Timestamp::MAX
        };
        self.link = Link::Offline { retry_at };
    }

    /// The path is back (a gateway's beacon heard again after a reboot or
    /// a range drop-out): an offline node tries now instead of waiting out
    /// its backoff, so it rejoins promptly.
    pub fn handle_link_available(&mut self, now: Timestamp) {
        if self.power != Power::On {
            return;
        }
        if let Link::Offline { retry_at } = self.link {
            if retry_at != Timestamp::MAX && retry_at > now {
                self.link = Link::Offline { retry_at: now };
            }
        }
    }

    /// A cumulative acknowledgement: every sequence number below its
    /// `next_expected` is safely ingested — if its tag says so. An entry
    /// that does not verify under this node's ack key (forged, altered, or
    /// meant for another partition) is counted and changes nothing.
    pub fn handle_ack(&mut self, ack: &vitalmesh_wire::NodeAck, now: Timestamp) {
        if self.power != Power::On || ack.node != self.id {
            return;
        }
        if !self.ack_key.verify(self.partition, ack) {
            self.ledger.forged_acks += 1;
            return;
        }
        self.accept_ack(ack.next_expected, now);
    }

    fn accept_ack(&mut self, next_expected: u64, now: Timestamp) {
        // An acknowledgement can never cover samples not yet produced.
        let next_expected = next_expected.min(self.next_seq);
        if next_expected <= self.acked_up_to {
            return;
        }
        self.acked_up_to = next_expected;
        for sample in self.buffer.acknowledge_below(next_expected) {
            self.ledger.acked.insert(sample.seq);
        }
        self.flow.on_progress(next_expected, now);
        self.send_cursor = self.send_cursor.max(self.held_from());
        self.retransmit_at =
            (self.send_cursor > self.held_from()).then(|| now + self.ack_timeout());
        self.maybe_switch_off();
    }

    /// Power fails: RAM (and the buffer) is lost, the socket drops without a
    /// goodbye. Nothing happens until [`Node::restart`].
    pub fn crash(&mut self, _now: Timestamp) {
        if matches!(self.power, Power::Crashed | Power::Flat | Power::Off) {
            return;
        }
        for sample in self.buffer.take_all() {
            self.ledger.lost_on_crash.insert(sample.seq);
        }
        self.leaving = false;
        self.goodbye_due = false;
        self.power = Power::Crashed;
        self.go_offline(false);
    }

    /// A clean reboot: the buffer is saved to flash and survives; the node
    /// says goodbye, is down for the reboot time, then reconnects.
    pub fn reboot(&mut self, now: Timestamp) {
        if self.power != Power::On {
            return;
        }
        self.power = Power::Rebooting {
            until: now + self.config.reboot_time,
        };
        self.go_offline(true);
    }

    /// Powers a crashed or flat node back on (a fresh battery for a flat one):
    /// it resumes sampling on its grid and connects at once.
    pub fn restart(&mut self, now: Timestamp) {
        match self.power {
            Power::Crashed | Power::Off => {
                self.sampling = true;
                self.boot(now);
            }
            Power::Flat => {
                self.battery = Battery::new(self.config.battery);
                self.boot(now);
            }
            Power::On | Power::Rebooting { .. } => {}
        }
    }

    /// Leaves the mesh cleanly: stops sampling, keeps delivering its backlog,
    /// and once everything is acknowledged says goodbye and switches off.
    pub fn shut_down(&mut self, _now: Timestamp) {
        if self.power != Power::On {
            return;
        }
        self.sampling = false;
        self.leaving = true;
        self.maybe_switch_off();
    }

    /// Once a leaving node's backlog is delivered, its goodbye is due: it
    /// goes out with the next transmit (when the node is online), and the
    /// node switches off after it, so the aggregators know its silence is
    /// not a failure.
    fn maybe_switch_off(&mut self) {
        if self.leaving && self.power == Power::On && self.buffer.is_empty() {
            self.goodbye_due = true;
        }
    }

    /// The patient is discharged: the bed is empty from now on. The node
    /// delivers what it holds, then heartbeats on its sample grid so the
    /// aggregators know it is alive with nobody to monitor.
    pub fn discharge(&mut self, _now: Timestamp) {
        self.bed_empty = true;
    }

    /// A new patient is admitted to the bed (replacing any still there): a
    /// fresh draw of physiology under the next admission number, with the
    /// given clinical facts. The device and its faults stay.
    pub fn admit(&mut self, options: PatientOptions, _now: Timestamp) {
        self.admission += 1;
        self.config.patient = options;
        self.physiology = Physiology::admitted(
            self.seed,
            self.id,
            self.admission,
            options,
            self.config.utc_offset_s,
        );
        self.bed_empty = false;
        self.heartbeat_due = false;
    }

    /// Stops (or resumes) taking samples; delivery of what is buffered goes
    /// on, and the node heartbeats on its sample grid meanwhile (an empty
    /// batch), so aggregators do not take the quiet for a failure. Used to
    /// drain a node at the end of a run.
    pub fn set_sampling(&mut self, on: bool, now: Timestamp) {
        if on && !self.sampling {
            self.next_sample_at = self.next_grid_point_after(now);
        }
        self.sampling = on;
    }

    /// Changes the sample rate from the next sample on.
    pub fn set_sample_interval(&mut self, interval: Duration, now: Timestamp) {
        if interval.is_zero() {
            return;
        }
        self.config.sample_interval = interval;
        self.next_sample_at = self.next_sample_at.min(now + interval);
    }

    /// Adds a sensor fault.
    pub fn inject_fault(&mut self, fault: SensorFault) {
        self.sensor.inject(fault);
    }

    /// Repairs the sensor.
    pub fn clear_faults(&mut self) {
        self.sensor.clear_faults();
    }

    /// Adds a health episode to the patient (none to an empty bed).
    pub fn add_episode(&mut self, episode: Episode) {
        if !self.bed_empty {
            self.physiology.add_episode(episode);
        }
    }

    /// Gives the patient a fever with randomly drawn course from `onset`.
    pub fn start_fever(&mut self, onset: Timestamp) -> FeverEpisode {
        let baseline_c = self.physiology.profile().baseline[VitalSign::Temperature.index()];
        let fever = FeverEpisode::draw(onset, baseline_c, &mut self.episode_rng);
        self.add_episode(Episode::Fever(fever));
        fever
    }

    /// Starts a deterioration with randomly drawn ramp from `onset`.
    pub fn start_deterioration(&mut self, onset: Timestamp) -> DeteriorationEpisode {
        let d = DeteriorationEpisode::draw(onset, &mut self.episode_rng);
        self.add_episode(Episode::Deterioration(d));
        d
    }

    // ---- outputs ---------------------------------------------------------

    /// The next connection action for the runtime.
    #[must_use]
    pub fn poll_link(&mut self) -> Option<LinkAction> {
        self.link_actions.pop_front()
    }

    /// The next payload to publish, if online, anything is unsent and the
    /// congestion window has room. Call repeatedly while the runtime has
    /// room to send.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Timestamp) -> Option<Transmit> {
        if self.power != Power::On || self.link != Link::Online {
            return None;
        }
        let window_open = self.flow.may_send();
        let mut samples = std::mem::take(&mut self.scratch);
        samples.clear();
        if window_open {
            samples.extend(
                self.buffer
                    .from_seq(self.send_cursor)
                    .take(self.config.max_batch_samples.min(MAX_BATCH_SAMPLES))
                    .copied(),
            );
        }
        let presence = if self.goodbye_due {
            Presence::Leaving
        } else if self.bed_empty {
            Presence::BedEmpty
        } else {
            Presence::Monitoring
        };
        // A node whose window is full and that has said nothing for a
        // while still says it is alive (an empty batch outside the window):
        // a lost batch on a one-batch window would otherwise silence it
        // until its retransmission timeout, long enough to be declared
        // down. At most one per `QUIET_HEARTBEAT`, so an overloaded broker
        // sees a trickle, not a flood.
        let stalled = !window_open
            && self.buffer.from_seq(self.send_cursor).next().is_some()
            && now >= self.last_transmit_at + QUIET_HEARTBEAT;
        let heartbeat = (self.heartbeat_due && (self.bed_empty || !self.sampling)) || stalled;
        if samples.is_empty() && !(self.goodbye_due || heartbeat) {
            // Nothing to send, or the window is full: what is unsent waits
            // and leaves in a fuller batch.
            self.scratch = samples;
            return None;
        }
        let (payload, samples) = match self.encode_within_limit(samples, presence) {
            Ok(encoded) => encoded,
            Err(samples) => {
                self.scratch = samples;
                return None;
            }
        };
        let count = samples.len();
        let (first_seq, next_cursor) = match (samples.first(), samples.last()) {
            (Some(first), Some(last)) => (first.seq, last.seq + 1),
            // Nothing to send but a goodbye or an empty bed's heartbeat.
            _ => (self.send_cursor, self.send_cursor),
        };
        self.scratch = samples;
        self.send_cursor = next_cursor;
        self.battery.charge_transmit(payload.len());
        self.ledger.transmissions += 1;
        self.last_transmit_at = now;
        self.ledger.samples_sent += count as u64;
        self.heartbeat_due = false;
        if count > 0 {
            self.flow
                .on_sent(next_cursor, first_seq < self.sent_up_to, now);
            self.sent_up_to = self.sent_up_to.max(next_cursor);
            if self.retransmit_at.is_none() {
                self.retransmit_at = Some(now + self.ack_timeout());
            }
        }
        if presence == Presence::Leaving {
            self.goodbye_due = false;
            self.leaving = false;
            self.power = Power::Off;
            self.go_offline(true);
        }
        Some(Transmit {
            payload,
            first_seq,
            samples: count,
        })
    }

    /// Encodes a batch of `samples` (a prefix of them, if all would exceed
    /// `max_batch_bytes`). Returns the payload and the samples it holds, or
    /// the samples back if not even one fits (a configuration the scenario
    /// checker refuses).
    fn encode_within_limit(
        &mut self,
        mut samples: Vec<Sample>,
        presence: Presence,
    ) -> Result<(Vec<u8>, Vec<Sample>), Vec<Sample>> {
        let limit = self.config.max_batch_bytes.min(envelope::MAX_MESSAGE_BYTES);
        loop {
            let capacity = 16 + 32 * samples.len();
            let body = Body::Batch(Batch {
                node: self.id,
                held_from: self.held_from(),
                samples,
                presence,
            });
            let mut payload = Vec::with_capacity(capacity);
            let topic = WireTopic::Data {
                partition: self.partition,
                node: self.id,
            };
            let encoded = self.sealer.seal(&body, &topic, &mut payload);
            let Body::Batch(batch) = body else {
                unreachable!("built as a batch above")
            };
            samples = batch.samples;
            let fits = encoded.is_ok() && payload.len() <= limit;
            if fits {
                return Ok((payload, samples));
            }
            if samples.len() <= 1 {
                // Our own batches always satisfy the protocol rules, and a
                // checked configuration always fits one sample: a bug.
                debug_assert!(
                    false,
                    "node {} cannot send {} sample(s) in {limit} bytes: {encoded:?}",
                    self.id.0,
                    samples.len()
                );
                return Err(samples);
            }
            // Shrink in proportion to the excess (samples encode to nearly
            // equal sizes), and by at least one.
            let keep = (samples.len() * limit / payload.len().max(1)).clamp(1, samples.len() - 1);
            samples.truncate(keep);
        }
    }

    /// When the node next needs [`Node::handle_timeout`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let mut next = match self.power {
            // Sampling or heartbeating, on the grid.
            Power::On => Some(self.next_sample_at),
            Power::Rebooting { until } => return Some(until),
            Power::Crashed | Power::Flat | Power::Off => return None,
        };
        let mut consider = |t: Option<Timestamp>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        match self.link {
            Link::Offline { retry_at } if retry_at != Timestamp::MAX => consider(Some(retry_at)),
            Link::Online => consider(self.retransmit_at),
            _ => {}
        }
        next
    }

    // ---- internals -------------------------------------------------------

    /// Lowest sequence number the node still holds or will produce.
    fn held_from(&self) -> u64 {
        self.buffer.oldest_seq().unwrap_or(self.next_seq)
    }

    fn ack_timeout(&self) -> Duration {
        self.flow
            .retransmit_timeout(self.config.ack_timeout, self.config.max_ack_timeout)
    }

    fn next_grid_point_after(&self, now: Timestamp) -> Timestamp {
        let interval = self.config.sample_interval.as_micros().max(1) as u64;
        let phase = self.phase.as_micros() as u64 % interval;
        let t = now.as_micros();
        // Smallest k·interval + phase that is >= now.
        let k = t.saturating_sub(phase).div_ceil(interval);
        Timestamp::from_micros(k * interval + phase).max(now)
    }

    fn boot(&mut self, now: Timestamp) {
        self.power = Power::On;
        // A new epoch: nonces restart from 0 under a number never used.
        self.sealer.start_epoch(self.sealer.epoch() + 1);
        self.next_sample_at = self.next_grid_point_after(now);
        self.battery.settle(now);
        self.backoff.reset();
        self.link = Link::Offline { retry_at: now };
        // The socket was closed when the node went down; anything sent on it
        // is in doubt.
        self.send_cursor = self.held_from();
        self.retransmit_at = None;
        self.flow = FlowControl::new(self.config.flow);
    }

    fn go_offline(&mut self, graceful: bool) {
        if !matches!(self.link, Link::Offline { .. }) {
            self.link_actions
                .push_back(LinkAction::Disconnect { graceful });
            self.ledger.disconnects += 1;
        }
        self.link = Link::Offline {
            retry_at: Timestamp::MAX,
        };
        self.retransmit_at = None;
    }

    fn take_sample(&mut self, due: Timestamp) {
        self.battery.settle(due);
        self.battery.charge_sample();
        if self.battery.is_flat() {
            self.power = Power::Flat;
            self.go_offline(false);
            return;
        }
        let truth = self.physiology.at(due);
        let (vitals, mut faults) = self.sensor.measure(&truth, self.physiology.profile(), due);
        let battery_pct = self.battery.level_pct();
        if battery_pct < LOW_BATTERY_PCT {
            faults.insert(FaultFlags::LOW_BATTERY);
        }
        let sample = Sample {
            node: self.id,
            seq: self.next_seq,
            time: due,
            vitals,
            battery_pct,
            faults,
            admission: self.admission,
        };
        self.next_seq += 1;
        self.ledger.produced += 1;
        match self.buffer.push(sample) {
            Stored::Kept => {}
            Stored::Evicted(s) | Stored::Refused(s) => {
                self.ledger.dropped_overflow.insert(s.seq);
            }
        }
    }
}

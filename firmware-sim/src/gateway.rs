//! A gateway and the nodes behind it: a bedside or ward hub that hears its
//! nodes over a short-range radio and speaks MQTT for them.
//!
//! Real patches and wearables rarely hold a TCP connection of their own;
//! they talk to a hub, which is also how one machine simulates far more
//! nodes than it has file descriptors. A [`GatewayCell`] is the hub, its
//! nodes (the same [`Node`] state machines a direct node runs) and the
//! radio between them, as one `handle_*`/`poll_*` state machine: to a
//! driver it is one MQTT client, like a node.
//!
//! What each part guarantees:
//!
//! - **The nodes keep their end-to-end guarantees.** Each node still signs
//!   its own batches, keeps every sample until the aggregator's ack, and
//!   re-sends on its own retransmission timeout. The gateway forwards the
//!   node's envelopes byte for byte inside a [`Relay`], so the ledger stays
//!   per node and a gateway can neither alter nor invent a sample.
//! - **The gateway batches.** Frames wait at most `flush_after` for company
//!   and leave together in one relay of at most `max_relay_bytes`, on the
//!   gateway's partition topic (every node behind it shares that partition).
//! - **The gateway keeps what it relayed until the end-to-end ack** (up to
//!   `max_held_bytes`), and relays it again as soon as its uplink is back
//!   after a broker restart or a network fault — the nodes do not have to
//!   wait out their retransmission timeouts. It relays each ack to its
//!   node over the radio.
//! - **The radio is unreliable**: every frame and every relayed ack is
//!   delayed, may be lost, and a node may drop out of range for a while;
//!   nodes notice, back off and rejoin when the path is back.
//! - **The gateway fails like a node**: [`GatewayCell::crash`] loses what it
//!   holds (nodes still hold theirs, so nothing is lost end to end) and its
//!   nodes lose their association until [`GatewayCell::restart`].
//!
//! Everything here is pure: time is the `now` argument, randomness a
//! ChaCha8 stream of (seed, gateway, [`Purpose::Gateway`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use vitalmesh_wire::envelope::{self, DeviceKey, Principal, Sealer};
use vitalmesh_wire::message::MAX_RELAY_FRAMES;
use vitalmesh_wire::{AckBatch, GatewayId, NodeAck, NodeId, PartitionId, Timestamp, WireTopic};

use crate::backoff::{Backoff, BackoffConfig};
use crate::node::{Link, LinkAction, Node, Transmit};
use crate::rng::{Draw, Purpose, stream};

/// The short-range radio between a gateway and its nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShortRangeConfig {
    /// One-way delay of a frame or an ack.
    pub delay: Duration,
    /// Uniform extra delay, `0..jitter`.
    pub jitter: Duration,
    /// Share of frames and acks lost, `0..1`.
    pub loss: f64,
    /// How often a node drops out of range, per node and hour (0: never).
    pub dropouts_per_hour: f64,
    /// How long a drop-out lasts.
    pub dropout_length: Duration,
}

impl Default for ShortRangeConfig {
    fn default() -> Self {
        // A BLE connection interval of a few milliseconds, a clean room.
        Self {
            delay: Duration::from_millis(3),
            jitter: Duration::from_millis(2),
            loss: 0.0,
            dropouts_per_hour: 0.0,
            dropout_length: Duration::from_secs(20),
        }
    }
}

/// A gateway's own settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Who.
    pub id: GatewayId,
    /// The partition every node behind it publishes in.
    pub partition: PartitionId,
    /// Longest a frame waits at the gateway for others to share a relay.
    pub flush_after: Duration,
    /// Largest relay envelope (within the wire's message limit).
    pub max_relay_bytes: usize,
    /// Largest total of frames kept for re-relaying (relayed, not yet
    /// acknowledged, plus not yet relayed). Past it the oldest go; their
    /// nodes still hold the samples and re-send.
    pub max_held_bytes: usize,
    /// The radio.
    pub short_range: ShortRangeConfig,
    /// Reconnect backoff of the gateway's MQTT connection.
    pub backoff: BackoffConfig,
    /// How long a node takes to notice its gateway is gone (the radio's
    /// supervision timeout).
    pub supervision_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            id: GatewayId(0),
            partition: PartitionId(0),
            flush_after: Duration::from_millis(10),
            max_relay_bytes: 16 * 1024,
            max_held_bytes: 512 * 1024,
            short_range: ShortRangeConfig::default(),
            backoff: BackoffConfig {
                initial: Duration::from_millis(250),
                max: Duration::from_secs(10),
            },
            supervision_timeout: Duration::from_secs(2),
        }
    }
}

/// What the gateway relayed and what it lost, for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GatewayLedger {
    /// Relay envelopes handed to the driver.
    pub relays: u64,
    /// Node frames in them (a re-relayed frame counts again).
    pub frames_relayed: u64,
    /// Frames relayed again after the uplink came back.
    pub frames_rerelayed: u64,
    /// Frames the radio lost on the way up.
    pub frames_lost_in_air: u64,
    /// Acks the radio lost on the way down.
    pub acks_lost_in_air: u64,
    /// Acks relayed to nodes.
    pub acks_relayed: u64,
    /// Frames dropped from the gateway's memory because it was full (their
    /// nodes re-send).
    pub frames_evicted: u64,
    /// Frames lost in a gateway crash (their nodes re-send).
    pub frames_lost_in_crash: u64,
    /// Range drop-outs.
    pub dropouts: u64,
    /// Crashes.
    pub crashes: u64,
}

impl GatewayLedger {
    /// Adds `other`'s counts (for totals over many gateways).
    pub fn add(&mut self, other: &Self) {
        let Self {
            relays,
            frames_relayed,
            frames_rerelayed,
            frames_lost_in_air,
            acks_lost_in_air,
            acks_relayed,
            frames_evicted,
            frames_lost_in_crash,
            dropouts,
            crashes,
        } = *other;
        self.relays += relays;
        self.frames_relayed += frames_relayed;
        self.frames_rerelayed += frames_rerelayed;
        self.frames_lost_in_air += frames_lost_in_air;
        self.acks_lost_in_air += acks_lost_in_air;
        self.acks_relayed += acks_relayed;
        self.frames_evicted += frames_evicted;
        self.frames_lost_in_crash += frames_lost_in_crash;
        self.dropouts += dropouts;
        self.crashes += crashes;
    }
}

/// The gateway's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayPower {
    /// Relaying.
    On,
    /// Crashed or unplugged: hears nothing, holds nothing.
    Down,
}

/// One relay envelope to publish on [`GatewayCell::topic_partition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTransmit {
    /// The envelope bytes.
    pub payload: Vec<u8>,
    /// Node frames in it.
    pub frames: usize,
    /// Samples in those frames.
    pub samples: usize,
}

/// A node frame as the gateway keeps it.
#[derive(Debug, Clone)]
struct Frame {
    node: NodeId,
    /// One past the last sequence number in it (its first for a heartbeat).
    end_seq: u64,
    samples: usize,
    bytes: Vec<u8>,
}

/// Something in the air or on the gateway's clock.
#[derive(Debug)]
enum Air {
    /// A node's frame reaches the gateway.
    Up(Frame),
    /// A relayed ack reaches its node (which checks its tag).
    Ack(NodeAck),
    /// A node's association attempt is answered (decided on arrival: a
    /// gateway that rebooted during the node's scan window answers it).
    Associate { node: NodeId },
    /// A node notices its gateway has gone silent.
    Lost { node: NodeId, epoch: u32 },
    /// A node drops out of range.
    DropoutStart { node: NodeId },
    /// A node is back in range.
    DropoutEnd { node: NodeId },
}

/// The gateway, its nodes and the radio between them.
#[derive(Debug)]
pub struct GatewayCell {
    config: GatewayConfig,
    /// Seals relays; its epoch counts boots.
    sealer: Sealer,
    /// Slots for nodes with consecutive ids from `first`; a node's slot
    /// fills when it starts (ramps start nodes one by one).
    nodes: Vec<Option<Node>>,
    first: u32,
    power: GatewayPower,
    /// Bumped by every crash, so a node's pending "lost" notice from an
    /// earlier outage cannot fire after a reboot.
    epoch: u32,
    link: Link,
    link_actions: VecDeque<LinkAction>,
    backoff: Backoff,
    rng: ChaCha8Rng,
    /// Per node: out of range until this time.
    out_of_range: Vec<Option<Timestamp>>,
    /// Per node: associated with the gateway (the node's "connection").
    associated: Vec<bool>,
    /// Radio events and drop-outs, in time order (ties by insertion).
    air: BinaryHeap<Reverse<Timed>>,
    air_seq: u64,
    /// Node wake-ups: (time, node index), stale entries skipped.
    wakes: BinaryHeap<Reverse<(Timestamp, u32)>>,
    wake_of: Vec<Option<Timestamp>>,
    /// Received, not yet relayed, oldest first.
    pending: VecDeque<Frame>,
    pending_bytes: usize,
    /// When the oldest pending frame arrived.
    pending_since: Option<Timestamp>,
    /// Relayed, awaiting the end-to-end ack, in relay order.
    held: VecDeque<Frame>,
    held_bytes: usize,
    /// Node indices touched since [`GatewayCell::drain_touched`].
    touched: Vec<u32>,
    touched_mark: Vec<bool>,
    /// Node indices whose requests [`GatewayCell::settle`] has not seen.
    unsettled: Vec<u32>,
    unsettled_mark: Vec<bool>,
    ledger: GatewayLedger,
}

impl GatewayCell {
    /// A powered gateway for the nodes `serves` (consecutive ids, as the
    /// population layout gives them), none started yet; it asks to connect
    /// at once. Nodes join with [`GatewayCell::add_node`].
    pub fn new(
        config: GatewayConfig,
        key: DeviceKey,
        serves: std::ops::Range<u32>,
        seed: u64,
    ) -> Self {
        let first = serves.start;
        let n = serves.len();
        let nodes = std::iter::repeat_with(|| None).take(n).collect();
        let rng = stream(seed, NodeId(config.id.0), Purpose::Gateway);
        let backoff = Backoff::new(config.backoff);
        let mut cell = Self {
            sealer: Sealer::new(key, Principal::Gateway(config.id), 0),
            config,
            nodes,
            first,
            power: GatewayPower::On,
            epoch: 0,
            link: Link::Connecting,
            link_actions: VecDeque::from([LinkAction::Connect]),
            backoff,
            rng,
            out_of_range: vec![None; n],
            associated: vec![false; n],
            air: BinaryHeap::new(),
            air_seq: 0,
            wakes: BinaryHeap::new(),
            wake_of: vec![None; n],
            pending: VecDeque::new(),
            pending_bytes: 0,
            pending_since: None,
            held: VecDeque::new(),
            held_bytes: 0,
            touched: Vec::new(),
            touched_mark: vec![false; n],
            unsettled: Vec::new(),
            unsettled_mark: vec![false; n],
            ledger: GatewayLedger::default(),
        };
        cell.max_relay_bytes_checked();
        cell
    }

    fn max_relay_bytes_checked(&mut self) {
        self.config.max_relay_bytes = self
            .config
            .max_relay_bytes
            .clamp(envelope::MIN_BATCH_BYTES * 2, envelope::MAX_MESSAGE_BYTES);
    }

    /// A node behind this gateway starts (powered, offline): it will
    /// associate at its first timeout.
    ///
    /// # Errors
    ///
    /// The node's id, if it is not one of this gateway's (the node is
    /// dropped: the population layout never gives a gateway another's).
    pub fn add_node(&mut self, node: Node, now: Timestamp) -> Result<(), NodeId> {
        let Some(i) = self.index_of(node.id()) else {
            return Err(node.id());
        };
        self.nodes[i as usize] = Some(node);
        self.associated[i as usize] = false;
        self.schedule_dropout(i, now);
        self.touch(i);
        self.settle(now);
        Ok(())
    }

    // ---- accessors -------------------------------------------------------

    /// Who.
    pub fn id(&self) -> GatewayId {
        self.config.id
    }

    /// The partition its relays are published in.
    pub fn topic_partition(&self) -> PartitionId {
        self.config.partition
    }

    /// Its settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Power state.
    pub fn power(&self) -> GatewayPower {
        self.power
    }

    /// Its MQTT connection as it sees it.
    pub fn link(&self) -> Link {
        self.link
    }

    /// What it relayed and lost.
    pub fn ledger(&self) -> &GatewayLedger {
        &self.ledger
    }

    /// Bytes of frames it keeps (pending and awaiting acks).
    pub fn held_bytes(&self) -> usize {
        self.pending_bytes + self.held_bytes
    }

    /// Its started nodes, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// A started node behind this gateway.
    pub fn node(&self, node: NodeId) -> Option<&Node> {
        self.nodes.get(self.index_of(node)? as usize)?.as_ref()
    }

    /// The ids this gateway serves, started or not.
    pub fn serves_ids(&self) -> std::ops::Range<u32> {
        self.first..self.first + self.nodes.len() as u32
    }

    /// Whether `node` is behind this gateway.
    pub fn serves(&self, node: NodeId) -> bool {
        self.index_of(node).is_some()
    }

    /// Whether `node` is out of the radio's range now.
    pub fn is_out_of_range(&self, node: NodeId) -> bool {
        self.index_of(node)
            .is_some_and(|i| self.out_of_range[i as usize].is_some())
    }

    /// Whether `node` is associated (its link to the gateway is up).
    pub fn is_associated(&self, node: NodeId) -> bool {
        self.index_of(node)
            .is_some_and(|i| self.associated[i as usize])
    }

    fn index_of(&self, node: NodeId) -> Option<u32> {
        let i = node.0.checked_sub(self.first)?;
        ((i as usize) < self.nodes.len()).then_some(i)
    }

    /// Runs `f` on `node` (a scenario action, an injected fault) and lets
    /// the cell react to whatever it changed.
    pub fn with_node<R>(
        &mut self,
        node: NodeId,
        now: Timestamp,
        f: impl FnOnce(&mut Node) -> R,
    ) -> Option<R> {
        let i = self.index_of(node)?;
        let out = f(self.nodes[i as usize].as_mut()?);
        self.touch(i);
        self.settle(now);
        Some(out)
    }

    /// Moves the ids of nodes whose state may have changed since the last
    /// call into `out` (for drivers that keep per-node tallies).
    pub fn drain_touched(&mut self, out: &mut Vec<NodeId>) {
        for i in self.touched.drain(..) {
            self.touched_mark[i as usize] = false;
            out.push(NodeId(self.first + i));
        }
    }

    // ---- inputs ----------------------------------------------------------

    /// Advances to `now`: radio events, node timers, drop-outs.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while self.air.peek().is_some_and(|t| t.0.at <= now) {
            let Some(Reverse(timed)) = self.air.pop() else {
                break;
            };
            self.on_air(timed.event, timed.at);
        }
        while let Some(&Reverse((at, i))) = self.wakes.peek() {
            if at > now {
                break;
            }
            self.wakes.pop();
            if self.wake_of[i as usize].is_none_or(|w| w > at) {
                continue; // stale: the node's wake-up moved later
            }
            self.wake_of[i as usize] = None;
            if let Some(n) = self.nodes[i as usize].as_mut() {
                n.handle_timeout(now);
            }
            self.touch(i);
        }
        if self.power == GatewayPower::On {
            if let Link::Offline { retry_at } = self.link {
                if now >= retry_at {
                    self.link = Link::Connecting;
                    self.link_actions.push_back(LinkAction::Connect);
                }
            }
        }
        self.settle(now);
    }

    /// The gateway's MQTT connection is up: everything it holds unacked is
    /// relayed again now.
    pub fn handle_connected(&mut self, now: Timestamp) {
        if self.power != GatewayPower::On || self.link == Link::Online {
            return;
        }
        self.link = Link::Online;
        self.backoff.reset();
        if !self.held.is_empty() {
            self.ledger.frames_rerelayed += self.held.len() as u64;
            // Relayed before the pending ones: they are older.
            let mut again = std::mem::take(&mut self.held);
            again.append(&mut self.pending);
            self.pending = again;
            self.pending_bytes += self.held_bytes;
            self.held_bytes = 0;
            self.pending_since = Some(now);
        }
        self.settle(now);
    }

    /// The gateway's MQTT connection failed or dropped: it keeps relaying
    /// into its memory and reconnects with backoff. Its nodes stay
    /// associated (the radio is fine).
    pub fn handle_disconnected(&mut self, now: Timestamp) {
        if matches!(self.link, Link::Offline { .. }) {
            return;
        }
        let retry_at = if self.power == GatewayPower::On {
            now + self.backoff.next_delay(&mut self.rng)
        } else {
            Timestamp::MAX
        };
        self.link = Link::Offline { retry_at };
    }

    /// The uplink's path is back (the network stack says so): an offline
    /// gateway reconnects now rather than after its backoff.
    pub fn handle_uplink_available(&mut self, now: Timestamp) {
        if self.power != GatewayPower::On {
            return;
        }
        if let Link::Offline { retry_at } = self.link {
            if retry_at != Timestamp::MAX && retry_at > now {
                self.link = Link::Offline { retry_at: now };
            }
        }
    }

    /// A partition's ack batch (the gateway subscribes to its partition's
    /// ack topic): releases what it held for its nodes and relays each of
    /// their acks over the radio.
    pub fn handle_acks(&mut self, acks: &AckBatch, now: Timestamp) {
        if self.power != GatewayPower::On {
            return;
        }
        // Acks are sorted by node: find this gateway's run of ids.
        let last = self.first + self.nodes.len() as u32;
        let start = acks.acks.partition_point(|a| a.node.0 < self.first);
        let mut released = false;
        for ack in acks.acks[start..].iter().take_while(|a| a.node.0 < last) {
            let i = (ack.node.0 - self.first) as usize;
            if !self.associated[i] {
                continue;
            }
            if self.lost_in_air() {
                self.ledger.acks_lost_in_air += 1;
            } else {
                self.ledger.acks_relayed += 1;
                let at = now + self.air_delay();
                self.push_air(at, Air::Ack(*ack));
            }
            released = true;
        }
        if released {
            let mut freed = 0;
            self.held.retain(|f| {
                let keep = acks
                    .acks
                    .binary_search_by_key(&f.node, |a| a.node)
                    .map_or(true, |j| f.end_seq > acks.acks[j].next_expected);
                if !keep {
                    freed += f.bytes.len();
                }
                keep
            });
            self.held_bytes -= freed;
        }
        self.settle(now);
    }

    /// The gateway crashes (or is unplugged): what it holds is gone, its
    /// MQTT connection drops without a goodbye, and its nodes notice after
    /// the radio's supervision timeout.
    pub fn crash(&mut self, now: Timestamp) {
        if self.power == GatewayPower::Down {
            return;
        }
        self.power = GatewayPower::Down;
        self.epoch = self.epoch.wrapping_add(1);
        self.ledger.crashes += 1;
        self.ledger.frames_lost_in_crash += (self.pending.len() + self.held.len()) as u64;
        self.pending.clear();
        self.held.clear();
        self.pending_bytes = 0;
        self.held_bytes = 0;
        self.pending_since = None;
        if !matches!(self.link, Link::Offline { .. }) {
            self.link_actions
                .push_back(LinkAction::Disconnect { graceful: false });
        }
        self.link = Link::Offline {
            retry_at: Timestamp::MAX,
        };
        let at = now + self.config.supervision_timeout;
        for i in 0..self.nodes.len() as u32 {
            if self.associated[i as usize] {
                self.push_air(
                    at,
                    Air::Lost {
                        node: NodeId(self.first + i),
                        epoch: self.epoch,
                    },
                );
            }
        }
        self.settle(now);
    }

    /// The gateway boots again: it reconnects at once and its beacon tells
    /// offline nodes to associate now rather than after their backoff.
    pub fn restart(&mut self, now: Timestamp) {
        if self.power == GatewayPower::On {
            return;
        }
        self.power = GatewayPower::On;
        // A new epoch: nonces restart from 0 under a number never used.
        self.sealer.start_epoch(self.sealer.epoch() + 1);
        self.backoff.reset();
        self.link = Link::Connecting;
        self.link_actions.push_back(LinkAction::Connect);
        for i in 0..self.nodes.len() as u32 {
            if self.out_of_range[i as usize].is_none() {
                if let Some(n) = self.nodes[i as usize].as_mut() {
                    n.handle_link_available(now);
                }
                self.touch(i);
            }
        }
        self.settle(now);
    }

    // ---- outputs ---------------------------------------------------------

    /// The next action on the gateway's MQTT connection.
    #[must_use]
    pub fn poll_link(&mut self) -> Option<LinkAction> {
        self.link_actions.pop_front()
    }

    /// The next relay to publish, if online and a batch is due: frames have
    /// waited `flush_after`, or enough of them fill a relay.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Timestamp) -> Option<RelayTransmit> {
        if self.power != GatewayPower::On || self.link != Link::Online {
            return None;
        }
        let since = self.pending_since?;
        let full =
            self.pending_bytes >= self.fill_bytes() || self.pending.len() >= MAX_RELAY_FRAMES;
        if !full && now < since + self.config.flush_after {
            return None;
        }
        // Each frame costs its bytes plus a length prefix; the relay's own
        // header and tag are small and fixed.
        let budget = self.config.max_relay_bytes - RELAY_OVERHEAD;
        let mut taken = Vec::new();
        let mut used = 0;
        while let Some(f) = self.pending.front() {
            let cost = f.bytes.len() + 3;
            if (!taken.is_empty() && used + cost > budget) || taken.len() >= MAX_RELAY_FRAMES {
                break;
            }
            used += cost;
            let f = self.pending.pop_front().expect("peeked");
            self.pending_bytes -= f.bytes.len();
            taken.push(f);
        }
        self.pending_since = if self.pending.is_empty() {
            None
        } else {
            Some(now)
        };
        let frames: Vec<&[u8]> = taken.iter().map(|f| f.bytes.as_slice()).collect();
        let mut payload = Vec::with_capacity(used + RELAY_OVERHEAD);
        let topic = WireTopic::Relay {
            partition: self.config.partition,
            gateway: self.config.id,
        };
        match self.sealer.seal_relay(&frames, &topic, &mut payload) {
            Ok(()) => {}
            Err(e) => {
                // Frames come from our own nodes, within their byte limit,
                // and the budget above keeps the relay in the wire limit:
                // a bug. The nodes still hold the samples and re-send.
                debug_assert!(
                    false,
                    "gateway {} cannot encode a relay: {e}",
                    self.config.id.0
                );
                return None;
            }
        }
        drop(frames);
        let samples = taken.iter().map(|f| f.samples).sum();
        let frames = taken.len();
        self.ledger.relays += 1;
        self.ledger.frames_relayed += frames as u64;
        for f in taken {
            self.held_bytes += f.bytes.len();
            self.held.push_back(f);
        }
        self.evict_over_limit();
        Some(RelayTransmit {
            payload,
            frames,
            samples,
        })
    }

    /// When the cell next needs [`GatewayCell::handle_timeout`] (a relay
    /// that waits for `flush_after` is due then too).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        let mut consider = |t: Timestamp| next = Some(next.map_or(t, |n: Timestamp| n.min(t)));
        if let Some(Reverse(t)) = self.air.peek() {
            consider(t.at);
        }
        if let Some(&Reverse((at, _))) = self.wakes.peek() {
            consider(at);
        }
        if self.power == GatewayPower::On {
            match self.link {
                Link::Offline { retry_at } if retry_at != Timestamp::MAX => consider(retry_at),
                Link::Online => {
                    if let Some(since) = self.pending_since {
                        consider(since + self.config.flush_after);
                    }
                }
                _ => {}
            }
        }
        next
    }

    // ---- internals -------------------------------------------------------

    /// Pending bytes at which a relay leaves without waiting.
    fn fill_bytes(&self) -> usize {
        self.config.max_relay_bytes - RELAY_OVERHEAD
    }

    fn touch(&mut self, i: u32) {
        if !self.touched_mark[i as usize] {
            self.touched_mark[i as usize] = true;
            self.touched.push(i);
        }
        if !self.unsettled_mark[i as usize] {
            self.unsettled_mark[i as usize] = true;
            self.unsettled.push(i);
        }
    }

    fn push_air(&mut self, at: Timestamp, event: Air) {
        let seq = self.air_seq;
        self.air_seq += 1;
        self.air.push(Reverse(Timed { at, seq, event }));
    }

    fn lost_in_air(&mut self) -> bool {
        let loss = self.config.short_range.loss;
        loss > 0.0 && self.rng.unit() < loss
    }

    fn air_delay(&mut self) -> Duration {
        let r = &self.config.short_range;
        let (delay, jitter) = (r.delay, r.jitter);
        if jitter.is_zero() {
            delay
        } else {
            delay + jitter.mul_f64(self.rng.unit())
        }
    }

    fn schedule_dropout(&mut self, i: u32, now: Timestamp) {
        let rate = self.config.short_range.dropouts_per_hour;
        if rate <= 0.0 || !rate.is_finite() {
            return;
        }
        // Exponential gaps: a Poisson process of drop-outs per node.
        let gap_s = -(1.0 - self.rng.unit()).ln() * 3600.0 / rate;
        let at = now + Duration::from_secs_f64(gap_s.min(1e9));
        self.push_air(
            at,
            Air::DropoutStart {
                node: NodeId(self.first + i),
            },
        );
    }

    fn on_air(&mut self, event: Air, now: Timestamp) {
        match event {
            Air::Up(frame) => {
                let i = frame.node.0 - self.first;
                if self.power != GatewayPower::On || !self.associated[i as usize] {
                    self.ledger.frames_lost_in_air += 1;
                    return;
                }
                if self.pending.is_empty() {
                    self.pending_since = Some(now);
                }
                self.pending_bytes += frame.bytes.len();
                self.pending.push_back(frame);
                self.evict_over_limit();
            }
            Air::Ack(ack) => {
                let i = ack.node.0 - self.first;
                if self.associated[i as usize] {
                    if let Some(n) = self.nodes[i as usize].as_mut() {
                        n.handle_ack(&ack, now);
                    }
                    self.touch(i);
                }
            }
            Air::Associate { node } => {
                let i = node.0 - self.first;
                let Some(n) = self.nodes[i as usize].as_mut() else {
                    return;
                };
                if n.status(now).link != Link::Connecting {
                    return; // it gave up or crashed meanwhile
                }
                let reachable =
                    self.power == GatewayPower::On && self.out_of_range[i as usize].is_none();
                if reachable {
                    self.associated[i as usize] = true;
                    n.handle_connected(now);
                } else {
                    n.handle_disconnected(now);
                }
                self.touch(i);
            }
            Air::Lost { node, epoch } => {
                let i = node.0 - self.first;
                if epoch == self.epoch && self.power == GatewayPower::Down {
                    self.drop_association(i, now);
                }
            }
            Air::DropoutStart { node } => {
                let i = node.0 - self.first;
                self.ledger.dropouts += 1;
                let until = now + self.config.short_range.dropout_length;
                self.out_of_range[i as usize] = Some(until);
                self.drop_association(i, now);
                self.push_air(until, Air::DropoutEnd { node });
            }
            Air::DropoutEnd { node } => {
                let i = node.0 - self.first;
                self.out_of_range[i as usize] = None;
                if self.power == GatewayPower::On {
                    if let Some(n) = self.nodes[i as usize].as_mut() {
                        n.handle_link_available(now);
                    }
                }
                self.touch(i);
                self.schedule_dropout(i, now);
            }
        }
    }

    fn drop_association(&mut self, i: u32, now: Timestamp) {
        if std::mem::replace(&mut self.associated[i as usize], false) {
            if let Some(n) = self.nodes[i as usize].as_mut() {
                n.handle_disconnected(now);
            }
        }
        self.touch(i);
    }

    /// Keeps the gateway's memory bounded: the oldest acked-or-not frames
    /// go first (relayed ones before pending ones: they have had their
    /// chance). Their nodes still hold the samples.
    fn evict_over_limit(&mut self) {
        while self.pending_bytes + self.held_bytes > self.config.max_held_bytes {
            let f = if let Some(f) = self.held.pop_front() {
                self.held_bytes -= f.bytes.len();
                f
            } else if let Some(f) = self.pending.pop_front() {
                self.pending_bytes -= f.bytes.len();
                f
            } else {
                break;
            };
            drop(f);
            self.ledger.frames_evicted += 1;
        }
        if self.pending.is_empty() {
            self.pending_since = None;
        }
    }

    /// Acts on what the touched nodes asked for: association attempts and
    /// frames into the air; then re-arms their wake-ups.
    fn settle(&mut self, now: Timestamp) {
        while let Some(i) = self.unsettled.pop() {
            let idx = i as usize;
            self.unsettled_mark[idx] = false;
            if self.nodes[idx].is_none() {
                continue;
            }
            let node_id = NodeId(self.first + i);
            while let Some(action) = self.nodes[idx].as_mut().and_then(Node::poll_link) {
                match action {
                    LinkAction::Connect => {
                        let accepted =
                            self.power == GatewayPower::On && self.out_of_range[idx].is_none();
                        // A refused association is noticed after a scan
                        // window; an accepted one after one round trip.
                        let at = if accepted {
                            now + self.air_delay() * 2
                        } else {
                            now + Duration::from_millis(500)
                        };
                        self.push_air(at, Air::Associate { node: node_id });
                    }
                    LinkAction::Disconnect { .. } => {
                        self.associated[idx] = false;
                    }
                }
            }
            if self.associated[idx] {
                while let Some(t) = self.nodes[idx].as_mut().and_then(|n| n.poll_transmit(now)) {
                    self.send_frame(node_id, t, now);
                }
            }
            let wake = self.nodes[idx].as_ref().and_then(Node::poll_timeout);
            if wake != self.wake_of[idx] {
                self.wake_of[idx] = wake;
                if let Some(w) = wake {
                    self.wakes.push(Reverse((w.max(now), i)));
                }
            }
        }
    }

    fn send_frame(&mut self, node: NodeId, t: Transmit, now: Timestamp) {
        if self.lost_in_air() {
            self.ledger.frames_lost_in_air += 1;
            return;
        }
        let at = now + self.air_delay();
        let frame = Frame {
            node,
            end_seq: t.first_seq + t.samples as u64,
            samples: t.samples,
            bytes: t.payload,
        };
        self.push_air(at, Air::Up(frame));
    }
}

/// Upper bound of a relay envelope's bytes besides its frames: version,
/// body tag, gateway id, frame count, authentication tag.
const RELAY_OVERHEAD: usize = envelope::HEADER_BYTES + 1 + 5 + 3 + envelope::TAG_BYTES;

/// A radio event at its time; ties keep their scheduling order.
#[derive(Debug)]
struct Timed {
    at: Timestamp,
    seq: u64,
    event: Air,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Timed {}

impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use vitalmesh_wire::envelope::Keyring;
    use vitalmesh_wire::{AggregatorId, Body, decode};

    use super::*;
    use crate::node::NodeConfig;

    const SEED: u64 = 0x6A7E;

    fn keyring() -> Keyring {
        Keyring::new([7; 32], 1000)
    }

    fn cell(config: GatewayConfig, nodes: u32, interval: Duration) -> GatewayCell {
        let keys = keyring();
        let key = keys.derive(Principal::Gateway(GatewayId(3)));
        let mut c = GatewayCell::new(
            GatewayConfig {
                id: GatewayId(3),
                partition: config_partition(),
                ..config
            },
            key,
            100..100 + nodes,
            SEED,
        );
        for n in 100..100 + nodes {
            let config = NodeConfig {
                sample_interval: interval,
                ..NodeConfig::default()
            };
            let node = Node::new(
                NodeId(n),
                config_partition(),
                config,
                SEED,
                keys.node_credentials(NodeId(n)),
                Timestamp::EPOCH,
            );
            c.add_node(node, Timestamp::EPOCH)
                .expect("one of its nodes");
        }
        c
    }

    fn config_partition() -> PartitionId {
        PartitionId(5)
    }

    /// A stand-in for the partition's primary aggregator: authenticates
    /// every frame, counts what it ingested, acks cumulatively.
    #[derive(Default)]
    struct Receiver {
        next_expected: BTreeMap<NodeId, u64>,
        relays: u64,
        largest_relay: usize,
        dirty: bool,
    }

    impl Receiver {
        fn ingest(&mut self, relay: &RelayTransmit, keys: &Keyring) {
            self.relays += 1;
            self.largest_relay = self.largest_relay.max(relay.payload.len());
            let topic = WireTopic::Relay {
                partition: config_partition(),
                gateway: GatewayId(3),
            };
            let Ok(Body::Relay(r)) = decode(&relay.payload, &topic, keys) else {
                panic!("the gateway sent something that is not a relay")
            };
            assert_eq!(r.gateway, GatewayId(3));
            for frame in &r.frames {
                let Ok((_, Body::Batch(b))) = vitalmesh_wire::open(frame, &data_topic(frame), keys)
                else {
                    panic!("a frame that is not its node's batch")
                };
                let next = self.next_expected.entry(b.node).or_insert(0);
                *next = (*next).max(b.held_from);
                for s in &b.samples {
                    if s.seq == *next {
                        *next += 1;
                    }
                }
                self.dirty = true;
            }
        }

        fn acks(&mut self, keys: &Keyring) -> Option<AckBatch> {
            std::mem::take(&mut self.dirty).then(|| AckBatch {
                partition: config_partition(),
                aggregator: AggregatorId(0),
                acks: self
                    .next_expected
                    .iter()
                    .map(|(&node, &next_expected)| {
                        keys.ack_key(node).expect("provisioned").ack(
                            config_partition(),
                            node,
                            next_expected,
                        )
                    })
                    .collect(),
            })
        }
    }

    /// A frame's node's data topic, from its (cleartext) header.
    fn data_topic(frame: &[u8]) -> WireTopic {
        let Some(Principal::Node(node)) = envelope::claimed_sender(frame) else {
            panic!("a node's frame")
        };
        WireTopic::Data {
            partition: config_partition(),
            node,
        }
    }

    /// Drives the cell and the receiver with a broker that delivers
    /// instantly, acking every 100 ms; `during` runs at every step.
    fn drive(
        c: &mut GatewayCell,
        rx: &mut Receiver,
        until: Timestamp,
        mut during: impl FnMut(&mut GatewayCell, Timestamp),
    ) {
        let keys = keyring();
        let mut now = Timestamp::EPOCH;
        let mut next_ack = now;
        let mut online = false;
        while now < until {
            during(c, now);
            c.handle_timeout(now);
            while let Some(action) = c.poll_link() {
                match action {
                    LinkAction::Connect => {
                        c.handle_connected(now);
                        online = true;
                    }
                    LinkAction::Disconnect { .. } => online = false,
                }
            }
            while let Some(r) = c.poll_transmit(now) {
                assert!(online);
                rx.ingest(&r, &keys);
            }
            if now >= next_ack {
                if let Some(a) = rx.acks(&keys) {
                    c.handle_acks(&a, now);
                }
                next_ack = now + Duration::from_millis(100);
            }
            let wake = c.poll_timeout().unwrap_or(Timestamp::MAX);
            now = wake.min(next_ack).max(now + Duration::from_micros(1));
        }
    }

    fn assert_every_sample_accounted(c: &GatewayCell) {
        for n in c.nodes() {
            let l = n.ledger();
            assert!(
                l.balances(n.buffered_len() as u64),
                "node {} ledger does not balance",
                n.id().0
            );
            assert_eq!(l.dropped_overflow.len(), 0, "node {} overflowed", n.id().0);
        }
    }

    #[test]
    fn relays_batch_many_nodes_and_acks_reach_every_node() {
        let mut c = cell(GatewayConfig::default(), 200, Duration::from_secs(1));
        let mut rx = Receiver::default();
        drive(
            &mut c,
            &mut rx,
            Timestamp::from_micros(30_000_000),
            |_, _| {},
        );
        let produced: u64 = c.nodes().map(|n| n.ledger().produced).sum();
        let acked: u64 = c.nodes().map(|n| n.ledger().acked.len()).sum();
        assert!(produced >= 200 * 29, "{produced}");
        // Only the last ~second may still be in flight.
        assert!(acked + 400 >= produced, "acked {acked} of {produced}");
        // 200 nodes at 1 Hz, a relay at most 10 ms after its first frame:
        // two frames arrive per 10 ms, so a relay carries about three.
        let frames_per_relay = c.ledger().frames_relayed as f64 / c.ledger().relays as f64;
        assert!(frames_per_relay > 2.2, "{frames_per_relay}");
        assert!(c.ledger().acks_relayed > 0);
        assert!(c.nodes().all(|n| n.buffered_len() <= 3));
        assert_every_sample_accounted(&c);
    }

    #[test]
    fn a_lossy_radio_with_dropouts_loses_nothing_end_to_end() {
        let config = GatewayConfig {
            short_range: ShortRangeConfig {
                loss: 0.2,
                dropouts_per_hour: 60.0,
                dropout_length: Duration::from_secs(5),
                ..ShortRangeConfig::default()
            },
            ..GatewayConfig::default()
        };
        let mut c = cell(config, 40, Duration::from_secs(1));
        let mut rx = Receiver::default();
        drive(
            &mut c,
            &mut rx,
            Timestamp::from_micros(300_000_000),
            |c, now| {
                if now >= Timestamp::from_micros(240_000_000) {
                    // Calm the radio so the backlog drains before the end.
                    c.config.short_range.loss = 0.0;
                    c.config.short_range.dropouts_per_hour = 0.0;
                }
            },
        );
        let l = *c.ledger();
        assert!(l.frames_lost_in_air > 100, "{l:?}");
        assert!(l.acks_lost_in_air > 50, "{l:?}");
        assert!(l.dropouts > 50, "{l:?}");
        for n in c.nodes() {
            // Everything but the last seconds reached the receiver, and the
            // node knows it.
            let acked = n.ledger().acked.len();
            assert!(
                acked + 10 >= n.ledger().produced,
                "node {}: {acked}",
                n.id().0
            );
            assert!(n.ledger().retransmission_rounds > 0 || l.frames_lost_in_air == 0);
        }
        assert_every_sample_accounted(&c);
    }

    #[test]
    fn a_crashed_gateway_loses_what_it_held_but_its_nodes_resend_it() {
        let mut c = cell(GatewayConfig::default(), 30, Duration::from_millis(200));
        let mut rx = Receiver::default();
        let crash_at = Timestamp::from_micros(10_000_000);
        let restart_at = Timestamp::from_micros(25_000_000);
        let mut rejoined_by = None;
        drive(
            &mut c,
            &mut rx,
            Timestamp::from_micros(60_000_000),
            |c, now| {
                if now >= crash_at && c.ledger().crashes == 0 {
                    c.crash(now);
                    assert_eq!(c.held_bytes(), 0);
                }
                if now >= restart_at && c.power() == GatewayPower::Down {
                    c.restart(now);
                }
                if rejoined_by.is_none()
                    && now > restart_at
                    && c.nodes().all(|n| c.is_associated(n.id()))
                {
                    rejoined_by = Some(now);
                }
            },
        );
        let l = *c.ledger();
        assert_eq!(l.crashes, 1);
        // Nodes noticed the silent gateway and rejoin promptly on its beacon.
        let rejoined_by = rejoined_by.expect("every node rejoined");
        assert!(
            rejoined_by < restart_at + Duration::from_secs(2),
            "rejoined {rejoined_by:?}"
        );
        for n in c.nodes() {
            assert!(
                n.ledger().disconnects >= 1,
                "node {} never noticed",
                n.id().0
            );
            // 15 s of outage buffered at the node and delivered after.
            assert!(n.ledger().acked.len() + 15 >= n.ledger().produced);
        }
        assert_every_sample_accounted(&c);
    }

    #[test]
    fn an_uplink_outage_is_relayed_again_on_reconnect_without_waiting_for_nodes() {
        let mut c = cell(GatewayConfig::default(), 10, Duration::from_secs(1));
        // Connect, relay one round, then lose the uplink before any ack.
        let keys = keyring();
        let mut rx = Receiver::default();
        let mut now = Timestamp::EPOCH;
        c.handle_timeout(now);
        assert_eq!(c.poll_link(), Some(LinkAction::Connect));
        c.handle_connected(now);
        while now < Timestamp::from_micros(3_000_000) {
            c.handle_timeout(now);
            while let Some(r) = c.poll_transmit(now) {
                rx.ingest(&r, &keys);
            }
            now = c
                .poll_timeout()
                .unwrap()
                .max(now + Duration::from_micros(1));
        }
        let relayed = c.ledger().frames_relayed;
        assert!(relayed >= 20);
        c.handle_disconnected(now);
        assert!(c.held_bytes() > 0, "kept until acked");
        let held_before = c.held_bytes();
        // Reconnect well before any node's retransmission timeout.
        now = now + Duration::from_millis(100);
        c.handle_timeout(now);
        c.handle_connected(now);
        now = now + c.config().flush_after;
        c.handle_timeout(now);
        let mut again = 0;
        while let Some(r) = c.poll_transmit(now) {
            again += r.frames;
        }
        assert!(again >= 20, "re-relayed {again}");
        assert_eq!(c.ledger().frames_rerelayed, relayed);
        assert!(c.held_bytes() >= held_before);
    }

    #[test]
    fn no_relay_exceeds_its_byte_limit() {
        for max in [600usize, 2_000, 8_000, 32 * 1024] {
            let config = GatewayConfig {
                max_relay_bytes: max,
                flush_after: Duration::from_millis(200),
                ..GatewayConfig::default()
            };
            // 200 nodes at 20 Hz: far more than one relay holds.
            let mut c = cell(config, 200, Duration::from_millis(50));
            let mut rx = Receiver::default();
            drive(
                &mut c,
                &mut rx,
                Timestamp::from_micros(5_000_000),
                |_, _| {},
            );
            assert!(rx.relays > 10);
            assert!(
                rx.largest_relay <= max.max(envelope::MIN_BATCH_BYTES * 2),
                "limit {max}: a relay of {} bytes",
                rx.largest_relay
            );
            assert_every_sample_accounted(&c);
        }
    }
}

//! The envelope: how a [`Body`] becomes sealed bytes on an MQTT topic, and
//! back.
//!
//! ```text
//! +---------+------+-----------+---------+-----------+------------------+---------+
//! | version | kind | sender id | epoch   | counter   | body             | tag     |
//! | 1 byte  | 1    | u32 LE    | u32 LE  | u64 LE    | postcard(Body)   | 16      |
//! +---------+------+-----------+---------+-----------+------------------+---------+
//!  \________________ header: associated data ______/  encrypted, except
//!                                                      acks and relays
//! ```
//!
//! Every message is sealed with AES-128-GCM under the *sender's* device key.
//! The nonce is the header's epoch and counter, so it is unique per key by
//! construction (a device bumps its epoch on every boot and its counter on
//! every message; nothing is random). The associated data is the header and
//! the topic the message is meant for ([`WireTopic`], as the scheme parses
//! it), so a message moved to another topic, or claiming another sender in
//! its header or body, fails to open.
//!
//! Vitals, statuses, wards and alerts are encrypted: a broker, or anyone
//! subscribed to `vm/#`, sees only ciphertext. Two kinds are authenticated
//! but left readable, because their readers cannot hold the sender's key and
//! they carry nothing secret:
//! - acks ([`AckBatch`]) go to every node of a partition, and a node holds
//!   only its own keys; each entry carries its own tag under the
//!   acknowledged node's *ack key* ([`AckKey`]), so a node trusts its entry,
//!   never a forger's, and nobody but an aggregator can make a node drop
//!   data;
//! - relays ([`crate::Relay`]) carry node envelopes that are sealed already.
//!
//! **Why AES-128-GCM, not ChaCha20-Poly1305.** Both are RustCrypto AEADs;
//! sealing a 40-byte live batch measured 170 ns with AES-128-GCM (AES-NI and
//! carry-less multiply, detected at run time) against 413 ns for
//! ChaCha20-Poly1305 with a software Poly1305 and 1.9 µs with its AVX2
//! Poly1305, whose per-key set-up dominates short messages (BENCHMARKS.md).
//! Every message is short, and the per-sample budget is 333 ns. On a
//! wearable without AES instructions ChaCha20-Poly1305 would be the faster
//! and safer (constant-time in software) choice; the envelope's version byte
//! is where such a change would go.
//!
//! **Keys.** One provisioning secret ([`Keyring`]) derives every device's
//! key by HKDF-SHA256, with the principal as the info string: a device holds
//! only its own key; aggregators, the trusted back end, derive any.
//!
//! **Replays** are not this module's business: the header's (epoch, counter)
//! orders a sender's messages, and the receivers keep the state that refuses
//! a replayed one (the aggregator's per-node window; membership for
//! statuses).

use std::fmt;

use aes_gcm::aead::AeadInPlace;

pub use crate::keys::{
    AckKey, DeviceKey, Keyring, NodeCredentials, ProvisioningSecret, mqtt_username,
    principal_of_username, to_hex,
};
use crate::{AckBatch, AggregatorId, Body, GatewayId, NodeId, WireError, WireTopic};

/// The wire version this build writes and the only one it reads.
/// Version 4 sealed every message (AES-128-GCM with a header as associated
/// data) and tagged every ack entry for its node.
pub const WIRE_VERSION: u8 = 4;

/// Length of the header: version, kind, sender id, epoch, counter.
pub const HEADER_BYTES: usize = 18;

/// Length of the AEAD tag.
pub const TAG_BYTES: usize = 16;

/// Length of one ack entry's tag.
pub const ACK_TAG_BYTES: usize = 16;

/// Largest valid message. A full [`crate::Batch`] of 256 samples is about
/// 8 KiB; an [`crate::AckBatch`] of 1024 acks about 28 KiB.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// A byte limit on uplink batches that always fits one sample, whatever
/// its values (the worst case encodes to well under half of it; see the
/// test `a_one_sample_batch_always_fits_min_batch_bytes`).
pub const MIN_BATCH_BYTES: usize = 256;

/// Shortest possible message: header, a one-byte body, the tag.
pub const MIN_MESSAGE_BYTES: usize = HEADER_BYTES + 1 + TAG_BYTES;

/// Who sent a message, as claimed by its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A sensor node.
    Node(NodeId),
    /// An aggregator.
    Aggregator(AggregatorId),
    /// A gateway.
    Gateway(GatewayId),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node(n) => n.fmt(f),
            Self::Aggregator(a) => a.fmt(f),
            Self::Gateway(g) => g.fmt(f),
        }
    }
}

impl Body {
    /// The principal whose key must have sealed this body.
    pub fn sender(&self) -> Principal {
        match self {
            Self::Batch(b) => Principal::Node(b.node),
            Self::Ack(a) => Principal::Aggregator(a.aggregator),
            Self::Status(s) => Principal::Aggregator(s.aggregator),
            Self::Alert(a) => Principal::Aggregator(a.aggregator),
            Self::Ward(w) => Principal::Aggregator(w.aggregator),
            Self::Relay(r) => Principal::Gateway(r.gateway),
        }
    }

    /// The body's variant index: the header's kind byte.
    fn kind(&self) -> u8 {
        match self {
            Self::Batch(_) => KIND_BATCH,
            Self::Ack(_) => KIND_ACK,
            Self::Status(_) => 2,
            Self::Alert(_) => 3,
            Self::Ward(_) => 4,
            Self::Relay(_) => KIND_RELAY,
        }
    }
}

const KIND_BATCH: u8 = 0;
const KIND_ACK: u8 = 1;
const KIND_RELAY: u8 = crate::fast::RELAY_VARIANT;

/// Whether a kind travels readable (authenticated only).
const fn is_open(kind: u8) -> bool {
    kind == KIND_ACK || kind == KIND_RELAY
}

/// The header of an opened message: who sealed it, and where it stands in
/// that sender's sequence of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// The sender (authenticated once the message opened).
    pub sender: Principal,
    /// The sender's boot or incarnation number.
    pub epoch: u32,
    /// The sender's message counter within the epoch.
    pub counter: u64,
}

impl Header {
    /// (epoch, counter): later messages of one sender compare greater.
    pub const fn order(&self) -> (u32, u64) {
        (self.epoch, self.counter)
    }

    fn parse(bytes: &[u8]) -> Result<(u8, Self), WireError> {
        let kind = bytes[1];
        let id = u32::from_le_bytes(bytes[2..6].try_into().expect("4 bytes"));
        let epoch = u32::from_le_bytes(bytes[6..10].try_into().expect("4 bytes"));
        let counter = u64::from_le_bytes(bytes[10..18].try_into().expect("8 bytes"));
        let sender = match kind {
            KIND_BATCH => Principal::Node(NodeId(id)),
            KIND_RELAY => Principal::Gateway(GatewayId(id)),
            KIND_ACK | 2..=4 => {
                Principal::Aggregator(AggregatorId(u16::try_from(id).map_err(|_| {
                    WireError::invalid(
                        "header.sender",
                        format!("'{id}' for an aggregator; expected at most {}", u16::MAX),
                    )
                })?))
            }
            other => {
                return Err(WireError::invalid(
                    "header.kind",
                    format!("'{other}'; expected 0 to {KIND_RELAY}"),
                ));
            }
        };
        Ok((
            kind,
            Self {
                sender,
                epoch,
                counter,
            },
        ))
    }
}

/// The topic as associated data: what it means, not how it is spelled, so
/// the binding does not depend on the scheme's root.
fn topic_ad(topic: &WireTopic) -> ([u8; 7], usize) {
    let mut b = [0u8; 7];
    let short = |b: &mut [u8; 7], tag: u8, x: u16| {
        b[0] = tag;
        b[1..3].copy_from_slice(&x.to_le_bytes());
        3
    };
    let len = match *topic {
        WireTopic::Data { partition, node } => {
            b[0] = 0;
            b[1..3].copy_from_slice(&partition.0.to_le_bytes());
            b[3..7].copy_from_slice(&node.0.to_le_bytes());
            7
        }
        WireTopic::Relay { partition, gateway } => {
            b[0] = 1;
            b[1..3].copy_from_slice(&partition.0.to_le_bytes());
            b[3..7].copy_from_slice(&gateway.0.to_le_bytes());
            7
        }
        WireTopic::Ack { partition } => short(&mut b, 2, partition.0),
        WireTopic::Status { aggregator } => short(&mut b, 3, aggregator.0),
        WireTopic::Alert { aggregator } => short(&mut b, 4, aggregator.0),
        WireTopic::Ward { ward } => short(&mut b, 5, ward),
    };
    (b, len)
}

/// A sender's half of the envelope: its key and where its nonce stands.
///
/// The nonce is (epoch, counter): a device starts a new epoch on every boot
/// ([`Sealer::start_epoch`]) and counts messages within it, so no nonce is
/// ever used twice under one key — the one rule GCM cannot survive breaking.
#[derive(Clone)]
pub struct Sealer {
    principal: Principal,
    key: DeviceKey,
    epoch: u32,
    counter: u64,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("principal", &self.principal)
            .field("epoch", &self.epoch)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for `principal` with its `key`, at the start of `epoch`.
    pub fn new(key: DeviceKey, principal: Principal, epoch: u32) -> Self {
        Self {
            principal,
            key,
            epoch,
            counter: 0,
        }
    }

    /// Whose messages this seals.
    pub const fn principal(&self) -> Principal {
        self.principal
    }

    /// The current epoch.
    pub const fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The counter the next message will carry.
    pub const fn counter(&self) -> u64 {
        self.counter
    }

    /// A new epoch (a reboot): the counter starts again from 0. Epochs only
    /// move forward.
    pub fn start_epoch(&mut self, epoch: u32) {
        debug_assert!(epoch > self.epoch, "epochs only move forward");
        self.epoch = epoch;
        self.counter = 0;
    }

    /// Moves the counter forward to `counter` (never back), e.g. to start a
    /// block reserved for one connection.
    pub fn skip_to(&mut self, counter: u64) {
        self.counter = self.counter.max(counter);
    }

    /// Appends the sealed envelope of `body`, meant for `topic`, to `out`.
    ///
    /// # Errors
    ///
    /// [`WireError::Invalid`] if the body breaks a protocol rule or names
    /// another sender, [`WireError::TooLarge`] if it does not fit in
    /// [`MAX_MESSAGE_BYTES`]. In both cases `out` is left as it was and no
    /// nonce is used.
    pub fn seal(
        &mut self,
        body: &Body,
        topic: &WireTopic,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        body.validate()?;
        self.check_sender(body.sender())?;
        self.seal_unchecked(body, topic, out)
    }

    /// [`Sealer::seal`] without the checks (tests forge with it).
    fn seal_unchecked(
        &mut self,
        body: &Body,
        topic: &WireTopic,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        let start = out.len();
        self.push_header(body.kind(), out);
        write_body(body, out)?;
        self.finish(out, start, topic)
    }

    /// [`Sealer::seal`] into a fresh vector.
    ///
    /// # Errors
    ///
    /// As [`Sealer::seal`].
    pub fn seal_to_vec(&mut self, body: &Body, topic: &WireTopic) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::with_capacity(64);
        self.seal(body, topic, &mut out)?;
        Ok(out)
    }

    /// Appends a relay of `frames`, meant for `topic`: the same bytes as
    /// [`Sealer::seal`] of a [`crate::Relay`], without copying the frames.
    ///
    /// # Errors
    ///
    /// As [`Sealer::seal`]: too many or empty frames, or too large.
    pub fn seal_relay(
        &mut self,
        frames: &[&[u8]],
        topic: &WireTopic,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        let Principal::Gateway(gateway) = self.principal else {
            return Err(WireError::invalid(
                "relay.gateway",
                format!("a relay sealed by '{}'; expected a gateway", self.principal),
            ));
        };
        check_relay_frames(frames.len(), frames.iter().position(|f| f.is_empty()))?;
        let start = out.len();
        self.push_header(KIND_RELAY, out);
        crate::fast::write_relay_body(out, gateway, frames);
        self.finish(out, start, topic)
    }

    fn check_sender(&self, sender: Principal) -> Result<(), WireError> {
        if sender == self.principal {
            Ok(())
        } else {
            Err(WireError::Misattributed {
                header: self.principal,
                body: sender,
            })
        }
    }

    fn push_header(&self, kind: u8, out: &mut Vec<u8>) {
        let id = match self.principal {
            Principal::Node(n) => n.0,
            Principal::Aggregator(a) => u32::from(a.0),
            Principal::Gateway(g) => g.0,
        };
        out.push(WIRE_VERSION);
        out.push(kind);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.counter.to_le_bytes());
    }

    /// Seals `out[start..]` (header and body) in place and appends the tag,
    /// or removes them again if the message would be too large.
    fn finish(
        &mut self,
        out: &mut Vec<u8>,
        start: usize,
        topic: &WireTopic,
    ) -> Result<(), WireError> {
        let len = out.len() - start + TAG_BYTES;
        if len > MAX_MESSAGE_BYTES {
            out.truncate(start);
            return Err(WireError::TooLarge {
                len,
                max: MAX_MESSAGE_BYTES,
            });
        }
        let (header, body) = out[start..].split_at_mut(HEADER_BYTES);
        let nonce: [u8; 12] = header[6..18].try_into().expect("12 bytes");
        let tag = if is_open(header[1]) {
            let ad = open_ad(header, topic, body);
            self.key
                .cipher
                .encrypt_in_place_detached(&nonce.into(), &ad, &mut [])
        } else {
            let (ad, ad_len) = sealed_ad(header, topic);
            self.key
                .cipher
                .encrypt_in_place_detached(&nonce.into(), &ad[..ad_len], body)
        }
        .expect("a message within MAX_MESSAGE_BYTES is far below GCM's limit");
        out.extend_from_slice(&tag);
        self.counter += 1;
        Ok(())
    }
}

/// Appends the postcard encoding of `body`.
fn write_body(body: &Body, out: &mut Vec<u8>) -> Result<(), WireError> {
    match body {
        Body::Batch(batch) => crate::fast::write_batch_body(out, batch),
        other => {
            let buf = std::mem::take(out);
            *out = postcard::to_extend(other, buf).map_err(WireError::Malformed)?;
        }
    }
    Ok(())
}

/// Associated data of an encrypted message: header and topic.
fn sealed_ad(header: &[u8], topic: &WireTopic) -> ([u8; HEADER_BYTES + 7], usize) {
    let mut ad = [0u8; HEADER_BYTES + 7];
    ad[..HEADER_BYTES].copy_from_slice(header);
    let (t, len) = topic_ad(topic);
    ad[HEADER_BYTES..HEADER_BYTES + len].copy_from_slice(&t[..len]);
    (ad, HEADER_BYTES + len)
}

/// Associated data of a readable message: header, topic and body.
fn open_ad(header: &[u8], topic: &WireTopic, body: &[u8]) -> Vec<u8> {
    let (ad, len) = sealed_ad(header, topic);
    let mut all = Vec::with_capacity(len + body.len());
    all.extend_from_slice(&ad[..len]);
    all.extend_from_slice(body);
    all
}

/// A postcard error on a message of `len` bytes, as the wire reports it.
fn malformed(e: postcard::Error, len: usize) -> WireError {
    match e {
        postcard::Error::DeserializeUnexpectedEnd => WireError::Truncated { len },
        other => WireError::Malformed(other),
    }
}

/// A gateway's relay, decoded without copying its frames.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RelayRef<'a> {
    /// The forwarding gateway (authenticated).
    pub gateway: GatewayId,
    /// Node envelopes, each still to be opened on its own.
    #[serde(borrow)]
    pub frames: Vec<&'a [u8]>,
}

/// The protocol rules of a relay's frames (shared by [`crate::Relay`]'s
/// validation and the borrowed paths).
pub(crate) fn check_relay_frames(count: usize, empty_at: Option<usize>) -> Result<(), WireError> {
    use crate::message::MAX_RELAY_FRAMES;
    if count > MAX_RELAY_FRAMES {
        return Err(WireError::invalid(
            "relay.frames",
            format!("'{count}' frames; at most {MAX_RELAY_FRAMES} are allowed"),
        ));
    }
    if let Some(i) = empty_at {
        return Err(WireError::invalid(
            format!("relay.frames[{i}]"),
            "an empty frame; expected a node's envelope",
        ));
    }
    Ok(())
}

/// A message's parts, before anything is authenticated.
struct Layout<'a> {
    kind: u8,
    header: Header,
    body: &'a [u8],
    tag: &'a [u8],
}

/// Checks length and version and parses the header. Never panics.
fn layout(bytes: &[u8]) -> Result<Layout<'_>, WireError> {
    let len = bytes.len();
    if len > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge {
            len,
            max: MAX_MESSAGE_BYTES,
        });
    }
    if len < MIN_MESSAGE_BYTES {
        return Err(WireError::Truncated { len });
    }
    if bytes[0] != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion {
            found: bytes[0],
            supported: WIRE_VERSION,
        });
    }
    let (kind, header) = Header::parse(bytes)?;
    Ok(Layout {
        kind,
        header,
        body: &bytes[HEADER_BYTES..len - TAG_BYTES],
        tag: &bytes[len - TAG_BYTES..],
    })
}

/// Verifies a readable message's tag.
fn verify_open(
    bytes: &[u8],
    topic: &WireTopic,
    key: &DeviceKey,
    tag: &[u8],
) -> Result<(), aes_gcm::Error> {
    let header = &bytes[..HEADER_BYTES];
    let body = &bytes[HEADER_BYTES..bytes.len() - TAG_BYTES];
    let nonce: [u8; 12] = header[6..18].try_into().expect("12 bytes");
    let ad = open_ad(header, topic, body);
    key.cipher
        .decrypt_in_place_detached(&nonce.into(), &ad, &mut [], tag.into())
}

/// Opens bytes from an untrusted peer that arrived on (or, for a relayed
/// frame, were meant for) `topic`: the header and the authenticated body.
///
/// Checks, in order: length, version, header, the sender's key, the tag
/// (over header, topic and body), the postcard body, no trailing bytes,
/// that the body's sender is the header's, and the protocol rules
/// ([`Body::validate`]). Never panics.
pub fn open(bytes: &[u8], topic: &WireTopic, keys: &Keyring) -> Result<(Header, Body), WireError> {
    let Layout {
        kind,
        header,
        body,
        tag,
    } = layout(bytes)?;
    let key = keys
        .key(header.sender)
        .ok_or(WireError::UnknownSender(header.sender))?;
    let plain = if is_open(kind) {
        verify_open(bytes, topic, &key, tag).map_err(|_| WireError::BadTag(header.sender))?;
        std::borrow::Cow::Borrowed(body)
    } else {
        let (ad, ad_len) = sealed_ad(&bytes[..HEADER_BYTES], topic);
        let nonce: [u8; 12] = bytes[6..18].try_into().expect("12 bytes");
        let mut plain = body.to_vec();
        key.cipher
            .decrypt_in_place_detached(&nonce.into(), &ad[..ad_len], &mut plain, tag.into())
            .map_err(|_| WireError::BadTag(header.sender))?;
        std::borrow::Cow::Owned(plain)
    };
    let (parsed, rest) =
        postcard::take_from_bytes::<Body>(&plain).map_err(|e| malformed(e, bytes.len()))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes { len: rest.len() });
    }
    // Only a key holder can get here, so these are its own bugs or lies.
    if parsed.kind() != kind || parsed.sender() != header.sender {
        return Err(WireError::Misattributed {
            header: header.sender,
            body: parsed.sender(),
        });
    }
    parsed.validate()?;
    Ok((header, parsed))
}

/// [`open`], for callers that need only the body.
pub fn decode(bytes: &[u8], topic: &WireTopic, keys: &Keyring) -> Result<Body, WireError> {
    open(bytes, topic, keys).map(|(_, body)| body)
}

/// Opens a relay without copying its frames; the same checks as [`open`].
/// `Ok(None)`: a valid message that is not a relay.
pub fn open_relay<'a>(
    bytes: &'a [u8],
    topic: &WireTopic,
    keys: &Keyring,
) -> Result<Option<(Header, RelayRef<'a>)>, WireError> {
    let Layout {
        kind,
        header,
        body,
        tag,
    } = layout(bytes)?;
    if kind != KIND_RELAY {
        return open(bytes, topic, keys).map(|_| None);
    }
    let key = keys
        .key(header.sender)
        .ok_or(WireError::UnknownSender(header.sender))?;
    verify_open(bytes, topic, &key, tag).map_err(|_| WireError::BadTag(header.sender))?;
    let (variant, relay_bytes) = body
        .split_first()
        .ok_or(WireError::Truncated { len: bytes.len() })?;
    if *variant != KIND_RELAY {
        return Err(WireError::invalid(
            "header.kind",
            format!("'{KIND_RELAY}' (a relay) over a body of kind '{variant}'"),
        ));
    }
    let (relay, rest) = postcard::take_from_bytes::<RelayRef<'a>>(relay_bytes)
        .map_err(|e| malformed(e, bytes.len()))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes { len: rest.len() });
    }
    if Principal::Gateway(relay.gateway) != header.sender {
        return Err(WireError::Misattributed {
            header: header.sender,
            body: Principal::Gateway(relay.gateway),
        });
    }
    check_relay_frames(
        relay.frames.len(),
        relay.frames.iter().position(|f| f.is_empty()),
    )?;
    Ok(Some((header, relay)))
}

/// The sender a message's header claims, without opening it (`None` if
/// the bytes are not a well-formed header): which key to try, and — for a
/// relayed frame — which node's topic it was sealed for.
pub fn claimed_sender(bytes: &[u8]) -> Option<Principal> {
    layout(bytes).ok().map(|l| l.header.sender)
}

/// Reads an ack batch *without* authenticating its envelope, for a node or
/// gateway, which does not hold the aggregator's key: each entry must then
/// be checked with the node's [`AckKey`] ([`AckKey::verify`]) before it is
/// believed. Never panics.
pub fn peek_acks(bytes: &[u8]) -> Result<AckBatch, WireError> {
    let Layout { kind, body, .. } = layout(bytes)?;
    if kind != KIND_ACK {
        return Err(WireError::invalid(
            "header.kind",
            format!("'{kind}'; expected '{KIND_ACK}' (acks)"),
        ));
    }
    let (parsed, rest) =
        postcard::take_from_bytes::<Body>(body).map_err(|e| malformed(e, bytes.len()))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes { len: rest.len() });
    }
    parsed.validate()?;
    match parsed {
        Body::Ack(acks) => Ok(acks),
        other => Err(WireError::invalid(
            "header.kind",
            format!("acks over a body of kind '{}'", other.kind()),
        )),
    }
}

/// A short name for a message's bytes (not a MAC: for counting copies).
pub fn fingerprint(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::message::*;
    use crate::{AlertNotice, PartitionId, Timestamp};

    fn keyring() -> Keyring {
        Keyring::new([7; 32], 10_000)
    }

    fn arb_vitals() -> impl Strategy<Value = Vitals> {
        (
            (
                proptest::option::of(any::<u16>()),
                proptest::option::of(any::<u8>()),
                proptest::option::of(any::<u8>()),
                proptest::option::of(any::<i16>()),
            ),
            (
                proptest::option::of(any::<u16>()),
                proptest::option::of(any::<u16>()),
                proptest::option::of(prop_oneof![
                    Just(Acvpu::Alert),
                    Just(Acvpu::Confusion),
                    Just(Acvpu::Voice),
                    Just(Acvpu::Pain),
                    Just(Acvpu::Unresponsive)
                ]),
                any::<bool>(),
                prop_oneof![Just(SpO2Scale::Scale1), Just(SpO2Scale::Scale2)],
            ),
        )
            .prop_map(|((hr, rr, spo2, t), (sbp, dbp, c, o2, scale))| Vitals {
                heart_rate: hr,
                resp_rate: rr,
                spo2,
                temp_decicelsius: t,
                systolic: sbp,
                diastolic: dbp,
                consciousness: c,
                on_oxygen: o2,
                spo2_scale: scale,
            })
    }

    fn arb_batch() -> impl Strategy<Value = Batch> {
        (
            0u32..10_000,
            any::<u32>(),
            prop::collection::vec(
                (
                    1u64..1000,
                    arb_vitals(),
                    0u8..=100,
                    0u16..0x200,
                    any::<u32>(),
                ),
                0..40,
            ),
            0..3u8,
        )
            .prop_map(|(node, held_from, parts, presence)| {
                let mut seq = u64::from(held_from);
                let samples = parts
                    .into_iter()
                    .map(|(step, vitals, battery_pct, flags, admission)| {
                        seq += step;
                        Sample {
                            node: NodeId(node),
                            seq,
                            time: Timestamp::from_micros(seq * 1_000_000),
                            vitals,
                            battery_pct,
                            faults: FaultFlags(flags & FaultFlags::KNOWN.0),
                            admission,
                        }
                    })
                    .collect();
                Batch {
                    node: NodeId(node),
                    held_from: u64::from(held_from),
                    samples,
                    presence: [Presence::Monitoring, Presence::BedEmpty, Presence::Leaving]
                        [usize::from(presence)],
                }
            })
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        prop_oneof![
            arb_batch().prop_map(Body::Batch),
            (
                any::<u16>(),
                0u16..100,
                prop::collection::vec((0u32..10_000, any::<u64>()), 0..50)
            )
                .prop_map(|(p, a, acks)| Body::Ack(AckBatch {
                    partition: PartitionId(p),
                    aggregator: AggregatorId(a),
                    acks: acks
                        .into_iter()
                        .map(|(n, next)| NodeAck {
                            node: NodeId(n),
                            next_expected: next,
                            tag: [n as u8; 16],
                        })
                        .collect(),
                })),
            (
                any::<u16>(),
                any::<u64>(),
                any::<u64>(),
                0..4u8,
                any::<u16>()
            )
                .prop_map(|(a, inc, beat, st, weight)| {
                    Body::Status(AggregatorStatus {
                        aggregator: AggregatorId(a),
                        incarnation: inc,
                        sent_at: Timestamp::from_micros(beat / 3),
                        beat,
                        state: [
                            AggregatorState::Alive,
                            AggregatorState::Leaving,
                            AggregatorState::Offline,
                            AggregatorState::Joining,
                        ][st as usize],
                        weight,
                    })
                }),
            (
                0u16..100,
                any::<u16>(),
                1u32..100_000,
                any::<u64>(),
                prop::collection::btree_set(any::<u16>(), 0..20),
                prop::collection::btree_map(0u32..100_000, 0u8..16, 0..60),
            )
                .prop_map(|(a, ward, bucket_s, bucket, partitions, patients)| {
                    Body::Ward(WardReport {
                        aggregator: AggregatorId(a),
                        ward,
                        bucket_s,
                        bucket,
                        partitions: partitions.into_iter().collect(),
                        chunk: 0,
                        chunks: 1,
                        patients: patients
                            .into_iter()
                            .map(|(n, flags)| PatientBucket {
                                node: NodeId(n),
                                flags,
                            })
                            .collect(),
                    })
                }),
            (
                0u16..100,
                "[a-z_]{1,32}",
                0u32..10_000,
                any::<u64>(),
                proptest::option::of(any::<u64>()),
                proptest::option::of(-1e9f64..1e9),
                ".{0,60}",
            )
                .prop_map(|(a, kind, node, raised, cleared, statistic, summary)| {
                    Body::Alert(AlertNotice {
                        aggregator: AggregatorId(a),
                        kind,
                        scope: crate::Scope::Node {
                            node: NodeId(node),
                            ward: 3,
                        },
                        severity: crate::Severity::Warning,
                        raised_at: Timestamp::from_micros(raised),
                        cleared_at: cleared.map(Timestamp::from_micros),
                        statistic,
                        threshold: statistic.map(|_| 4.0),
                        window: None,
                        summary,
                    })
                }),
        ]
    }

    #[test]
    fn a_one_sample_batch_always_fits_min_batch_bytes() {
        // Every field at the value that encodes longest.
        let vitals = Vitals {
            heart_rate: Some(u16::MAX),
            resp_rate: Some(u8::MAX),
            spo2: Some(u8::MAX),
            temp_decicelsius: Some(i16::MIN),
            systolic: Some(u16::MAX),
            diastolic: Some(u16::MAX),
            consciousness: Some(Acvpu::Unresponsive),
            on_oxygen: true,
            spo2_scale: SpO2Scale::Scale2,
        };
        let sample = Sample {
            node: NodeId(u32::MAX),
            seq: u64::MAX - 1,
            time: Timestamp::from_micros(u64::MAX),
            vitals,
            battery_pct: 100,
            faults: FaultFlags::KNOWN,
            admission: u32::MAX,
        };
        let body = Body::Batch(Batch {
            node: NodeId(u32::MAX),
            held_from: u64::MAX - 1,
            samples: vec![sample],
            presence: Presence::Leaving,
        });
        let bytes = seal(&body);
        assert!(
            bytes.len() * 2 <= MIN_BATCH_BYTES,
            "{} bytes for one sample",
            bytes.len()
        );
    }

    /// The topic a body is published on.
    fn topic_of(body: &Body) -> WireTopic {
        match body {
            Body::Batch(b) => WireTopic::Data {
                partition: PartitionId(3),
                node: b.node,
            },
            Body::Ack(a) => WireTopic::Ack {
                partition: a.partition,
            },
            Body::Status(s) => WireTopic::Status {
                aggregator: s.aggregator,
            },
            Body::Alert(a) => WireTopic::Alert {
                aggregator: a.aggregator,
            },
            Body::Ward(w) => WireTopic::Ward { ward: w.ward },
            Body::Relay(r) => WireTopic::Relay {
                partition: PartitionId(3),
                gateway: r.gateway,
            },
        }
    }

    fn sealer_of(body: &Body) -> Sealer {
        keyring().sealer(body.sender(), 1)
    }

    fn seal(body: &Body) -> Vec<u8> {
        sealer_of(body).seal_to_vec(body, &topic_of(body)).unwrap()
    }

    fn open_as_sent(bytes: &[u8], body: &Body) -> Result<Body, WireError> {
        decode(bytes, &topic_of(body), &keyring())
    }

    proptest! {
        #[test]
        fn round_trips(body in arb_body()) {
            let bytes = seal(&body);
            prop_assert!(bytes.len() <= MAX_MESSAGE_BYTES);
            let (header, opened) = open(&bytes, &topic_of(&body), &keyring()).unwrap();
            prop_assert_eq!(opened, body.clone());
            prop_assert_eq!(header, Header { sender: body.sender(), epoch: 1, counter: 0 });
        }

        #[test]
        fn fast_encoding_matches_postcard(body in arb_body()) {
            let mut fast = Vec::new();
            write_body(&body, &mut fast).unwrap();
            prop_assert_eq!(fast, postcard::to_allocvec(&body).unwrap());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let topic = WireTopic::Data { partition: PartitionId(0), node: NodeId(1) };
            let _ = open(&bytes, &topic, &keyring());
            let _ = open_relay(&bytes, &topic, &keyring());
            let _ = peek_acks(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_header_never_panic(
            kind in 0u8..8,
            id in 0u32..20_000,
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
        ) {
            let mut b = vec![WIRE_VERSION, kind];
            b.extend(id.to_le_bytes());
            b.extend([0; 12]);
            b.extend(bytes);
            let topic = WireTopic::Ack { partition: PartitionId(0) };
            let _ = open(&b, &topic, &keyring());
            let _ = open_relay(&b, &topic, &keyring());
            let _ = peek_acks(&b);
        }

        #[test]
        fn every_truncation_is_an_error(body in arb_body(), cut in any::<prop::sample::Index>()) {
            let bytes = seal(&body);
            let cut = cut.index(bytes.len());
            prop_assert!(open_as_sent(&bytes[..cut], &body).is_err());
        }

        #[test]
        fn any_flipped_bit_is_detected(body in arb_body(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = seal(&body);
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(open_as_sent(&bytes, &body).is_err());
        }

        #[test]
        fn a_raw_subscriber_never_sees_the_vitals(batch in arb_batch()) {
            prop_assume!(!batch.samples.is_empty());
            let body = Body::Batch(batch);
            let bytes = seal(&body);
            let plain = postcard::to_allocvec(&body).unwrap();
            // No 8-byte run of the plaintext body survives into the bytes
            // on the wire (the header's ids are not part of the body).
            let on_wire = &bytes[HEADER_BYTES..];
            for window in plain[2..].windows(8) {
                prop_assert!(!on_wire.windows(8).any(|w| w == window));
            }
        }
    }

    fn batch_of(seqs: &[u64]) -> Batch {
        Batch {
            node: NodeId(7),
            held_from: 0,
            samples: seqs
                .iter()
                .map(|&seq| Sample {
                    node: NodeId(7),
                    seq,
                    time: Timestamp::from_secs(seq),
                    vitals: Vitals::default(),
                    battery_pct: 100,
                    faults: FaultFlags::empty(),
                    admission: 0,
                })
                .collect(),
            presence: Presence::Monitoring,
        }
    }

    const DATA_7: WireTopic = WireTopic::Data {
        partition: PartitionId(3),
        node: NodeId(7),
    };

    #[test]
    fn wrong_version_is_reported_with_both_versions() {
        let mut bytes = seal(&Body::Batch(batch_of(&[1])));
        bytes[0] = 9;
        assert_eq!(
            decode(&bytes, &DATA_7, &keyring()),
            Err(WireError::UnsupportedVersion {
                found: 9,
                supported: WIRE_VERSION
            })
        );
    }

    #[test]
    fn oversized_input_is_rejected_before_parsing() {
        let bytes = vec![WIRE_VERSION; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            decode(&bytes, &DATA_7, &keyring()),
            Err(WireError::TooLarge {
                len: MAX_MESSAGE_BYTES + 1,
                max: MAX_MESSAGE_BYTES
            })
        );
    }

    #[test]
    fn a_message_sealed_with_another_nodes_key_is_forged() {
        let body = Body::Batch(batch_of(&[1, 2]));
        let eight = keyring().derive(Principal::Node(NodeId(8)));
        let forged = Sealer::new(eight, Principal::Node(NodeId(7)), 0)
            .seal_to_vec(&body, &DATA_7)
            .unwrap();
        assert_eq!(
            decode(&forged, &DATA_7, &keyring()),
            Err(WireError::BadTag(Principal::Node(NodeId(7))))
        );
    }

    #[test]
    fn a_message_moved_to_another_topic_does_not_open() {
        let bytes = seal(&Body::Batch(batch_of(&[1])));
        for elsewhere in [
            WireTopic::Data {
                partition: PartitionId(4),
                node: NodeId(7),
            },
            WireTopic::Data {
                partition: PartitionId(3),
                node: NodeId(8),
            },
        ] {
            assert_eq!(
                decode(&bytes, &elsewhere, &keyring()),
                Err(WireError::BadTag(Principal::Node(NodeId(7))))
            );
        }
    }

    #[test]
    fn a_node_speaking_for_another_is_misattributed() {
        let body = Body::Batch(batch_of(&[1]));
        let mut eight = keyring().sealer(Principal::Node(NodeId(8)), 0);
        assert_eq!(
            eight.seal_to_vec(&body, &DATA_7),
            Err(WireError::Misattributed {
                header: Principal::Node(NodeId(8)),
                body: Principal::Node(NodeId(7)),
            })
        );
        // Forged past the sealer's own check: the receiver refuses it too.
        let mut bytes = Vec::new();
        eight.seal_unchecked(&body, &DATA_7, &mut bytes).unwrap();
        assert_eq!(
            decode(&bytes, &DATA_7, &keyring()),
            Err(WireError::Misattributed {
                header: Principal::Node(NodeId(8)),
                body: Principal::Node(NodeId(7)),
            })
        );
    }

    #[test]
    fn unprovisioned_nodes_are_unknown_senders() {
        let mut b = batch_of(&[1]);
        b.node = NodeId(20_000);
        b.samples[0].node = NodeId(20_000);
        let bytes = seal(&Body::Batch(b));
        assert_eq!(
            decode(&bytes, &DATA_7, &keyring()),
            Err(WireError::UnknownSender(Principal::Node(NodeId(20_000))))
        );
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce_and_a_new_epoch_restarts_the_count() {
        let body = Body::Batch(batch_of(&[1]));
        let mut sealer = keyring().sealer(Principal::Node(NodeId(7)), 5);
        let a = sealer.seal_to_vec(&body, &DATA_7).unwrap();
        let b = sealer.seal_to_vec(&body, &DATA_7).unwrap();
        assert_ne!(a, b, "the same body never seals to the same bytes");
        let order = |bytes: &[u8]| open(bytes, &DATA_7, &keyring()).unwrap().0.order();
        assert_eq!((order(&a), order(&b)), ((5, 0), (5, 1)));
        sealer.start_epoch(6);
        let c = sealer.seal_to_vec(&body, &DATA_7).unwrap();
        assert_eq!(order(&c), (6, 0));
        // A failed seal uses no nonce.
        let seqs: Vec<u64> = (0..=MAX_BATCH_SAMPLES as u64).collect();
        assert!(
            sealer
                .seal_to_vec(&Body::Batch(batch_of(&seqs)), &DATA_7)
                .is_err()
        );
        assert_eq!(sealer.counter(), 1);
    }

    #[test]
    fn out_of_order_sequence_numbers_are_invalid_with_a_field_path() {
        let err = keyring()
            .sealer(Principal::Node(NodeId(7)), 0)
            .seal_to_vec(&Body::Batch(batch_of(&[5, 4])), &DATA_7)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid batch.samples[1].seq: '4' is not above the previous sample's sequence number"
        );
    }

    #[test]
    fn a_sample_from_another_node_inside_a_batch_is_invalid() {
        let mut b = batch_of(&[1, 2]);
        b.samples[1].node = NodeId(3);
        assert!(matches!(
            Body::Batch(b).validate(),
            Err(WireError::Invalid { field, .. }) if field == "batch.samples[1].node"
        ));
    }

    #[test]
    fn trailing_bytes_inside_the_seal_are_rejected() {
        let body = Body::Status(AggregatorStatus {
            aggregator: AggregatorId(1),
            incarnation: 1,
            beat: 1,
            state: AggregatorState::Alive,
            weight: 1,
            sent_at: Timestamp::from_secs(1),
        });
        let topic = topic_of(&body);
        let mut sealer = sealer_of(&body);
        // Seal the body with one byte too many, as a buggy key holder would.
        let mut bytes = Vec::new();
        sealer.push_header(body.kind(), &mut bytes);
        write_body(&body, &mut bytes).unwrap();
        bytes.push(0);
        sealer.finish(&mut bytes, 0, &topic).unwrap();
        assert_eq!(
            decode(&bytes, &topic, &keyring()),
            Err(WireError::TrailingBytes { len: 1 })
        );
    }

    #[test]
    fn acks_are_readable_without_the_aggregators_key_and_authenticated_with_it() {
        let ring = keyring();
        let key = ring.derive_ack_key(NodeId(7));
        let body = Body::Ack(AckBatch {
            partition: PartitionId(3),
            aggregator: AggregatorId(2),
            acks: vec![NodeAck {
                node: NodeId(7),
                next_expected: 9,
                tag: key.tag(PartitionId(3), NodeId(7), 9),
            }],
        });
        let mut bytes = seal(&body);
        let Body::Ack(acks) = &body else {
            unreachable!()
        };
        assert_eq!(peek_acks(&bytes).as_ref(), Ok(acks));
        assert_eq!(open_as_sent(&bytes, &body), Ok(body.clone()));
        // Anyone can alter the readable entry; the node's tag catches it.
        let at = bytes.len() - TAG_BYTES - ACK_TAG_BYTES - 1;
        assert_eq!(bytes[at], 9);
        bytes[at] = 99;
        let altered = peek_acks(&bytes).unwrap();
        assert!(!key.verify(PartitionId(3), &altered.acks[0]));
        assert!(matches!(
            open_as_sent(&bytes, &body),
            Err(WireError::BadTag(_))
        ));
        assert!(peek_acks(&seal(&Body::Batch(batch_of(&[1])))).is_err());
    }

    fn relay_of(frames: Vec<Vec<u8>>) -> Body {
        Body::Relay(Relay {
            gateway: GatewayId(42),
            frames,
        })
    }

    proptest! {
        #[test]
        fn relays_seal_alike_either_way_and_open_borrowed_as_owned(
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..40)
        ) {
            let body = relay_of(frames.clone());
            let topic = topic_of(&body);
            let owned = sealer_of(&body).seal_to_vec(&body, &topic).unwrap();
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let mut fast = Vec::new();
            sealer_of(&body).seal_relay(&refs, &topic, &mut fast).unwrap();
            prop_assert_eq!(&fast, &owned);
            prop_assert_eq!(decode(&fast, &topic, &keyring()).unwrap(), body);
            let (_, r) = open_relay(&fast, &topic, &keyring()).unwrap().expect("a relay");
            prop_assert_eq!(r.gateway, GatewayId(42));
            prop_assert_eq!(r.frames, refs);
        }
    }

    #[test]
    fn a_forged_or_altered_relay_is_refused_and_other_messages_are_not_relays() {
        let body = relay_of(vec![vec![1, 2, 3], vec![4]]);
        let ring = keyring();
        let topic = topic_of(&body);
        let mut bytes = seal(&body);
        // Sealed with another gateway's key.
        let forged = Sealer::new(
            ring.derive(Principal::Gateway(GatewayId(43))),
            Principal::Gateway(GatewayId(42)),
            0,
        )
        .seal_to_vec(&body, &topic)
        .unwrap();
        assert_eq!(
            open_relay(&forged, &topic, &ring),
            Err(WireError::BadTag(Principal::Gateway(GatewayId(42))))
        );
        let last_frame_byte = bytes.len() - TAG_BYTES - 1;
        bytes[last_frame_byte] ^= 1;
        assert!(matches!(
            open_relay(&bytes, &topic, &ring),
            Err(WireError::BadTag(_))
        ));
        let status = Body::Status(AggregatorStatus {
            aggregator: AggregatorId(1),
            incarnation: 1,
            beat: 1,
            state: AggregatorState::Alive,
            weight: 1,
            sent_at: Timestamp::from_secs(1),
        });
        let status_bytes = seal(&status);
        assert_eq!(
            open_relay(&status_bytes, &topic_of(&status), &ring),
            Ok(None)
        );
        // Protocol rules hold on both paths.
        let mut sealer = ring.sealer(Principal::Gateway(GatewayId(42)), 0);
        let empty: &[u8] = &[];
        assert!(matches!(
            sealer.seal_relay(&[empty], &topic, &mut Vec::new()),
            Err(WireError::Invalid { .. })
        ));
        let too_many = vec![&[1u8][..]; MAX_RELAY_FRAMES + 1];
        assert!(matches!(
            sealer.seal_relay(&too_many, &topic, &mut Vec::new()),
            Err(WireError::Invalid { .. })
        ));
        let mut node = ring.sealer(Principal::Node(NodeId(1)), 0);
        assert!(
            node.seal_relay(&[&[1u8][..]], &topic, &mut Vec::new())
                .is_err()
        );
    }
}

//! The envelope: how a [`Body`] becomes bytes on an MQTT topic, and back.
//!
//! ```text
//! +---------+----------------------------+------------------+
//! | version | postcard(Body)             | tag (8 bytes)    |
//! | 1 byte  | variable                   | SipHash-2-4      |
//! +---------+----------------------------+------------------+
//! ```
//!
//! The tag is SipHash-2-4 over the version byte and the body, keyed with the
//! *sender's* device key. Keys are derived from a run secret
//! ([`Keyring`]), modelling devices that were provisioned with a per-device
//! key. A client that does not hold a node's key cannot publish as that node:
//! its messages fail with [`WireError::BadTag`]. (SipHash is a keyed PRF fit
//! for short-message authentication at line rate; a production deployment
//! would add TLS and broker ACLs on top.)

use std::fmt;

use siphasher::sip::SipHasher24;
use std::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher24 as SipHasher24x128};

use crate::{AggregatorId, Body, GatewayId, NodeId, WireError};

/// The wire version this build writes and the only one it reads.
/// Version 3 added gateway relays, the `Joining` aggregator state and
/// aggregators' capacity weights.
pub const WIRE_VERSION: u8 = 3;

/// Length of the authentication tag.
pub const TAG_BYTES: usize = 8;

/// Largest valid message. A full [`crate::Batch`] of 256 samples is about
/// 8 KiB; an [`crate::AckBatch`] of 4096 acks about 24 KiB.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// A byte limit on uplink batches that always fits one sample, whatever
/// its values (the worst case encodes to well under half of it; see the
/// test `a_one_sample_batch_always_fits_min_batch_bytes`).
pub const MIN_BATCH_BYTES: usize = 256;

/// Shortest possible message: version, a one-byte body, the tag.
pub const MIN_MESSAGE_BYTES: usize = 1 + 1 + TAG_BYTES;

/// Who sent a message, as claimed by its body.
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
    /// The principal whose key must have signed this body.
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
}

/// A 128-bit per-device key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DeviceKey([u8; 16]);

impl DeviceKey {
    /// A key from raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    fn tag(&self, bytes: &[u8]) -> [u8; TAG_BYTES] {
        SipHasher24::new_with_key(&self.0).hash(bytes).to_le_bytes()
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.write_str("DeviceKey(..)")
    }
}

/// Finds the key of a claimed sender.
pub trait KeyLookup {
    /// The key of `principal`, or `None` if it is not a known device.
    fn key(&self, principal: Principal) -> Option<DeviceKey>;
}

/// Derives every device's key from one run secret.
#[derive(Clone)]
pub struct Keyring {
    secret: [u8; 16],
    /// Nodes with ids at or above this are not provisioned.
    node_limit: u32,
}

impl Keyring {
    /// A keyring for nodes `0..node_limit` and every aggregator.
    pub const fn new(secret: [u8; 16], node_limit: u32) -> Self {
        Self { secret, node_limit }
    }

    /// The key provisioned for `principal`, whether or not it is in range.
    pub fn derive(&self, principal: Principal) -> DeviceKey {
        let mut h = SipHasher24x128::new_with_key(&self.secret);
        let (kind, id) = match principal {
            Principal::Node(n) => (b'n', u64::from(n.0)),
            Principal::Aggregator(a) => (b'a', u64::from(a.0)),
            Principal::Gateway(g) => (b'g', u64::from(g.0)),
        };
        h.write(b"vitalmesh device key v1");
        h.write(&[kind]);
        h.write(&id.to_le_bytes());
        DeviceKey(h.finish128().as_bytes())
    }
}

impl KeyLookup for Keyring {
    fn key(&self, principal: Principal) -> Option<DeviceKey> {
        match principal {
            Principal::Node(n) if n.0 >= self.node_limit => None,
            _ => Some(self.derive(principal)),
        }
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("node_limit", &self.node_limit)
            .finish_non_exhaustive()
    }
}

/// Appends the envelope for `body`, signed with `key`, to `out`.
///
/// # Errors
///
/// [`WireError::Invalid`] if the body breaks a protocol rule, and
/// [`WireError::TooLarge`] if it does not fit in [`MAX_MESSAGE_BYTES`]. In
/// both cases `out` is left as it was.
pub fn encode(body: &Body, key: &DeviceKey, out: &mut Vec<u8>) -> Result<(), WireError> {
    body.validate()?;
    let start = out.len();
    out.push(WIRE_VERSION);
    match body {
        Body::Batch(batch) => crate::fast::write_batch_body(out, batch),
        other => {
            let buf = std::mem::take(out);
            *out = postcard::to_extend(other, buf).map_err(WireError::Malformed)?;
        }
    }
    seal(out, start, key)
}

/// Appends the tag over `out[start..]` (version and body), or removes them
/// again if the message would exceed [`MAX_MESSAGE_BYTES`].
fn seal(out: &mut Vec<u8>, start: usize, key: &DeviceKey) -> Result<(), WireError> {
    let len = out.len() - start + TAG_BYTES;
    if len > MAX_MESSAGE_BYTES {
        out.truncate(start);
        return Err(WireError::TooLarge {
            len,
            max: MAX_MESSAGE_BYTES,
        });
    }
    let tag = key.tag(&out[start..]);
    out.extend_from_slice(&tag);
    Ok(())
}

/// A postcard error on a message of `len` bytes, as the wire reports it.
fn malformed(e: postcard::Error, len: usize) -> WireError {
    match e {
        postcard::Error::DeserializeUnexpectedEnd => WireError::Truncated { len },
        other => WireError::Malformed(other),
    }
}

/// [`encode`] into a fresh vector.
pub fn encode_to_vec(body: &Body, key: &DeviceKey) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(64);
    encode(body, key, &mut out)?;
    Ok(out)
}

/// A gateway's relay, decoded without copying its frames.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RelayRef<'a> {
    /// The forwarding gateway (authenticated).
    pub gateway: GatewayId,
    /// Node envelopes, each still to be decoded on its own.
    #[serde(borrow)]
    pub frames: Vec<&'a [u8]>,
}

/// Appends a relay of `frames` from `gateway`, signed with `key`: the same
/// bytes as [`encode`] of a [`crate::Relay`], without copying the frames.
///
/// # Errors
///
/// As [`encode`]: too many or empty frames, or too large.
pub fn encode_relay(
    gateway: GatewayId,
    frames: &[&[u8]],
    key: &DeviceKey,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    check_relay_frames(frames.len(), frames.iter().position(|f| f.is_empty()))?;
    let start = out.len();
    out.push(WIRE_VERSION);
    crate::fast::write_relay_body(out, gateway, frames);
    seal(out, start, key)
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

/// Decodes and authenticates a relay without copying its frames; the
/// same checks as [`decode`]. `Ok(None)`: a valid message that is not a
/// relay.
pub fn decode_relay<'a>(
    bytes: &'a [u8],
    keys: &impl KeyLookup,
) -> Result<Option<RelayRef<'a>>, WireError> {
    let len = bytes.len();
    if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&len) || bytes[0] != WIRE_VERSION {
        return decode(bytes, keys).map(|_| None);
    }
    let (signed, tag) = bytes.split_at(len - TAG_BYTES);
    if signed[1] != crate::fast::RELAY_VARIANT {
        return decode(bytes, keys).map(|_| None);
    }
    let (relay, rest) =
        postcard::take_from_bytes::<RelayRef<'a>>(&signed[2..]).map_err(|e| malformed(e, len))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes { len: rest.len() });
    }
    check_relay_frames(
        relay.frames.len(),
        relay.frames.iter().position(|f| f.is_empty()),
    )?;
    let sender = Principal::Gateway(relay.gateway);
    let key = keys.key(sender).ok_or(WireError::UnknownSender(sender))?;
    if !constant_time_eq(&key.tag(signed), tag) {
        return Err(WireError::BadTag(sender));
    }
    Ok(Some(relay))
}

/// Decodes and authenticates bytes from an untrusted peer.
///
/// Checks, in order: length, version, postcard body, no trailing bytes, the
/// protocol rules ([`Body::validate`]), then the claimed sender's tag. Never
/// panics. (Postcard accepts over-long varints, so one body can have several
/// encodings; the tag covers the exact bytes, so that grants nothing.)
pub fn decode(bytes: &[u8], keys: &impl KeyLookup) -> Result<Body, WireError> {
    let (body, signed, tag) = split(bytes)?;
    body.validate()?;
    let sender = body.sender();
    let key = keys.key(sender).ok_or(WireError::UnknownSender(sender))?;
    if !constant_time_eq(&key.tag(signed), tag) {
        return Err(WireError::BadTag(sender));
    }
    Ok(body)
}

/// Parses the layout without authenticating: (body, signed bytes, tag).
fn split(bytes: &[u8]) -> Result<(Body, &[u8], &[u8]), WireError> {
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
    let (signed, tag) = bytes.split_at(len - TAG_BYTES);
    let (body, rest) =
        postcard::take_from_bytes::<Body>(&signed[1..]).map_err(|e| malformed(e, len))?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes { len: rest.len() });
    }
    Ok((body, signed, tag))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::message::*;
    use crate::{AlertNotice, PartitionId, Timestamp};

    fn keyring() -> Keyring {
        Keyring::new(*b"0123456789abcdef", 10_000)
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
                            next_expected: next
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
        let bytes = sign(&body);
        assert!(
            bytes.len() * 2 <= MIN_BATCH_BYTES,
            "{} bytes for one sample",
            bytes.len()
        );
    }

    fn sign(body: &Body) -> Vec<u8> {
        let ring = keyring();
        encode_to_vec(body, &ring.derive(body.sender())).unwrap()
    }

    proptest! {
        #[test]
        fn round_trips(body in arb_body()) {
            let bytes = sign(&body);
            prop_assert!(bytes.len() <= MAX_MESSAGE_BYTES);
            prop_assert_eq!(decode(&bytes, &keyring()), Ok(body));
        }

        #[test]
        fn fast_encoding_matches_postcard(body in arb_body()) {
            let key = keyring().derive(body.sender());
            let mut fast = Vec::new();
            encode(&body, &key, &mut fast).unwrap();
            let mut reference = vec![WIRE_VERSION];
            reference.extend(postcard::to_allocvec(&body).unwrap());
            prop_assert_eq!(&fast[..fast.len() - TAG_BYTES], &reference[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode(&bytes, &keyring());
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_version_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let mut b = vec![WIRE_VERSION];
            b.extend(bytes);
            let _ = decode(&b, &keyring());
        }

        #[test]
        fn every_truncation_is_an_error(body in arb_body(), cut in any::<prop::sample::Index>()) {
            let bytes = sign(&body);
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut], &keyring()).is_err());
        }

        #[test]
        fn any_flipped_bit_is_detected(body in arb_body(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = sign(&body);
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(decode(&bytes, &keyring()).is_err());
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

    #[test]
    fn wrong_version_is_reported_with_both_versions() {
        let mut bytes = sign(&Body::Batch(batch_of(&[1])));
        bytes[0] = 9;
        assert_eq!(
            decode(&bytes, &keyring()),
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
            decode(&bytes, &keyring()),
            Err(WireError::TooLarge {
                len: MAX_MESSAGE_BYTES + 1,
                max: MAX_MESSAGE_BYTES
            })
        );
    }

    #[test]
    fn a_message_signed_with_another_nodes_key_is_rejected() {
        let body = Body::Batch(batch_of(&[1, 2]));
        let forged = encode_to_vec(&body, &keyring().derive(Principal::Node(NodeId(8)))).unwrap();
        assert_eq!(
            decode(&forged, &keyring()),
            Err(WireError::BadTag(Principal::Node(NodeId(7))))
        );
    }

    #[test]
    fn unprovisioned_nodes_are_unknown_senders() {
        let mut b = batch_of(&[1]);
        b.node = NodeId(20_000);
        b.samples[0].node = NodeId(20_000);
        let bytes = sign(&Body::Batch(b));
        assert_eq!(
            decode(&bytes, &keyring()),
            Err(WireError::UnknownSender(Principal::Node(NodeId(20_000))))
        );
    }

    #[test]
    fn out_of_order_sequence_numbers_are_invalid_with_a_field_path() {
        let err = encode_to_vec(
            &Body::Batch(batch_of(&[5, 4])),
            &keyring().derive(Principal::Node(NodeId(7))),
        )
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
    fn oversized_batches_cannot_be_encoded() {
        let seqs: Vec<u64> = (0..=MAX_BATCH_SAMPLES as u64).collect();
        assert!(matches!(
            encode_to_vec(
                &Body::Batch(batch_of(&seqs)),
                &keyring().derive(Principal::Node(NodeId(7)))
            ),
            Err(WireError::Invalid { .. })
        ));
    }

    #[test]
    fn trailing_bytes_between_body_and_tag_are_rejected() {
        let body = Body::Status(AggregatorStatus {
            aggregator: AggregatorId(1),
            incarnation: 1,
            beat: 1,
            state: AggregatorState::Alive,
            weight: 1,
        });
        let key = keyring().derive(body.sender());
        let mut bytes = encode_to_vec(&body, &key).unwrap();
        bytes.truncate(bytes.len() - TAG_BYTES);
        bytes.push(0);
        let tag = key.tag(&bytes);
        bytes.extend_from_slice(&tag);
        assert_eq!(
            decode(&bytes, &keyring()),
            Err(WireError::TrailingBytes { len: 1 })
        );
    }

    #[test]
    fn keys_differ_per_device_and_debug_hides_them() {
        let ring = keyring();
        let a = ring.derive(Principal::Node(NodeId(1)));
        let b = ring.derive(Principal::Node(NodeId(2)));
        let c = ring.derive(Principal::Aggregator(AggregatorId(1)));
        assert!(a != b && a != c && b != c);
        assert_eq!(format!("{a:?}"), "DeviceKey(..)");
    }

    fn relay_of(frames: Vec<Vec<u8>>) -> Body {
        Body::Relay(Relay {
            gateway: GatewayId(42),
            frames,
        })
    }

    proptest! {
        #[test]
        fn relays_encode_alike_either_way_and_decode_borrowed_as_owned(
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..40)
        ) {
            let body = relay_of(frames.clone());
            let key = keyring().derive(body.sender());
            let owned = encode_to_vec(&body, &key).unwrap();
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let mut fast = Vec::new();
            encode_relay(GatewayId(42), &refs, &key, &mut fast).unwrap();
            prop_assert_eq!(&fast, &owned);
            prop_assert_eq!(decode(&fast, &keyring()).unwrap(), body);
            let r = decode_relay(&fast, &keyring()).unwrap().expect("a relay");
            prop_assert_eq!(r.gateway, GatewayId(42));
            prop_assert_eq!(r.frames, refs);
        }

        #[test]
        fn decoding_a_relay_from_arbitrary_bytes_never_panics(
            mut bytes in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            if bytes.len() > 2 {
                bytes[0] = WIRE_VERSION;
                bytes[1] = crate::fast::RELAY_VARIANT;
            }
            let _ = decode_relay(&bytes, &keyring());
        }
    }

    #[test]
    fn a_forged_or_altered_relay_is_refused_and_other_messages_are_not_relays() {
        let body = relay_of(vec![vec![1, 2, 3], vec![4]]);
        let ring = keyring();
        let mut bytes = encode_to_vec(&body, &ring.derive(body.sender())).unwrap();
        // Signed with another gateway's key.
        let forged = encode_to_vec(&body, &ring.derive(Principal::Gateway(GatewayId(43)))).unwrap();
        assert_eq!(
            decode_relay(&forged, &ring),
            Err(WireError::BadTag(Principal::Gateway(GatewayId(42))))
        );
        let last_frame_byte = bytes.len() - TAG_BYTES - 1;
        bytes[last_frame_byte] ^= 1;
        assert!(matches!(
            decode_relay(&bytes, &ring),
            Err(WireError::BadTag(_))
        ));
        let status = Body::Status(AggregatorStatus {
            aggregator: AggregatorId(1),
            incarnation: 1,
            beat: 1,
            state: AggregatorState::Alive,
            weight: 1,
        });
        let status = encode_to_vec(
            &status,
            &ring.derive(Principal::Aggregator(AggregatorId(1))),
        )
        .unwrap();
        assert_eq!(decode_relay(&status, &ring), Ok(None));
        // Protocol rules hold on both paths.
        let key = ring.derive(Principal::Gateway(GatewayId(42)));
        let empty: &[u8] = &[];
        assert!(matches!(
            encode_relay(GatewayId(42), &[empty], &key, &mut Vec::new()),
            Err(WireError::Invalid { .. })
        ));
        let too_many = vec![&[1u8][..]; MAX_RELAY_FRAMES + 1];
        assert!(matches!(
            encode_relay(GatewayId(42), &too_many, &key, &mut Vec::new()),
            Err(WireError::Invalid { .. })
        ));
    }
}

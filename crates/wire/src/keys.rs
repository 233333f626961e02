//! Keys and credentials: one provisioning secret, and everything derived
//! from it by HKDF-SHA256 (RFC 5869) — each device's AES-128-GCM key, each
//! node's ack key, each client's MQTT password — plus the user names the
//! broker checks them against. A device holds only its own; aggregators,
//! the trusted back end, derive any. Nothing here prints key material.

use std::fmt;
use std::sync::{Arc, OnceLock};

use aes_gcm::{Aes128Gcm, KeyInit};
use sha2::Sha256;

use crate::envelope::{Principal, Sealer};
use crate::{AggregatorId, GatewayId, NodeId, PartitionId};

/// A provisioning secret: every device key and broker password of a mesh
/// derives from it ([`Keyring`]). Never printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProvisioningSecret(pub [u8; 32]);

impl ProvisioningSecret {
    /// Reads a provisioning file's text: 64 hex digits, surrounding
    /// white space allowed. The error never repeats the text.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let hex = text.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "holds {} characters that are not a secret; expected 64 hex digits (32 random bytes), e.g. from `openssl rand -hex 32`",
                hex.chars().count()
            ));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Self(out))
    }
}

impl ProvisioningSecret {
    /// The 64 hex digits [`ProvisioningSecret::from_hex`] reads.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Debug for ProvisioningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProvisioningSecret(..)")
    }
}

/// A device's MQTT user name: the last level of the topic it may publish
/// on — `{node}` for a node (`vm/v1/p/{partition}/{node}`), `g{gateway}`
/// for a gateway — so that one mosquitto ACL line, `pattern write
/// vm/v1/p/+/%u`, confines every device to its own topic; `a{aggregator}`
/// for an aggregator.
pub fn mqtt_username(principal: Principal) -> String {
    match principal {
        Principal::Node(n) => n.0.to_string(),
        Principal::Gateway(g) => format!("g{}", g.0),
        Principal::Aggregator(a) => format!("a{}", a.0),
    }
}

/// The device a user name names, if it names one ([`mqtt_username`]).
pub fn principal_of_username(username: &str) -> Option<Principal> {
    let number = |s: &str| -> Option<u32> {
        (!s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0')))
        .then(|| s.parse().ok())
        .flatten()
    };
    if let Some(rest) = username.strip_prefix('g') {
        return number(rest).map(|g| Principal::Gateway(GatewayId(g)));
    }
    if let Some(rest) = username.strip_prefix('a') {
        return number(rest)
            .and_then(|a| u16::try_from(a).ok())
            .map(|a| Principal::Aggregator(AggregatorId(a)));
    }
    number(username).map(|n| Principal::Node(NodeId(n)))
}

/// A device's 128-bit AES-GCM key.
#[derive(Clone)]
pub struct DeviceKey {
    bytes: [u8; 16],
    pub(crate) cipher: Aes128Gcm,
}

impl DeviceKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self {
            bytes,
            cipher: Aes128Gcm::new(&bytes.into()),
        }
    }
}

impl PartialEq for DeviceKey {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.bytes, &other.bytes)
    }
}

impl Eq for DeviceKey {}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.write_str("DeviceKey(..)")
    }
}

/// The key that tags a node's ack entries: held by the node and derivable
/// by aggregators. The tag is AES-128 of one fixed-format 16-byte block
/// (domain byte, partition, node, `next_expected`) — the CBC-MAC of a
/// single block, a secure MAC for messages of one fixed length — because
/// every aggregator acks every node with it and a MAC needs no nonce that
/// several senders would have to keep apart. It costs one AES block (tens
/// of nanoseconds); HMAC-SHA256 cost ten times that per ack, which a live
/// node pays once a sample.
#[derive(Clone)]
pub struct AckKey(aes::Aes128);

impl AckKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        use aes::cipher::KeyInit as _;
        Self(aes::Aes128::new(&bytes.into()))
    }

    /// The tag on `node`'s ack of everything below `next_expected`, from
    /// its partition's aggregator.
    pub fn tag(&self, partition: PartitionId, node: NodeId, next_expected: u64) -> [u8; 16] {
        use aes::cipher::BlockEncrypt as _;
        let mut block = [0u8; 16];
        block[0] = b'A'; // domain: an ack, wire version 4
        block[1..3].copy_from_slice(&partition.0.to_le_bytes());
        block[3..7].copy_from_slice(&node.0.to_le_bytes());
        block[7..15].copy_from_slice(&next_expected.to_le_bytes());
        let mut b = block.into();
        self.0.encrypt_block(&mut b);
        b.into()
    }

    /// `node`'s tagged ack of everything below `next_expected`.
    pub fn ack(&self, partition: PartitionId, node: NodeId, next_expected: u64) -> crate::NodeAck {
        crate::NodeAck {
            node,
            next_expected,
            tag: self.tag(partition, node, next_expected),
        }
    }

    /// Whether `ack` was made by someone holding this key, for `partition`.
    pub fn verify(&self, partition: PartitionId, ack: &crate::NodeAck) -> bool {
        constant_time_eq(&self.tag(partition, ack.node, ack.next_expected), &ack.tag)
    }
}

impl fmt::Debug for AckKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AckKey(..)")
    }
}

/// What a node is provisioned with: its own two keys, nobody else's.
#[derive(Debug, Clone)]
pub struct NodeCredentials {
    /// Seals its uplinks.
    pub device: DeviceKey,
    /// Checks the acks meant for it.
    pub ack: AckKey,
}

/// Derives every device's keys from one provisioning secret, by
/// HKDF-SHA256 (RFC 5869). Node keys are cached on first use, so an
/// aggregator derives each node's keys once; clones share the cache.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<KeyringInner>,
}

struct KeyringInner {
    hkdf: hkdf::Hkdf<Sha256>,
    /// Nodes with ids at or above this are not provisioned.
    node_limit: u32,
    nodes: Vec<OnceLock<Box<NodeCredentials>>>,
}

impl Keyring {
    /// A keyring for nodes `0..node_limit` and every aggregator and gateway.
    pub fn new(secret: [u8; 32], node_limit: u32) -> Self {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(b"vitalmesh provisioning v4"), &secret);
        let mut nodes = Vec::new();
        nodes.resize_with(node_limit as usize, OnceLock::new);
        Self {
            inner: Arc::new(KeyringInner {
                hkdf,
                node_limit,
                nodes,
            }),
        }
    }

    fn expand<const N: usize>(&self, purpose: &[u8], kind: u8, id: u32) -> [u8; N] {
        let mut okm = [0u8; N];
        self.inner
            .hkdf
            .expand_multi_info(&[purpose, &[kind], &id.to_le_bytes()], &mut okm)
            .expect("N is far below HKDF's 8160-byte limit");
        okm
    }

    /// The device key provisioned for `principal`, whether or not it is in
    /// range.
    pub fn derive(&self, principal: Principal) -> DeviceKey {
        let (kind, id) = match principal {
            Principal::Node(n) => (b'n', n.0),
            Principal::Aggregator(a) => (b'a', u32::from(a.0)),
            Principal::Gateway(g) => (b'g', g.0),
        };
        DeviceKey::from_bytes(self.expand(b"vitalmesh device key", kind, id))
    }

    /// The key that tags `node`'s acks (its own: not the device key).
    pub fn derive_ack_key(&self, node: NodeId) -> AckKey {
        AckKey::from_bytes(self.expand(b"vitalmesh ack key", b'n', node.0))
    }

    /// A sealer for `principal` starting at `epoch`.
    pub fn sealer(&self, principal: Principal, epoch: u32) -> Sealer {
        Sealer::new(self.derive(principal), principal, epoch)
    }

    /// What `node` is provisioned with (whether or not it is in range).
    pub fn node_credentials(&self, node: NodeId) -> NodeCredentials {
        NodeCredentials {
            device: self.derive(Principal::Node(node)),
            ack: self.derive_ack_key(node),
        }
    }

    fn node(&self, node: NodeId) -> Option<&NodeCredentials> {
        let slot = self.inner.nodes.get(node.0 as usize)?;
        Some(slot.get_or_init(|| Box::new(self.node_credentials(node))))
    }

    /// The key of `principal`, or `None` if it is not a provisioned device.
    pub(crate) fn key(&self, principal: Principal) -> Option<std::borrow::Cow<'_, DeviceKey>> {
        use std::borrow::Cow;
        match principal {
            Principal::Node(n) => self.node(n).map(|k| Cow::Borrowed(&k.device)),
            _ => Some(Cow::Owned(self.derive(principal))),
        }
    }

    /// The MQTT password of `username` (hex, 32 characters): what a
    /// device is provisioned with to log in to the broker, and what a broker
    /// that holds the provisioning secret checks. Any name can be given
    /// one (an operator's `observer`, the broker's own canary); device
    /// names are [`mqtt_username`]s.
    pub fn mqtt_password(&self, username: &str) -> String {
        let mut okm = [0u8; 16];
        self.inner
            .hkdf
            .expand_multi_info(&[b"vitalmesh mqtt password", username.as_bytes()], &mut okm)
            .expect("16 bytes is far below HKDF's limit");
        to_hex(&okm)
    }

    /// Whether `password` is `username`'s (in constant time).
    pub fn check_mqtt_password(&self, username: &str, password: &str) -> bool {
        constant_time_eq(self.mqtt_password(username).as_bytes(), password.as_bytes())
    }

    /// The ack key of a provisioned node.
    pub fn ack_key(&self, node: NodeId) -> Option<&AckKey> {
        self.node(node).map(|k| &k.ack)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("node_limit", &self.inner.node_limit)
            .finish_non_exhaustive()
    }
}

/// Compares without an early exit, so timing says nothing of where a tag
/// or password differs.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeAck;

    fn keyring() -> Keyring {
        Keyring::new([7; 32], 10_000)
    }

    #[test]
    fn keys_differ_per_device_and_purpose_and_debug_hides_them() {
        let ring = keyring();
        let a = ring.derive(Principal::Node(NodeId(1)));
        let b = ring.derive(Principal::Node(NodeId(2)));
        let c = ring.derive(Principal::Aggregator(AggregatorId(1)));
        let g = ring.derive(Principal::Gateway(GatewayId(1)));
        assert!(a != b && a != c && b != c && g != a && g != c);
        assert_eq!(format!("{a:?}"), "DeviceKey(..)");
        assert_eq!(
            format!("{:?}", ring.derive_ack_key(NodeId(1))),
            "AckKey(..)"
        );
        let other = Keyring::new([8; 32], 10);
        assert!(other.derive(Principal::Node(NodeId(1))) != a);
    }

    #[test]
    fn a_provisioning_file_is_64_hex_digits_and_is_never_echoed() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let secret = ProvisioningSecret::from_hex(&format!("  {hex}\n")).unwrap();
        assert_eq!(secret.0[1], 0x11);
        assert_eq!(secret.0[31], 0xff);
        assert_eq!(format!("{secret:?}"), "ProvisioningSecret(..)");
        assert_eq!(secret.to_hex(), hex.to_lowercase());
        for bad in ["", "abc", &hex[1..], &format!("{}zz", &hex[2..])] {
            let e = ProvisioningSecret::from_hex(bad).unwrap_err();
            assert!(e.contains("expected 64 hex digits"), "{e}");
            assert!(bad.len() < 8 || !e.contains(&bad[..8]), "{e}");
        }
    }

    #[test]
    fn mqtt_credentials_are_per_device_and_user_names_round_trip() {
        let ring = keyring();
        for p in [
            Principal::Node(NodeId(0)),
            Principal::Node(NodeId(4242)),
            Principal::Gateway(GatewayId(7)),
            Principal::Aggregator(AggregatorId(3)),
        ] {
            let name = mqtt_username(p);
            assert_eq!(principal_of_username(&name), Some(p));
            let pw = ring.mqtt_password(&name);
            assert_eq!(pw.len(), 32);
            assert!(ring.check_mqtt_password(&name, &pw));
            assert!(!ring.check_mqtt_password(&name, &ring.mqtt_password("4243")));
            assert!(!Keyring::new([9; 32], 1).check_mqtt_password(&name, &pw));
        }
        for not_a_device in ["", "observer", "g", "a70000", "007", "n5", "12x"] {
            assert_eq!(principal_of_username(not_a_device), None, "{not_a_device}");
        }
    }

    #[test]
    fn an_ack_entry_is_believed_only_with_its_nodes_tag() {
        let ring = keyring();
        let key = ring.derive_ack_key(NodeId(7));
        let p = PartitionId(3);
        let good = NodeAck {
            node: NodeId(7),
            next_expected: 40,
            tag: key.tag(p, NodeId(7), 40),
        };
        assert!(key.verify(p, &good));
        assert!(ring.ack_key(NodeId(7)).unwrap().verify(p, &good));
        // Raised, moved to another partition, or tagged with another node's key.
        assert!(!key.verify(
            p,
            &NodeAck {
                next_expected: 41,
                ..good
            }
        ));
        assert!(!key.verify(PartitionId(4), &good));
        let eight = ring.derive_ack_key(NodeId(8));
        assert!(!key.verify(
            p,
            &NodeAck {
                tag: eight.tag(p, NodeId(7), 40),
                ..good
            }
        ));
        assert!(!key.verify(
            p,
            &NodeAck {
                tag: [0; 16],
                ..good
            }
        ));
    }
}

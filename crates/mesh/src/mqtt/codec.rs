//! MQTT 3.1.1 packets, as bytes (OASIS MQTT 3.1.1, §2–§3).
//!
//! Only what a telemetry client needs: CONNECT (with will and credentials),
//! PUBLISH at QoS 0 and 1 both ways, PUBACK, SUBSCRIBE, UNSUBSCRIBE,
//! PINGREQ, DISCONNECT out; CONNACK, PUBLISH, PUBACK, SUBACK, UNSUBACK,
//! PINGRESP in. Parsing never panics on hostile bytes and refuses packets
//! above a size limit before buffering them.

use crate::MeshError;

/// Delivery guarantee of a publish or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once (PUBACK).
    AtLeastOnce = 1,
}

/// A last-will message, published by the broker if the client vanishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS.
    pub qos: QoS,
    /// Whether the broker retains it.
    pub retain: bool,
}

/// The contents of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Client identifier.
    pub client_id: String,
    /// Keep-alive in seconds (at least 1: rumqttd refuses 0 silently).
    pub keep_alive_secs: u16,
    /// Start a clean session.
    pub clean_session: bool,
    /// Last will.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Vec<u8>>,
}

impl ConnectOptions {
    /// A clean session with `client_id` and `keep_alive_secs`.
    pub fn new(client_id: impl Into<String>, keep_alive_secs: u16) -> Self {
        Self {
            client_id: client_id.into(),
            keep_alive_secs: keep_alive_secs.max(1),
            clean_session: true,
            will: None,
            username: None,
            password: None,
        }
    }
}

/// A packet a client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Connection acknowledgement.
    ConnAck {
        /// Whether the broker had a session.
        session_present: bool,
        /// 0 = accepted; 1–5 = refused (protocol, id, unavailable, credentials, not authorised).
        code: u8,
    },
    /// An application message.
    Publish {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// QoS it was delivered with.
        qos: QoS,
        /// Packet id (QoS 1 only; 0 otherwise).
        pkid: u16,
        /// Retained message.
        retain: bool,
    },
    /// Publish acknowledgement.
    PubAck {
        /// Packet id.
        pkid: u16,
    },
    /// Subscribe acknowledgement.
    SubAck {
        /// Packet id.
        pkid: u16,
        /// Granted QoS per filter, or 0x80 for failure.
        codes: Vec<u8>,
    },
    /// Unsubscribe acknowledgement.
    UnsubAck {
        /// Packet id.
        pkid: u16,
    },
    /// Ping response.
    PingResp,
}

/// Size of the fixed header plus body for a body of `len` bytes.
fn put_fixed_header(out: &mut Vec<u8>, first: u8, mut len: usize) {
    out.push(first);
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Appends a CONNECT.
pub fn write_connect(out: &mut Vec<u8>, o: &ConnectOptions) {
    let mut flags = 0u8;
    let mut len = 10 + 2 + o.client_id.len();
    if o.clean_session {
        flags |= 0x02;
    }
    if let Some(w) = &o.will {
        flags |= 0x04 | ((w.qos as u8) << 3) | if w.retain { 0x20 } else { 0 };
        len += 2 + w.topic.len() + 2 + w.payload.len();
    }
    if let Some(u) = &o.username {
        flags |= 0x80;
        len += 2 + u.len();
    }
    if let Some(p) = &o.password {
        flags |= 0x40;
        len += 2 + p.len();
    }
    put_fixed_header(out, 0x10, len);
    put_str(out, b"MQTT");
    out.push(4); // protocol level 3.1.1
    out.push(flags);
    out.extend_from_slice(&o.keep_alive_secs.to_be_bytes());
    put_str(out, o.client_id.as_bytes());
    if let Some(w) = &o.will {
        put_str(out, w.topic.as_bytes());
        put_str(out, &w.payload);
    }
    if let Some(u) = &o.username {
        put_str(out, u.as_bytes());
    }
    if let Some(p) = &o.password {
        put_str(out, p);
    }
}

/// Appends a PUBLISH. `pkid` is used only for QoS 1.
pub fn write_publish(
    out: &mut Vec<u8>,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pkid: u16,
    retain: bool,
) {
    let id_len = if qos == QoS::AtLeastOnce { 2 } else { 0 };
    let first = 0x30 | ((qos as u8) << 1) | u8::from(retain);
    put_fixed_header(out, first, 2 + topic.len() + id_len + payload.len());
    put_str(out, topic.as_bytes());
    if qos == QoS::AtLeastOnce {
        out.extend_from_slice(&pkid.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Appends a PUBACK.
pub fn write_puback(out: &mut Vec<u8>, pkid: u16) {
    out.extend_from_slice(&[0x40, 2]);
    out.extend_from_slice(&pkid.to_be_bytes());
}

/// Appends a SUBSCRIBE.
pub fn write_subscribe(out: &mut Vec<u8>, pkid: u16, filters: &[(&str, QoS)]) {
    let len = 2 + filters.iter().map(|(f, _)| 2 + f.len() + 1).sum::<usize>();
    put_fixed_header(out, 0x82, len);
    out.extend_from_slice(&pkid.to_be_bytes());
    for (f, q) in filters {
        put_str(out, f.as_bytes());
        out.push(*q as u8);
    }
}

/// Appends an UNSUBSCRIBE.
pub fn write_unsubscribe(out: &mut Vec<u8>, pkid: u16, filters: &[&str]) {
    let len = 2 + filters.iter().map(|f| 2 + f.len()).sum::<usize>();
    put_fixed_header(out, 0xA2, len);
    out.extend_from_slice(&pkid.to_be_bytes());
    for f in filters {
        put_str(out, f.as_bytes());
    }
}

/// Appends a PINGREQ.
pub fn write_pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xC0, 0]);
}

/// Appends a DISCONNECT.
pub fn write_disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xE0, 0]);
}

/// Parses the packet at the start of `buf`: `Ok(None)` if more bytes are
/// needed, otherwise the packet and the bytes it used.
pub fn parse(buf: &[u8], max_packet: usize) -> Result<Option<(Packet, usize)>, MeshError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // Remaining length: at most four bytes of 7-bit groups.
    let mut len = 0usize;
    let mut header = 1;
    loop {
        let Some(&b) = buf.get(header) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7F) << (7 * (header - 1));
        header += 1;
        if b & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Err(MeshError::protocol(
                "remaining length longer than four bytes",
            ));
        }
    }
    if header + len > max_packet {
        return Err(MeshError::PacketTooLarge {
            size: header + len,
            max: max_packet,
        });
    }
    let Some(body) = buf.get(header..header + len) else {
        return Ok(None);
    };
    let packet = match first >> 4 {
        2 => {
            expect_len(body, 2, "CONNACK")?;
            Packet::ConnAck {
                session_present: body[0] & 1 == 1,
                code: body[1],
            }
        }
        3 => parse_publish(first, body)?,
        4 => Packet::PubAck {
            pkid: pkid(body, "PUBACK")?,
        },
        9 => {
            if body.len() < 3 {
                return Err(MeshError::protocol("SUBACK without return codes"));
            }
            Packet::SubAck {
                pkid: u16::from_be_bytes([body[0], body[1]]),
                codes: body[2..].to_vec(),
            }
        }
        11 => Packet::UnsubAck {
            pkid: pkid(body, "UNSUBACK")?,
        },
        13 => {
            expect_len(body, 0, "PINGRESP")?;
            Packet::PingResp
        }
        other => {
            return Err(MeshError::protocol(format!(
                "unexpected packet type {other} from the broker"
            )));
        }
    };
    Ok(Some((packet, header + len)))
}

fn expect_len(body: &[u8], n: usize, what: &str) -> Result<(), MeshError> {
    if body.len() == n {
        Ok(())
    } else {
        Err(MeshError::protocol(format!(
            "{what} body is {} bytes; expected {n}",
            body.len()
        )))
    }
}

fn pkid(body: &[u8], what: &str) -> Result<u16, MeshError> {
    expect_len(body, 2, what)?;
    Ok(u16::from_be_bytes([body[0], body[1]]))
}

fn parse_publish(first: u8, body: &[u8]) -> Result<Packet, MeshError> {
    let qos = match (first >> 1) & 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        q => {
            return Err(MeshError::protocol(format!(
                "PUBLISH with QoS {q}; this client subscribes at most at QoS 1"
            )));
        }
    };
    if body.len() < 2 {
        return Err(MeshError::protocol("PUBLISH without a topic"));
    }
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let id_len = if qos == QoS::AtLeastOnce { 2 } else { 0 };
    let Some(topic) = body.get(2..2 + topic_len) else {
        return Err(MeshError::protocol("PUBLISH topic runs past the packet"));
    };
    let topic = std::str::from_utf8(topic)
        .map_err(|_| MeshError::protocol("PUBLISH topic is not UTF-8"))?;
    let Some(rest) = body.get(2 + topic_len..) else {
        return Err(MeshError::protocol("PUBLISH truncated"));
    };
    if rest.len() < id_len {
        return Err(MeshError::protocol("PUBLISH without its packet id"));
    }
    let pkid = if id_len == 2 {
        u16::from_be_bytes([rest[0], rest[1]])
    } else {
        0
    };
    Ok(Packet::Publish {
        topic: topic.to_owned(),
        payload: rest[id_len..].to_vec(),
        qos,
        pkid,
        retain: first & 1 == 1,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn connect_bytes_match_the_specification_example() {
        // MQTT 3.1.1 §3.1: "MQTT", level 4, flags, keep-alive 10, id "abc".
        let mut out = Vec::new();
        let mut o = ConnectOptions::new("abc", 10);
        o.clean_session = true;
        write_connect(&mut out, &o);
        assert_eq!(
            out,
            [
                0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 3, b'a', b'b', b'c'
            ]
        );
    }

    #[test]
    fn will_and_credentials_set_their_flags() {
        let mut out = Vec::new();
        let mut o = ConnectOptions::new("a", 5);
        o.will = Some(Will {
            topic: "t".into(),
            payload: vec![1, 2],
            qos: QoS::AtLeastOnce,
            retain: true,
        });
        o.username = Some("u".into());
        o.password = Some(b"p".to_vec());
        write_connect(&mut out, &o);
        assert_eq!(out[9], 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02);
        assert_eq!(usize::from(out[1]), out.len() - 2);
    }

    #[test]
    fn publishes_round_trip_through_the_parser() {
        for (qos, pkid) in [(QoS::AtMostOnce, 0), (QoS::AtLeastOnce, 513)] {
            let mut out = Vec::new();
            let payload = vec![7u8; 300]; // two-byte remaining length
            write_publish(&mut out, "vm/v1/ack/3", &payload, qos, pkid, false);
            let (p, used) = parse(&out, 4096).unwrap().unwrap();
            assert_eq!(used, out.len());
            assert_eq!(
                p,
                Packet::Publish {
                    topic: "vm/v1/ack/3".into(),
                    payload,
                    qos,
                    pkid,
                    retain: false
                }
            );
        }
    }

    #[test]
    fn partial_packets_wait_for_more_bytes() {
        let mut out = Vec::new();
        write_publish(&mut out, "a/b", b"hello", QoS::AtLeastOnce, 1, false);
        for cut in 0..out.len() {
            assert_eq!(parse(&out[..cut], 4096).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn oversized_packets_are_refused_before_they_arrive() {
        // Header announcing 1 MiB: refused on the header alone.
        let header = [0x30, 0x80, 0x80, 0x40];
        assert!(matches!(
            parse(&header, 64 * 1024),
            Err(MeshError::PacketTooLarge { .. })
        ));
    }

    #[test]
    fn control_packets_parse() {
        assert_eq!(
            parse(&[0x20, 2, 1, 0], 16).unwrap(),
            Some((
                Packet::ConnAck {
                    session_present: true,
                    code: 0
                },
                4
            ))
        );
        assert_eq!(
            parse(&[0x40, 2, 1, 2], 16).unwrap(),
            Some((Packet::PubAck { pkid: 258 }, 4))
        );
        assert_eq!(
            parse(&[0x90, 3, 0, 9, 1], 16).unwrap(),
            Some((
                Packet::SubAck {
                    pkid: 9,
                    codes: vec![1]
                },
                5
            ))
        );
        assert_eq!(parse(&[0xD0, 0], 16).unwrap(), Some((Packet::PingResp, 2)));
        assert!(
            parse(&[0x10, 0], 16).is_err(),
            "a CONNECT is not for a client"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes, 256);
        }
    }
}

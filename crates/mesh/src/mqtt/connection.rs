//! One MQTT client connection over TCP.
//!
//! [`Connection::drive`] waits once for the socket (readable, or writable
//! when bytes are queued) or for the keep-alive deadline, then reads and
//! writes without blocking. It is cancel-safe, so a task can `select!` on it
//! next to its own timers; received packets are then taken with
//! [`Connection::next_incoming`]. Writes are queued by [`Connection::publish`]
//! and friends and go out on the following `drive`s, so a slow or stalled
//! socket never blocks the caller's own work.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use super::codec::{self, ConnectOptions, Packet, QoS};
use crate::MeshError;

/// Something the broker sent, after the connection's own bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// An application message (already acknowledged if QoS 1).
    Message {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
    },
    /// The broker acknowledged one of our QoS 1 publishes.
    Acknowledged {
        /// From queueing the publish to its PUBACK.
        latency: Duration,
    },
    /// A subscription was answered.
    Subscribed {
        /// Granted QoS per filter, 0x80 for a refusal.
        codes: Vec<u8>,
    },
    /// An unsubscription was answered.
    Unsubscribed,
}

/// An open MQTT connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    max_packet: usize,
    keep_alive: Duration,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    next_pkid: u16,
    /// QoS 1 publishes awaiting PUBACK, oldest first, with when they were queued.
    inflight: VecDeque<(u16, Instant)>,
}

impl Connection {
    /// Opens TCP to `addr`, sends CONNECT and waits for an accepting CONNACK,
    /// all within `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        options: &ConnectOptions,
        timeout: Duration,
        max_packet: usize,
    ) -> Result<Self, MeshError> {
        tokio::time::timeout(timeout, async {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut c = Self {
                stream,
                rbuf: Vec::new(),
                rpos: 0,
                wbuf: Vec::with_capacity(64),
                wpos: 0,
                max_packet,
                keep_alive: Duration::from_secs(u64::from(options.keep_alive_secs)),
                last_sent: Instant::now(),
                ping_sent: None,
                next_pkid: 0,
                inflight: VecDeque::new(),
            };
            codec::write_connect(&mut c.wbuf, options);
            loop {
                c.drive().await?;
                let mut parsed = codec::parse(&c.rbuf[c.rpos..], c.max_packet)?;
                if let Some((packet, used)) = parsed.take() {
                    c.rpos += used;
                    return match packet {
                        Packet::ConnAck { code: 0, .. } => Ok(c),
                        Packet::ConnAck { code, .. } => Err(MeshError::ConnectRefused { code }),
                        other => Err(MeshError::protocol(format!(
                            "expected CONNACK, got {other:?}"
                        ))),
                    };
                }
            }
        })
        .await
        .map_err(|_| MeshError::Timeout("connect"))?
    }

    /// The local address (which port the kernel chose).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// QoS 1 publishes not yet acknowledged by the broker.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Bytes queued but not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    fn alloc_pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid % u16::MAX + 1;
        self.next_pkid
    }

    /// Queues a publish.
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS) {
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => {
                let id = self.alloc_pkid();
                self.inflight.push_back((id, Instant::now()));
                id
            }
        };
        codec::write_publish(&mut self.wbuf, topic, payload, qos, pkid, false);
    }

    /// Queues a subscription.
    pub fn subscribe(&mut self, filters: &[(&str, QoS)]) {
        let pkid = self.alloc_pkid();
        codec::write_subscribe(&mut self.wbuf, pkid, filters);
    }

    /// Queues an unsubscription.
    pub fn unsubscribe(&mut self, filters: &[&str]) {
        let pkid = self.alloc_pkid();
        codec::write_unsubscribe(&mut self.wbuf, pkid, filters);
    }

    /// Says goodbye (no will) and writes what is queued, within `timeout`.
    pub async fn close_gracefully(mut self, timeout: Duration) {
        codec::write_disconnect(&mut self.wbuf);
        let _ = tokio::time::timeout(timeout, self.flush()).await;
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), MeshError> {
        while self.pending_bytes() > 0 {
            self.stream.writable().await?;
            self.write_some()?;
        }
        Ok(())
    }

    /// Waits for the socket or the keep-alive deadline, then does what it
    /// can without blocking. Cancel-safe.
    pub async fn drive(&mut self) -> Result<(), MeshError> {
        let interest = if self.pending_bytes() > 0 {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let deadline = match self.ping_sent {
            Some(sent) => sent + self.keep_alive,
            None => self.last_sent + self.keep_alive,
        };
        tokio::select! {
            ready = self.stream.ready(interest) => {
                let ready = ready?;
                if ready.is_readable() || ready.is_read_closed() {
                    self.read_some()?;
                }
                if ready.is_writable() && self.pending_bytes() > 0 {
                    self.write_some()?;
                }
            }
            () = sleep_until(deadline) => {
                if self.ping_sent.is_some() {
                    return Err(MeshError::Timeout("keep-alive: no PINGRESP"));
                }
                codec::write_pingreq(&mut self.wbuf);
                self.ping_sent = Some(Instant::now());
            }
        }
        Ok(())
    }

    fn read_some(&mut self) -> Result<(), MeshError> {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
            if self.rbuf.capacity() > 64 * 1024 {
                // A burst made the buffer large; give the memory back.
                self.rbuf.shrink_to(4096);
            }
        } else if self.rpos > 4096 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        self.rbuf.reserve(1024);
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Err(MeshError::ConnectionClosed),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn write_some(&mut self) -> Result<(), MeshError> {
        match self.stream.try_write(&self.wbuf[self.wpos..]) {
            Ok(n) => {
                self.wpos += n;
                if self.wpos == self.wbuf.len() {
                    self.wbuf.clear();
                    self.wpos = 0;
                }
                self.last_sent = Instant::now();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The next packet received, if a whole one is buffered. Acknowledges
    /// QoS 1 messages and answers pings by itself.
    pub fn next_incoming(&mut self) -> Result<Option<Incoming>, MeshError> {
        loop {
            let Some((packet, used)) = codec::parse(&self.rbuf[self.rpos..], self.max_packet)?
            else {
                return Ok(None);
            };
            self.rpos += used;
            match packet {
                Packet::Publish {
                    topic,
                    payload,
                    qos,
                    pkid,
                    ..
                } => {
                    if qos == QoS::AtLeastOnce {
                        codec::write_puback(&mut self.wbuf, pkid);
                    }
                    return Ok(Some(Incoming::Message { topic, payload }));
                }
                Packet::PubAck { pkid } => {
                    // Brokers acknowledge in order; search anyway, a stray
                    // id is ignored rather than trusted.
                    if let Some(i) = self.inflight.iter().position(|(id, _)| *id == pkid) {
                        let (_, queued) = self.inflight.remove(i).expect("index from position");
                        return Ok(Some(Incoming::Acknowledged {
                            latency: queued.elapsed(),
                        }));
                    }
                }
                Packet::SubAck { codes, .. } => return Ok(Some(Incoming::Subscribed { codes })),
                Packet::UnsubAck { .. } => return Ok(Some(Incoming::Unsubscribed)),
                Packet::PingResp => self.ping_sent = None,
                Packet::ConnAck { .. } => {
                    return Err(MeshError::protocol("CONNACK on an open connection"));
                }
            }
        }
    }
}

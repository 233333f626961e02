//! One MQTT client connection over TCP.
//!
//! [`Connection::drive`] waits once for the socket (readable, or writable
//! when bytes are queued) or for the keep-alive deadline, then reads and
//! writes without blocking. It is cancel-safe, so a task can `select!` on it
//! next to its own timers; received packets are then taken with
//! [`Connection::next_incoming`]. Writes are queued by [`Connection::publish`]
//! and friends and go out on the following `drive`s, so a slow or stalled
//! socket never blocks the caller's own work.
//!
//! With [`LinkConditions`] attached, partitions, latency and loss act on the
//! bytes here, at the socket (see [`super::link`]).
//!
//! With a [`TlsClient`], a rustls session sits between the MQTT bytes and
//! the socket: what is queued is written into the session as plaintext and
//! the socket carries its records; what the socket delivers goes through
//! the session before it is parsed. Link conditions act on the plaintext,
//! so a delayed chunk is still one whole piece of the stream.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use super::codec::{self, ConnectOptions, Packet, QoS};
use super::link::LinkConditions;
use super::tls::TlsClient;
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

impl Incoming {
    /// A subscription the broker refused (SUBACK code 0x80). The mesh's
    /// clients subscribe only to what they cannot do without — an
    /// aggregator's partitions, a node's acknowledgements — so each of them
    /// treats a refusal as a lost connection and connects again, which
    /// subscribes afresh. (nats-server refuses one when it cannot create the
    /// JetStream consumer behind it, as after a cluster node died.)
    pub fn is_refused_subscription(&self) -> bool {
        matches!(self, Self::Subscribed { codes } if codes.contains(&0x80))
    }
}

/// An open MQTT connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// The TLS session, when the broker is reached over TLS.
    tls: Option<Box<rustls::ClientConnection>>,
    rbuf: Vec<u8>,
    rpos: usize,
    /// Queued by the application, not yet released to the socket.
    wbuf: Vec<u8>,
    /// Released to the socket, from `wpos` on not yet written.
    obuf: Vec<u8>,
    wpos: usize,
    link: Option<Arc<LinkConditions>>,
    /// Shaped bytes waiting for their time: (due, bytes), in order.
    outbound: VecDeque<(Instant, Vec<u8>)>,
    inbound: VecDeque<(Instant, Vec<u8>)>,
    shaping_rng: u64,
    lost_in_a_row: u32,
    max_packet: usize,
    keep_alive: Duration,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    next_pkid: u16,
    /// QoS 1 publishes awaiting PUBACK, oldest first, with when they were queued.
    inflight: VecDeque<(u16, Instant)>,
}

impl Connection {
    /// Opens TCP to `addr` (and TLS over it, with `tls`), sends CONNECT and
    /// waits for an accepting CONNACK, all within `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<&TlsClient>,
        options: &ConnectOptions,
        timeout: Duration,
        max_packet: usize,
    ) -> Result<Self, MeshError> {
        Self::connect_over(addr, tls, options, timeout, max_packet, None).await
    }

    /// [`Connection::connect`] over a link with settable conditions.
    pub async fn connect_over(
        addr: SocketAddr,
        tls: Option<&TlsClient>,
        options: &ConnectOptions,
        timeout: Duration,
        max_packet: usize,
        link: Option<Arc<LinkConditions>>,
    ) -> Result<Self, MeshError> {
        tokio::time::timeout(timeout, async {
            // A partitioned client cannot reach the broker at all.
            while link.as_ref().is_some_and(|l| l.is_partitioned()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let seed = stream.local_addr().map_or(1, |a| u64::from(a.port())) ^ 0x5DEE_CE66;
            let tls = match tls {
                Some(client) => Some(Box::new(client.session()?)),
                None => None,
            };
            let mut c = Self {
                stream,
                tls,
                rbuf: Vec::new(),
                rpos: 0,
                wbuf: Vec::with_capacity(64),
                obuf: Vec::new(),
                wpos: 0,
                link,
                outbound: VecDeque::new(),
                inbound: VecDeque::new(),
                shaping_rng: seed,
                lost_in_a_row: 0,
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
        self.wbuf.len()
            + (self.obuf.len() - self.wpos)
            + self.outbound.iter().map(|(_, b)| b.len()).sum::<usize>()
    }

    /// Whether bytes wait for the socket: queued plaintext, or TLS records
    /// (a handshake message, an alert, encrypted data).
    fn socket_pending(&self) -> bool {
        self.obuf.len() > self.wpos || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Whether the connection was made over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Moves queued bytes towards the socket: straight through, or into the
    /// delay queue when the link is shaped; releases delayed bytes that are
    /// due, in both directions.
    fn stage(&mut self, now: Instant) {
        let shaping = self.link.as_ref().is_some_and(|l| l.is_shaping());
        if !self.wbuf.is_empty() {
            if shaping {
                let delay = self.link_delay();
                let due = self
                    .outbound
                    .back()
                    .map_or(now + delay, |(last, _)| (*last).max(now + delay));
                let chunk = std::mem::take(&mut self.wbuf);
                self.outbound.push_back((due, chunk));
            } else if self.obuf.len() == self.wpos && self.outbound.is_empty() {
                // Fast path: swap buffers rather than copy.
                self.obuf.clear();
                self.wpos = 0;
                std::mem::swap(&mut self.obuf, &mut self.wbuf);
            } else {
                let chunk = std::mem::take(&mut self.wbuf);
                self.outbound.push_back((now, chunk));
            }
        }
        while self.outbound.front().is_some_and(|(due, _)| *due <= now) {
            let (_, chunk) = self.outbound.pop_front().expect("checked");
            self.obuf.extend_from_slice(&chunk);
        }
        while self.inbound.front().is_some_and(|(due, _)| *due <= now) {
            let (_, chunk) = self.inbound.pop_front().expect("checked");
            self.compact_rbuf();
            self.rbuf.extend_from_slice(&chunk);
        }
    }

    fn link_delay(&mut self) -> Duration {
        match &self.link {
            Some(l) => l.delay(&mut self.shaping_rng, &mut self.lost_in_a_row),
            None => Duration::ZERO,
        }
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

    /// Queues bytes as they are, framed or not: for clients that must
    /// misbehave on purpose (half a packet, a broken one), never for a
    /// device.
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
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
        let _ = tokio::time::timeout(timeout, self.flush_and_close_tls()).await;
    }

    /// Writes everything queued, delayed bytes included (not while
    /// partitioned: those bytes could not leave).
    pub async fn flush(&mut self) -> Result<(), MeshError> {
        if self.link.as_ref().is_some_and(|l| l.is_partitioned()) {
            return Ok(());
        }
        for (_, chunk) in std::mem::take(&mut self.outbound) {
            self.obuf.extend_from_slice(&chunk);
        }
        let queued = std::mem::take(&mut self.wbuf);
        self.obuf.extend_from_slice(&queued);
        while self.socket_pending() {
            self.stream.writable().await?;
            self.write_some()?;
        }
        Ok(())
    }

    /// [`Connection::flush`], then a TLS close_notify, so the broker sees
    /// a clean end of the session rather than a truncated one.
    async fn flush_and_close_tls(&mut self) -> Result<(), MeshError> {
        self.flush().await?;
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            while self.socket_pending() {
                self.stream.writable().await?;
                self.write_some()?;
            }
        }
        Ok(())
    }

    /// Waits for the socket, a delayed chunk or the keep-alive deadline,
    /// then does what it can without blocking. Cancel-safe.
    pub async fn drive(&mut self) -> Result<(), MeshError> {
        let now = Instant::now();
        self.stage(now);
        let deadline = match self.ping_sent {
            Some(sent) => sent + self.keep_alive,
            None => self.last_sent + self.keep_alive,
        };
        if self.link.as_ref().is_some_and(|l| l.is_partitioned()) {
            // No byte moves. Keep-alive still runs, and fails, as it would.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = sleep_until(deadline) => self.on_keep_alive()?,
            }
            return Ok(());
        }
        let next_due = self
            .outbound
            .front()
            .map(|(d, _)| *d)
            .into_iter()
            .chain(self.inbound.front().map(|(d, _)| *d))
            .min();
        let interest = if self.socket_pending() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        tokio::select! {
            ready = self.stream.ready(interest) => {
                let ready = ready?;
                if ready.is_readable() || ready.is_read_closed() {
                    self.read_some()?;
                }
                // Under TLS a read can make records to send (handshake
                // messages, key updates): try them now rather than after
                // another wait.
                if (ready.is_writable() || self.tls.is_some()) && self.socket_pending() {
                    self.write_some()?;
                }
            }
            () = async { sleep_until(next_due.expect("guarded")).await }, if next_due.is_some() => {}
            () = sleep_until(deadline) => self.on_keep_alive()?,
        }
        // Release what fell due while waiting, so the caller can parse it now.
        self.stage(Instant::now());
        Ok(())
    }

    fn on_keep_alive(&mut self) -> Result<(), MeshError> {
        if self.ping_sent.is_some() {
            return Err(MeshError::Timeout("keep-alive: no PINGRESP"));
        }
        codec::write_pingreq(&mut self.wbuf);
        self.ping_sent = Some(Instant::now());
        Ok(())
    }

    fn compact_rbuf(&mut self) {
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
    }

    fn read_some(&mut self) -> Result<(), MeshError> {
        if self.tls.is_some() {
            return self.read_tls();
        }
        if self.link.as_ref().is_some_and(|l| l.is_shaping()) {
            let mut chunk = Vec::with_capacity(4096);
            return match self.stream.try_read_buf(&mut chunk) {
                Ok(0) => Err(MeshError::ConnectionClosed),
                Ok(_) => {
                    self.delay_inbound(chunk);
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        self.compact_rbuf();
        self.rbuf.reserve(1024);
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Err(MeshError::ConnectionClosed),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Queues received bytes behind the link's delay.
    fn delay_inbound(&mut self, chunk: Vec<u8>) {
        let now = Instant::now();
        let delay = self.link_delay();
        let due = self
            .inbound
            .back()
            .map_or(now + delay, |(last, _)| (*last).max(now + delay));
        self.inbound.push_back((due, chunk));
    }

    /// Reads TLS records until the socket has no more (or a bounded number
    /// of rounds, so one busy connection cannot starve its task's other
    /// work), and moves their plaintext on as if read from the socket.
    fn read_tls(&mut self) -> Result<(), MeshError> {
        const ROUNDS: usize = 16;
        let shaping = self.link.as_ref().is_some_and(|l| l.is_shaping());
        let tls = self.tls.as_mut().expect("checked by the caller");
        let mut plaintext = Vec::new();
        let mut closed = false;
        for _ in 0..ROUNDS {
            match tls.read_tls(&mut SocketIo(&self.stream)) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
            let state = tls
                .process_new_packets()
                .map_err(|e| MeshError::Tls(e.to_string()))?;
            let mut available = state.plaintext_bytes_to_read();
            if available > 0 {
                let start = plaintext.len();
                plaintext.resize(start + available, 0);
                while available > 0 {
                    let end = plaintext.len() - available;
                    match tls.reader().read(&mut plaintext[end..]) {
                        Ok(n) if n > 0 => available -= n,
                        _ => break,
                    }
                }
                plaintext.truncate(plaintext.len() - available);
            }
            if state.peer_has_closed() {
                closed = true;
                break;
            }
        }
        if !plaintext.is_empty() {
            if shaping {
                self.delay_inbound(plaintext);
            } else {
                self.compact_rbuf();
                self.rbuf.extend_from_slice(&plaintext);
            }
        }
        if closed {
            // What arrived before the close is parsed by the caller's next
            // `next_incoming` only if the connection stays; a closed session
            // is reported as closed, as a plain socket's end of stream is.
            return Err(MeshError::ConnectionClosed);
        }
        Ok(())
    }

    fn write_some(&mut self) -> Result<(), MeshError> {
        if let Some(tls) = self.tls.as_mut() {
            // Plaintext into the session (it buffers it until the
            // handshake is done), then as many records as the socket takes.
            if self.obuf.len() > self.wpos {
                let n = tls.writer().write(&self.obuf[self.wpos..])?;
                self.wpos += n;
                if self.wpos == self.obuf.len() {
                    self.obuf.clear();
                    self.wpos = 0;
                }
            }
            while tls.wants_write() {
                match tls.write_tls(&mut SocketIo(&self.stream)) {
                    Ok(_) => self.last_sent = Instant::now(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(());
        }
        match self.stream.try_write(&self.obuf[self.wpos..]) {
            Ok(n) => {
                self.wpos += n;
                if self.wpos == self.obuf.len() {
                    self.obuf.clear();
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

/// The socket as blocking-style `Read` and `Write` for rustls, without
/// blocking: an empty socket or a full send buffer is `WouldBlock`, which
/// also clears tokio's readiness so the next wait is a real one.
struct SocketIo<'a>(&'a TcpStream);

impl Read for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

//! Runs one aggregator: the pure state machine plus an MQTT connection with
//! its last will, in one task. Deliveries, alerts and status go to the
//! shared [`Observer`]. Killing the task drops the socket without a
//! goodbye, so the broker publishes the will, exactly as when a process dies.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use vitalmesh_core::aggregator::{Aggregator, Output};
use vitalmesh_sim::{Observer, setup};
use vitalmesh_wire::{AggregatorId, Timestamp, TopicScheme};

use crate::MeshError;
use crate::broker::MAX_PACKET;
use crate::clock::RunClock;
use crate::mqtt::{ConnectOptions, Connection, Incoming, LinkConditions, QoS, Will};

/// What every aggregator task shares.
#[derive(Debug)]
pub(crate) struct AggregatorRuntime {
    pub(crate) clock: RunClock,
    pub(crate) broker: Vec<SocketAddr>,
    pub(crate) observer: Arc<Mutex<Observer>>,
    /// The nodes' time zero, once they have started: ownership moves are
    /// recorded relative to it.
    pub(crate) origin: Arc<OnceLock<Timestamp>>,
    pub(crate) topics: TopicScheme,
    /// Credentials, when the broker wants them.
    pub(crate) login: Option<crate::broker::BrokerLogin>,
    /// TLS, when the broker is reached over it.
    pub(crate) tls: Option<crate::mqtt::TlsClient>,
    pub(crate) keep_alive_secs: u16,
    pub(crate) connect_timeout: Duration,
}

/// How an aggregator task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggregatorStop {
    /// Say goodbye and disconnect cleanly.
    Leave,
    /// Leave the running mesh: say goodbye, keep serving for
    /// [`HAND_OVER`](vitalmesh_core::aggregator::HAND_OVER) while the others
    /// take over, then disconnect cleanly.
    HandOver,
    /// Drop the connection as a crashed process would.
    Kill,
}

/// Stop signal for one aggregator task.
#[derive(Debug, Default)]
pub(crate) struct AggregatorControl {
    stop: Mutex<Option<AggregatorStop>>,
    notify: Notify,
}

impl AggregatorControl {
    pub(crate) fn stop(&self, how: AggregatorStop) {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(how);
        self.notify.notify_one();
    }

    fn requested(&self) -> Option<AggregatorStop> {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn publish_events(agg: &mut Aggregator, rt: &AggregatorRuntime) {
    let now = rt.clock.now();
    let at_s = rt
        .origin
        .get()
        .map_or(0.0, |o| now.saturating_duration_since(*o).as_secs_f64());
    let mut observer = rt.observer.lock().unwrap_or_else(|p| p.into_inner());
    setup::observe_events(agg, &mut observer, at_s);
}

fn report_status(agg: &Aggregator, up: bool, rt: &AggregatorRuntime) {
    rt.observer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .aggregator_status(setup::aggregator_status(agg, up, rt.clock.now(), true));
}

/// Runs `agg` until stopped.
pub(crate) async fn run_aggregator(
    mut agg: Aggregator,
    rt: Arc<AggregatorRuntime>,
    control: Arc<AggregatorControl>,
    link: Arc<LinkConditions>,
) {
    let id: AggregatorId = agg.id();
    let mut options = ConnectOptions::new(
        agg.config().topics.aggregator_client_id(id, 0),
        rt.keep_alive_secs,
    );
    // Bumped after every failed attempt: see `TopicScheme::node_client_id`.
    let mut id_generation = 0u32;
    let mut conn: Option<Connection> = None;
    let mut retry_at = Instant::now();
    let mut next_status = Instant::now();
    let mut hand_over_until: Option<Instant> = None;

    loop {
        let handing_over = match (control.requested(), hand_over_until) {
            (Some(AggregatorStop::HandOver), None) if conn.is_some() => {
                // Goodbye and our last acks go out with the outputs below;
                // we keep serving until the others have taken over.
                agg.leave();
                hand_over_until = Some(Instant::now() + vitalmesh_core::aggregator::HAND_OVER);
                true
            }
            (Some(AggregatorStop::HandOver), Some(until)) => Instant::now() < until,
            _ => false,
        };
        if let (Some(how), false) = (control.requested(), handing_over) {
            if let Some(mut c) = conn.take() {
                if how != AggregatorStop::Kill {
                    if how == AggregatorStop::Leave {
                        agg.leave();
                    }
                    while let Some(out) = agg.poll_output() {
                        if let Output::Publish { topic, payload } = out {
                            c.publish(&topic, &payload, QoS::AtMostOnce);
                        }
                    }
                    c.close_gracefully(Duration::from_secs(1)).await;
                }
                // Kill: the socket is dropped here, without DISCONNECT.
            }
            report_status(&agg, false, &rt);
            return;
        }
        if conn.is_none() && Instant::now() >= retry_at {
            // A will per connection: it is sealed to order after this
            // connection's messages and before the next one's.
            let (will_topic, will_payload) = agg.last_will();
            options.will = Some(Will {
                topic: will_topic,
                payload: will_payload,
                qos: QoS::AtLeastOnce,
                retain: false,
            });
            if let Some(login) = &rt.login {
                login.apply(
                    &vitalmesh_wire::envelope::mqtt_username(
                        vitalmesh_wire::envelope::Principal::Aggregator(id),
                    ),
                    &mut options,
                );
            }
            let addr = crate::broker::address_for(&rt.broker, usize::from(id.0), id_generation);
            match Connection::connect_over(
                addr,
                rt.tls.as_ref(),
                &options,
                rt.connect_timeout,
                MAX_PACKET,
                Some(link.clone()),
            )
            .await
            {
                Ok(c) => {
                    conn = Some(c);
                    agg.handle_connected(rt.clock.now());
                }
                Err(_) => {
                    retry_at = Instant::now() + Duration::from_millis(500);
                    id_generation += 1;
                    options.client_id = agg.config().topics.aggregator_client_id(id, id_generation);
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            while let Some(out) = agg.poll_output() {
                match out {
                    Output::Subscribe(f) => {
                        let qos = if rt.topics.subscribe_at_least_once(&f) {
                            QoS::AtLeastOnce
                        } else {
                            QoS::AtMostOnce
                        };
                        c.subscribe(&[(&f, qos)]);
                    }
                    Output::Unsubscribe(f) => c.unsubscribe(&[&f]),
                    Output::Publish { topic, payload } => {
                        c.publish(&topic, &payload, QoS::AtMostOnce)
                    }
                }
            }
        }
        publish_events(&mut agg, &rt);
        if Instant::now() >= next_status {
            next_status = Instant::now() + Duration::from_millis(500);
            report_status(&agg, conn.is_some(), &rt);
        }

        let timer = agg
            .poll_timeout()
            .map(|t| rt.clock.instant_of(t))
            .unwrap_or(retry_at)
            .min(next_status)
            .min(hand_over_until.unwrap_or(next_status));
        tokio::select! {
            () = control.notify.notified() => {}
            result = async { conn.as_mut().expect("guarded").drive().await }, if conn.is_some() => {
                let c = conn.as_mut().expect("still there");
                let outcome = result.and_then(|()| {
                    while let Some(incoming) = c.next_incoming()? {
                        if incoming.is_refused_subscription() {
                            return Err(MeshError::protocol("the broker refused a subscription"));
                        }
                        if let Incoming::Message { topic, payload } = incoming {
                            agg.handle_message(&topic, &payload, rt.clock.now());
                        }
                    }
                    Ok(())
                });
                if outcome.is_err() {
                    conn = None;
                    agg.handle_disconnected(rt.clock.now());
                    retry_at = Instant::now() + Duration::from_millis(500);
                }
            }
            () = sleep_until(timer) => {
                agg.handle_timeout(rt.clock.now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use vitalmesh_scenario::MeshFlags;
    use vitalmesh_sim::{Observer, setup};

    use super::*;

    /// A broker that accepts every connection and refuses every
    /// subscription, as nats-server does when it cannot create the
    /// JetStream consumer behind one. Counts the connections it accepted.
    async fn refusing_broker() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = socket.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        // Whole packets: type byte, remaining length, body.
                        loop {
                            let (mut len, mut shift, mut at) = (0usize, 0, 1);
                            while at < buf.len() {
                                len |= usize::from(buf[at] & 0x7f) << shift;
                                shift += 7;
                                at += 1;
                                if buf[at - 1] & 0x80 == 0 {
                                    break;
                                }
                            }
                            if buf.len() < 2 || at + len > buf.len() {
                                break;
                            }
                            let body = buf[at..at + len].to_vec();
                            let reply = match buf[0] >> 4 {
                                1 => vec![0x20, 0x02, 0x00, 0x00],
                                8 => {
                                    // Packet id, then (length, filter, QoS)*.
                                    let mut filters = 0;
                                    let mut i = 2;
                                    while i + 2 <= body.len() {
                                        i +=
                                            2 + usize::from(u16::from_be_bytes([
                                                body[i],
                                                body[i + 1],
                                            ])) + 1;
                                        filters += 1;
                                    }
                                    let mut r = vec![0x90, 2 + filters as u8, body[0], body[1]];
                                    r.extend(std::iter::repeat_n(0x80, filters));
                                    r
                                }
                                12 => vec![0xd0, 0x00],
                                _ => Vec::new(),
                            };
                            buf.drain(..at + len);
                            if socket.write_all(&reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_refused_subscription_makes_the_aggregator_connect_again() {
        let (addr, accepted) = refusing_broker().await;
        let scenario = vitalmesh_scenario::from_flags(&MeshFlags::default(), None).unwrap();
        let topics = TopicScheme::new("vm").unwrap();
        let keys = setup::keyring(&scenario, 1);
        let agg = setup::aggregator(&scenario, &keys, &topics, AggregatorId(0), 1, 1);
        let rt = Arc::new(AggregatorRuntime {
            clock: RunClock::start(),
            broker: vec![addr],
            observer: Arc::new(Mutex::new(Observer::new(scenario.population, false))),
            origin: Arc::new(OnceLock::new()),
            topics,
            login: None,
            tls: None,
            keep_alive_secs: 5,
            connect_timeout: Duration::from_secs(2),
        });
        let control = Arc::new(AggregatorControl::default());
        let task = tokio::spawn(run_aggregator(
            agg,
            rt,
            control.clone(),
            Arc::new(LinkConditions::default()),
        ));
        // Without the check it would sit on its first connection, owning
        // partitions it never hears from.
        let deadline = Instant::now() + Duration::from_secs(10);
        while accepted.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        control.stop(AggregatorStop::Kill);
        let _ = task.await;
        assert!(
            accepted.load(Ordering::Relaxed) >= 3,
            "connections: {}",
            accepted.load(Ordering::Relaxed)
        );
    }
}

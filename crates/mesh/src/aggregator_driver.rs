//! Runs one aggregator: the pure state machine plus an MQTT connection with
//! its last will, in one task. Deliveries, alerts and status go to the
//! shared [`Collector`]. Killing the task drops the socket without a
//! goodbye, so the broker publishes the will, exactly as when a process dies.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use vitalmesh_core::aggregator::{Aggregator, Event, Output};
use vitalmesh_wire::AggregatorId;

use crate::broker::MAX_PACKET;
use crate::clock::RunClock;
use crate::collector::{AggregatorStatusUpdate, Collector};
use crate::mqtt::{ConnectOptions, Connection, Incoming, LinkConditions, QoS, Will};

/// What every aggregator task shares.
#[derive(Debug)]
pub(crate) struct AggregatorRuntime {
    pub(crate) clock: RunClock,
    pub(crate) broker: Vec<SocketAddr>,
    pub(crate) collector: Arc<Mutex<Collector>>,
    pub(crate) keep_alive_secs: u16,
    pub(crate) connect_timeout: Duration,
}

/// How an aggregator task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggregatorStop {
    /// Say goodbye and disconnect cleanly.
    Leave,
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

fn publish_events(agg: &mut Aggregator, collector: &Mutex<Collector>) {
    let id = agg.id();
    let mut deliveries = Vec::new();
    let mut others = Vec::new();
    while let Some(e) = agg.poll_event() {
        match e {
            Event::Delivered(d) => deliveries.push(d),
            other => others.push(other),
        }
    }
    if deliveries.is_empty() && others.is_empty() {
        return;
    }
    let mut c = collector.lock().unwrap_or_else(|p| p.into_inner());
    c.deliveries(&deliveries);
    for e in others {
        match e {
            Event::Alert(a) => c.alert(a),
            Event::Rejected(r) => c.rejected(r.kind(), r.to_string()),
            Event::Ownership { primary, standby } => c.ownership(id, &primary, &standby),
            Event::Delivered(_) => {}
        }
    }
}

/// φ from which a quiet node shows as suspected (a 0.1 % chance of a wrong
/// suspicion, not counting the acceptable pause; see
/// `Aggregator::suspected_nodes`). It is declared down at 8 with the pause.
const SUSPECT_PHI: f64 = 3.0;

fn status(agg: &Aggregator, up: bool, now: vitalmesh_wire::Timestamp) -> AggregatorStatusUpdate {
    AggregatorStatusUpdate {
        id: agg.id(),
        up,
        stats: agg.stats(),
        live_view: agg.live_view().into_iter().map(|a| a.0).collect(),
        suspected: if up {
            agg.suspected_nodes(now, SUSPECT_PHI)
        } else {
            Vec::new()
        },
    }
}

/// Runs `agg` until stopped.
pub(crate) async fn run_aggregator(
    mut agg: Aggregator,
    rt: Arc<AggregatorRuntime>,
    control: Arc<AggregatorControl>,
    link: Arc<LinkConditions>,
) {
    let id: AggregatorId = agg.id();
    let addr = rt.broker[usize::from(id.0) % rt.broker.len()];
    let (will_topic, will_payload) = agg.last_will();
    let mut options = ConnectOptions::new(
        agg.config().topics.aggregator_client_id(id, 0),
        rt.keep_alive_secs,
    );
    options.will = Some(Will {
        topic: will_topic,
        payload: will_payload,
        qos: QoS::AtLeastOnce,
        retain: false,
    });
    // Bumped after every failed attempt: see `TopicScheme::node_client_id`.
    let mut id_generation = 0u32;
    let mut conn: Option<Connection> = None;
    let mut retry_at = Instant::now();
    let mut next_status = Instant::now();

    loop {
        if let Some(how) = control.requested() {
            if let Some(mut c) = conn.take() {
                if how == AggregatorStop::Leave {
                    agg.leave();
                    while let Some(out) = agg.poll_output() {
                        if let Output::Publish { topic, payload } = out {
                            c.publish(&topic, &payload, QoS::AtMostOnce);
                        }
                    }
                    c.close_gracefully(Duration::from_secs(1)).await;
                }
                // Kill: the socket is dropped here, without DISCONNECT.
            }
            rt.collector
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .aggregator_status(status(&agg, false, rt.clock.now()));
            return;
        }
        if conn.is_none() && Instant::now() >= retry_at {
            match Connection::connect_over(
                addr,
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
                    Output::Subscribe(f) => c.subscribe(&[(&f, QoS::AtLeastOnce)]),
                    Output::Unsubscribe(f) => c.unsubscribe(&[&f]),
                    Output::Publish { topic, payload } => {
                        c.publish(&topic, &payload, QoS::AtMostOnce)
                    }
                }
            }
        }
        publish_events(&mut agg, &rt.collector);
        if Instant::now() >= next_status {
            next_status = Instant::now() + Duration::from_millis(500);
            rt.collector
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .aggregator_status(status(&agg, conn.is_some(), rt.clock.now()));
        }

        let timer = agg
            .poll_timeout()
            .map(|t| rt.clock.instant_of(t))
            .unwrap_or(retry_at)
            .min(next_status);
        tokio::select! {
            () = control.notify.notified() => {}
            result = async { conn.as_mut().expect("guarded").drive().await }, if conn.is_some() => {
                let c = conn.as_mut().expect("still there");
                let outcome = result.and_then(|()| {
                    while let Some(incoming) = c.next_incoming()? {
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

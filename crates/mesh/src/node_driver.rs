//! Runs one sensor node: the firmware state machine plus its own MQTT
//! connection, in one task.
//!
//! The loop is quinn's `ConnectionDriver` shape: act on what the state
//! machine asks (connect, disconnect, publish), then wait for whichever
//! comes first — a command, the connection attempt, socket readiness, or the
//! node's own next timeout — and feed that back in. Sampling never waits for
//! the network: a connect in progress or a stalled socket is just another
//! branch of the wait.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::sleep_until;
use vitalmesh_firmware::physiology::{DeteriorationEpisode, Episode, FeverEpisode};
use vitalmesh_firmware::{LinkAction, Node, PatientOptions, Power, SensorFault};
use vitalmesh_sim::NodeHealth;
use vitalmesh_sim::ledger::{NodeFinal, NodeTally};
use vitalmesh_wire::TopicScheme;
use vitalmesh_wire::envelope::{Principal, mqtt_username, peek_acks};

use crate::MeshError;
use crate::broker::MAX_PACKET;
use crate::clock::RunClock;
use crate::metrics::{DisconnectReason, LiveCounters};
use crate::mqtt::{ConnectOptions, Connection, Incoming, LinkConditions, QoS};

/// What every node task shares.
#[derive(Debug)]
pub(crate) struct NodeRuntime {
    pub(crate) clock: RunClock,
    pub(crate) counters: Arc<LiveCounters>,
    pub(crate) broker: Vec<SocketAddr>,
    pub(crate) topics: TopicScheme,
    /// Credentials, when the broker wants them.
    pub(crate) login: Option<crate::broker::BrokerLogin>,
    /// TLS, when the broker is reached over it.
    pub(crate) tls: Option<crate::mqtt::TlsClient>,
    /// Bounds concurrent connection handshakes, so a reconnect storm after a
    /// broker restart queues here instead of overflowing the listen backlog.
    pub(crate) connect_gate: Semaphore,
    pub(crate) connect_timeout: Duration,
    pub(crate) keep_alive_secs: u16,
    /// QoS 1 publishes in flight per node.
    pub(crate) inflight_window: usize,
}

/// Orders for a node, from scenarios, injection or the end of the run.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeCommand {
    /// Power fails: RAM lost, socket dropped.
    Crash,
    /// Power back on after a crash (or a fresh battery).
    Restart,
    /// Clean reboot: buffer kept.
    Reboot,
    /// A sensor fault.
    InjectFault(SensorFault),
    /// Repair the sensor.
    ClearFaults,
    /// The patient develops this fever (its onset is absolute).
    Fever(FeverEpisode),
    /// The patient starts deteriorating now, over this ramp.
    Deteriorate(Duration),
    /// The patient is discharged: the bed is empty.
    Discharge,
    /// A new patient is admitted.
    Admit(PatientOptions),
    /// New sample interval.
    SetSampleInterval(Duration),
    /// Stop sampling; keep delivering the backlog.
    StopSampling,
    /// Leave the mesh: deliver the backlog, then switch off.
    ShutDown,
    /// The network path is back: an offline node tries now.
    LinkAvailable,
    /// End the task and report.
    Stop,
}

/// A node's (or a gateway's) inbox: commands are rare, so a lock and a
/// `Notify` cost far less memory per node than a channel.
#[derive(Debug)]
pub(crate) struct Mailbox<T = NodeCommand> {
    queue: Mutex<VecDeque<T>>,
    pub(crate) notify: Notify,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
        }
    }
}

impl<T> Mailbox<T> {
    pub(crate) fn send(&self, command: T) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(command);
        self.notify.notify_one();
    }

    pub(crate) fn take(&self) -> VecDeque<T> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Carries out `command` on `node` (every command but `Stop`, which ends
/// the task that runs the node).
pub(crate) fn apply(node: &mut Node, command: NodeCommand, now: vitalmesh_wire::Timestamp) {
    match command {
        NodeCommand::Stop => {}
        NodeCommand::Crash => node.crash(now),
        NodeCommand::Restart => node.restart(now),
        NodeCommand::Reboot => node.reboot(now),
        NodeCommand::InjectFault(f) => node.inject_fault(f),
        NodeCommand::ClearFaults => node.clear_faults(),
        NodeCommand::Fever(episode) => node.add_episode(Episode::Fever(episode)),
        NodeCommand::Deteriorate(ramp) => {
            node.add_episode(Episode::Deterioration(DeteriorationEpisode {
                onset: now,
                ramp,
            }))
        }
        NodeCommand::Discharge => node.discharge(now),
        NodeCommand::Admit(options) => node.admit(options, now),
        NodeCommand::SetSampleInterval(d) => node.set_sample_interval(d, now),
        NodeCommand::StopSampling => node.set_sampling(false, now),
        NodeCommand::ShutDown => node.shut_down(now),
        NodeCommand::LinkAvailable => node.handle_link_available(now),
    }
}

pub(crate) type Connecting = Pin<Box<dyn Future<Output = Result<Connection, MeshError>> + Send>>;

/// A device-class connection (a node's or a gateway's) as `client_id`,
/// through the handshake gate.
pub(crate) async fn connect(
    rt: Arc<NodeRuntime>,
    addr: SocketAddr,
    client_id: String,
    principal: Principal,
    link: Arc<LinkConditions>,
) -> Result<Connection, MeshError> {
    let _permit = rt
        .connect_gate
        .acquire()
        .await
        .map_err(|_| MeshError::ConnectionClosed)?;
    let mut options = ConnectOptions::new(client_id, rt.keep_alive_secs);
    if let Some(login) = &rt.login {
        login.apply(&mqtt_username(principal), &mut options);
    }
    Connection::connect_over(
        addr,
        rt.tls.as_ref(),
        &options,
        rt.connect_timeout,
        MAX_PACKET,
        Some(link),
    )
    .await
}

/// Runs `node` until told to stop.
pub(crate) async fn run_node(
    mut node: Node,
    rt: Arc<NodeRuntime>,
    mailbox: Arc<Mailbox>,
    link: Arc<LinkConditions>,
) -> NodeFinal {
    let id = node.id();
    let index = id.0 as usize;
    let data_topic = rt.topics.data(node.partition(), id);
    let ack_topic = rt.topics.ack(node.partition());
    let counters = &rt.counters;
    let mut conn: Option<Connection> = None;
    let mut connecting: Option<Connecting> = None;
    // Bumped after every failed attempt: see `TopicScheme::node_client_id`.
    let mut id_generation = 0u32;
    let mut tally = NodeTally::default();
    let mut health: Option<NodeHealth> = None;

    loop {
        let now = rt.clock.now();
        while let Some(action) = node.poll_link() {
            match action {
                LinkAction::Connect => {
                    counters.connect_attempts.fetch_add(1, Ordering::Relaxed);
                    connecting = Some(Box::pin(connect(
                        rt.clone(),
                        crate::broker::address_for(&rt.broker, index, id_generation),
                        rt.topics.node_client_id(id, id_generation),
                        Principal::Node(id),
                        link.clone(),
                    )));
                }
                LinkAction::Disconnect { graceful } => {
                    connecting = None;
                    if let Some(c) = conn.take() {
                        counters.connected.fetch_sub(1, Ordering::Relaxed);
                        if graceful {
                            c.close_gracefully(Duration::from_millis(500)).await;
                        }
                        // Otherwise dropping the socket is the crash.
                    }
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            while c.inflight() < rt.inflight_window {
                let Some(t) = node.poll_transmit(now) else {
                    break;
                };
                c.publish(&data_topic, &t.payload, QoS::AtLeastOnce);
                counters
                    .published
                    .fetch_add(t.samples as u64, Ordering::Relaxed);
            }
        }
        if node.power() == Power::Off && conn.is_some() {
            // It just said goodbye: close now, after the goodbye's publish.
            continue;
        }
        report(&node, &mut tally, &mut health, counters, index, now, false);

        let deadline = node.poll_timeout().map(|t| rt.clock.instant_of(t));
        tokio::select! {
            () = mailbox.notify.notified() => {
                let now = rt.clock.now();
                for command in mailbox.take() {
                    match command {
                        NodeCommand::Stop => {
                            if let Some(c) = conn.take() {
                                counters.connected.fetch_sub(1, Ordering::Relaxed);
                                c.close_gracefully(Duration::from_millis(200)).await;
                            }
                            counters.set_health(index, NodeHealth::Stopped);
                            counters.buffered.fetch_sub(tally.buffered(), Ordering::Relaxed);
                            return NodeFinal::of(&node);
                        }
                        other => apply(&mut node, other, now),
                    }
                }
            }
            result = async { connecting.as_mut().expect("guarded by the branch condition").await }, if connecting.is_some() => {
                connecting = None;
                let now = rt.clock.now();
                match result {
                    Ok(mut c) => {
                        c.subscribe(&[(&ack_topic, QoS::AtMostOnce)]);
                        conn = Some(c);
                        counters.node_connected();
                        node.handle_connected(now);
                    }
                    Err(_) => {
                        counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                        id_generation += 1;
                        node.handle_disconnected(now);
                    }
                }
            }
            result = async { conn.as_mut().expect("guarded by the branch condition").drive().await }, if conn.is_some() => {
                let c = conn.as_mut().expect("still there");
                let outcome = result.and_then(|()| {
                    while let Some(incoming) = c.next_incoming()? {
                        match incoming {
                            Incoming::Message { topic, payload } if topic == ack_topic => {
                                // Read without the aggregator's key; the node checks its entry's tag.
                                if let Ok(acks) = peek_acks(&payload) {
                                    // Acks are sorted by node: the aggregator builds them from an ordered set.
                                    if let Ok(i) = acks.acks.binary_search_by_key(&id, |a| a.node) {
                                        node.handle_ack(&acks.acks[i], rt.clock.now());
                                    }
                                }
                            }
                            Incoming::Acknowledged { latency } => {
                                counters.broker_acked.fetch_add(1, Ordering::Relaxed);
                                counters.publish_ack_latency.record(index, latency);
                            }
                            refused if refused.is_refused_subscription() => {
                                return Err(MeshError::protocol("the broker refused a subscription"));
                            }
                            Incoming::Message { .. } | Incoming::Subscribed { .. } | Incoming::Unsubscribed => {}
                        }
                    }
                    Ok(())
                });
                if let Err(e) = outcome {
                    conn = None;
                    counters.connected.fetch_sub(1, Ordering::Relaxed);
                    counters.disconnects.fetch_add(1, Ordering::Relaxed);
                    counters.disconnect_reasons[DisconnectReason::of(&e) as usize].fetch_add(1, Ordering::Relaxed);
                    node.handle_disconnected(rt.clock.now());
                }
            }
            () = async { sleep_until(deadline.expect("guarded by the branch condition")).await }, if deadline.is_some() => {
                node.handle_timeout(rt.clock.now());
            }
        }
    }
}

/// Keeps the shared counters in step with one node.
pub(crate) fn report(
    node: &Node,
    tally: &mut NodeTally,
    health: &mut Option<NodeHealth>,
    counters: &LiveCounters,
    index: usize,
    now: vitalmesh_wire::Timestamp,
    out_of_range: bool,
) {
    let d = tally.update(node);
    for (total, moved) in [
        (&counters.produced, d.produced),
        (&counters.e2e_acked, d.acked),
        (&counters.dropped_overflow, d.dropped),
        (&counters.lost_on_crash, d.lost),
    ] {
        if moved > 0 {
            total.fetch_add(moved, Ordering::Relaxed);
        }
    }
    if d.buffered != 0 {
        counters.buffered.fetch_add(d.buffered, Ordering::Relaxed);
    }
    let now_health = if out_of_range {
        NodeHealth::OutOfRange
    } else {
        NodeHealth::of(node, now)
    };
    if *health != Some(now_health) {
        counters.set_health(index, now_health);
        *health = Some(now_health);
    }
}

//! Runs one gateway — the hub, the nodes behind it and their radio, all in
//! one pure [`GatewayCell`] — over one MQTT connection, in one task.
//!
//! The loop has the node task's shape (`node_driver.rs`): act on what the
//! cell asks (connect, disconnect, publish relays), then wait for a
//! command, the connection attempt, socket readiness or the cell's next
//! timeout. A hundred nodes behind a gateway cost one task, one socket and
//! one timer here, which is how one process runs 100,000 nodes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::sleep_until;
use vitalmesh_firmware::{GatewayCell, GatewayLedger, Link, LinkAction, Node};
use vitalmesh_sim::NodeHealth;
use vitalmesh_sim::ledger::{NodeFinal, NodeTally};
use vitalmesh_wire::NodeId;
use vitalmesh_wire::envelope::peek_acks;

use crate::MeshError;
use crate::metrics::DisconnectReason;
use crate::mqtt::{Connection, Incoming, LinkConditions, QoS};
use crate::node_driver::{self, Connecting, Mailbox, NodeCommand, NodeRuntime};

/// Orders for a gateway task.
#[derive(Debug)]
pub(crate) enum GatewayCommand {
    /// A node behind this gateway starts.
    Start(Box<Node>),
    /// An order for one of its nodes.
    Node(NodeId, NodeCommand),
    /// The gateway crashes.
    Crash,
    /// The gateway boots again.
    Restart,
    /// Its nodes stop sampling (the drain).
    StopSampling,
    /// Its uplink's network path is back: reconnect now if offline.
    UplinkAvailable,
    /// End the task and report.
    Stop,
}

/// What a gateway task leaves behind.
#[derive(Debug)]
pub(crate) struct GatewayFinal {
    pub(crate) nodes: Vec<NodeFinal>,
    pub(crate) ledger: GatewayLedger,
}

/// The counters' view of each node behind the gateway.
struct NodeBooks {
    first: u32,
    tallies: Vec<NodeTally>,
    health: Vec<Option<NodeHealth>>,
    online: Vec<bool>,
}

/// Runs `cell` until told to stop.
pub(crate) async fn run_gateway(
    mut cell: GatewayCell,
    rt: Arc<NodeRuntime>,
    mailbox: Arc<Mailbox<GatewayCommand>>,
    link: Arc<LinkConditions>,
) -> GatewayFinal {
    let id = cell.id();
    let relay_topic = rt.topics.relay(cell.topic_partition(), id);
    let ack_topic = rt.topics.ack(cell.topic_partition());
    let counters = &rt.counters;
    let serves = cell.serves_ids();
    let mut books = NodeBooks {
        first: serves.start,
        tallies: serves.clone().map(|_| NodeTally::default()).collect(),
        health: vec![None; serves.len()],
        online: vec![false; serves.len()],
    };
    let mut conn: Option<Connection> = None;
    let mut connecting: Option<Connecting> = None;
    let mut id_generation = 0u32;
    let mut touched = Vec::new();

    loop {
        let now = rt.clock.now();
        while let Some(action) = cell.poll_link() {
            match action {
                LinkAction::Connect => {
                    counters.connect_attempts.fetch_add(1, Ordering::Relaxed);
                    connecting = Some(Box::pin(node_driver::connect(
                        rt.clone(),
                        crate::broker::address_for(&rt.broker, id.0 as usize, id_generation),
                        rt.topics.gateway_client_id(id, id_generation),
                        vitalmesh_wire::envelope::Principal::Gateway(id),
                        link.clone(),
                    )));
                }
                LinkAction::Disconnect { .. } => {
                    // A gateway only disconnects by crashing: drop the socket.
                    connecting = None;
                    conn = None;
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            while c.inflight() < rt.inflight_window {
                let Some(t) = cell.poll_transmit(now) else {
                    break;
                };
                c.publish(&relay_topic, &t.payload, QoS::AtLeastOnce);
                counters
                    .published
                    .fetch_add(t.samples as u64, Ordering::Relaxed);
            }
        }
        cell.drain_touched(&mut touched);
        for n in touched.drain(..) {
            if let Some(node) = cell.node(n) {
                books.report(node, cell.is_out_of_range(n), &rt, now);
            }
        }

        let deadline = cell.poll_timeout().map(|t| rt.clock.instant_of(t));
        tokio::select! {
            () = mailbox.notify.notified() => {
                let now = rt.clock.now();
                for command in mailbox.take() {
                    match command {
                        GatewayCommand::Stop => return books.finish(&cell, &rt),
                        GatewayCommand::Start(node) => {
                            let _ = cell.add_node(*node, now);
                        }
                        GatewayCommand::Node(n, command) => {
                            cell.with_node(n, now, |node| node_driver::apply(node, command, now));
                        }
                        GatewayCommand::Crash => cell.crash(now),
                        GatewayCommand::UplinkAvailable => cell.handle_uplink_available(now),
                        GatewayCommand::Restart => cell.restart(now),
                        GatewayCommand::StopSampling => {
                            for n in serves.clone() {
                                cell.with_node(NodeId(n), now, |node| node.set_sampling(false, now));
                            }
                        }
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
                        cell.handle_connected(now);
                    }
                    Err(_) => {
                        counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                        id_generation += 1;
                        cell.handle_disconnected(now);
                    }
                }
            }
            result = async { conn.as_mut().expect("guarded by the branch condition").drive().await }, if conn.is_some() => {
                let c = conn.as_mut().expect("still there");
                let outcome = result.and_then(|()| {
                    while let Some(incoming) = c.next_incoming()? {
                        match incoming {
                            Incoming::Message { topic, payload } if topic == ack_topic => {
                                // Read without the aggregator's key: its nodes check their entries' tags.
                                if let Ok(acks) = peek_acks(&payload) {
                                    cell.handle_acks(&acks, rt.clock.now());
                                }
                            }
                            Incoming::Acknowledged { latency } => {
                                counters.broker_acked.fetch_add(1, Ordering::Relaxed);
                                counters.publish_ack_latency.record(id.0 as usize, latency);
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
                    counters.disconnects.fetch_add(1, Ordering::Relaxed);
                    counters.disconnect_reasons[DisconnectReason::of(&e) as usize].fetch_add(1, Ordering::Relaxed);
                    cell.handle_disconnected(rt.clock.now());
                }
            }
            () = async { sleep_until(deadline.expect("guarded by the branch condition")).await }, if deadline.is_some() => {
                cell.handle_timeout(rt.clock.now());
            }
        }
    }
}

impl NodeBooks {
    /// Keeps the shared counters in step with one node; a node's radio
    /// association counts as its connection.
    fn report(
        &mut self,
        node: &Node,
        out_of_range: bool,
        rt: &NodeRuntime,
        now: vitalmesh_wire::Timestamp,
    ) {
        let i = (node.id().0 - self.first) as usize;
        node_driver::report(
            node,
            &mut self.tallies[i],
            &mut self.health[i],
            &rt.counters,
            node.id().0 as usize,
            now,
            out_of_range,
        );
        let online = node.status(now).link == Link::Online;
        if online != self.online[i] {
            self.online[i] = online;
            if online {
                rt.counters.node_connected();
            } else {
                rt.counters.connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// The task ends: every node's final state, the gateway's ledger.
    fn finish(&self, cell: &GatewayCell, rt: &NodeRuntime) -> GatewayFinal {
        let counters = &rt.counters;
        for (i, tally) in self.tallies.iter().enumerate() {
            counters.set_health(self.first as usize + i, NodeHealth::Stopped);
            counters
                .buffered
                .fetch_sub(tally.buffered(), Ordering::Relaxed);
            if self.online[i] {
                counters.connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
        GatewayFinal {
            nodes: cell.nodes().map(NodeFinal::of).collect(),
            ledger: *cell.ledger(),
        }
    }
}

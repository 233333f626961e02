//! Gateways in virtual time: each [`GatewayCell`](vitalmesh_firmware::GatewayCell)
//! is one client of the modelled broker; its nodes and their radio live
//! inside it, so the event queue sees one wake-up per cell, not per node.

use std::cell::OnceCell;
use std::rc::Rc;

use vitalmesh_firmware::{Link as NodeLink, LinkAction};
use vitalmesh_wire::Timestamp;

use super::broker::Client;
use super::network::Dir;
use super::{Msg, Packet, VirtualMesh, What};

impl VirtualMesh {
    /// Acts on what gateway `g` asks for (connect, disconnect, relays),
    /// folds its touched nodes into the totals and re-arms its wake-up.
    pub(super) fn poll_gw(&mut self, g: u32) {
        let gi = g as usize;
        let now = self.ts();
        while let Some(action) = self.gws[gi].cell.poll_link() {
            match action {
                LinkAction::Connect => self.connect(Client::Gw(g)),
                LinkAction::Disconnect { graceful } => {
                    let ep = &mut self.gws[gi].ep;
                    ep.connecting = None;
                    if let Some(s) = ep.conn.take() {
                        let packet = if graceful {
                            Packet::Disconnect
                        } else {
                            Packet::Closed
                        };
                        self.send(Client::Gw(g), Dir::Up, s, packet);
                    }
                }
            }
        }
        if let Some(s) = self.gws[gi].ep.conn {
            while let Some(t) = self.gws[gi].cell.poll_transmit(now) {
                self.totals.published += t.samples as u64;
                let v = &self.gws[gi];
                let msg = Rc::new(Msg {
                    topic: v.topic.clone(),
                    parsed: Some(v.parsed),
                    payload: t.payload.into(),
                    ack: OnceCell::new(),
                });
                self.send(
                    Client::Gw(g),
                    Dir::Up,
                    s,
                    Packet::Publish {
                        msg,
                        qos1_sent_us: Some(self.now),
                    },
                );
            }
        }
        let mut touched = std::mem::take(&mut self.touched_scratch);
        self.gws[gi].cell.drain_touched(&mut touched);
        for id in touched.drain(..) {
            let Some(node) = self.gws[gi].cell.node(id) else {
                continue;
            };
            let v = &mut self.nodes[id.0 as usize];
            let flat = self.totals.fold(&mut v.tally, node);
            let online = node.status(now).link == NodeLink::Online;
            if online != v.online {
                v.online = online;
                if online {
                    self.totals.connected += 1;
                    self.totals.peak_connected =
                        self.totals.peak_connected.max(self.totals.connected);
                } else {
                    self.totals.connected -= 1;
                    self.totals.disconnects += 1;
                }
            }
            if flat {
                self.run.node_went_flat(id);
            }
            if self.gws[gi].cell.is_out_of_range(id) {
                self.run.node_out_of_range(id);
            }
        }
        self.touched_scratch = touched;
        let v = &mut self.gws[gi];
        let wake = v.cell.poll_timeout().map_or(u64::MAX, Timestamp::as_micros);
        if wake != v.wake_at {
            v.wake_at = wake;
            v.wake_token = v.wake_token.wrapping_add(1);
            if wake != u64::MAX {
                let token = v.wake_token;
                self.schedule(wake.max(self.now), What::GwWake { gw: g, token });
            }
        }
    }
}

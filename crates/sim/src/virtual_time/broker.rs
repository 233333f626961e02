//! The modelled broker's routing table: who is subscribed to what.
//!
//! vitalmesh's own topics (data per partition, acks per partition,
//! aggregator status) are indexed so routing a sample costs a parse and a
//! vector walk, not a scan of every filter; any other filter is matched
//! with MQTT's `+` and `#` rules.

use vitalmesh_wire::topic::filter_matches;
use vitalmesh_wire::{PartitionId, TopicScheme, WireTopic};

/// A client of the modelled broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Client {
    /// A sensor node.
    Node(u32),
    /// An aggregator.
    Agg(u16),
    /// A gateway (its nodes reach the broker through it).
    Gw(u32),
}

/// What a filter covers, as far as the index is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Data(u16),
    Ack(u16),
    Status,
    Other(String),
}

/// Subscriptions, indexed by route.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    topics: TopicScheme,
    data: Vec<Vec<Client>>,
    ack: Vec<Vec<Client>>,
    status: Vec<Client>,
    other: Vec<(String, Client)>,
}

impl Subscriptions {
    pub(crate) fn new(topics: TopicScheme, partitions: u16) -> Self {
        Self {
            topics,
            data: vec![Vec::new(); usize::from(partitions)],
            ack: vec![Vec::new(); usize::from(partitions)],
            status: Vec::new(),
            other: Vec::new(),
        }
    }

    fn route(&self, filter: &str) -> Route {
        let probe = filter.replacen('+', "0", 1);
        match self.topics.parse(&probe) {
            Some(WireTopic::Data { partition, .. })
                if filter == self.topics.data_filter(partition) =>
            {
                Route::Data(partition.0)
            }
            Some(WireTopic::Ack { partition }) if filter == self.topics.ack(partition) => {
                Route::Ack(partition.0)
            }
            Some(WireTopic::Status { .. }) if filter == self.topics.status_filter() => {
                Route::Status
            }
            _ => Route::Other(filter.to_owned()),
        }
    }

    fn list(&mut self, route: &Route) -> Option<&mut Vec<Client>> {
        match route {
            Route::Data(p) => self.data.get_mut(usize::from(*p)),
            Route::Ack(p) => self.ack.get_mut(usize::from(*p)),
            Route::Status => Some(&mut self.status),
            Route::Other(_) => None,
        }
    }

    pub(crate) fn subscribe(&mut self, filter: &str, client: Client) {
        let route = self.route(filter);
        match self.list(&route) {
            Some(list) => {
                if !list.contains(&client) {
                    list.push(client);
                }
            }
            None => {
                if !self.other.iter().any(|(f, c)| f == filter && *c == client) {
                    self.other.push((filter.to_owned(), client));
                }
            }
        }
    }

    /// A node's acknowledgement subscription (part of its connect).
    pub(crate) fn subscribe_ack(&mut self, partition: PartitionId, client: Client) {
        if let Some(list) = self.ack.get_mut(usize::from(partition.0)) {
            if !list.contains(&client) {
                list.push(client);
            }
        }
    }

    pub(crate) fn unsubscribe(&mut self, filter: &str, client: Client) {
        let route = self.route(filter);
        match self.list(&route) {
            Some(list) => list.retain(|c| *c != client),
            None => self.other.retain(|(f, c)| !(f == filter && *c == client)),
        }
    }

    /// Forgets every subscription of `client` (its session ended).
    pub(crate) fn drop_client(&mut self, client: Client, ack_partition: Option<PartitionId>) {
        match (client, ack_partition) {
            (Client::Node(_) | Client::Gw(_), Some(p)) => {
                if let Some(list) = self.ack.get_mut(usize::from(p.0)) {
                    list.retain(|c| *c != client);
                }
            }
            _ => {
                for list in self.data.iter_mut().chain(self.ack.iter_mut()) {
                    list.retain(|c| *c != client);
                }
                self.status.retain(|c| *c != client);
            }
        }
        self.other.retain(|(_, c)| *c != client);
    }

    /// Forgets everything (a broker restart).
    pub(crate) fn clear(&mut self) {
        self.data.iter_mut().for_each(Vec::clear);
        self.ack.iter_mut().for_each(Vec::clear);
        self.status.clear();
        self.other.clear();
    }

    /// Everyone a publish on `topic` goes to, in subscription order;
    /// `parsed` is the topic already parsed, if the sender's topic is fixed
    /// (a node's data topic is parsed once, not per sample).
    pub(crate) fn route_publish(
        &self,
        topic: &str,
        parsed: Option<WireTopic>,
        out: &mut Vec<Client>,
    ) {
        out.clear();
        match parsed.or_else(|| self.topics.parse(topic)) {
            Some(WireTopic::Data { partition, .. } | WireTopic::Relay { partition, .. }) => {
                if let Some(l) = self.data.get(usize::from(partition.0)) {
                    out.extend_from_slice(l);
                }
            }
            Some(WireTopic::Ack { partition }) => {
                if let Some(l) = self.ack.get(usize::from(partition.0)) {
                    out.extend_from_slice(l);
                }
            }
            Some(WireTopic::Status { .. }) => out.extend_from_slice(&self.status),
            // Ward reports and alerts reach their subscribers by matching.
            Some(WireTopic::Ward { .. } | WireTopic::Alert { .. }) | None => {}
        }
        for (filter, client) in &self.other {
            if filter_matches(filter, topic) && !out.contains(client) {
                out.push(*client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use vitalmesh_wire::NodeId;

    use super::*;

    #[test]
    fn own_topics_route_through_the_index_and_others_by_matching() {
        let topics = TopicScheme::default();
        let mut s = Subscriptions::new(topics.clone(), 4);
        s.subscribe(&topics.data_filter(PartitionId(2)), Client::Agg(1));
        s.subscribe(&topics.status_filter(), Client::Agg(0));
        s.subscribe_ack(PartitionId(2), Client::Node(9));
        s.subscribe("vm/#", Client::Agg(3));
        let mut out = Vec::new();
        s.route_publish(&topics.data(PartitionId(2), NodeId(9)), None, &mut out);
        assert_eq!(out, [Client::Agg(1), Client::Agg(3)]);
        s.route_publish(&topics.ack(PartitionId(2)), None, &mut out);
        assert_eq!(out, [Client::Node(9), Client::Agg(3)]);
        s.drop_client(Client::Agg(3), None);
        s.unsubscribe(&topics.data_filter(PartitionId(2)), Client::Agg(1));
        s.route_publish(&topics.data(PartitionId(2), NodeId(9)), None, &mut out);
        assert!(out.is_empty());
    }
}

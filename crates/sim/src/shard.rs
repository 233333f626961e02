//! Sharded runs, the pure part: which devices and aggregators shard `I` of
//! `N` runs, and how the shards' ledgers merge into the whole run's.
//!
//! A shard owns the nodes, gateways and aggregators whose id is `I` modulo
//! `N`: every shard computes the same split from the same scenario, with
//! no coordination. What a shard knows at the end is a [`LedgerPart`]:
//! the finals of the nodes it ran, and the sequence numbers its
//! aggregators ingested from any node (a node's partition may be led by
//! another shard's aggregator). Parts merge by union: node finals are
//! disjoint between shards, delivered sets are unions, ingest counts add.
//! So [`LedgerPart::merge`] is associative and commutative, and the merged
//! part's ledger is the ledger the unsharded run would compute from the
//! same finals and deliveries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vitalmesh_core::Population;
use vitalmesh_wire::{AggregatorId, GatewayId, NodeId, SeqSet};

use crate::ledger::{self, Ledger, NodeFinal};
use crate::merge::PartClock;

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which one, from 0.
    pub index: u32,
    /// How many.
    pub count: u32,
}

impl Shard {
    /// The whole run: one shard.
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// Parses `I/N` (`0/3`, `2/3`), as `--shard` takes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = "expected 'I/N' with 0 <= I < N, e.g. '0/3'";
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("'{text}' is not a shard; {expected}"))?;
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("'{s}' in '{text}' is not a number; {expected}"))
        };
        let (index, count) = (number(i)?, number(n)?);
        if count == 0 || index >= count {
            return Err(format!("'{text}' is not a shard; {expected}"));
        }
        Ok(Self { index, count })
    }

    fn owns(self, id: u32) -> bool {
        id % self.count == self.index
    }

    /// Whether this shard runs node `id`.
    pub fn owns_node(self, id: NodeId) -> bool {
        self.owns(id.0)
    }

    /// Whether this shard runs gateway `id` (and so the nodes behind it).
    pub fn owns_gateway(self, id: GatewayId) -> bool {
        self.owns(id.0)
    }

    /// Whether this shard runs the device of node `id`: its gateway's
    /// shard for a node behind a gateway, its own otherwise.
    pub fn owns_device(self, population: &Population, id: NodeId) -> bool {
        match population.gateway_of(id) {
            Some(g) => self.owns_gateway(g),
            None => self.owns_node(id),
        }
    }

    /// Whether this shard runs aggregator `id`.
    pub fn owns_aggregator(self, id: AggregatorId) -> bool {
        self.owns(u32::from(id.0))
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What a shard says about itself on the broker, about twice a second:
/// that it is ready (its aggregators agree), and how its part of the run
/// goes. Shards start the schedule together from these, estimate each
/// other's clocks from their send times, and show the whole run live.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardStatus {
    /// The run (shards of other runs on the same broker are ignored).
    pub run: String,
    /// Which shard.
    pub shard: u32,
    /// Of how many.
    pub count: u32,
    /// When it became ready, µs since the Unix epoch on its clock (0: not
    /// yet).
    pub ready_at_us: u64,
    /// When this message was sent, on its clock.
    pub sent_us: u64,
    /// `starting`, `ramping`, `running`, `draining`, `done`.
    pub phase: String,
    /// Nodes it runs.
    pub nodes: u32,
    /// Samples its nodes produced so far.
    pub produced: u64,
    /// Distinct samples its aggregators ingested so far.
    pub delivered: u64,
    /// Its nodes connected now.
    pub connected: i64,
}

/// The whole run as the shards' status messages tell it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WholeRun {
    /// Shards heard from (this one included).
    pub shards_heard: u32,
    /// Of how many.
    pub count: u32,
    /// Samples produced by every shard's nodes.
    pub produced: u64,
    /// Distinct samples ingested by every shard's aggregators.
    pub delivered: u64,
    /// Nodes connected in every shard.
    pub connected: i64,
}

/// What a shard knows of the others: their latest status and the least
/// apparent transit time of their messages. Pure: the driver hands it the
/// bytes it received and the time it received them.
#[derive(Debug, Clone)]
pub struct ShardBoard {
    run: String,
    me: Shard,
    ready_at_us: u64,
    peers: BTreeMap<u32, ShardStatus>,
    min_transit_us: BTreeMap<u32, i64>,
}

impl ShardBoard {
    /// Time from the last shard becoming ready to time zero of the
    /// schedule: long enough for its status to reach everyone.
    pub const START_MARGIN_US: u64 = 2_000_000;

    /// A board for shard `me` of run `run`.
    pub fn new(run: impl Into<String>, me: Shard) -> Self {
        Self {
            run: run.into(),
            me,
            ready_at_us: 0,
            peers: BTreeMap::new(),
            min_transit_us: BTreeMap::new(),
        }
    }

    /// This shard is ready (once: later calls keep the first time).
    pub fn ready(&mut self, at_us: u64) {
        if self.ready_at_us == 0 {
            self.ready_at_us = at_us.max(1);
        }
    }

    /// A status message received at `received_us` (this shard's clock).
    /// Messages of other runs, of this shard itself, and bytes that are
    /// not a status are ignored; returns whether it was taken.
    pub fn handle(&mut self, bytes: &[u8], received_us: u64) -> bool {
        let Ok(status) = serde_json::from_slice::<ShardStatus>(bytes) else {
            return false;
        };
        if status.run != self.run
            || status.count != self.me.count
            || status.shard >= self.me.count
            || status.shard == self.me.index
        {
            return false;
        }
        let transit = received_us as i64 - status.sent_us as i64;
        let least = self.min_transit_us.entry(status.shard).or_insert(transit);
        *least = (*least).min(transit);
        self.peers.insert(status.shard, status);
        true
    }

    /// Time zero of the schedule, once every shard is ready: the last
    /// one's ready time plus [`ShardBoard::START_MARGIN_US`]. Every shard
    /// computes it from the same figures, so all start together (to within
    /// their clocks' offsets).
    pub fn start_at_us(&self) -> Option<u64> {
        if self.ready_at_us == 0 {
            return None;
        }
        let ready: Vec<u64> = self
            .peers
            .values()
            .map(|p| p.ready_at_us)
            .filter(|&t| t > 0)
            .collect();
        (ready.len() + 1 == self.me.count as usize)
            .then(|| ready.into_iter().fold(self.ready_at_us, u64::max) + Self::START_MARGIN_US)
    }

    /// Shards not yet ready, for a message while waiting.
    pub fn not_ready(&self) -> Vec<u32> {
        (0..self.me.count)
            .filter(|&i| {
                if i == self.me.index {
                    self.ready_at_us == 0
                } else {
                    self.peers.get(&i).is_none_or(|p| p.ready_at_us == 0)
                }
            })
            .collect()
    }

    /// This shard's status, to publish: `mine` with the run, shard and
    /// ready time filled in.
    pub fn status(&self, mine: ShardStatus, sent_us: u64) -> Vec<u8> {
        let status = ShardStatus {
            run: self.run.clone(),
            shard: self.me.index,
            count: self.me.count,
            ready_at_us: self.ready_at_us,
            sent_us,
            ..mine
        };
        serde_json::to_vec(&status).expect("a status serialises")
    }

    /// The whole run: `mine` plus the latest from every other shard.
    pub fn whole(&self, mine: &ShardStatus) -> WholeRun {
        let mut whole = WholeRun {
            shards_heard: 1,
            count: self.me.count,
            produced: mine.produced,
            delivered: mine.delivered,
            connected: mine.connected,
        };
        for p in self.peers.values() {
            whole.shards_heard += 1;
            whole.produced += p.produced;
            whole.delivered += p.delivered;
            whole.connected += p.connected;
        }
        whole
    }

    /// What the part file records of the others' clocks.
    pub fn clock(&self) -> PartClock {
        PartClock {
            min_transit_us: self.min_transit_us.clone(),
        }
    }
}

/// Every run's shards as their status messages tell them, for
/// `vitalmesh watch`: a watcher is not a shard, so it keeps every run it
/// hears of on the broker.
#[derive(Debug, Clone, Default)]
pub struct ShardWatch {
    runs: BTreeMap<String, BTreeMap<u32, ShardStatus>>,
}

impl ShardWatch {
    /// A status message; bytes that are not one are ignored. Returns
    /// whether it was taken.
    pub fn handle(&mut self, bytes: &[u8]) -> bool {
        let Ok(status) = serde_json::from_slice::<ShardStatus>(bytes) else {
            return false;
        };
        if status.count == 0 || status.shard >= status.count {
            return false;
        }
        self.runs
            .entry(status.run.clone())
            .or_default()
            .insert(status.shard, status);
        true
    }

    /// One line per run: the shards heard from and their phases, and the
    /// whole run's figures.
    pub fn lines(&self) -> Vec<String> {
        self.runs
            .iter()
            .map(|(run, shards)| {
                let count = shards.values().map(|s| s.count).max().unwrap_or(0);
                let phases: std::collections::BTreeSet<&str> =
                    shards.values().map(|s| s.phase.as_str()).collect();
                let phases: Vec<&str> = phases.into_iter().collect();
                let sum = |f: fn(&ShardStatus) -> u64| shards.values().map(f).sum::<u64>();
                let connected: i64 = shards.values().map(|s| s.connected).sum();
                format!(
                    "run {run}: {}/{count} shards ({}) | {} nodes, {connected} connected | produced {} delivered {}",
                    shards.len(),
                    phases.join(", "),
                    sum(|s| u64::from(s.nodes)),
                    sum(|s| s.produced),
                    sum(|s| s.delivered),
                )
            })
            .collect()
    }

    /// Whether some run was heard of and every shard of every run says it
    /// is done.
    pub fn all_done(&self) -> bool {
        !self.runs.is_empty()
            && self.runs.values().all(|shards| {
                let count = shards.values().map(|s| s.count).max().unwrap_or(0) as usize;
                shards.len() == count && shards.values().all(|s| s.phase == "done")
            })
    }
}

/// What one shard knows of the ledger at the end of its run.
#[derive(Debug, Clone, Default)]
pub struct LedgerPart {
    /// The finals of the nodes this shard ran, by id.
    pub nodes: BTreeMap<u32, NodeFinal>,
    /// Sequence numbers this shard's aggregators ingested, by node.
    pub delivered: BTreeMap<u32, SeqSet>,
    /// Ingests, duplicates included, by node.
    pub ingests: BTreeMap<u32, u64>,
}

impl LedgerPart {
    /// This part and `other` as one: node finals joined (a node runs in
    /// one shard only; should two parts both hold one, the first is kept),
    /// delivered sets united, ingests added.
    pub fn merge(mut self, other: Self) -> Self {
        for (id, node) in other.nodes {
            self.nodes.entry(id).or_insert(node);
        }
        for (id, set) in other.delivered {
            let mine = self.delivered.entry(id).or_default();
            for range in set.ranges() {
                mine.insert_range(range.clone());
            }
        }
        for (id, n) in other.ingests {
            *self.ingests.entry(id).or_default() += n;
        }
        self
    }

    /// The ledger of the nodes this part holds: duplicates are ingests
    /// beyond the distinct samples delivered.
    pub fn ledger(&self, population: &Population) -> Ledger {
        let finals: Vec<NodeFinal> = self.nodes.values().cloned().collect();
        let size = finals
            .iter()
            .map(|f| f.id.0 as usize + 1)
            .max()
            .unwrap_or(0);
        let mut delivered = vec![SeqSet::new(); size];
        let mut duplicates = vec![0u64; size];
        for f in &finals {
            let i = f.id.0 as usize;
            if let Some(set) = self.delivered.get(&f.id.0) {
                delivered[i] = set.clone();
            }
            let distinct = delivered[i].len();
            duplicates[i] = self
                .ingests
                .get(&f.id.0)
                .copied()
                .unwrap_or(0)
                .saturating_sub(distinct);
        }
        ledger::compute(&finals, &delivered, &duplicates, population)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use vitalmesh_firmware::ledger::NodeLedger;

    use super::*;

    #[test]
    fn shards_parse_or_say_what_is_expected() {
        assert_eq!(Shard::parse("2/3"), Ok(Shard { index: 2, count: 3 }));
        assert!(
            Shard::parse("3/3")
                .unwrap_err()
                .contains("expected 'I/N' with 0 <= I < N")
        );
        assert!(Shard::parse("0/0").is_err());
        assert!(
            Shard::parse("a/3")
                .unwrap_err()
                .contains("'a' in 'a/3' is not a number")
        );
        assert!(
            Shard::parse("3")
                .unwrap_err()
                .contains("'3' is not a shard")
        );
    }

    fn status(run: &str, shard: u32, ready_at_us: u64, sent_us: u64) -> Vec<u8> {
        serde_json::to_vec(&ShardStatus {
            run: run.into(),
            shard,
            count: 3,
            ready_at_us,
            sent_us,
            phase: "starting".into(),
            nodes: 10,
            produced: 100 * u64::from(shard),
            delivered: 90 * u64::from(shard),
            connected: 10,
        })
        .unwrap()
    }

    #[test]
    fn shards_start_together_once_all_are_ready_and_ignore_other_runs() {
        let me = Shard { index: 0, count: 3 };
        let mut board = ShardBoard::new("run-a", me);
        assert_eq!(board.start_at_us(), None, "not ready itself");
        board.ready(5_000_000);
        assert!(board.handle(&status("run-a", 1, 7_000_000, 7_100_000), 7_100_400));
        assert!(!board.handle(&status("run-b", 2, 6_000_000, 6_000_000), 6_000_100));
        assert!(!board.handle(b"\xff not json", 1));
        assert!(!board.handle(&status("run-a", 0, 1, 1), 1), "its own echo");
        assert_eq!(board.not_ready(), vec![2]);
        assert_eq!(board.start_at_us(), None);
        assert!(board.handle(&status("run-a", 2, 6_500_000, 7_200_000), 7_199_000));
        assert_eq!(
            board.start_at_us(),
            Some(7_000_000 + ShardBoard::START_MARGIN_US)
        );
        // The least transit per peer is kept; a peer ahead shows negative.
        assert!(board.handle(&status("run-a", 1, 7_000_000, 8_000_000), 8_000_100));
        let clock = board.clock();
        assert_eq!(clock.min_transit_us.get(&1), Some(&100));
        assert_eq!(clock.min_transit_us.get(&2), Some(&-1_000));
        // The whole run adds this shard's figures to the others' latest.
        let mine = ShardStatus {
            run: String::new(),
            shard: 0,
            count: 3,
            ready_at_us: 0,
            sent_us: 0,
            phase: "running".into(),
            nodes: 10,
            produced: 5,
            delivered: 4,
            connected: 10,
        };
        let whole = board.whole(&mine);
        assert_eq!(
            (
                whole.shards_heard,
                whole.produced,
                whole.delivered,
                whole.connected
            ),
            (3, 305, 274, 30)
        );
        let sent: ShardStatus = serde_json::from_slice(&board.status(mine, 9)).unwrap();
        assert_eq!(
            (
                sent.run.as_str(),
                sent.shard,
                sent.ready_at_us,
                sent.sent_us
            ),
            ("run-a", 0, 5_000_000, 9)
        );
    }

    #[test]
    fn a_watcher_sums_each_runs_shards_and_knows_when_all_are_done() {
        let mut watch = ShardWatch::default();
        assert!(!watch.all_done(), "nothing heard yet");
        let done = |bytes: Vec<u8>| {
            let mut s: ShardStatus = serde_json::from_slice(&bytes).unwrap();
            s.phase = "done".into();
            serde_json::to_vec(&s).unwrap()
        };
        assert!(watch.handle(&status("run-a", 0, 1, 1)));
        assert!(watch.handle(&status("run-a", 2, 1, 1)));
        assert!(!watch.handle(b"garbage"));
        assert_eq!(
            watch.lines(),
            [
                "run run-a: 2/3 shards (starting) | 20 nodes, 20 connected | produced 200 delivered 180"
            ]
        );
        for shard in 0..3 {
            watch.handle(&done(status("run-a", shard, 1, 1)));
        }
        assert!(watch.all_done());
        watch.handle(&status("run-b", 1, 1, 1));
        assert!(!watch.all_done(), "run-b is still going");
        assert_eq!(watch.lines().len(), 2);
    }

    proptest! {
        /// Every device and aggregator is run by exactly one shard.
        #[test]
        fn every_id_belongs_to_exactly_one_shard(count in 1u32..16, id in 0u32..100_000) {
            let owners = (0..count)
                .map(|index| Shard { index, count })
                .filter(|s| s.owns_node(NodeId(id)))
                .count();
            prop_assert_eq!(owners, 1);
            let owners = (0..count)
                .map(|index| Shard { index, count })
                .filter(|s| s.owns_gateway(GatewayId(id)))
                .count();
            prop_assert_eq!(owners, 1);
        }
    }

    /// A population's outcome split as `count` shards would know it.
    fn parts(finals: &[NodeFinal], delivered: &[(u32, u64, u64)], count: u32) -> Vec<LedgerPart> {
        (0..count)
            .map(|index| {
                let shard = Shard { index, count };
                let mut part = LedgerPart::default();
                for f in finals.iter().filter(|f| shard.owns_node(f.id)) {
                    part.nodes.insert(f.id.0, f.clone());
                }
                // (node, seq, aggregator): ingested by that aggregator's shard.
                for &(node, seq, agg) in delivered {
                    if shard.owns_aggregator(AggregatorId(agg as u16)) {
                        part.delivered.entry(node).or_default().insert(seq);
                        *part.ingests.entry(node).or_default() += 1;
                    }
                }
                part
            })
            .collect()
    }

    fn arb_run() -> impl Strategy<Value = (Vec<NodeFinal>, Vec<(u32, u64, u64)>)> {
        let node = (0u64..40, 0u64..40, 0u64..40).prop_map(|(produced, a, b)| (produced, a, b));
        (
            prop::collection::vec(node, 1..12),
            prop::collection::vec((0u32..12, 0u64..40, 0u64..6), 0..200),
        )
            .prop_map(|(nodes, delivered)| {
                let finals = nodes
                    .iter()
                    .enumerate()
                    .map(|(i, &(produced, a, b))| {
                        let (lo, hi) = (a.min(b).min(produced), a.max(b).min(produced));
                        NodeFinal {
                            id: NodeId(i as u32),
                            produced,
                            ledger: NodeLedger {
                                produced,
                                dropped_overflow: (lo..hi).collect(),
                                ..NodeLedger::default()
                            },
                            buffered: (hi..produced).collect(),
                        }
                    })
                    .collect::<Vec<_>>();
                let delivered = delivered
                    .into_iter()
                    .filter(|(n, s, _)| finals.get(*n as usize).is_some_and(|f| *s < f.produced))
                    .collect();
                (finals, delivered)
            })
    }

    fn population() -> Population {
        Population {
            wards: 3,
            nodes_per_ward: 4,
            nodes_per_gateway: 0,
        }
    }

    proptest! {
        /// Merging is associative and commutative, and the merged ledger
        /// is the unsharded run's, whatever the shard count.
        #[test]
        fn merged_shards_give_the_unsharded_ledger((finals, delivered) in arb_run(), count in 1u32..5) {
            let whole = parts(&finals, &delivered, 1).pop().unwrap();
            let split = parts(&finals, &delivered, count);
            let forward = split.iter().cloned().fold(LedgerPart::default(), LedgerPart::merge);
            let backward = split.iter().rev().cloned().fold(LedgerPart::default(), LedgerPart::merge);
            let p = population();
            let ledger = |part: &LedgerPart| serde_json::to_value(part.ledger(&p)).expect("a ledger serialises");
            prop_assert_eq!(ledger(&forward), ledger(&whole));
            prop_assert_eq!(ledger(&backward), ledger(&whole));
            if split.len() >= 3 {
                let (a, b, c) = (split[0].clone(), split[1].clone(), split[2].clone());
                let left = a.clone().merge(b.clone()).merge(c.clone());
                let right = a.merge(b.merge(c));
                prop_assert_eq!(ledger(&left), ledger(&right));
            }
        }
    }
}

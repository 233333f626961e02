//! How a scenario becomes the pure state machines' configurations: the
//! same for both drivers, so a node or an aggregator behaves identically in
//! real and in virtual time.

use std::time::Duration;

use vitalmesh_core::{Aggregator, AggregatorConfig};
use vitalmesh_firmware::{GatewayCell, Node, NodeConfig, PatientOptions};
use vitalmesh_scenario::Scenario;
use vitalmesh_wire::envelope::{Keyring, Principal};
use vitalmesh_wire::{AggregatorId, GatewayId, NodeId, Partitioning, Timestamp, TopicScheme};

use crate::observe::AggregatorStatusUpdate;

/// φ from which a quiet node shows as suspected (a 0.1 % chance of a wrong
/// suspicion, not counting the acceptable pause; see
/// `Aggregator::suspected_nodes`). It is declared down at 8 with the pause.
pub const SUSPECT_PHI: f64 = 3.0;

/// The run's device keys, from its provisioning secret
/// ([`provisioning_secret`]).
pub fn keyring(scenario: &Scenario, seed: u64) -> Keyring {
    Keyring::new(
        provisioning_secret(scenario, seed),
        scenario.population.nodes(),
    )
}

/// The run's provisioning secret: every device key and broker password
/// derives from it. A provisioning file's (`--provisioning`), or else drawn
/// from the seed's own stream, so that a virtual-time replay produces
/// identical bytes; a rogue client in the mesh does not know it (it draws
/// from another stream).
pub fn provisioning_secret(scenario: &Scenario, seed: u64) -> [u8; 32] {
    if let Some(secret) = scenario.provisioning {
        return secret.0;
    }
    use rand_chacha::rand_core::RngCore;
    let mut secret = [0u8; 32];
    vitalmesh_firmware::rng::stream(
        seed,
        NodeId(0),
        vitalmesh_firmware::rng::Purpose::Provisioning,
    )
    .fill_bytes(&mut secret);
    secret
}

/// The partitioning a scenario asks for.
pub fn partitioning(scenario: &Scenario) -> Partitioning {
    Partitioning::new(scenario.partitions).expect("validated: 1 to 4096 partitions")
}

/// Node `id`, started at `now`, sampling every `interval`.
pub fn node(
    scenario: &Scenario,
    seed: u64,
    keys: &Keyring,
    id: NodeId,
    interval: Duration,
    now: Timestamp,
) -> Node {
    let mut config = NodeConfig::default();
    scenario.profile.apply(&mut config);
    config.patient =
        PatientOptions::assign(seed, id, 0, scenario.oxygen_share, scenario.scale2_share);
    config.sample_interval = interval;
    Node::new(
        id,
        scenario.population.partition_of(id, partitioning(scenario)),
        config,
        seed,
        keys.node_credentials(id),
        now,
    )
}

/// Gateway `id` with none of its nodes started yet, or `None` if the
/// scenario has no gateways.
pub fn gateway(
    scenario: &Scenario,
    seed: u64,
    keys: &Keyring,
    id: GatewayId,
) -> Option<GatewayCell> {
    let profile = scenario.gateways.as_ref()?;
    let partition = partitioning(scenario).partition_of_gateway(id);
    Some(GatewayCell::new(
        profile.config(id, partition),
        keys.derive(Principal::Gateway(id)),
        scenario.population.nodes_of_gateway(id),
        seed,
    ))
}

/// Aggregator `id` in its `incarnation`-th life, with capacity `weight`.
pub fn aggregator(
    scenario: &Scenario,
    keys: &Keyring,
    topics: &TopicScheme,
    id: AggregatorId,
    incarnation: u64,
    weight: u16,
) -> Aggregator {
    let mut config = AggregatorConfig::new(id, scenario.population);
    config.incarnation = incarnation;
    config.weight = weight.max(1);
    config.partitioning = partitioning(scenario);
    config.topics = topics.clone();
    config.node_phi.first_interval = scenario.profile.sample_interval;
    config.detection = scenario.detection.clone();
    Aggregator::new(config, keys.clone())
}

/// An aggregator's status for the observer. `suspects` also computes the
/// nodes it suspects (a φ per node: only dashboards show them, so a driver
/// that is not being watched can skip it).
pub fn aggregator_status(
    agg: &Aggregator,
    up: bool,
    now: Timestamp,
    suspects: bool,
) -> AggregatorStatusUpdate {
    AggregatorStatusUpdate {
        id: agg.id(),
        up,
        stats: agg.stats(),
        live_view: agg.live_view().into_iter().map(|a| a.0).collect(),
        suspected: if up && suspects {
            agg.suspected_nodes(now, SUSPECT_PHI)
        } else {
            Vec::new()
        },
    }
}

/// Feeds an aggregator's pending events to the observer; `at_s` is the
/// time since the nodes started.
pub fn observe_events(agg: &mut Aggregator, observer: &mut crate::Observer, at_s: f64) {
    use vitalmesh_core::aggregator::Event;
    let id = agg.id();
    while let Some(e) = agg.poll_event() {
        match e {
            Event::Delivered(d) => observer.delivery(&d),
            Event::Alert(a) => observer.alert(a),
            Event::Rejected { why, message } => {
                observer.rejected(id.0, message, why.kind(), why.to_string())
            }
            Event::Ownership { primary, standby } => {
                observer.ownership(id, &primary, &standby, at_s)
            }
            Event::WardBucket(b) => observer.ward_bucket(b),
            Event::News2Five(f) => observer.news2_five(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provisioning_file_replaces_the_seeds_secret_and_the_keys_follow() {
        let mut scenario = vitalmesh_scenario::parse(
            "t.toml",
            "[scenario]\nname = \"t\"\nduration = \"1m\"\n[population]\nwards = 1\nnodes_per_ward = 4\n",
        )
        .unwrap();
        let drawn = provisioning_secret(&scenario, 7);
        assert_eq!(
            drawn,
            provisioning_secret(&scenario, 7),
            "the same seed, the same secret"
        );
        assert_ne!(drawn, provisioning_secret(&scenario, 8));
        let node = Principal::Node(NodeId(1));
        let before = keyring(&scenario, 7).derive(node);
        scenario.provisioning = Some(vitalmesh_wire::ProvisioningSecret([9; 32]));
        assert_eq!(provisioning_secret(&scenario, 7), [9; 32]);
        assert_eq!(
            provisioning_secret(&scenario, 8),
            [9; 32],
            "the seed no longer matters"
        );
        assert!(keyring(&scenario, 7).derive(node) != before);
        assert!(keyring(&scenario, 7).derive(node) == Keyring::new([9; 32], 4).derive(node));
    }
}

//! The pure pipeline end to end: firmware samples → wire envelope → NEWS2.

use std::time::Duration;

use vitalmesh_core::news2::{self, ParameterSet, Risk};
use vitalmesh_firmware::{LinkAction, Node, NodeConfig};
use vitalmesh_wire::envelope::Keyring;
use vitalmesh_wire::{Body, NodeId, PartitionId, Sample, Timestamp, WireTopic, decode};

const T0: Timestamp = Timestamp::from_secs(1_767_225_600);

/// Samples one node every `interval` until `until`, through the envelope.
fn samples(node: &mut Node, ring: &Keyring, until: Timestamp) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut now = T0;
    while now <= until {
        node.handle_timeout(now);
        while let Some(a) = node.poll_link() {
            if a == LinkAction::Connect {
                node.handle_connected(now);
            }
        }
        while let Some(t) = node.poll_transmit(now) {
            let (partition, id) = (node.partition(), node.id());
            let topic = WireTopic::Data {
                partition,
                node: id,
            };
            let Ok(Body::Batch(b)) = decode(&t.payload, &topic, ring) else {
                panic!("a node's payload must decode")
            };
            out.extend(b.samples);
            let ack = ring.ack_key(id).expect("provisioned").ack(
                partition,
                id,
                t.first_seq + t.samples as u64,
            );
            node.handle_ack(&ack, now);
        }
        now = node
            .poll_timeout()
            .expect("a running node always has a timer");
    }
    out
}

fn risk(s: &Sample) -> Option<Risk> {
    news2::score(&s.vitals, ParameterSet::from_device_faults(s.faults)).risk()
}

#[test]
fn deteriorating_patients_pass_medium_then_high_whatever_their_baseline() {
    let ring = Keyring::new(*b"pipeline-secret!pipeline-secret!", 1000);
    let config = NodeConfig {
        sample_interval: Duration::from_secs(600),
        ..NodeConfig::default()
    };
    for id in 0..100 {
        let seed = 2026;
        let mut node = Node::new(
            NodeId(id),
            PartitionId(0),
            config.clone(),
            seed,
            ring.node_credentials(NodeId(id)),
            T0,
        );
        let episode = node.start_deterioration(T0);
        let end = T0 + episode.ramp + Duration::from_secs(3600);
        let s = samples(&mut node, &ring, end);
        let medium_at = s.iter().position(|x| risk(x) >= Some(Risk::Medium));
        let last_hour: Vec<_> = s.iter().rev().take(6).collect();
        let high = last_hour
            .iter()
            .filter(|x| risk(x) == Some(Risk::High))
            .count();
        assert!(
            medium_at.is_some(),
            "patient {id} (seed {seed}) never reached medium risk"
        );
        assert!(
            high >= 5,
            "patient {id} (seed {seed}) is high in only {high}/6 samples after the ramp"
        );
        // Before onset of the decline the patient is not already high risk.
        assert!(
            risk(&s[0]) < Some(Risk::High),
            "patient {id} (seed {seed}) starts high"
        );
    }
}

#[test]
fn a_fever_makes_every_patient_febrile_by_news2() {
    let ring = Keyring::new(*b"pipeline-secret!pipeline-secret!", 1000);
    let config = NodeConfig {
        sample_interval: Duration::from_secs(300),
        ..NodeConfig::default()
    };
    let mut febrile = 0;
    for id in 0..100 {
        let mut node = Node::new(
            NodeId(id),
            PartitionId(0),
            config.clone(),
            7,
            ring.node_credentials(NodeId(id)),
            T0,
        );
        let fever = node.start_fever(T0);
        let peak = T0 + fever.rise * 2 + Duration::from_secs(3600);
        let s = samples(&mut node, &ring, peak);
        let last = s.last().unwrap();
        let score = news2::score(&last.vitals, ParameterSet::EMPTY);
        let temp_item = score.items[6].unwrap();
        if temp_item >= 1 && last.vitals.temp_decicelsius.unwrap() > 380 {
            febrile += 1;
        }
    }
    // Plateaus reach at least 38.5 °C before circadian swing (±0.25) and
    // device noise (SD 0.05): every patient is febrile.
    assert_eq!(febrile, 100, "only {febrile}/100 febrile at the plateau");
}

//! Any bytes into the envelope's readers and the topic parser: each must
//! return an error or a value, never panic. `peek_acks` parses a body
//! without a key, so it reaches postcard's `Body` decoder with any bytes
//! (the sealed path stops at the tag for anything a fuzzer can make).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitalmesh_wire::envelope::{Keyring, open, open_relay, peek_acks};
use vitalmesh_wire::{NodeId, PartitionId, TopicScheme, WireTopic};

fuzz_target!(|data: &[u8]| {
    static RING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
    let ring = RING.get_or_init(|| Keyring::new([7; 32], 1 << 16));
    let topic = WireTopic::Data {
        partition: PartitionId(0),
        node: NodeId(1),
    };
    let _ = open(data, &topic, ring);
    let _ = open_relay(data, &topic, ring);
    let _ = peek_acks(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TopicScheme::default().parse(text);
        let _ = TopicScheme::client_id_principal(text);
        let _ = vitalmesh_wire::envelope::principal_of_username(text);
    }
});

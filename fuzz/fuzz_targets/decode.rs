//! Any bytes into the envelope decoder and the topic parser: they must
//! return an error or a value, never panic. Whatever decodes must survive a
//! re-encode and decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitalmesh_wire::envelope::{Keyring, encode_to_vec};
use vitalmesh_wire::{KeyLookup, TopicScheme, decode};

fuzz_target!(|data: &[u8]| {
    let ring = Keyring::new(*b"fuzzing-secret-k", 1 << 20);
    if let Ok(body) = decode(data, &ring) {
        let key = ring.key(body.sender()).expect("it decoded, so its sender has a key");
        let again = encode_to_vec(&body, &key).expect("a decoded body re-encodes");
        assert_eq!(decode(&again, &ring), Ok(body));
    }
    if let Ok(topic) = std::str::from_utf8(data) {
        let _ = TopicScheme::default().parse(topic);
    }
});

//! Any bytes from a socket into the MQTT codec: a packet, "need more", or
//! an error — never a panic, and never a claim to have used more bytes
//! than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitalmesh_mesh::mqtt::codec::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, used))) = parse(data, 64 * 1024) {
        assert!(used <= data.len());
    }
});

//! The master seed: given, or drawn and printed so the run can be repeated.

use std::io::Read;

/// A fresh seed from the operating system.
pub(crate) fn draw() -> u64 {
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok()
    {
        return u64::from_le_bytes(bytes);
    }
    // No /dev/urandom: hash whatever differs between runs.
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()))
}

/// The seed to use, announcing a drawn one on stderr.
pub(crate) fn resolve(given: Option<u64>) -> u64 {
    given.unwrap_or_else(|| {
        let seed = draw();
        eprintln!("seed: {seed} (pass --seed {seed} to repeat this run)");
        seed
    })
}

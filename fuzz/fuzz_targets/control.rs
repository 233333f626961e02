//! Any line on the control socket: the JSON request, then the injected
//! action's fields, as `vitalmesh inject` sends them. Errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitalmesh_mesh::control::ControlRequest;

fuzz_target!(|data: &[u8]| {
    static LIMITS: std::sync::OnceLock<vitalmesh_scenario::Limits> = std::sync::OnceLock::new();
    let limits = LIMITS.get_or_init(|| {
        vitalmesh_scenario::parse(
            "fuzz.toml",
            "[scenario]\nname = \"fuzz\"\nduration = \"1h\"\n\
             [population]\nwards = 4\nnodes_per_ward = 25\n",
        )
        .expect("a valid scenario")
        .limits()
    });
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(request) = serde_json::from_str::<ControlRequest>(line) {
        let _ = vitalmesh_scenario::parse_injection(&request.toml, limits);
    }
    let _ = vitalmesh_scenario::parse_injection(line, limits);
});

//! File-descriptor budget. Each simulated client holds one socket here (and
//! one at the broker, which runs in its own process with its own limit).

use rustix::process::{Resource, getrlimit, setrlimit};

use crate::MeshError;

/// Descriptors kept free for the runtime itself (listeners, pipes, logs).
pub const RESERVED_FDS: u64 = 128;

/// Raises the soft descriptor limit to the hard limit; returns the new soft
/// limit.
pub fn raise_fd_limit() -> u64 {
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        if limit.current.is_none_or(|c| c < hard) {
            limit.current = Some(hard);
            let _ = setrlimit(Resource::Nofile, limit);
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Checks that `clients` sockets fit, with a message that says how far one
/// process goes.
pub fn check_budget(clients: u64) -> Result<(), MeshError> {
    let limit = raise_fd_limit();
    let needed = clients + RESERVED_FDS;
    if needed > limit {
        return Err(MeshError::config(
            "nodes",
            format!(
                "'{clients}' clients need about {needed} file descriptors but the limit here is {limit}; \
                 one process runs at most {} nodes plus aggregators (raise `ulimit -n` for more)",
                limit.saturating_sub(RESERVED_FDS)
            ),
        ));
    }
    Ok(())
}

//! The run's clock: tokio's monotonic time mapped onto wall-clock
//! microseconds, so the pure core sees ordinary Unix times (circadian
//! rhythms need the time of day) that never jump backwards.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use vitalmesh_wire::Timestamp;

/// Converts between tokio instants and [`Timestamp`]s.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
    start_ts: Timestamp,
}

impl RunClock {
    /// A clock that reads the wall time once, now.
    pub fn start() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            start: Instant::now(),
            start_ts: Timestamp::from_micros(wall.as_micros() as u64),
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.start_ts + self.start.elapsed()
    }

    /// When the run started.
    pub fn started_at(&self) -> Timestamp {
        self.start_ts
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The instant at which `t` falls (the past maps to now).
    pub fn instant_of(&self, t: Timestamp) -> Instant {
        self.start + t.saturating_duration_since(self.start_ts)
    }
}

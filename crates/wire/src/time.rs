//! Time as the pure core sees it: a plain number handed in by the caller.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time: microseconds since the Unix epoch (UTC).
///
/// The pure crates never read a clock. The runtime converts its clock (real or
/// virtual) into a `Timestamp` and passes it in as `now`. Arithmetic saturates
/// instead of panicking, since values can come from untrusted peers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(0);
    /// The latest representable time; used as "never".
    pub const MAX: Self = Self(u64::MAX);

    /// Microseconds since the Unix epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// Whole seconds since the Unix epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1_000_000))
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Seconds since the Unix epoch, as a float (for physiology curves).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `self + d`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(micros))
    }

    /// `self - d`, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Self(self.0.saturating_sub(micros))
    }

    /// How long after `earlier` this is; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// Microseconds into the UTC day (0 ..= 86_399_999_999).
    pub const fn micros_of_day(self) -> u64 {
        self.0 % 86_400_000_000
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        self.saturating_add(rhs)
    }
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Self;
    fn sub(self, rhs: Duration) -> Self {
        self.saturating_sub(rhs)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        assert_eq!(Timestamp::MAX + Duration::from_secs(1), Timestamp::MAX);
        assert_eq!(Timestamp::EPOCH - Duration::from_secs(1), Timestamp::EPOCH);
        assert_eq!(
            Timestamp::EPOCH.saturating_duration_since(Timestamp::from_secs(5)),
            Duration::ZERO
        );
        assert_eq!(
            Timestamp::from_secs(7).saturating_duration_since(Timestamp::from_secs(5)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn micros_of_day_wraps_at_midnight() {
        let midnight = Timestamp::from_secs(86_400 * 20_000);
        assert_eq!(midnight.micros_of_day(), 0);
        assert_eq!(
            (midnight + Duration::from_secs(3600)).micros_of_day(),
            3_600_000_000
        );
    }
}

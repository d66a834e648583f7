//! Time as the store keeps it: Unix milliseconds (UTC) in the database, RFC 3339
//! wherever a person or an agent reads it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// A point in time with millisecond resolution, stored as Unix milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    /// The timestamp `millis` milliseconds after the Unix epoch.
    pub fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// This timestamp moved `duration` into the future (saturating).
    pub fn after(self, duration: Duration) -> Timestamp {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// How long ago `self` was, seen from `now`; zero if `self` is in the future.
    pub fn age_at(self, now: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(now.0.saturating_sub(self.0)).unwrap_or(0))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-21T13:26:57.123Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset = Duration::from_millis(self.0.unsigned_abs());
        let time = if self.0 >= 0 {
            UNIX_EPOCH.checked_add(offset)
        } else {
            UNIX_EPOCH.checked_sub(offset)
        };
        match time {
            Some(time) => write!(f, "{}", humantime::format_rfc3339_millis(time)),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_rfc3339_with_milliseconds() {
        assert_eq!(
            Timestamp::from_millis(1_700_000_000_123).to_string(),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn age_is_never_negative() {
        let then = Timestamp::from_millis(10_000);
        assert_eq!(
            then.age_at(Timestamp::from_millis(12_500)),
            Duration::from_millis(2_500)
        );
        assert_eq!(then.age_at(Timestamp::from_millis(5_000)), Duration::ZERO);
    }

    #[test]
    fn after_saturates() {
        let end = Timestamp::from_millis(i64::MAX - 1).after(Duration::from_secs(10));
        assert_eq!(end.as_millis(), i64::MAX);
    }
}

//! Rate limits, with `governor`.
//!
//! Two limits, both held in memory by one [`Store`](crate::Store) (so per
//! server process):
//!
//! * **writes** per (conversation, session): messages, status and heartbeats.
//!   Only calls that authenticated spend a session's quota, so nobody can
//!   starve a session by sending bad tokens in its name. Default 600 per minute
//!   with a burst of the same size; 0 turns the limit off.
//! * **failed authentications** per conversation. Within the budget a wrong
//!   token is refused as invalid and audited; past it, wrong tokens are refused
//!   as rate limited and no longer audited or logged, so a flood of bad tokens
//!   costs the store nothing. A correct token is never refused by this limit:
//!   a lockout would let anyone who knows a conversation id starve it, the
//!   very flaw of the original's limiter. Guessing is hopeless anyway: a token
//!   is 256 random bits.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::{ConversationId, SessionId};
use crate::error::{Error, Result};

/// Keyed limiters grow by one entry per key; past this many entries, entries
/// that are back to a full budget are dropped.
const SHRINK_ABOVE: usize = 4096;

/// The rate limits of one store.
pub(crate) struct Limits {
    /// Writes per (conversation, session); `None` when turned off.
    writes: Option<DefaultKeyedRateLimiter<(ConversationId, SessionId)>>,
    /// Failed authentications per conversation.
    failures: DefaultKeyedRateLimiter<ConversationId>,
    clock: DefaultClock,
}

/// A quota of `per_minute` with a burst of the same size.
fn per_minute(per_minute: NonZeroU32) -> Quota {
    Quota::per_minute(per_minute).allow_burst(per_minute)
}

impl Limits {
    /// Limits of `writes_per_minute` (0 = off) and `failures_per_minute`.
    pub(crate) fn new(writes_per_minute: u32, failures_per_minute: NonZeroU32) -> Limits {
        Limits {
            writes: NonZeroU32::new(writes_per_minute)
                .map(|rate| RateLimiter::keyed(per_minute(rate))),
            failures: RateLimiter::keyed(per_minute(failures_per_minute)),
            clock: DefaultClock::default(),
        }
    }

    /// Spends one write of the session's quota, or says when to retry.
    pub(crate) fn check_write(
        &self,
        conversation: &ConversationId,
        session: SessionId,
    ) -> Result<()> {
        let Some(writes) = &self.writes else {
            return Ok(());
        };
        if writes.len() > SHRINK_ABOVE {
            writes.retain_recent();
        }
        writes
            .check_key(&(conversation.clone(), session))
            .map_err(|not_until| Error::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }

    /// Records a failed authentication: `Ok` while the conversation's failure
    /// budget lasts, else `Err` with the time until it allows another.
    pub(crate) fn record_failure(&self, conversation: &ConversationId) -> Result<(), Duration> {
        if self.failures.len() > SHRINK_ABOVE {
            self.failures.retain_recent();
        }
        self.failures
            .check_key(conversation)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation(n: u8) -> ConversationId {
        format!("conv_{:016x}", n).parse().unwrap()
    }

    #[test]
    fn writes_are_limited_per_session() {
        let limits = Limits::new(3, NonZeroU32::MIN);
        let (one, two) = (conversation(1), conversation(2));
        for _ in 0..3 {
            limits.check_write(&one, SessionId::A).unwrap();
        }
        let error = limits.check_write(&one, SessionId::A).unwrap_err();
        assert!(
            matches!(error, Error::RateLimited { retry_after } if retry_after > Duration::ZERO)
        );
        // Other sessions keep their own quota.
        limits.check_write(&one, SessionId::B).unwrap();
        limits.check_write(&two, SessionId::A).unwrap();
    }

    #[test]
    fn zero_turns_the_write_limit_off() {
        let limits = Limits::new(0, NonZeroU32::MIN);
        for _ in 0..10_000 {
            limits.check_write(&conversation(1), SessionId::A).unwrap();
        }
    }

    #[test]
    fn failures_have_a_budget_per_conversation() {
        let limits = Limits::new(0, NonZeroU32::new(2).unwrap());
        let one = conversation(1);
        assert!(limits.record_failure(&one).is_ok());
        assert!(limits.record_failure(&one).is_ok());
        let wait = limits.record_failure(&one).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30));
        // Another conversation is not affected.
        assert!(limits.record_failure(&conversation(2)).is_ok());
    }
}

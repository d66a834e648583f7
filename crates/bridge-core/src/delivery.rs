//! Consuming reads: handing messages out so that none is lost at a crash.
//!
//! A message handed to a client can be lost on the way: the server is killed
//! while it writes the answer, the client dies before reading it, the
//! connection is cut. So a consuming read does not confirm what it hands
//! out. Per (conversation, session) the store keeps two cursors:
//!
//! * `acked_id`: every message up to it is **confirmed**: it reached a
//!   client of the session;
//! * `delivered_id`: the highest id ever handed out. The messages between
//!   the two are **pending**.
//!
//! [`Store::deliver`] first confirms what the caller says reached it (an
//! `ack`: every message up to an id), then hands out the messages after the
//! confirmed ones, pending ones first. A message at or below `delivered_id`
//! that comes again is marked [`Message::redelivered`]. So a client that
//! crashed, or whose answer was lost, gets what it missed on its next call;
//! a client that confirms what it received sees each message once. (The
//! MCP server confirms for agents that do not: see `bridge-mcp`.)
//!
//! [`Store::check`] is the in-process form: what it returns is in the
//! caller's hands, so it is confirmed in the same transaction.
//! [`Store::ack`] confirms without reading. A read that finds nothing and
//! confirms nothing new writes nothing.
//!
//! Concurrent consumers of one session lose nothing either: each read is a
//! compare-and-set of the cursors it saw, repeated if another read moved
//! them first; what one has not confirmed, the other gets too, marked.

use crate::auth::Credentials;
use crate::error::{Error, Result};
use crate::message::{Inbox, Message, message_read, read_limit};
use crate::store::Store;
use crate::writer::{Batch, Lookups, Operation};

/// The cursors of a session, as a read saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursors {
    acked_id: i64,
    delivered_id: i64,
}

impl Cursors {
    /// The cursors a read saw.
    fn of(read: &Inbox) -> Cursors {
        Cursors {
            acked_id: read.acked_id,
            delivered_id: read.delivered_id,
        }
    }

    /// The confirmed position after an acknowledgment up to `ack`, or why
    /// it is refused.
    fn confirmed(self, ack: Option<i64>) -> Result<i64> {
        match ack {
            None => Ok(self.acked_id),
            Some(id) if id < 0 => Err(Error::invalid(
                "ack",
                format!("must be a message id, 0 or more, got {id}"),
            )),
            Some(id) if id > self.delivered_id => Err(Error::invalid(
                "ack",
                format!(
                    "message {id} was not handed to this session yet (the last one handed out is {})",
                    self.delivered_id
                ),
            )),
            Some(id) => Ok(self.acked_id.max(id)),
        }
    }

    /// The cursors once everything up to `confirmed` is confirmed and the
    /// messages up to `handed` (if any) handed out; with `keep`, those are
    /// in the caller's hands and confirmed too.
    fn after(self, confirmed: i64, handed: Option<i64>, keep: bool) -> Cursors {
        let mut next = Cursors {
            acked_id: confirmed,
            ..self
        };
        if let Some(last) = handed {
            next.delivered_id = next.delivered_id.max(last);
            if keep {
                next.acked_id = next.acked_id.max(last);
            }
        }
        next
    }
}

impl Store {
    /// Confirms every message up to `ack` (if given), then hands out up to
    /// `limit` messages the session has not confirmed, in id order: pending
    /// ones first, marked [`Message::redelivered`], then new ones. They
    /// stay pending until confirmed (see the module documentation).
    pub async fn deliver(
        &self,
        credentials: &Credentials,
        ack: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        self.consume(credentials, ack, false, limit).await
    }

    /// Returns up to `limit` messages the session has not confirmed, in id
    /// order, and confirms them: the in-process form of [`Store::deliver`],
    /// for a caller that holds the result in its hands. Two calls never
    /// return the same message, unless it had been handed out before and
    /// not confirmed (then it is marked redelivered).
    pub async fn check(&self, credentials: &Credentials, limit: u32) -> Result<Vec<Message>> {
        self.consume(credentials, None, true, limit).await
    }

    /// Confirms that the session received every message up to `up_to`,
    /// which must have been handed out. Confirming less than is already
    /// confirmed changes nothing.
    pub async fn ack(&self, credentials: &Credentials, up_to: i64) -> Result<()> {
        loop {
            let read = self.inbox(DELIVER_SQL, credentials, Some(up_to), 1).await?;
            let seen = Cursors::of(&read);
            let confirmed = seen.confirmed(Some(up_to))?;
            if confirmed == seen.acked_id {
                return self.touch(credentials, read.last_seen, read.now).await;
            }
            let op = ConsumeOp {
                credentials: credentials.clone(),
                ack: Some(up_to),
                seen,
                handed: None,
                keep: false,
            };
            if self.submit(op).await? {
                return Ok(());
            }
        }
    }

    async fn consume(
        &self,
        credentials: &Credentials,
        ack: Option<i64>,
        keep: bool,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let limit = read_limit(limit)?;
        loop {
            let read = self.inbox(DELIVER_SQL, credentials, ack, limit).await?;
            let seen = Cursors::of(&read);
            let Inbox {
                mut messages,
                last_seen,
                now,
                ..
            } = read;
            let confirmed = seen.confirmed(ack)?;
            let handed = match (messages.first(), messages.last()) {
                (Some(first), Some(last)) => Some(Handed {
                    first: first.id,
                    last: last.id,
                    count: messages.len(),
                    redelivered: messages
                        .iter()
                        .filter(|message| message.id <= seen.delivered_id)
                        .count(),
                }),
                _ => None,
            };
            if handed.is_none() && confirmed == seen.acked_id {
                self.touch(credentials, last_seen, now).await?;
                return Ok(messages);
            }
            let op = ConsumeOp {
                credentials: credentials.clone(),
                ack,
                seen,
                handed,
                keep,
            };
            if self.submit(op).await? {
                for message in &mut messages {
                    message.redelivered = message.id <= seen.delivered_id;
                }
                return Ok(messages);
            }
            // Another reader of this session moved its cursors first: look
            // again.
        }
    }
}

/// The messages a consuming read hands out, for [`Store::inbox`]: those
/// after the confirmed ones (and after $4, an acknowledged id, if given), at
/// most $3.
const DELIVER_SQL: &str = message_read!(
    "SELECT * FROM message
     WHERE conversation_id = $1 AND recipient = $2
       AND id > (SELECT CASE WHEN coalesce($4, 0) > acked_id THEN $4 ELSE acked_id END
                 FROM session
                 WHERE conversation_id = $1 AND session = $2)
     ORDER BY id LIMIT $3"
);

/// The messages a consuming read found.
#[derive(Clone, Copy)]
struct Handed {
    first: i64,
    last: i64,
    count: usize,
    redelivered: usize,
}

/// Confirms and hands out under the write lock, if the session's cursors
/// are still those the read saw (otherwise returns `false` and changes
/// nothing).
struct ConsumeOp {
    credentials: Credentials,
    ack: Option<i64>,
    seen: Cursors,
    handed: Option<Handed>,
    /// What is handed out is confirmed at once.
    keep: bool,
}

impl Operation for ConsumeOp {
    type Output = bool;

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.credentials.conversation_id, self.credentials.session);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<bool> {
        batch.authenticate(&self.credentials)?;
        let (conversation_id, session) =
            (&self.credentials.conversation_id, self.credentials.session);
        let Some(row) = batch.session(conversation_id, session) else {
            return Ok(false);
        };
        let now = Cursors {
            acked_id: row.acked_id,
            delivered_id: row.delivered_id,
        };
        if now != self.seen {
            return Ok(false);
        }
        let confirmed = now.confirmed(self.ack)?;
        let next = now.after(confirmed, self.handed.map(|handed| handed.last), self.keep);
        if next != now
            && let Some(row) = batch.session_mut(conversation_id, session)
        {
            row.acked_id = next.acked_id;
            row.delivered_id = next.delivered_id;
        }
        let (action, detail) = match self.handed {
            Some(handed) => (
                "messages_read",
                serde_json::json!({
                    "count": handed.count,
                    "first_id": handed.first,
                    "last_id": handed.last,
                    "redelivered": handed.redelivered,
                    "acked_id": next.acked_id,
                }),
            ),
            None => (
                "messages_acked",
                serde_json::json!({ "acked_id": next.acked_id }),
            ),
        };
        batch.audit(Some(conversation_id), Some(session), action, detail);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEN: Cursors = Cursors {
        acked_id: 5,
        delivered_id: 12,
    };

    #[test]
    fn an_ack_confirms_up_to_what_was_handed_out() {
        assert_eq!(SEEN.confirmed(None).unwrap(), 5);
        assert_eq!(SEEN.confirmed(Some(12)).unwrap(), 12);
        assert_eq!(SEEN.confirmed(Some(3)).unwrap(), 5, "never backwards");
        let error = SEEN.confirmed(Some(13)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid ack: message 13 was not handed to this session yet (the last one handed out is 12)"
        );
        let error = SEEN.confirmed(Some(-1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid ack: must be a message id, 0 or more, got -1"
        );
    }

    #[test]
    fn what_is_handed_out_stays_pending_unless_kept() {
        let next = SEEN.after(5, Some(14), false);
        assert_eq!((next.acked_id, next.delivered_id), (5, 14));
        let next = SEEN.after(8, Some(14), true);
        assert_eq!((next.acked_id, next.delivered_id), (14, 14));
        // A redelivery below the high-water mark leaves it.
        let next = SEEN.after(5, Some(9), false);
        assert_eq!((next.acked_id, next.delivered_id), (5, 12));
        // Nothing found: only the confirmation.
        assert_eq!(SEEN.after(10, None, false).acked_id, 10);
    }
}

//! Whether an answer reached its client: what lets `check_messages` and
//! `wait_for_messages` confirm a delivery without losing it.
//!
//! The store keeps what a consuming read handed out *pending* until the
//! client confirms it (`bridge_core::Store::deliver`). An agent written for
//! the original bridge never says so; it just calls again. So the server
//! confirms for it: a client's next consuming call confirms the previous
//! one's messages, but only if
//!
//! * it comes from the same client (the same stdio server process, or the
//!   same MCP session over HTTP: its [`Deliveries`]): a new process or
//!   session is a client that may have lost its last answer; and
//! * the transport wrote the previous answer to the end ([`Receipt`]): the
//!   stdio transport once the line is written and flushed, the HTTP one once
//!   the response body has been sent whole. A server killed while writing,
//!   a response dropped for a cancelled request, a connection cut in the
//!   middle of the body: the receipt stays unwritten, and the messages come
//!   again, marked as redelivered; and
//! * over HTTP, the answer reached the client: the next call comes on the
//!   same TCP connection, or the client closed that connection cleanly (see
//!   `connection`). An answer written whole into a connection that was then
//!   cut, before the client read it, comes again.
//!
//! A client may also say what it processed: `ack`, the id of the last
//! message it is done with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bridge_core::{ConversationId, SessionId};

use crate::connection::Connection;
use rmcp::RoleServer;
use rmcp::service::RequestContext;

/// A channel remembers the receipts of this many conversations' sessions;
/// beyond, it forgets them (their next delivery then repeats the last one,
/// marked).
const REMEMBERED: usize = 1024;

/// Whether one answer was written whole to its client, and on which HTTP
/// connection (none over stdio). The transport makes one per request and
/// marks it; the handler of a consuming read keeps it.
#[derive(Clone, Debug, Default)]
pub struct Receipt(Arc<Written>);

#[derive(Debug, Default)]
struct Written {
    done: AtomicBool,
    connection: Option<Connection>,
}

impl Receipt {
    /// A receipt for an answer on `connection`.
    pub(crate) fn on(connection: Option<Connection>) -> Receipt {
        Receipt(Arc::new(Written {
            done: AtomicBool::new(false),
            connection,
        }))
    }

    /// A receipt already marked: for a caller whose transport gives none.
    fn trusted() -> Receipt {
        let receipt = Receipt::default();
        receipt.written();
        receipt
    }

    /// The answer was written whole.
    pub fn written(&self) {
        self.0.done.store(true, Ordering::Release);
    }

    /// Whether the answer of this receipt reached the client whose next
    /// request carries `next`: it was written whole, and (over HTTP) the
    /// next request came on the same connection, or the client closed that
    /// connection cleanly (see `connection`).
    fn reached(&self, next: &Receipt) -> bool {
        if !self.0.done.load(Ordering::Acquire) {
            return false;
        }
        match (&self.0.connection, &next.0.connection) {
            (None, _) => true,
            (Some(was), Some(now)) if was.is(now) => true,
            (Some(was), _) => was.closed_by_client(),
        }
    }

    /// The receipt the transport attached to the request of `context`: in
    /// its extensions (stdio), or in the HTTP request's (HTTP). A transport
    /// that attaches none is trusted to deliver what it is given.
    pub(crate) fn of(context: &RequestContext<RoleServer>) -> Receipt {
        context
            .extensions
            .get::<Receipt>()
            .or_else(|| {
                context
                    .extensions
                    .get::<http::request::Parts>()
                    .and_then(|parts| parts.extensions.get::<Receipt>())
            })
            .cloned()
            .unwrap_or_else(Receipt::trusted)
    }
}

/// A session of a conversation: whose messages a consuming read hands out.
type Reader = (ConversationId, SessionId);

/// What one client (a stdio process's, or one MCP session's) was handed
/// last, per (conversation, session): up to which message, and the receipt
/// of that answer.
#[derive(Clone, Default)]
pub(crate) struct Deliveries {
    latest: Arc<Mutex<HashMap<Reader, (Receipt, i64)>>>,
}

impl Deliveries {
    /// What a consuming call for `key`, whose answer will carry `receipt`,
    /// confirms: `ack` if the client gave one; else the messages this client
    /// was handed last, if that answer reached it; else nothing.
    pub(crate) fn confirm(&self, key: &Reader, ack: Option<i64>, receipt: &Receipt) -> Option<i64> {
        if ack.is_some() {
            return ack;
        }
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        latest
            .get(key)
            .filter(|(handed, _)| handed.reached(receipt))
            .map(|(_, up_to)| *up_to)
    }

    /// Records that the answer of `receipt` hands `key` the messages up to
    /// `up_to`.
    pub(crate) fn handed(&self, key: Reader, receipt: Receipt, up_to: i64) {
        let mut latest = self
            .latest
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if latest.len() >= REMEMBERED && !latest.contains_key(&key) {
            latest.clear();
        }
        latest.insert(key, (receipt, up_to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Reader {
        ("conv_0123456789abcdef".parse().unwrap(), SessionId::B)
    }

    #[test]
    fn a_call_confirms_the_previous_answer_only_once_it_was_written() {
        let client = Deliveries::default();
        let next = Receipt::on(None);
        assert_eq!(
            client.confirm(&key(), None, &next),
            None,
            "nothing handed yet"
        );
        let first = Receipt::on(None);
        client.handed(key(), first.clone(), 10);
        assert_eq!(client.confirm(&key(), None, &next), None, "not written yet");
        first.written();
        assert_eq!(client.confirm(&key(), None, &next), Some(10));
        assert_eq!(
            client.confirm(&key(), Some(7), &next),
            Some(7),
            "the client's word wins"
        );
    }

    #[test]
    fn another_client_confirms_nothing() {
        let one = Deliveries::default();
        let receipt = Receipt::on(None);
        receipt.written();
        one.handed(key(), receipt, 10);
        assert_eq!(
            Deliveries::default().confirm(&key(), None, &Receipt::on(None)),
            None
        );
    }

    #[test]
    fn over_http_the_answer_reached_the_client_if_it_calls_on_the_same_connection() {
        let client = Deliveries::default();
        let (first, second) = (Connection::default(), Connection::default());
        let answer = Receipt::on(Some(first.clone()));
        answer.written();
        client.handed(key(), answer, 10);
        assert_eq!(
            client.confirm(&key(), None, &Receipt::on(Some(first.clone()))),
            Some(10)
        );
        assert_eq!(
            client.confirm(&key(), None, &Receipt::on(Some(second))),
            None,
            "another connection, the first still open: perhaps cut"
        );
    }
}

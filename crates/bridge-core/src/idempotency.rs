//! Idempotency keys: a write that a client retries with the same key returns
//! what the first one returned, and stores nothing.
//!
//! A client whose `send` (or `assign_task`) got no answer — its server was
//! killed, its connection cut — cannot know whether the write happened. With
//! an [`IdempotencyKey`] it simply sends again: the key is looked up under the
//! write lock, in the same transaction as the write, so that of two attempts
//! racing through different processes exactly one writes. The same key with
//! different content is refused, so that a key reused by mistake does not
//! silently swallow a new message.
//!
//! Keys belong to one session of one conversation, and are kept (as their
//! SHA-256, with a digest of the request) as long as the conversation.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::Credentials;
use crate::error::{Error, Result};
use crate::writer::{Batch, IdempotencyRow, IdempotencySlot, Lookups};

/// The longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 100;

/// A client's key for one write: 1 to [`MAX_IDEMPOTENCY_KEY_CHARS`]
/// characters, e.g. a UUID.
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key as the client gave it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IdempotencyKey {
    type Err = Error;

    fn from_str(key: &str) -> Result<IdempotencyKey> {
        let chars = key.chars().count();
        if !(1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&chars) {
            return Err(Error::invalid(
                "idempotency_key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters, got {chars}"),
            ));
        }
        if key.chars().any(char::is_control) {
            return Err(Error::invalid(
                "idempotency_key",
                "must not contain control characters",
            ));
        }
        Ok(IdempotencyKey(key.to_owned()))
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdempotencyKey").field(&self.0).finish()
    }
}

/// The writes that take a key, by their tool's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tool {
    Send,
    AssignTask,
}

impl Tool {
    fn as_str(self) -> &'static str {
        match self {
            Tool::Send => "send_to_partner",
            Tool::AssignTask => "assign_task",
        }
    }
}

/// One write under a key: where the key is kept, and the digest of the
/// request it came with.
pub(crate) struct Idempotent {
    slot: IdempotencySlot,
    tool: Tool,
    request: [u8; 32],
}

/// What an earlier write under the same key returned.
pub(crate) struct Replay {
    /// The message or task id.
    pub(crate) result_id: i64,
    /// When it was written (Unix milliseconds).
    pub(crate) created_at: i64,
}

impl Idempotent {
    /// The write of `tool` by `credentials` under `key`, whose content is
    /// `request` (serialized to JSON for its digest, before any redaction).
    pub(crate) fn new(
        credentials: &Credentials,
        key: &IdempotencyKey,
        tool: Tool,
        request: &impl Serialize,
    ) -> Idempotent {
        let content = serde_json::to_vec(&(tool.as_str(), request)).unwrap_or_default();
        Idempotent {
            slot: (
                credentials.conversation_id.clone(),
                credentials.session,
                Sha256::digest(key.as_str().as_bytes()).into(),
            ),
            tool,
            request: Sha256::digest(content).into(),
        }
    }

    /// Asks the writer for the key's row.
    pub(crate) fn lookups(&self, out: &mut Lookups) {
        out.idempotency(&self.slot);
    }

    /// What the earlier write under this key returned, if there was one
    /// with the same content; an error if the key came with other content.
    pub(crate) fn replay(&self, batch: &Batch<'_>) -> Result<Option<Replay>> {
        match batch.idempotent(&self.slot) {
            None => Ok(None),
            Some(row) if self.same_request(row) => Ok(Some(Replay {
                result_id: row.result_id,
                created_at: row.created_at,
            })),
            Some(_) => Err(Error::invalid(
                "idempotency_key",
                "this session already used the key for a different request; \
                 a retry must repeat the request exactly, and a new request needs a new key",
            )),
        }
    }

    fn same_request(&self, row: &IdempotencyRow) -> bool {
        row.tool == self.tool.as_str() && row.request_digest == self.request
    }

    /// Records that the write returned `result_id`.
    pub(crate) fn record(&self, batch: &mut Batch<'_>, result_id: i64) {
        batch.record_idempotent(
            self.slot.clone(),
            self.tool.as_str(),
            self.request,
            result_id,
        );
    }
}

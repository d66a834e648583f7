//! Messages: sending (with redaction and idempotency keys), and reading
//! without consuming.
//!
//! [`Store::send`] stores a message for the partner session. Consuming reads,
//! which hand messages out and move the session's cursors, are in `delivery`;
//! here are the reads that change nothing: [`Store::peek`] (what the session
//! has not confirmed yet), [`Store::peek_after`] (from a place the reader
//! keeps itself), [`Store::history`] (by id, both directions, whatever the
//! cursors say). Reading never deletes.
//!
//! A read refreshes only the session's `last_seen`, at most once per
//! [`StoreOptions::last_seen_resolution`](crate::StoreOptions::last_seen_resolution).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::{ConversationId, Credentials, SessionId};
use crate::error::{Error, Result};
use crate::idempotency::{IdempotencyKey, Idempotent, Tool};
use crate::kinds::Sender;
use crate::redact;
use crate::store::{CallerRow, Store};
use crate::time::Timestamp;
use crate::writer::{Batch, Lookups, MessageRow, Operation};

/// The longest message body, in characters.
pub const MAX_BODY_CHARS: usize = 50_000;

/// The most paths in `files_involved`.
pub const MAX_FILES: usize = 20;

/// The longest path in `files_involved`, in characters.
pub const MAX_FILE_CHARS: usize = 4_096;

/// The longest metadata object, in characters of JSON.
pub const MAX_METADATA_CHARS: usize = 10_000;

/// The most messages one read returns.
pub const MAX_READ_LIMIT: u32 = 1_000;

/// What kind of message it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    /// Needs an answer.
    Question,
    /// For information (the default).
    #[default]
    Info,
    /// A suggestion to accept or refuse.
    Proposal,
    /// The sender cannot go on without help.
    Blocked,
    /// The sender finished.
    Complete,
}

impl ActionType {
    /// Every action type, in the order the original bridge lists them.
    pub const ALL: [ActionType; 5] = [
        ActionType::Question,
        ActionType::Info,
        ActionType::Proposal,
        ActionType::Blocked,
        ActionType::Complete,
    ];

    /// The name used in storage and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::Question => "question",
            ActionType::Info => "info",
            ActionType::Proposal => "proposal",
            ActionType::Blocked => "blocked",
            ActionType::Complete => "complete",
        }
    }
}

impl FromStr for ActionType {
    type Err = Error;

    fn from_str(s: &str) -> Result<ActionType> {
        ActionType::ALL
            .into_iter()
            .find(|action| action.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "action_type",
                    "expected one of question, info, proposal, blocked, complete",
                )
            })
    }
}

impl fmt::Display for ActionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message to send.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct NewMessage {
    /// The text, at most [`MAX_BODY_CHARS`] characters.
    pub body: String,
    /// What kind of message it is.
    pub action_type: ActionType,
    /// Paths the message is about, at most [`MAX_FILES`].
    pub files_involved: Vec<String>,
    /// Free-form metadata, a JSON object of at most [`MAX_METADATA_CHARS`].
    pub metadata: Option<Map<String, Value>>,
    /// With a key, a retry of the same message by the same session stores
    /// nothing and returns the first one's result.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl NewMessage {
    /// An `info` message with `body` and nothing else.
    pub fn new(body: impl Into<String>) -> NewMessage {
        NewMessage {
            body: body.into(),
            ..NewMessage::default()
        }
    }
}

/// What [`Store::send`] returns.
#[derive(Clone, Debug, Serialize)]
pub struct SentMessage {
    /// The message id (ids increase in commit order).
    pub id: i64,
    /// When it was stored.
    pub created_at: Timestamp,
    /// The kinds of secret that were redacted before storing; empty if none.
    pub redactions: Vec<&'static str>,
    /// The message was sent before, under the same idempotency key: nothing
    /// was stored this time.
    pub replayed: bool,
}

impl SentMessage {
    /// Whether anything was redacted.
    pub fn redacted(&self) -> bool {
        !self.redactions.is_empty()
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    /// The message id.
    pub id: i64,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Who sent it.
    pub from: Sender,
    /// The receiving session.
    pub to: SessionId,
    /// The text, after redaction.
    pub body: String,
    /// What kind of message it is.
    pub action_type: ActionType,
    /// Paths the message is about.
    pub files_involved: Vec<String>,
    /// Metadata, after redaction.
    pub metadata: Option<Map<String, Value>>,
    /// Whether redaction changed the body or metadata.
    pub redacted: bool,
    /// When it was stored.
    pub created_at: Timestamp,
    /// Handed to the session before, without its receipt being confirmed:
    /// it may have been seen already (see [`Store::deliver`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub redelivered: bool,
}

/// Checks a read limit: 1 to [`MAX_READ_LIMIT`].
pub(crate) fn read_limit(limit: u32) -> Result<u32> {
    if (1..=MAX_READ_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(Error::invalid(
            "limit",
            format!("must be 1 to {MAX_READ_LIMIT}, got {limit}"),
        ))
    }
}

/// Rejects text that SQLite and most readers cannot carry.
fn no_nul(field: &'static str, text: &str) -> Result<()> {
    if text.contains('\0') {
        return Err(Error::invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

/// Checks the bounds of a message and redacts it, before it goes near the
/// writer. Returns the row to store and the kinds of secret found.
fn prepare(
    credentials: &Credentials,
    message: NewMessage,
) -> Result<(MessageRow, Vec<&'static str>, Option<Idempotent>)> {
    let chars = message.body.chars().count();
    if message.body.trim().is_empty() {
        return Err(Error::invalid("message", "must not be empty"));
    }
    if chars > MAX_BODY_CHARS {
        return Err(Error::invalid(
            "message",
            format!("must be at most {MAX_BODY_CHARS} characters, got {chars}"),
        ));
    }
    no_nul("message", &message.body)?;
    if message.files_involved.len() > MAX_FILES {
        return Err(Error::invalid(
            "files_involved",
            format!(
                "at most {MAX_FILES} paths, got {}",
                message.files_involved.len()
            ),
        ));
    }
    for path in &message.files_involved {
        let chars = path.chars().count();
        if chars == 0 || chars > MAX_FILE_CHARS {
            return Err(Error::invalid(
                "files_involved",
                format!("each path must be 1 to {MAX_FILE_CHARS} characters, got {chars}"),
            ));
        }
        no_nul("files_involved", path)?;
    }
    let idempotent = message.idempotency_key.as_ref().map(|key| {
        let request = (
            &message.body,
            message.action_type.as_str(),
            &message.files_involved,
            &message.metadata,
        );
        Idempotent::new(credentials, key, Tool::Send, &request)
    });

    let redaction = redact::redact(&message.body);
    let mut kinds = redaction.kinds.clone();
    let body = redaction.text.into_owned();
    let mut files = Value::from(message.files_involved);
    redact::redact_json(&mut files, &mut kinds);
    let metadata = match message.metadata {
        Some(metadata) => {
            let mut metadata = Value::Object(metadata);
            let length = metadata.to_string().chars().count();
            if length > MAX_METADATA_CHARS {
                return Err(Error::invalid(
                    "metadata",
                    format!(
                        "must be at most {MAX_METADATA_CHARS} characters of JSON, got {length}"
                    ),
                ));
            }
            redact::redact_json(&mut metadata, &mut kinds);
            Some(metadata.to_string())
        }
        None => None,
    };
    let row = MessageRow::new(
        credentials.conversation_id.clone(),
        credentials.session.into(),
        credentials.session.partner(),
        body,
        message.action_type.as_str(),
        files.to_string(),
        metadata,
        !kinds.is_empty(),
    );
    Ok((row, kinds, idempotent))
}

impl Store {
    /// Sends a message to the partner session, after redacting secrets from
    /// its body and metadata.
    pub async fn send(
        &self,
        credentials: &Credentials,
        message: NewMessage,
    ) -> Result<SentMessage> {
        let (row, redactions, idempotent) = prepare(credentials, message)?;
        let sent = self
            .submit(SendOp {
                credentials: credentials.clone(),
                row,
                idempotent,
            })
            .await?;
        tracing::debug!(
            conversation_id = %credentials.conversation_id,
            session = %credentials.session,
            message_id = sent.id,
            redacted = !redactions.is_empty(),
            replayed = sent.replayed,
            "message sent"
        );
        Ok(SentMessage {
            id: sent.id,
            created_at: sent.created_at,
            redactions,
            replayed: sent.replayed,
        })
    }

    /// Returns up to `limit` messages whose receipt the session has not
    /// confirmed (new ones, and any handed out but pending), without
    /// handing them out.
    pub async fn peek(&self, credentials: &Credentials, limit: u32) -> Result<Vec<Message>> {
        let inbox = self
            .inbox(INBOX_SQL, credentials, None, read_limit(limit)?)
            .await?;
        self.touch(credentials, inbox.last_seen, inbox.now).await?;
        Ok(inbox.messages)
    }

    /// Returns up to `limit` messages for the session with ids above
    /// `after_id`, whatever its delivery cursor says, without moving it: for
    /// a watcher that keeps its own place.
    pub async fn peek_after(
        &self,
        credentials: &Credentials,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let inbox = self
            .inbox(INBOX_SQL, credentials, Some(after_id), read_limit(limit)?)
            .await?;
        self.touch(credentials, inbox.last_seen, inbox.now).await?;
        Ok(inbox.messages)
    }

    /// How many messages wait for the session (not yet confirmed), and the
    /// newest id addressed to it, without reading them.
    pub async fn inbox_summary(&self, credentials: &Credentials) -> Result<InboxSummary> {
        let now = Timestamp::now();
        let row: Option<SummaryRow> = read!(
            self,
            fetch_optional,
            query_as(SUMMARY_SQL),
            credentials.conversation_id.as_str(),
            credentials.session.as_str()
        )?;
        let row = self.admit(credentials, row, now).await?;
        Ok(InboxSummary {
            unread: u64::try_from(row.unread).unwrap_or(0),
            acked_id: row.acked_id,
            delivered_id: row.delivered_id,
            newest_id: row.newest_id,
        })
    }

    /// Re-reads messages of the conversation in both directions, whatever the
    /// cursor says: those after `since_id` (oldest first), or without it the
    /// latest `limit`, in id order.
    pub async fn history(
        &self,
        credentials: &Credentials,
        since_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let limit = read_limit(limit)?;
        if let Some(since_id) = since_id.filter(|id| *id < 0) {
            return Err(Error::invalid(
                "since_id",
                format!("must be a message id, 0 or more, got {since_id}"),
            ));
        }
        let now = Timestamp::now();
        let query = match since_id {
            Some(_) => HISTORY_SINCE_SQL,
            None => HISTORY_LATEST_SQL,
        };
        let rows: Vec<MessageRowRead> = read!(
            self,
            fetch_all,
            query_as(query),
            credentials.conversation_id.as_str(),
            credentials.session.as_str(),
            since_id.unwrap_or(0),
            i64::from(limit)
        )?;
        let first = rows.first();
        self.authenticate_read(credentials, first.map(MessageRowRead::auth), now)
            .await?;
        self.touch(credentials, first.and_then(|row| row.last_seen), now)
            .await?;
        rows.iter()
            .filter_map(|row| {
                row.message(self.path(), &credentials.conversation_id)
                    .transpose()
            })
            .collect()
    }

    /// An authenticated read of the session's messages that `sql` selects
    /// (a [`message_read!`] whose messages take $3, a limit, and $4, an id
    /// or NULL), with the session's cursors and `last_seen` as it saw them.
    pub(crate) async fn inbox(
        &self,
        sql: &'static str,
        credentials: &Credentials,
        id: Option<i64>,
        limit: u32,
    ) -> Result<Inbox> {
        let now = Timestamp::now();
        let rows: Vec<MessageRowRead> = read!(
            self,
            fetch_all,
            query_as(sql),
            credentials.conversation_id.as_str(),
            credentials.session.as_str(),
            i64::from(limit),
            id
        )?;
        let first = rows.first();
        self.authenticate_read(credentials, first.map(MessageRowRead::auth), now)
            .await?;
        let messages = rows
            .iter()
            .filter_map(|row| {
                row.message(self.path(), &credentials.conversation_id)
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Inbox {
            messages,
            acked_id: first.map_or(0, |row| row.acked_id),
            delivered_id: first.map_or(0, |row| row.delivered_id),
            last_seen: first.and_then(|row| row.last_seen),
            now,
        })
    }
}

/// What waits for a session, from [`Store::inbox_summary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct InboxSummary {
    /// Messages whose receipt the session has not confirmed.
    pub unread: u64,
    /// The last message whose receipt the session confirmed.
    pub acked_id: i64,
    /// The last message handed out by a consuming read (confirmed or not).
    pub delivered_id: i64,
    /// The newest message addressed to the session (0 if none).
    pub newest_id: i64,
}

/// The caller's credentials row and the counts of [`InboxSummary`] ($1
/// conversation, $2 session).
const SUMMARY_SQL: &str = "
SELECT c.expires_at,
       CASE $2 WHEN 'a' THEN c.token_digest_a ELSE c.token_digest_b END AS digest,
       s.last_seen, s.acked_id, s.delivered_id,
       (SELECT count(*) FROM message
        WHERE conversation_id = $1 AND recipient = $2 AND id > s.acked_id) AS unread,
       coalesce((SELECT max(id) FROM message
                 WHERE conversation_id = $1 AND recipient = $2), 0) AS newest_id
FROM conversation AS c
JOIN session AS s ON s.conversation_id = c.id AND s.session = $2
WHERE c.id = $1";

#[derive(sqlx::FromRow)]
struct SummaryRow {
    expires_at: i64,
    digest: Vec<u8>,
    last_seen: Option<i64>,
    acked_id: i64,
    delivered_id: i64,
    unread: i64,
    newest_id: i64,
}

impl CallerRow for SummaryRow {
    fn digest(&self) -> &[u8] {
        &self.digest
    }

    fn expires_at(&self) -> i64 {
        self.expires_at
    }

    fn caller_last_seen(&self) -> Option<i64> {
        self.last_seen
    }
}

/// The messages a read found, and what it saw of the session.
pub(crate) struct Inbox {
    pub(crate) messages: Vec<Message>,
    /// The session's cursors (see `delivery`).
    pub(crate) acked_id: i64,
    pub(crate) delivered_id: i64,
    pub(crate) last_seen: Option<i64>,
    /// When the read began.
    pub(crate) now: Timestamp,
}

/// A message read: the caller's credentials row (token digest, expiry, its
/// session's cursors and `last_seen`) joined with the messages that
/// `$messages` selects, in id order; a single row of NULL message columns if
/// there are none, and no row at all if the conversation does not exist.
/// Binds: $1 conversation, $2 session, then the parameters of `$messages`.
macro_rules! message_read {
    ($messages:literal) => {
        concat!(
            "SELECT c.expires_at,
                    CASE $2 WHEN 'a' THEN c.token_digest_a ELSE c.token_digest_b END AS digest,
                    s.last_seen, s.delivered_id, s.acked_id,
                    m.id, m.sender, m.recipient, m.body, m.action_type, m.files_involved,
                    m.metadata, m.redacted, m.created_at
             FROM conversation AS c
             JOIN session AS s ON s.conversation_id = c.id AND s.session = $2
             LEFT JOIN (",
            $messages,
            ") AS m ON true
             WHERE c.id = $1
             ORDER BY m.id"
        )
    };
}

pub(crate) use message_read;

/// Messages for the session that it has not confirmed, at most $3.
/// With $4 an id, the messages after it instead, whatever the cursors say.
const INBOX_SQL: &str = message_read!(
    "SELECT * FROM message
     WHERE conversation_id = $1 AND recipient = $2
       AND id > coalesce($4, (SELECT acked_id FROM session
                              WHERE conversation_id = $1 AND session = $2))
     ORDER BY id LIMIT $3"
);

/// Messages of the conversation (both directions) after id $3, at most $4:
/// the first $4 of each direction from the inbox index, merged, so that the
/// cost does not grow with the conversation.
const HISTORY_SINCE_SQL: &str = message_read!(
    "SELECT * FROM (
         SELECT * FROM (SELECT * FROM message
                        WHERE conversation_id = $1 AND recipient = 'a' AND id > $3
                        ORDER BY id LIMIT $4) AS to_a
         UNION ALL
         SELECT * FROM (SELECT * FROM message
                        WHERE conversation_id = $1 AND recipient = 'b' AND id > $3
                        ORDER BY id LIMIT $4) AS to_b) AS both_ways
     ORDER BY id LIMIT $4"
);

/// The latest $4 messages of the conversation (both directions) after id
/// $3, merged from the inbox index as above.
const HISTORY_LATEST_SQL: &str = message_read!(
    "SELECT * FROM (
         SELECT * FROM (SELECT * FROM message
                        WHERE conversation_id = $1 AND recipient = 'a' AND id > $3
                        ORDER BY id DESC LIMIT $4) AS to_a
         UNION ALL
         SELECT * FROM (SELECT * FROM message
                        WHERE conversation_id = $1 AND recipient = 'b' AND id > $3
                        ORDER BY id DESC LIMIT $4) AS to_b) AS both_ways
     ORDER BY id DESC LIMIT $4"
);

impl Store {
    /// The operator's view: the latest `limit` messages of a conversation,
    /// oldest first, without authentication (whoever can open the database
    /// can read it). Empty if the conversation does not exist. Read as
    /// `history` reads them, from the inbox index, so that the cost does
    /// not grow with the conversation: a plain `ORDER BY id DESC` over the
    /// conversation sorted all its messages (the dashboard's Messages page
    /// asks on every change).
    pub(crate) async fn latest_messages(
        &self,
        conversation_id: &ConversationId,
        limit: u32,
    ) -> Result<Vec<Message>> {
        // Session 'a': the credentials columns are not used. Every id is
        // after 0.
        let rows: Vec<MessageRowRead> = read!(
            self,
            fetch_all,
            query_as(HISTORY_LATEST_SQL),
            conversation_id.as_str(),
            "a",
            0_i64,
            i64::from(limit)
        )?;
        rows.iter()
            .filter_map(|row| row.message(self.path(), conversation_id).transpose())
            .collect()
    }
}

/// One row of a message read: the caller's credentials columns and,
/// optionally, one message.
#[derive(sqlx::FromRow)]
struct MessageRowRead {
    expires_at: i64,
    digest: Vec<u8>,
    last_seen: Option<i64>,
    delivered_id: i64,
    acked_id: i64,
    id: Option<i64>,
    sender: Option<String>,
    recipient: Option<String>,
    body: Option<String>,
    action_type: Option<String>,
    files_involved: Option<String>,
    metadata: Option<String>,
    redacted: Option<bool>,
    created_at: Option<i64>,
}

impl MessageRowRead {
    fn auth(&self) -> (&[u8], Timestamp) {
        (&self.digest, Timestamp::from_millis(self.expires_at))
    }

    /// The message on this row, if there is one.
    fn message(&self, path: &Path, conversation_id: &ConversationId) -> Result<Option<Message>> {
        let Some(id) = self.id else {
            return Ok(None);
        };
        let corrupt = |what: &str| Error::Database {
            path: path.to_path_buf(),
            message: format!("message {id} has an unreadable {what}"),
        };
        let text = |value: &Option<String>, what: &str| value.clone().ok_or_else(|| corrupt(what));
        Ok(Some(Message {
            id,
            conversation_id: conversation_id.clone(),
            from: text(&self.sender, "sender")?
                .parse()
                .map_err(|_| corrupt("sender"))?,
            to: text(&self.recipient, "recipient")?
                .parse()
                .map_err(|_| corrupt("recipient"))?,
            body: text(&self.body, "body")?,
            action_type: text(&self.action_type, "action type")?
                .parse()
                .map_err(|_| corrupt("action type"))?,
            files_involved: serde_json::from_str(&text(&self.files_involved, "file list")?)
                .map_err(|_| corrupt("file list"))?,
            metadata: self
                .metadata
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("metadata"))?,
            redacted: self.redacted.unwrap_or(false),
            created_at: Timestamp::from_millis(self.created_at.ok_or_else(|| corrupt("time"))?),
            redelivered: false,
        }))
    }
}

struct SendOp {
    credentials: Credentials,
    row: MessageRow,
    idempotent: Option<Idempotent>,
}

/// What a [`SendOp`] did.
struct Sent {
    id: i64,
    created_at: Timestamp,
    replayed: bool,
}

impl Operation for SendOp {
    type Output = Sent;

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.credentials.conversation_id, self.credentials.session);
        if let Some(idempotent) = &self.idempotent {
            idempotent.lookups(out);
        }
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<Sent> {
        batch.authenticate(&self.credentials)?;
        if let Some(idempotent) = &self.idempotent
            && let Some(replay) = idempotent.replay(batch)?
        {
            return Ok(Sent {
                id: replay.result_id,
                created_at: Timestamp::from_millis(replay.created_at),
                replayed: true,
            });
        }
        batch.check_write(&self.credentials)?;
        let row = self.row.clone();
        let detail = serde_json::json!({
            "to": row.recipient,
            "action_type": row.action_type,
            "chars": row.body.chars().count(),
            "redacted": row.redacted,
        });
        let (id, at) = batch.insert_message(row);
        if let Some(idempotent) = &self.idempotent {
            idempotent.record(batch, id);
        }
        let mut detail = detail;
        detail["message_id"] = id.into();
        batch.audit(
            Some(&self.credentials.conversation_id),
            Some(self.credentials.session),
            "message_sent",
            detail,
        );
        Ok(Sent {
            id,
            created_at: at,
            replayed: false,
        })
    }
}

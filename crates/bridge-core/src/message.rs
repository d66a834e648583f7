//! Messages: sending (with redaction), and reading by delivery cursor.
//!
//! Each session has a delivery cursor: the id of the last message handed to
//! it by a consuming read. [`Store::check`] returns the messages after the
//! cursor and moves the cursor past them in one transaction, so two readers
//! of one session never both get a message and never skip one;
//! [`Store::peek`] returns them without moving it; [`Store::history`] reads
//! by id whatever the cursor says. Reading never deletes.
//!
//! A check that finds nothing writes nothing: it is one read statement, and
//! only the session's `last_seen` is refreshed, at most once per
//! [`StoreOptions::last_seen_resolution`](crate::StoreOptions::last_seen_resolution).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::{ConversationId, Credentials, SessionId};
use crate::error::{Error, Result};
use crate::redact;
use crate::store::Store;
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

/// Who sent a message: one of the sessions, or mcp-bridge itself (telling a
/// session about its tasks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    /// Session `a`.
    A,
    /// Session `b`.
    B,
    /// mcp-bridge: task assignments, updates and reassignments.
    System,
}

impl Sender {
    /// `"a"`, `"b"` or `"system"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::A => "a",
            Sender::B => "b",
            Sender::System => "system",
        }
    }
}

impl From<SessionId> for Sender {
    fn from(session: SessionId) -> Sender {
        match session {
            SessionId::A => Sender::A,
            SessionId::B => Sender::B,
        }
    }
}

impl FromStr for Sender {
    type Err = Error;

    fn from_str(s: &str) -> Result<Sender> {
        match s {
            "system" => Ok(Sender::System),
            other => Ok(other.parse::<SessionId>()?.into()),
        }
    }
}

impl fmt::Display for Sender {
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
}

/// Checks a read limit: 1 to [`MAX_READ_LIMIT`].
fn read_limit(limit: u32) -> Result<u32> {
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
) -> Result<(MessageRow, Vec<&'static str>)> {
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
    Ok((row, kinds))
}

impl Store {
    /// Sends a message to the partner session, after redacting secrets from
    /// its body and metadata.
    pub async fn send(
        &self,
        credentials: &Credentials,
        message: NewMessage,
    ) -> Result<SentMessage> {
        let (row, redactions) = prepare(credentials, message)?;
        let (id, created_at) = self
            .submit(SendOp {
                credentials: credentials.clone(),
                row,
            })
            .await?;
        tracing::debug!(
            conversation_id = %credentials.conversation_id,
            session = %credentials.session,
            message_id = id,
            redacted = !redactions.is_empty(),
            "message sent"
        );
        Ok(SentMessage {
            id,
            created_at,
            redactions,
        })
    }

    /// Returns up to `limit` messages after the session's delivery cursor, in
    /// id order, and moves the cursor past them.
    pub async fn check(&self, credentials: &Credentials, limit: u32) -> Result<Vec<Message>> {
        let limit = read_limit(limit)?;
        loop {
            let inbox = self.inbox(credentials, None, limit).await?;
            let (Some(first), Some(last)) = (inbox.messages.first(), inbox.messages.last()) else {
                self.touch(credentials, inbox.last_seen, inbox.now).await?;
                return Ok(Vec::new());
            };
            let consume = ConsumeOp {
                credentials: credentials.clone(),
                expected: inbox.delivered_id,
                first: first.id,
                last: last.id,
                count: inbox.messages.len(),
            };
            if self.submit(consume).await? {
                return Ok(inbox.messages);
            }
            // Another reader of this session took them first: look again.
        }
    }

    /// Returns up to `limit` messages after the session's delivery cursor,
    /// without moving it.
    pub async fn peek(&self, credentials: &Credentials, limit: u32) -> Result<Vec<Message>> {
        let inbox = self.inbox(credentials, None, read_limit(limit)?).await?;
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
            .inbox(credentials, Some(after_id), read_limit(limit)?)
            .await?;
        self.touch(credentials, inbox.last_seen, inbox.now).await?;
        Ok(inbox.messages)
    }

    /// How many messages wait for the session, and the newest id addressed to
    /// it, without reading them.
    pub async fn inbox_summary(&self, credentials: &Credentials) -> Result<InboxSummary> {
        let now = Timestamp::now();
        let row: Option<SummaryRow> = sqlx::query_as(SUMMARY_SQL)
            .bind(credentials.conversation_id.as_str())
            .bind(credentials.session.as_str())
            .fetch_optional(self.readers())
            .await
            .map_err(|error| self.shared().sqlx_error(error))?;
        let found = row.as_ref().map(|row| {
            (
                row.digest.as_slice(),
                Timestamp::from_millis(row.expires_at),
            )
        });
        self.authenticate_read(credentials, found, now).await?;
        let Some(row) = row else {
            return Err(Error::NoSuchConversation {
                conversation_id: credentials.conversation_id.clone(),
            });
        };
        self.touch(credentials, row.last_seen, now).await?;
        Ok(InboxSummary {
            unread: u64::try_from(row.unread).unwrap_or(0),
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
        let now = Timestamp::now();
        let query = match since_id {
            Some(_) => HISTORY_SINCE_SQL,
            None => HISTORY_LATEST_SQL,
        };
        let rows: Vec<MessageRowRead> = sqlx::query_as(query)
            .bind(credentials.conversation_id.as_str())
            .bind(credentials.session.as_str())
            .bind(since_id.unwrap_or(0))
            .bind(limit)
            .fetch_all(self.readers())
            .await
            .map_err(|error| self.shared().sqlx_error(error))?;
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

    /// The authenticated read behind `check` and `peek`.
    async fn inbox(
        &self,
        credentials: &Credentials,
        after_id: Option<i64>,
        limit: u32,
    ) -> Result<Inbox> {
        let now = Timestamp::now();
        let rows: Vec<MessageRowRead> = sqlx::query_as(INBOX_SQL)
            .bind(credentials.conversation_id.as_str())
            .bind(credentials.session.as_str())
            .bind(limit)
            .bind(after_id)
            .fetch_all(self.readers())
            .await
            .map_err(|error| self.shared().sqlx_error(error))?;
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
            delivered_id: first.map_or(0, |row| row.delivered_id),
            last_seen: first.and_then(|row| row.last_seen),
            now,
        })
    }
}

/// What waits for a session, from [`Store::inbox_summary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct InboxSummary {
    /// Messages after the delivery cursor.
    pub unread: u64,
    /// The delivery cursor: the last message handed out by a consuming read.
    pub delivered_id: i64,
    /// The newest message addressed to the session (0 if none).
    pub newest_id: i64,
}

/// The caller's credentials row and the counts of [`InboxSummary`] (?1
/// conversation, ?2 session).
const SUMMARY_SQL: &str = "
SELECT c.expires_at,
       CASE ?2 WHEN 'a' THEN c.token_digest_a ELSE c.token_digest_b END AS digest,
       s.last_seen, s.delivered_id,
       (SELECT count(*) FROM message
        WHERE conversation_id = ?1 AND recipient = ?2 AND id > s.delivered_id) AS unread,
       coalesce((SELECT max(id) FROM message
                 WHERE conversation_id = ?1 AND recipient = ?2), 0) AS newest_id
FROM conversation AS c
JOIN session AS s ON s.conversation_id = c.id AND s.session = ?2
WHERE c.id = ?1";

#[derive(sqlx::FromRow)]
struct SummaryRow {
    expires_at: i64,
    digest: Vec<u8>,
    last_seen: Option<i64>,
    delivered_id: i64,
    unread: i64,
    newest_id: i64,
}

/// The session's unread messages and what the read saw of the session.
struct Inbox {
    messages: Vec<Message>,
    delivered_id: i64,
    last_seen: Option<i64>,
    now: Timestamp,
}

/// A message read: the caller's credentials row (token digest, expiry, its
/// session's cursor and `last_seen`) joined with the messages that `$messages`
/// selects, in id order; a single row of NULL message columns if there are
/// none, and no row at all if the conversation does not exist. Binds: ?1
/// conversation, ?2 session, then the parameters of `$messages`.
macro_rules! message_read {
    ($messages:literal) => {
        concat!(
            "SELECT c.expires_at,
                    CASE ?2 WHEN 'a' THEN c.token_digest_a ELSE c.token_digest_b END AS digest,
                    s.last_seen, s.delivered_id,
                    m.id, m.sender, m.recipient, m.body, m.action_type, m.files_involved,
                    m.metadata, m.redacted, m.created_at
             FROM conversation AS c
             JOIN session AS s ON s.conversation_id = c.id AND s.session = ?2
             LEFT JOIN (",
            $messages,
            ") AS m
             WHERE c.id = ?1
             ORDER BY m.id"
        )
    };
}

/// Messages for the session after its cursor, at most ?3.
/// With ?4 an id, the messages after it instead, whatever the cursor says.
const INBOX_SQL: &str = message_read!(
    "SELECT * FROM message
     WHERE conversation_id = ?1 AND recipient = ?2
       AND id > coalesce(?4, (SELECT delivered_id FROM session
                              WHERE conversation_id = ?1 AND session = ?2))
     ORDER BY id LIMIT ?3"
);

/// Messages of the conversation (both directions) after id ?3, at most ?4:
/// the first ?4 of each direction from the inbox index, merged, so that the
/// cost does not grow with the conversation.
const HISTORY_SINCE_SQL: &str = message_read!(
    "SELECT * FROM (
         SELECT * FROM (SELECT * FROM message
                        WHERE conversation_id = ?1 AND recipient = 'a' AND id > ?3
                        ORDER BY id LIMIT ?4)
         UNION ALL
         SELECT * FROM (SELECT * FROM message
                        WHERE conversation_id = ?1 AND recipient = 'b' AND id > ?3
                        ORDER BY id LIMIT ?4))
     ORDER BY id LIMIT ?4"
);

/// The latest ?4 messages of the conversation (both directions) after id
/// ?3, merged from the inbox index as above.
const HISTORY_LATEST_SQL: &str = message_read!(
    "SELECT * FROM (
         SELECT * FROM (SELECT * FROM message
                        WHERE conversation_id = ?1 AND recipient = 'a' AND id > ?3
                        ORDER BY id DESC LIMIT ?4)
         UNION ALL
         SELECT * FROM (SELECT * FROM message
                        WHERE conversation_id = ?1 AND recipient = 'b' AND id > ?3
                        ORDER BY id DESC LIMIT ?4))
     ORDER BY id DESC LIMIT ?4"
);

/// The latest ?3 messages of the conversation, both directions, for the
/// operator (?2 is `'a'`: the credentials columns are not used).
const LATEST_SQL: &str =
    message_read!("SELECT * FROM message WHERE conversation_id = ?1 ORDER BY id DESC LIMIT ?3");

impl Store {
    /// The operator's view: the latest `limit` messages of a conversation,
    /// oldest first, without authentication (whoever can open the database
    /// can read it). Empty if the conversation does not exist.
    pub(crate) async fn latest_messages(
        &self,
        conversation_id: &ConversationId,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let rows: Vec<MessageRowRead> = sqlx::query_as(LATEST_SQL)
            .bind(conversation_id.as_str())
            .bind("a")
            .bind(limit)
            .fetch_all(self.readers())
            .await
            .map_err(|error| self.shared().sqlx_error(error))?;
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
        }))
    }
}

struct SendOp {
    credentials: Credentials,
    row: MessageRow,
}

impl Operation for SendOp {
    type Output = (i64, Timestamp);

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.credentials.conversation_id, self.credentials.session);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<(i64, Timestamp)> {
        batch.authenticate(&self.credentials)?;
        batch.check_write(&self.credentials)?;
        let row = self.row.clone();
        let detail = serde_json::json!({
            "to": row.recipient,
            "action_type": row.action_type,
            "chars": row.body.chars().count(),
            "redacted": row.redacted,
        });
        let (id, at) = batch.insert_message(row);
        let mut detail = detail;
        detail["message_id"] = id.into();
        batch.audit(
            Some(&self.credentials.conversation_id),
            Some(self.credentials.session),
            "message_sent",
            detail,
        );
        Ok((id, at))
    }
}

/// Moves the cursor from `expected` to `last`, unless another reader moved it
/// first (then returns `false` and changes nothing).
struct ConsumeOp {
    credentials: Credentials,
    expected: i64,
    first: i64,
    last: i64,
    count: usize,
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
        let Some(row) = batch.session_mut(conversation_id, session) else {
            return Ok(false);
        };
        if row.delivered_id != self.expected {
            return Ok(false);
        }
        row.delivered_id = self.last;
        batch.audit(
            Some(conversation_id),
            Some(session),
            "messages_read",
            serde_json::json!({
                "count": self.count,
                "first_id": self.first,
                "last_id": self.last,
            }),
        );
        Ok(true)
    }
}

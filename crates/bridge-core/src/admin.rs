//! The operator's view of a store, for `bridgectl`: every conversation with
//! its sessions' liveness, one conversation in detail, every task, the audit
//! trail, and token rotation.
//!
//! These functions take no credentials: whoever can open the database file
//! (and its key file) is the operator. Tokens are never shown: they are
//! stored as digests, so a lost token is replaced by rotating it.

use std::time::Duration;

use serde::Serialize;

use crate::auth::{ConversationId, SessionId, Token};
use crate::error::{Error, Result};
use crate::kinds::Status;
use crate::message::Message;
use crate::store::Store;
use crate::task::{Task, TaskRead};
use crate::time::Timestamp;
use crate::writer::{Batch, Lookups, Operation};

/// One session of a conversation, as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// `a` or `b`.
    pub session: SessionId,
    /// Its role.
    pub role: String,
    /// Its last status.
    pub status: Option<Status>,
    /// Its last heartbeat.
    pub last_heartbeat: Option<Timestamp>,
    /// Its last authenticated call (at the store's resolution).
    pub last_seen: Option<Timestamp>,
    /// Heard from within the liveness window.
    pub alive: bool,
    /// Messages for it whose receipt it has not confirmed yet (new, or
    /// handed out and pending).
    pub unread: u64,
    /// The id of the last message whose receipt it confirmed.
    #[serde(skip)]
    pub acked_id: i64,
}

/// A conversation, as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConversationInfo {
    /// Its id.
    pub id: ConversationId,
    /// Its team.
    pub team: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it expires (or expired).
    pub expires_at: Timestamp,
    /// Whether it has expired (and awaits cleanup).
    pub expired: bool,
    /// Session `a`, then `b`.
    pub sessions: [SessionInfo; 2],
    /// Messages in it, both directions.
    pub messages: u64,
    /// Its open and in-progress tasks.
    pub open_tasks: u64,
}

/// One conversation in detail: [`Store::conversation_detail`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConversationDetail {
    /// The conversation.
    #[serde(flatten)]
    pub info: ConversationInfo,
    /// Its latest messages, oldest first, each with whether its recipient
    /// has received it.
    pub recent_messages: Vec<ShownMessage>,
    /// Its tasks, oldest first.
    pub tasks: Vec<Task>,
}

/// A message, and whether its recipient has received it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShownMessage {
    /// The message.
    #[serde(flatten)]
    pub message: Message,
    /// Its recipient has received it (`check_messages` handed it over).
    pub read: bool,
}

/// One assignment of a task to a worker: [`Store::task_history`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assignment {
    /// The task.
    pub task_id: i64,
    /// Its attempt (1 for the first worker).
    pub attempt: i64,
    /// The worker's conversation.
    pub conversation_id: ConversationId,
    /// When the worker got it.
    pub assigned_at: Timestamp,
    /// When it ended for this worker, if it did.
    pub ended_at: Option<Timestamp>,
    /// Why: `reassigned` (the worker went silent), `done`, `failed` or
    /// `cancelled`.
    pub ended_by: Option<String>,
}

/// One row of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Its id (the order of the chain).
    pub id: i64,
    /// When.
    pub at: Timestamp,
    /// The conversation it concerns, if any.
    pub conversation_id: Option<String>,
    /// The session it concerns, if any.
    pub session: Option<String>,
    /// What happened, e.g. `message_sent`.
    pub action: String,
    /// The details, a JSON object (ids, sizes, kinds; never a body or a
    /// token).
    pub detail: String,
}

/// The conversations, or one ($1), with both sessions and their counts.
const CONVERSATIONS_SQL: &str = "
SELECT c.id, c.role_a, c.role_b, c.team, c.created_at, c.expires_at,
       sa.status AS status_a, sa.last_heartbeat AS heartbeat_a, sa.last_seen AS seen_a,
       sa.acked_id AS acked_a,
       sb.status AS status_b, sb.last_heartbeat AS heartbeat_b, sb.last_seen AS seen_b,
       sb.acked_id AS acked_b,
       (SELECT count(*) FROM message AS m
        WHERE m.conversation_id = c.id AND m.recipient = 'a' AND m.id > sa.acked_id) AS unread_a,
       (SELECT count(*) FROM message AS m
        WHERE m.conversation_id = c.id AND m.recipient = 'b' AND m.id > sb.acked_id) AS unread_b,
       (SELECT count(*) FROM message AS m WHERE m.conversation_id = c.id) AS messages,
       (SELECT count(*) FROM task AS t
        WHERE t.conversation_id = c.id AND t.state IN ('open', 'in_progress')) AS open_tasks
FROM conversation AS c
JOIN session AS sa ON sa.conversation_id = c.id AND sa.session = 'a'
JOIN session AS sb ON sb.conversation_id = c.id AND sb.session = 'b'
WHERE CAST($1 AS TEXT) IS NULL OR c.id = $1
ORDER BY c.created_at, c.id";

#[derive(sqlx::FromRow)]
struct ConversationRead {
    id: String,
    role_a: String,
    role_b: String,
    team: Option<String>,
    created_at: i64,
    expires_at: i64,
    status_a: Option<String>,
    heartbeat_a: Option<i64>,
    seen_a: Option<i64>,
    acked_a: i64,
    status_b: Option<String>,
    heartbeat_b: Option<i64>,
    seen_b: Option<i64>,
    acked_b: i64,
    unread_a: i64,
    unread_b: i64,
    messages: i64,
    open_tasks: i64,
}

/// A count from SQL, which is never negative.
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl ConversationRead {
    fn info(self, now: Timestamp, window: Duration) -> Result<ConversationInfo> {
        let session = |session: SessionId,
                       role: String,
                       status: Option<String>,
                       heartbeat: Option<i64>,
                       seen: Option<i64>,
                       unread: i64,
                       acked_id: i64|
         -> Result<SessionInfo> {
            let heard = heartbeat.max(seen).map(Timestamp::from_millis);
            Ok(SessionInfo {
                session,
                role,
                status: status.as_deref().map(str::parse).transpose()?,
                last_heartbeat: heartbeat.map(Timestamp::from_millis),
                last_seen: seen.map(Timestamp::from_millis),
                alive: heard.is_some_and(|heard| heard.age_at(now) < window),
                unread: count(unread),
                acked_id,
            })
        };
        let expires_at = Timestamp::from_millis(self.expires_at);
        Ok(ConversationInfo {
            id: self.id.parse()?,
            team: self.team,
            created_at: Timestamp::from_millis(self.created_at),
            expires_at,
            expired: expires_at <= now,
            sessions: [
                session(
                    SessionId::A,
                    self.role_a,
                    self.status_a,
                    self.heartbeat_a,
                    self.seen_a,
                    self.unread_a,
                    self.acked_a,
                )?,
                session(
                    SessionId::B,
                    self.role_b,
                    self.status_b,
                    self.heartbeat_b,
                    self.seen_b,
                    self.unread_b,
                    self.acked_b,
                )?,
            ],
            messages: count(self.messages),
            open_tasks: count(self.open_tasks),
        })
    }
}

/// Every task, or one team's ($1), oldest first, in the shape of
/// [`TaskRead`] (whose credentials columns go unused here).
const TASKS_SQL: &str = "
SELECT CAST(0 AS BIGINT) AS expires_at, CAST(NULL AS BYTEA) AS digest,
       CAST(NULL AS BIGINT) AS last_seen,
       id, team, conversation_id, title, body, state, attempts, unassigned, note, redacted,
       created_at, updated_at
FROM task WHERE CAST($1 AS TEXT) IS NULL OR team = $1
ORDER BY id";

/// One conversation's tasks ($1), likewise.
const CONVERSATION_TASKS_SQL: &str = "
SELECT CAST(0 AS BIGINT) AS expires_at, CAST(NULL AS BYTEA) AS digest,
       CAST(NULL AS BIGINT) AS last_seen,
       id, team, conversation_id, title, body, state, attempts, unassigned, note, redacted,
       created_at, updated_at
FROM task WHERE conversation_id = $1
ORDER BY id";

/// The latest $2 audit rows, of one conversation ($1) or all, oldest first.
const AUDIT_SQL: &str = "
SELECT * FROM (SELECT id, at, conversation_id, session, action, detail FROM audit
               WHERE CAST($1 AS TEXT) IS NULL OR conversation_id = $1
               ORDER BY id DESC LIMIT $2) AS latest
ORDER BY id";

/// The assignments of every task, or of one team's ($1), in order.
const ASSIGNMENTS_SQL: &str = "
SELECT a.task_id, a.attempt, a.conversation_id, a.assigned_at, a.ended_at, a.ended_by
FROM task_assignment AS a JOIN task AS t ON t.id = a.task_id
WHERE CAST($1 AS TEXT) IS NULL OR t.team = $1
ORDER BY a.task_id, a.attempt";

#[derive(sqlx::FromRow)]
struct AssignmentRead {
    task_id: i64,
    attempt: i64,
    conversation_id: String,
    assigned_at: i64,
    ended_at: Option<i64>,
    ended_by: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AuditRead {
    id: i64,
    at: i64,
    conversation_id: Option<String>,
    session: Option<String>,
    action: String,
    detail: String,
}

impl Store {
    /// Every conversation (expired ones too, until cleaned up), oldest
    /// first, with its sessions' liveness and counts.
    pub async fn conversations(&self) -> Result<Vec<ConversationInfo>> {
        self.read_conversations(None).await
    }

    async fn read_conversations(
        &self,
        id: Option<&ConversationId>,
    ) -> Result<Vec<ConversationInfo>> {
        let rows: Vec<ConversationRead> = read!(
            self,
            fetch_all,
            query_as(CONVERSATIONS_SQL),
            id.map(ConversationId::as_str)
        )?;
        let now = Timestamp::now();
        let window = self.options().liveness_window;
        rows.into_iter().map(|row| row.info(now, window)).collect()
    }

    /// One conversation: its sessions, its latest `messages` messages with
    /// read marks, and its tasks.
    pub async fn conversation_detail(
        &self,
        id: &ConversationId,
        messages: u32,
    ) -> Result<ConversationDetail> {
        let info = self
            .read_conversations(Some(id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoSuchConversation {
                conversation_id: id.clone(),
            })?;
        let acked = |to: SessionId| info.sessions[usize::from(to == SessionId::B)].acked_id;
        let recent_messages = self
            .latest_messages(id, messages)
            .await?
            .into_iter()
            .map(|message| ShownMessage {
                read: message.id <= acked(message.to),
                message,
            })
            .collect();
        let tasks = self
            .read_tasks(CONVERSATION_TASKS_SQL, Some(id.as_str()))
            .await?;
        Ok(ConversationDetail {
            info,
            recent_messages,
            tasks,
        })
    }

    /// Every task, or one team's, oldest first.
    pub async fn all_tasks(&self, team: Option<&str>) -> Result<Vec<Task>> {
        self.read_tasks(TASKS_SQL, team).await
    }

    /// The tasks `sql` selects with `key` bound as $1.
    async fn read_tasks(&self, sql: &'static str, key: Option<&str>) -> Result<Vec<Task>> {
        let rows: Vec<TaskRead> = read!(self, fetch_all, query_as(sql), key)?;
        rows.iter()
            .filter_map(|row| row.task(self.path()).transpose())
            .collect()
    }

    /// Every task's assignments (of one team, or all), by task and attempt:
    /// who had it, from when, until when and why it ended.
    pub async fn task_history(&self, team: Option<&str>) -> Result<Vec<Assignment>> {
        let rows: Vec<AssignmentRead> = read!(self, fetch_all, query_as(ASSIGNMENTS_SQL), team)?;
        rows.into_iter()
            .map(|row| {
                Ok(Assignment {
                    task_id: row.task_id,
                    attempt: row.attempt,
                    conversation_id: row.conversation_id.parse()?,
                    assigned_at: Timestamp::from_millis(row.assigned_at),
                    ended_at: row.ended_at.map(Timestamp::from_millis),
                    ended_by: row.ended_by,
                })
            })
            .collect()
    }

    /// The latest `limit` rows of the audit trail, of one conversation or
    /// all, oldest first.
    pub async fn audit_entries(
        &self,
        conversation_id: Option<&ConversationId>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let rows: Vec<AuditRead> = read!(
            self,
            fetch_all,
            query_as(AUDIT_SQL),
            conversation_id.map(ConversationId::as_str),
            i64::from(limit)
        )?;
        Ok(rows
            .into_iter()
            .map(|row| AuditEntry {
                id: row.id,
                at: Timestamp::from_millis(row.at),
                conversation_id: row.conversation_id,
                session: row.session,
                action: row.action,
                detail: row.detail,
            })
            .collect())
    }

    /// Replaces the tokens of `sessions` of a live conversation with new
    /// ones, returned once; the old ones stop working at once. Audited.
    pub async fn rotate_tokens(
        &self,
        conversation_id: &ConversationId,
        sessions: &[SessionId],
    ) -> Result<Vec<(SessionId, Token)>> {
        let mut tokens = Vec::with_capacity(sessions.len());
        for &session in sessions {
            tokens.push((session, Token::generate()?));
        }
        let key = &self.shared().key;
        let digests = tokens
            .iter()
            .map(|(session, token)| (*session, key.digest(token).to_vec()))
            .collect();
        self.submit(RotateOp {
            conversation_id: conversation_id.clone(),
            digests,
        })
        .await?;
        tracing::info!(%conversation_id, sessions = ?sessions, "tokens rotated");
        Ok(tokens)
    }
}

/// `rotate_tokens` under the write lock.
struct RotateOp {
    conversation_id: ConversationId,
    digests: Vec<(SessionId, Vec<u8>)>,
}

impl Operation for RotateOp {
    type Output = ();

    fn lookups(&self, out: &mut Lookups) {
        for (session, _) in &self.digests {
            out.session(&self.conversation_id, *session);
        }
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<()> {
        for (session, _) in &self.digests {
            batch.live_session(&self.conversation_id, *session)?;
        }
        for (session, digest) in &self.digests {
            batch.rekey(&self.conversation_id, *session, digest.clone());
        }
        let sessions: Vec<SessionId> = self.digests.iter().map(|(session, _)| *session).collect();
        batch.audit(
            Some(&self.conversation_id),
            None,
            "tokens_rotated",
            serde_json::json!({ "sessions": sessions }),
        );
        Ok(())
    }
}

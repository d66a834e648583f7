//! The single writer of a [`Store`](crate::Store): every state change goes
//! through it, in batches (group commit).
//!
//! SQLite admits one writer at a time, and through `sqlx` every statement is a
//! round trip to the connection's worker thread. So instead of one transaction
//! per call, the writer task takes every operation waiting in its queue and
//! commits them together, in exactly two round trips per batch:
//!
//! 1. **Read phase**: `BEGIN IMMEDIATE` (the write lock, waited for up to the
//!    busy timeout), then one `SELECT` for the heads (last message id, last
//!    audit id and hash) and the conversation and session rows that the
//!    operations of the batch need to authenticate and decide.
//! 2. **Write phase**: one fixed multi-statement script that inserts, updates
//!    and deletes from JSON arrays (`json_each`) and ends in `COMMIT`. Its text
//!    never changes, so SQLite prepares it once per connection.
//!
//! Between the two, each [`Operation`] runs in memory against the [`Batch`]:
//! it authenticates, checks limits, and adds rows. An operation that fails
//! adds nothing (the exceptions, both harmless, are the audit row of a failed
//! authentication and the `last_seen` of an authenticated call). If the write
//! phase fails, the batch is rolled back and each operation is retried alone,
//! so one bad operation cannot fail its neighbours.
//!
//! Callers submit an operation and await its typed result; a caller that stops
//! waiting does not cancel a write already queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{Connection, Executor, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::audit::{self, GENESIS_HASH};
use crate::auth::{ConversationId, Credentials, SessionId};
use crate::error::{Error, Result};
use crate::status::Status;
use crate::store::{AuthFailure, Shared};
use crate::time::Timestamp;

/// At most this many operations are committed in one transaction.
const MAX_BATCH: usize = 256;

/// Operations waiting beyond this make callers wait to enqueue (back-pressure).
const QUEUE_DEPTH: usize = 4096;

/// A state change that the writer applies inside a batch.
pub(crate) trait Operation: Send + 'static {
    /// What the caller gets back once the batch has committed.
    type Output: Send + 'static;

    /// The (conversation, session) rows the operation needs to read.
    fn lookups(&self, out: &mut Vec<(ConversationId, SessionId)>);

    /// Decides, and adds the rows of the change to `batch`. Runs with the
    /// write lock held. Must add nothing if it fails, apart from what
    /// [`Batch::authenticate`] records.
    fn apply(&self, batch: &mut Batch<'_>) -> Result<Self::Output>;
}

/// An operation with its caller's reply channel, type-erased for the queue.
trait Job: Send {
    fn lookups(&self, out: &mut Vec<(ConversationId, SessionId)>);
    fn apply(&mut self, batch: &mut Batch<'_>);
    /// Sends the result of `apply`, or `failure` if the batch did not commit.
    fn finish(self: Box<Self>, failure: Option<&Error>);
}

struct Pending<O: Operation> {
    operation: O,
    result: Option<Result<O::Output>>,
    reply: oneshot::Sender<Result<O::Output>>,
}

impl<O: Operation> Job for Pending<O> {
    fn lookups(&self, out: &mut Vec<(ConversationId, SessionId)>) {
        self.operation.lookups(out);
    }

    fn apply(&mut self, batch: &mut Batch<'_>) {
        self.result = Some(self.operation.apply(batch));
    }

    fn finish(self: Box<Self>, failure: Option<&Error>) {
        let result = match (failure, self.result) {
            (Some(error), _) => Err(error.clone()),
            (None, Some(result)) => result,
            (None, None) => Err(Error::Closed),
        };
        // The caller may have stopped waiting; the write stands either way.
        let _ = self.reply.send(result);
    }
}

/// What travels through the writer's queue.
enum Command {
    Job(Box<dyn Job>),
    /// Finish the jobs queued before this, then stop.
    Stop,
}

/// The handle callers submit operations through.
pub(crate) struct Writer {
    queue: mpsc::Sender<Command>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer task on `connection`; `connect` reopens it if it
    /// breaks.
    pub(crate) fn start(
        shared: Arc<Shared>,
        connection: SqliteConnection,
        connect: SqliteConnectOptions,
    ) -> Writer {
        let (queue, commands) = mpsc::channel(QUEUE_DEPTH);
        let task = WriterTask {
            shared,
            connection: Some(connection),
            connect,
        };
        Writer {
            queue,
            task: Mutex::new(Some(tokio::spawn(task.run(commands)))),
        }
    }

    /// Queues `operation` and waits for it to commit (or fail).
    pub(crate) async fn submit<O: Operation>(&self, operation: O) -> Result<O::Output> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            operation,
            result: None,
            reply,
        });
        self.queue
            .send(Command::Job(job))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Lets the writer finish what is queued, then stops it and closes its
    /// connection. Later submissions fail with [`Error::Closed`].
    pub(crate) async fn close(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(task) = task {
            let _ = self.queue.send(Command::Stop).await;
            let _ = task.await;
        }
    }
}

/// Why a batch did not commit.
enum Failure {
    /// Before any operation ran (no connection, lock not obtained): every
    /// operation of the batch would fail alike.
    Read(Error),
    /// In the write phase: one operation may be at fault.
    Write(Error),
}

struct WriterTask {
    shared: Arc<Shared>,
    /// `None` after a failure that may have broken the connection; the next
    /// batch reconnects.
    connection: Option<SqliteConnection>,
    connect: SqliteConnectOptions,
}

impl WriterTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut received = Vec::with_capacity(MAX_BATCH);
        let mut stopping = false;
        while !stopping && commands.recv_many(&mut received, MAX_BATCH).await > 0 {
            let mut jobs = Vec::with_capacity(received.len());
            for command in received.drain(..) {
                match command {
                    Command::Job(job) if !stopping => jobs.push(job),
                    Command::Job(job) => job.finish(Some(&Error::Closed)),
                    Command::Stop => stopping = true,
                }
            }
            if !jobs.is_empty() {
                self.process(jobs).await;
            }
        }
        commands.close();
        while let Ok(command) = commands.try_recv() {
            if let Command::Job(job) = command {
                job.finish(Some(&Error::Closed));
            }
        }
        if let Some(connection) = self.connection.take() {
            let _ = connection.close().await;
        }
    }

    /// Commits `jobs` as one batch; if the write phase fails, retries each
    /// job alone so that only the faulty one fails.
    async fn process(&mut self, mut jobs: Vec<Box<dyn Job>>) {
        match self.commit(&mut jobs).await {
            Ok(wrote) => {
                if wrote {
                    self.shared.changes.notify();
                }
                for job in jobs {
                    job.finish(None);
                }
            }
            Err(Failure::Write(error)) if jobs.len() > 1 => {
                tracing::debug!(%error, jobs = jobs.len(), "batch failed; retrying its operations one by one");
                for job in jobs {
                    let mut alone = vec![job];
                    let outcome = self.commit(&mut alone).await;
                    if matches!(outcome, Ok(true)) {
                        self.shared.changes.notify();
                    }
                    let failure = match outcome {
                        Ok(_) => None,
                        Err(Failure::Read(error) | Failure::Write(error)) => Some(error),
                    };
                    for job in alone {
                        job.finish(failure.as_ref());
                    }
                }
            }
            Err(Failure::Read(error) | Failure::Write(error)) => {
                for job in jobs {
                    job.finish(Some(&error));
                }
            }
        }
    }

    /// One batch: read phase, the operations in memory, write phase. Returns
    /// whether anything was written.
    async fn commit(&mut self, jobs: &mut [Box<dyn Job>]) -> Result<bool, Failure> {
        let shared = Arc::clone(&self.shared);
        let connection = match self.connection.take() {
            Some(connection) => connection,
            None => SqliteConnection::connect_with(&self.connect)
                .await
                .map_err(|error| Failure::Read(shared.sqlx_error(error)))?,
        };
        let connection = self.connection.insert(connection);

        let mut keys = Vec::new();
        for job in jobs.iter() {
            job.lookups(&mut keys);
        }
        keys.sort();
        keys.dedup();

        let rows = match read_phase(connection, &keys).await {
            Ok(rows) => rows,
            Err(error) => {
                self.abandon(&error).await;
                return Err(Failure::Read(shared.sqlx_error(error)));
            }
        };
        let mut batch = match Batch::from_rows(&shared, &rows) {
            Ok(batch) => batch,
            Err(error) => {
                self.rollback().await;
                return Err(Failure::Read(error));
            }
        };
        for job in jobs.iter_mut() {
            job.apply(&mut batch);
        }
        if batch.is_empty() {
            self.rollback().await;
            return Ok(false);
        }
        let params = batch.into_params();
        let Some(connection) = self.connection.as_mut() else {
            return Err(Failure::Write(Error::Closed));
        };
        match write_phase(connection, params).await {
            Ok(()) => Ok(true),
            Err(error) => {
                self.abandon(&error).await;
                Err(Failure::Write(shared.sqlx_error(error)))
            }
        }
    }

    /// Ends the open transaction without writing.
    async fn rollback(&mut self) {
        if let Some(connection) = self.connection.as_mut()
            && connection.execute("ROLLBACK").await.is_err()
        {
            // A connection that cannot roll back cannot be trusted with the
            // next batch.
            self.connection = None;
        }
    }

    /// Cleans up after a failed phase: rolls back a transaction that may be
    /// open, and drops the connection if the error was not the database's
    /// own answer (it may be broken).
    async fn abandon(&mut self, error: &sqlx::Error) {
        if matches!(error, sqlx::Error::Database(_)) {
            self.rollback().await;
        } else {
            self.connection = None;
        }
    }
}

/// The read phase: takes the write lock and reads the heads and the rows the
/// batch's operations need. Always returns at least one row (the heads).
const READ_SQL: &str = "
BEGIN IMMEDIATE;
SELECT
    (SELECT seq FROM sqlite_sequence WHERE name = 'message') AS message_seq,
    (SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'audit'), 0),
                coalesce((SELECT max(id) FROM audit), 0))) AS audit_seq,
    (SELECT hash FROM audit ORDER BY id DESC LIMIT 1) AS audit_head,
    k.value ->> 0 AS conversation_id,
    k.value ->> 1 AS session,
    c.expires_at,
    CASE k.value ->> 1 WHEN 'a' THEN c.token_digest_a ELSE c.token_digest_b END AS digest,
    s.status,
    s.status_at,
    s.last_heartbeat,
    s.last_seen,
    s.delivered_id
FROM (SELECT 1) AS heads
LEFT JOIN json_each(?1) AS k
LEFT JOIN conversation AS c ON c.id = k.value ->> 0
LEFT JOIN session AS s ON s.conversation_id = c.id AND s.session = k.value ->> 1
";

async fn read_phase(
    connection: &mut SqliteConnection,
    keys: &[(ConversationId, SessionId)],
) -> Result<Vec<SqliteRow>, sqlx::Error> {
    let keys: Vec<(&str, &str)> = keys
        .iter()
        .map(|(conversation, session)| (conversation.as_str(), session.as_str()))
        .collect();
    let keys =
        serde_json::to_string(&keys).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    sqlx::query(READ_SQL).bind(keys).fetch_all(connection).await
}

/// The write phase: every insert, update and delete of the batch, from JSON
/// arrays, then `COMMIT`.
///
/// Each statement takes exactly one anonymous `?`, bound in order. (Numbered
/// `?N` parameters do not survive a multi-statement query in `sqlx`: in a
/// statement whose highest parameter is `?4` but that does not use `?1` to
/// `?3`, those slots consume positional arguments, and the named one can end
/// up unbound, silently NULL.)
const WRITE_SQL: &str = "
INSERT INTO conversation (id, role_a, role_b, team, created_at, expires_at, token_digest_a, token_digest_b)
    SELECT value ->> 'id', value ->> 'role_a', value ->> 'role_b', value ->> 'team',
           value ->> 'created_at', value ->> 'expires_at',
           unhex(value ->> 'digest_a'), unhex(value ->> 'digest_b')
    FROM json_each(?);
INSERT INTO session (conversation_id, session)
    SELECT c.value ->> 'id', s.column1 FROM json_each(?) AS c, (VALUES ('a'), ('b')) AS s;
INSERT INTO message (id, conversation_id, sender, recipient, body, action_type,
                     files_involved, metadata, redacted, created_at)
    SELECT value ->> 'id', value ->> 'conversation_id', value ->> 'sender', value ->> 'recipient',
           value ->> 'body', value ->> 'action_type', value ->> 'files_involved',
           value ->> 'metadata', value ->> 'redacted', value ->> 'created_at'
    FROM json_each(?);
UPDATE session
    SET status = u.value ->> 'status',
        status_at = u.value ->> 'status_at',
        last_heartbeat = u.value ->> 'last_heartbeat',
        last_seen = u.value ->> 'last_seen',
        delivered_id = u.value ->> 'delivered_id'
    FROM json_each(?) AS u
    WHERE session.conversation_id = u.value ->> 'conversation_id'
      AND session.session = u.value ->> 'session';
INSERT INTO audit (id, at, conversation_id, session, action, detail, prev_hash, hash)
    SELECT value ->> 'id', value ->> 'at', value ->> 'conversation_id', value ->> 'session',
           value ->> 'action', value ->> 'detail', value ->> 'prev_hash', value ->> 'hash'
    FROM json_each(?);
DELETE FROM conversation WHERE id IN (SELECT value FROM json_each(?));
COMMIT;
";

async fn write_phase(connection: &mut SqliteConnection, params: Params) -> Result<(), sqlx::Error> {
    sqlx::query(WRITE_SQL)
        .bind(&params.conversations)
        .bind(&params.conversations)
        .bind(params.messages)
        .bind(params.sessions)
        .bind(params.audits)
        .bind(params.deletions)
        .execute(connection)
        .await
        .map(|_| ())
}

/// The JSON arrays the write phase reads.
struct Params {
    conversations: String,
    messages: String,
    sessions: String,
    audits: String,
    deletions: String,
}

/// A conversation to insert (its two sessions are inserted with it).
#[derive(Clone, Serialize)]
pub(crate) struct ConversationRow {
    pub(crate) id: ConversationId,
    pub(crate) role_a: String,
    pub(crate) role_b: String,
    pub(crate) team: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
    /// Hex of the 32-byte token digests.
    pub(crate) digest_a: String,
    pub(crate) digest_b: String,
}

/// A message to insert; its id is assigned by [`Batch::insert_message`].
#[derive(Clone, Serialize)]
pub(crate) struct MessageRow {
    id: i64,
    pub(crate) conversation_id: ConversationId,
    pub(crate) sender: SessionId,
    pub(crate) recipient: SessionId,
    pub(crate) body: String,
    pub(crate) action_type: &'static str,
    /// A JSON array, as text.
    pub(crate) files_involved: String,
    /// A JSON object, as text.
    pub(crate) metadata: Option<String>,
    pub(crate) redacted: bool,
    created_at: i64,
}

impl MessageRow {
    /// A row whose id and time the batch fills in.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        conversation_id: ConversationId,
        sender: SessionId,
        recipient: SessionId,
        body: String,
        action_type: &'static str,
        files_involved: String,
        metadata: Option<String>,
        redacted: bool,
    ) -> MessageRow {
        MessageRow {
            id: 0,
            conversation_id,
            sender,
            recipient,
            body,
            action_type,
            files_involved,
            metadata,
            redacted,
            created_at: 0,
        }
    }
}

/// The state of one session as the batch sees it: read in the read phase,
/// changed by operations, written back in full if changed.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SessionRow {
    #[serde(skip)]
    pub(crate) expires_at: Timestamp,
    #[serde(skip)]
    digest: Vec<u8>,
    #[serde(skip)]
    dirty: bool,
    pub(crate) conversation_id: ConversationId,
    pub(crate) session: SessionId,
    pub(crate) status: Option<Status>,
    pub(crate) status_at: Option<i64>,
    pub(crate) last_heartbeat: Option<i64>,
    pub(crate) last_seen: Option<i64>,
    pub(crate) delivered_id: i64,
}

#[derive(Serialize)]
struct AuditRow {
    id: i64,
    at: i64,
    conversation_id: Option<ConversationId>,
    session: Option<SessionId>,
    action: &'static str,
    detail: String,
    prev_hash: String,
    hash: String,
}

/// Everything one batch reads and writes.
pub(crate) struct Batch<'a> {
    /// The time of the batch, taken once the write lock is held, so that
    /// times along the audit chain never go backwards within a database.
    pub(crate) now: Timestamp,
    shared: &'a Shared,
    sessions: HashMap<(ConversationId, SessionId), SessionRow>,
    last_message_id: i64,
    last_audit_id: i64,
    last_hash: String,
    conversations: Vec<ConversationRow>,
    messages: Vec<MessageRow>,
    audits: Vec<AuditRow>,
    deletions: Vec<ConversationId>,
}

impl<'a> Batch<'a> {
    fn from_rows(shared: &'a Shared, rows: &[SqliteRow]) -> Result<Batch<'a>> {
        let corrupt = |error: sqlx::Error| shared.sqlx_error(error);
        let first = rows.first();
        let head = |column: &str| -> Result<Option<i64>> {
            first
                .map(|row| row.try_get::<Option<i64>, _>(column))
                .transpose()
                .map(Option::flatten)
                .map_err(corrupt)
        };
        let last_message_id = head("message_seq")?.unwrap_or(0);
        let last_audit_id = head("audit_seq")?.unwrap_or(0);
        let last_hash = first
            .map(|row| row.try_get::<Option<String>, _>("audit_head"))
            .transpose()
            .map_err(corrupt)?
            .flatten()
            .unwrap_or_else(|| GENESIS_HASH.to_owned());

        let mut sessions = HashMap::with_capacity(rows.len());
        for row in rows {
            let Some(conversation_id) = row
                .try_get::<Option<String>, _>("conversation_id")
                .map_err(corrupt)?
            else {
                continue;
            };
            let Some(expires_at) = row
                .try_get::<Option<i64>, _>("expires_at")
                .map_err(corrupt)?
            else {
                // No such conversation: the operation will say so.
                continue;
            };
            let session: String = row.try_get("session").map_err(corrupt)?;
            let status: Option<String> = row.try_get("status").map_err(corrupt)?;
            let key: (ConversationId, SessionId) = (conversation_id.parse()?, session.parse()?);
            let session_row = SessionRow {
                expires_at: Timestamp::from_millis(expires_at),
                digest: row.try_get("digest").map_err(corrupt)?,
                dirty: false,
                conversation_id: key.0.clone(),
                session: key.1,
                status: status.map(|status| status.parse()).transpose()?,
                status_at: row.try_get("status_at").map_err(corrupt)?,
                last_heartbeat: row.try_get("last_heartbeat").map_err(corrupt)?,
                last_seen: row.try_get("last_seen").map_err(corrupt)?,
                delivered_id: row.try_get("delivered_id").map_err(corrupt)?,
            };
            sessions.insert(key, session_row);
        }
        Ok(Batch {
            now: Timestamp::now(),
            shared,
            sessions,
            last_message_id,
            last_audit_id,
            last_hash,
            conversations: Vec::new(),
            messages: Vec::new(),
            audits: Vec::new(),
            deletions: Vec::new(),
        })
    }

    /// Authenticates `credentials` against the rows read for the batch and
    /// records the call in the session's `last_seen`. A wrong token within
    /// the failure budget is audited.
    pub(crate) fn authenticate(&mut self, credentials: &Credentials) -> Result<()> {
        let key = (credentials.conversation_id.clone(), credentials.session);
        let found = self
            .sessions
            .get(&key)
            .map(|row| (row.digest.as_slice(), row.expires_at));
        if let Err(failure) = self.shared.authenticate(credentials, found, self.now) {
            if let AuthFailure::Audit(error) = failure {
                self.audit_auth_failure(&credentials.conversation_id, credentials.session);
                return Err(error);
            }
            return Err(failure.into_error());
        }
        let now = self.now.as_millis();
        if let Some(row) = self.session_mut(&key.0, key.1) {
            row.last_seen = Some(now);
        }
        Ok(())
    }

    /// Adds the audit row of a failed authentication.
    pub(crate) fn audit_auth_failure(
        &mut self,
        conversation_id: &ConversationId,
        session: SessionId,
    ) {
        self.audit(
            Some(conversation_id),
            Some(session),
            "auth_failed",
            serde_json::json!({}),
        );
    }

    /// The state of a session read for this batch, if its conversation exists.
    pub(crate) fn session(
        &self,
        conversation_id: &ConversationId,
        session: SessionId,
    ) -> Option<&SessionRow> {
        self.sessions.get(&(conversation_id.clone(), session))
    }

    /// The state of a session, to be changed; it is written back at commit.
    pub(crate) fn session_mut(
        &mut self,
        conversation_id: &ConversationId,
        session: SessionId,
    ) -> Option<&mut SessionRow> {
        let row = self.sessions.get_mut(&(conversation_id.clone(), session))?;
        row.dirty = true;
        Some(row)
    }

    /// Spends one write of the session's rate-limit quota.
    pub(crate) fn check_write(&self, credentials: &Credentials) -> Result<()> {
        self.shared
            .limits
            .check_write(&credentials.conversation_id, credentials.session)
    }

    /// Adds a conversation and its two sessions.
    pub(crate) fn insert_conversation(&mut self, row: ConversationRow) {
        self.conversations.push(row);
    }

    /// Adds a message; returns its id and time.
    pub(crate) fn insert_message(&mut self, mut row: MessageRow) -> (i64, Timestamp) {
        self.last_message_id += 1;
        row.id = self.last_message_id;
        row.created_at = self.now.as_millis();
        self.messages.push(row);
        (self.last_message_id, self.now)
    }

    /// Deletes a conversation with everything that hangs off it. Later
    /// operations of the batch no longer find it.
    pub(crate) fn delete_conversation(&mut self, conversation_id: &ConversationId) {
        self.sessions.retain(|(id, _), _| id != conversation_id);
        self.deletions.push(conversation_id.clone());
    }

    /// Adds an audit row, chained to the one before.
    pub(crate) fn audit(
        &mut self,
        conversation_id: Option<&ConversationId>,
        session: Option<SessionId>,
        action: &'static str,
        detail: serde_json::Value,
    ) {
        let id = self.last_audit_id + 1;
        let at = self.now.as_millis();
        let detail = detail.to_string();
        let conversation = conversation_id.map(ConversationId::as_str);
        let session_text = session.map(SessionId::as_str);
        let hash = audit::chain_hash(
            &self.last_hash,
            id,
            at,
            conversation,
            session_text,
            action,
            &detail,
        );
        self.audits.push(AuditRow {
            id,
            at,
            conversation_id: conversation_id.cloned(),
            session,
            action,
            detail,
            prev_hash: std::mem::replace(&mut self.last_hash, hash.clone()),
            hash,
        });
        self.last_audit_id = id;
    }

    fn is_empty(&self) -> bool {
        self.conversations.is_empty()
            && self.messages.is_empty()
            && self.audits.is_empty()
            && self.deletions.is_empty()
            && !self.sessions.values().any(|row| row.dirty)
    }

    fn into_params(self) -> Params {
        let sessions: Vec<&SessionRow> = self.sessions.values().filter(|row| row.dirty).collect();
        Params {
            conversations: to_json(&self.conversations),
            messages: to_json(&self.messages),
            sessions: to_json(&sessions),
            audits: to_json(&self.audits),
            deletions: to_json(&self.deletions),
        }
    }
}

/// Serializes rows made of strings, integers and booleans, which cannot fail.
fn to_json<T: Serialize>(rows: &T) -> String {
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".to_owned())
}

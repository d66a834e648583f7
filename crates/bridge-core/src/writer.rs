//! The single writer of a [`Store`](crate::Store): every state change goes
//! through it, in batches (group commit).
//!
//! SQLite admits one writer at a time, and through `sqlx` every statement is a
//! round trip to the connection's worker thread (two thread hand-offs). So
//! instead of one transaction per call, the writer task takes every operation
//! waiting in its queue and commits them together, in one or two round trips:
//!
//! * **Fast path** (one round trip). The writer remembers the [`State`] its
//!   last batch left behind (heads of the message and audit sequences, the
//!   last audit hash, the session rows it has seen). If that covers what the
//!   new batch needs, the operations run against it in memory and one script
//!   goes out: `BEGIN IMMEDIATE`, the state query, a **guard**, the writes,
//!   `COMMIT`. The guard aborts the script before any write if another
//!   connection committed since (SQLite's `data_version` of this connection
//!   changed), i.e. if the remembered state may be stale.
//! * **Slow path** (two round trips): when the guard fired (its script has
//!   already returned the fresh state and holds the write lock), or nothing
//!   is remembered: the state query (after `BEGIN IMMEDIATE` if not already
//!   inside), the operations against the fresh state, then the writes.
//!
//! The writes are one fixed multi-statement script inserting, updating and
//! deleting from JSON arrays (`json_each`) and ending in `COMMIT`; its text
//! never changes, so SQLite prepares it once per connection.
//!
//! Each [`Operation`] runs in memory against the [`Batch`]: it authenticates,
//! checks limits, and adds rows. An operation that fails adds nothing (the
//! exceptions, both harmless, are the audit row of a failed authentication and
//! the `last_seen` of an authenticated call). An operation may run twice (fast
//! path, then slow path); what it spends of a rate limit is remembered per
//! operation, so it is spent once. If the writes fail, the batch is rolled
//! back and each operation is retried alone, so one bad operation cannot
//! fail its neighbours.
//!
//! Callers submit an operation and await its typed result; a caller that stops
//! waiting does not cancel a write already queued.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{Connection, Executor, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::audit::{self, GENESIS_HASH};
use crate::auth::{ConversationId, Credentials, SessionId};
use crate::error::{Error, Result, sqlite_code};
use crate::message::Sender;
use crate::status::Status;
use crate::store::{AuthFailure, Shared};
use crate::task::TaskState;
use crate::time::Timestamp;

/// At most this many operations are committed in one transaction.
const MAX_BATCH: usize = 256;

/// Operations waiting beyond this make callers wait to enqueue (back-pressure).
const QUEUE_DEPTH: usize = 4096;

/// The writer forgets the sessions it remembers beyond this many (the next
/// batch then takes the slow path once).
const REMEMBERED_SESSIONS: usize = 4096;

/// Likewise for tasks, which carry their bodies (up to 50 000 characters).
const REMEMBERED_TASKS: usize = 1024;

/// Likewise for idempotency keys (see [`State::idempotency`]).
const REMEMBERED_KEYS: usize = 4096;

/// The message of the guard's error (see the `writer_guard` trigger).
const STALE: &str = "mcp-bridge: stale writer state";

/// A (conversation, session) pair whose rows an operation reads.
pub(crate) type Key = (ConversationId, SessionId);

/// An idempotency key of a session: its conversation, the session, and the
/// SHA-256 of the key the client chose.
pub(crate) type IdempotencySlot = (ConversationId, SessionId, [u8; 32]);

/// A write recorded under an idempotency key.
#[derive(Clone, Debug)]
pub(crate) struct IdempotencyRow {
    /// The tool that wrote it: `send_to_partner` or `assign_task`.
    pub(crate) tool: String,
    /// The SHA-256 of the request it came with.
    pub(crate) request_digest: [u8; 32],
    /// The message or task id it returned.
    pub(crate) result_id: i64,
    pub(crate) created_at: i64,
    /// Recorded by this batch.
    new: bool,
}

/// The rows the operations of a batch need: sessions (with their
/// conversation), tasks, command-execution settings and approval tokens.
#[derive(Default)]
pub(crate) struct Lookups {
    sessions: Vec<Key>,
    tasks: Vec<i64>,
    yolo: Vec<ConversationId>,
    approvals: Vec<String>,
    access: Vec<String>,
    idempotency: Vec<IdempotencySlot>,
}

impl Lookups {
    /// The row of `session` of `conversation`.
    pub(crate) fn session(&mut self, conversation: &ConversationId, session: SessionId) {
        self.sessions.push((conversation.clone(), session));
    }

    /// The row of task `id`.
    pub(crate) fn task(&mut self, id: i64) {
        self.tasks.push(id);
    }

    /// The command-execution settings of `conversation`.
    pub(crate) fn yolo(&mut self, conversation: &ConversationId) {
        self.yolo.push(conversation.clone());
    }

    /// The approval token whose digest is `digest` (hex).
    pub(crate) fn approval(&mut self, digest: &str) {
        self.approvals.push(digest.to_owned());
    }

    /// The access key named `name`.
    pub(crate) fn access(&mut self, name: &str) {
        self.access.push(name.to_owned());
    }

    /// The write recorded under an idempotency key, if any.
    pub(crate) fn idempotency(&mut self, key: &IdempotencySlot) {
        self.idempotency.push(key.clone());
    }

    fn tidy(&mut self) {
        self.sessions.sort();
        self.sessions.dedup();
        self.tasks.sort_unstable();
        self.tasks.dedup();
        self.yolo.sort();
        self.yolo.dedup();
        self.approvals.sort();
        self.approvals.dedup();
        self.access.sort();
        self.access.dedup();
        self.idempotency.sort();
        self.idempotency.dedup();
    }

    /// The JSON parameters of the state query.
    fn json(&self) -> LookupJson {
        let sessions: Vec<(&str, &str)> = self
            .sessions
            .iter()
            .map(|(conversation, session)| (conversation.as_str(), session.as_str()))
            .collect();
        let keys: Vec<(&str, &str, String)> = self
            .idempotency
            .iter()
            .map(|(conversation, session, digest)| {
                (conversation.as_str(), session.as_str(), hex::encode(digest))
            })
            .collect();
        LookupJson {
            sessions: to_json(&sessions),
            tasks: to_json(&self.tasks),
            yolo: to_json(&self.yolo),
            approvals: to_json(&self.approvals),
            access: to_json(&self.access),
            idempotency: to_json(&keys),
        }
    }
}

/// The state query's parameters, in the order it binds them.
struct LookupJson {
    sessions: String,
    tasks: String,
    yolo: String,
    approvals: String,
    access: String,
    idempotency: String,
}

/// A state change that the writer applies inside a batch.
pub(crate) trait Operation: Send + 'static {
    /// What the caller gets back once the batch has committed.
    type Output: Send + 'static;

    /// The rows the operation needs to read.
    fn lookups(&self, out: &mut Lookups);

    /// Decides, and adds the rows of the change to `batch`. Runs with the
    /// write lock held, possibly twice (see the module documentation). Must
    /// add nothing if it fails, apart from what [`Batch::authenticate`]
    /// records.
    fn apply(&self, batch: &mut Batch<'_>) -> Result<Self::Output>;
}

/// What an operation spent of the rate limits, kept across its runs.
#[derive(Default)]
struct Spent {
    /// The verdict of the write quota, once asked.
    write: Option<Result<()>>,
    /// The verdict on a wrong token: the error, and whether to audit it.
    wrong_token: Option<(Error, bool)>,
}

/// An operation with its caller's reply channel, type-erased for the queue.
trait Job: Send {
    fn lookups(&self, out: &mut Lookups);
    fn apply(&mut self, batch: &mut Batch<'_>);
    /// Sends the result of `apply`, or `failure` if the batch did not commit.
    fn finish(self: Box<Self>, failure: Option<&Error>);
}

struct Pending<O: Operation> {
    operation: O,
    spent: Spent,
    result: Option<Result<O::Output>>,
    reply: oneshot::Sender<Result<O::Output>>,
}

impl<O: Operation> Job for Pending<O> {
    fn lookups(&self, out: &mut Lookups) {
        self.operation.lookups(out);
    }

    fn apply(&mut self, batch: &mut Batch<'_>) {
        batch.spent = std::mem::take(&mut self.spent);
        self.result = Some(self.operation.apply(batch));
        self.spent = std::mem::take(&mut batch.spent);
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
    /// Starts the writer task on `connection`, which must not wait for locks
    /// itself (busy timeout zero, see [`LockWait`]); `connect` reopens it if
    /// it breaks.
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
            remembered: None,
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
            spent: Spent::default(),
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
    /// The state after the last committed batch, for the fast path; `None`
    /// after any failure.
    remembered: Option<State>,
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

    /// Commits `jobs` as one batch; if the writes fail, retries each job
    /// alone so that only the faulty one fails.
    async fn process(&mut self, mut jobs: Vec<Box<dyn Job>>) {
        match self.commit(&mut jobs).await {
            Ok(wrote) => {
                if wrote {
                    self.shared.notify_commit();
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
                        self.shared.notify_commit();
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

    /// One batch, by the fast path if possible. Returns whether anything was
    /// written. Leaves `remembered` set only if the batch committed.
    async fn commit(&mut self, jobs: &mut [Box<dyn Job>]) -> Result<bool, Failure> {
        let shared = Arc::clone(&self.shared);
        if self.connection.is_none() {
            let connection = SqliteConnection::connect_with(&self.connect)
                .await
                .map_err(|error| Failure::Read(shared.sqlx_error(error)))?;
            self.connection = Some(connection);
        }
        let mut lookups = Lookups::default();
        for job in jobs.iter() {
            job.lookups(&mut lookups);
        }
        lookups.tidy();
        let lookup_json = lookups.json();

        let remembered = self
            .remembered
            .take()
            .filter(|state| state.covers(&lookups));
        let fresh_rows = match remembered {
            Some(state) => {
                let data_version = state.data_version;
                let (batch, wrote) = run_jobs(&shared, state, jobs);
                let params = batch.params();
                let mut wait = LockWait::new(shared.options.busy_timeout);
                let outcome = loop {
                    match self.fast_script(&lookup_json, data_version, &params).await {
                        Err(FastFailure::Failed(error))
                            if is_busy(&error) && wait.again().await => {}
                        outcome => break outcome,
                    }
                };
                match outcome {
                    Ok(()) => {
                        self.remember(batch.into_state());
                        return Ok(wrote);
                    }
                    // Stale: the lock is held and the fresh rows are here.
                    Err(FastFailure::Stale(rows)) => rows,
                    // An idempotency key used before this writer remembered
                    // it (see `State::idempotency`): the slow path reads it.
                    Err(FastFailure::Failed(error)) if is_constraint(&error) => {
                        self.abandon(&error).await;
                        self.read_or_abandon(&lookup_json).await?
                    }
                    Err(FastFailure::Failed(error)) => {
                        self.abandon(&error).await;
                        return Err(Failure::Write(shared.sqlx_error(error)));
                    }
                }
            }
            None => self.read_or_abandon(&lookup_json).await?,
        };

        let state = match State::from_rows(&shared, &lookups, &fresh_rows) {
            Ok(state) => state,
            Err(error) => {
                self.rollback().await;
                return Err(Failure::Read(error));
            }
        };
        let (batch, wrote) = run_jobs(&shared, state, jobs);
        if !wrote {
            self.rollback().await;
            self.remember(batch.into_state());
            return Ok(false);
        }
        match self.write_phase(batch.params()).await {
            Ok(()) => {
                self.remember(batch.into_state());
                Ok(true)
            }
            Err(error) => {
                self.abandon(&error).await;
                Err(Failure::Write(shared.sqlx_error(error)))
            }
        }
    }

    /// The slow path's first round trip; on failure, cleans up.
    async fn read_or_abandon(&mut self, lookups: &LookupJson) -> Result<Vec<SqliteRow>, Failure> {
        let busy_timeout = self.shared.options.busy_timeout;
        match self.read_phase(lookups, busy_timeout).await {
            Ok(rows) => Ok(rows),
            Err(error) => {
                self.abandon(&error).await;
                Err(Failure::Read(self.shared.sqlx_error(error)))
            }
        }
    }

    fn remember(&mut self, state: State) {
        if state.sessions.len() <= REMEMBERED_SESSIONS && state.tasks.len() <= REMEMBERED_TASKS {
            self.remembered = Some(state);
        }
    }

    fn connection(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        self.connection.as_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// `BEGIN IMMEDIATE` (waiting up to `busy_timeout` for the lock), then
    /// the state query.
    async fn read_phase(
        &mut self,
        lookups: &LookupJson,
        busy_timeout: Duration,
    ) -> Result<Vec<SqliteRow>, sqlx::Error> {
        let mut wait = LockWait::new(busy_timeout);
        loop {
            let rows = sqlx::query(READ_SQL)
                .bind(lookups.sessions.as_str())
                .bind(lookups.tasks.as_str())
                .bind(lookups.yolo.as_str())
                .bind(lookups.approvals.as_str())
                .bind(lookups.access.as_str())
                .bind(lookups.idempotency.as_str())
                .fetch_all(self.connection()?)
                .await;
            match rows {
                Err(error) if is_busy(&error) && wait.again().await => {}
                rows => return rows,
            }
        }
    }

    /// The one-round-trip script. On a stale guard, returns the rows of its
    /// state query, with the transaction still open.
    async fn fast_script(
        &mut self,
        lookups: &LookupJson,
        data_version: i64,
        params: &Params,
    ) -> Result<(), FastFailure> {
        let connection = self.connection().map_err(FastFailure::Failed)?;
        let mut stream = sqlx::query(FAST_SQL)
            .bind(lookups.sessions.as_str())
            .bind(lookups.tasks.as_str())
            .bind(lookups.yolo.as_str())
            .bind(lookups.approvals.as_str())
            .bind(lookups.access.as_str())
            .bind(lookups.idempotency.as_str())
            .bind(data_version)
            .bind(params.conversations.as_str())
            .bind(params.conversations.as_str())
            .bind(params.new_tasks.as_str())
            .bind(params.task_updates.as_str())
            .bind(params.new_assignments.as_str())
            .bind(params.ended_assignments.as_str())
            .bind(params.messages.as_str())
            .bind(params.idempotency.as_str())
            .bind(params.sessions.as_str())
            .bind(params.rekeys.as_str())
            .bind(params.yolo.as_str())
            .bind(params.yolo_deletions.as_str())
            .bind(params.new_approvals.as_str())
            .bind(params.used_approvals.as_str())
            .bind(params.approval_deletions.as_str())
            .bind(params.access.as_str())
            .bind(params.access_deletions.as_str())
            .bind(params.audits.as_str())
            .bind(params.deletions.as_str())
            .fetch(connection);
        let mut rows = Vec::new();
        loop {
            match stream.try_next().await {
                Ok(Some(row)) => rows.push(row),
                Ok(None) => return Ok(()),
                Err(sqlx::Error::Database(error)) if error.message().contains(STALE) => {
                    return Err(FastFailure::Stale(rows));
                }
                Err(error) => return Err(FastFailure::Failed(error)),
            }
        }
    }

    /// The writes and `COMMIT`, inside the transaction already open.
    async fn write_phase(&mut self, params: Params) -> Result<(), sqlx::Error> {
        sqlx::query(WRITE_SQL)
            .bind(&params.conversations)
            .bind(&params.conversations)
            .bind(params.new_tasks)
            .bind(params.task_updates)
            .bind(params.new_assignments)
            .bind(params.ended_assignments)
            .bind(params.messages)
            .bind(params.idempotency)
            .bind(params.sessions)
            .bind(params.rekeys)
            .bind(params.yolo)
            .bind(params.yolo_deletions)
            .bind(params.new_approvals)
            .bind(params.used_approvals)
            .bind(params.approval_deletions)
            .bind(params.access)
            .bind(params.access_deletions)
            .bind(params.audits)
            .bind(params.deletions)
            .execute(self.connection()?)
            .await
            .map(|_| ())
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

    /// Cleans up after a failed phase: forgets the remembered state, rolls
    /// back a transaction that may be open, and drops the connection if the
    /// error was not the database's own answer (it may be broken).
    async fn abandon(&mut self, error: &sqlx::Error) {
        self.remembered = None;
        if matches!(error, sqlx::Error::Database(_)) {
            self.rollback().await;
        } else {
            self.connection = None;
        }
    }
}

/// Whether `error` is SQLite's `SQLITE_BUSY`. The writer's connection does not
/// wait in SQLite (its busy timeout is zero), so this means the write lock
/// was not obtained and nothing ran: the script can simply be sent again. (In
/// WAL mode only taking the write lock can be busy.)
fn is_busy(error: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i64 = 5;
    sqlite_code(error) == Some(SQLITE_BUSY)
}

/// Whether `error` is a violated constraint (SQLite's `SQLITE_CONSTRAINT`).
fn is_constraint(error: &sqlx::Error) -> bool {
    const SQLITE_CONSTRAINT: i64 = 19;
    sqlite_code(error) == Some(SQLITE_CONSTRAINT)
}

/// Waiting for another process's write lock, by the writer itself rather
/// than SQLite's busy handler, whose sleeps grow to 100 ms: under contention
/// that made a few writes wait a second. Here every attempt comes about a
/// millisecond after the last (the granularity of Tokio's timer), with jitter
/// so that waiting processes do not retry in step.
struct LockWait {
    started: Instant,
    limit: Duration,
}

impl LockWait {
    fn new(limit: Duration) -> LockWait {
        LockWait {
            started: Instant::now(),
            limit,
        }
    }

    /// Sleeps before the next attempt; `false` once the limit has passed.
    async fn again(&mut self) -> bool {
        if self.started.elapsed() >= self.limit {
            return false;
        }
        let jitter = getrandom::u32().unwrap_or(0) % 1_000;
        tokio::time::sleep(Duration::from_micros(500 + u64::from(jitter))).await;
        true
    }
}

/// Why the fast script did not commit.
enum FastFailure {
    /// The guard fired: the remembered state was stale. Holds the fresh rows
    /// of the state query; the transaction is open.
    Stale(Vec<SqliteRow>),
    /// Anything else.
    Failed(sqlx::Error),
}

/// Runs every job against `state`; returns the batch and whether it writes
/// anything.
fn run_jobs<'a>(shared: &'a Shared, state: State, jobs: &mut [Box<dyn Job>]) -> (Batch<'a>, bool) {
    let mut batch = Batch::new(shared, state);
    for job in jobs.iter_mut() {
        job.apply(&mut batch);
    }
    let wrote = !batch.is_empty();
    (batch, wrote)
}

/// The state query, two statements: this connection's `data_version`, the
/// heads, and the conversation and session rows of the sessions in the first
/// `?` (a JSON array of `[conversation_id, session]`; always at least one row,
/// for the heads); then the task rows of the ids in the second `?` (one row
/// per id, NULLs for a task that does not exist).
macro_rules! state_query {
    () => {
        "SELECT
            (SELECT data_version FROM pragma_data_version) AS data_version,
            (SELECT seq FROM sqlite_sequence WHERE name = 'message') AS message_seq,
            (SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'audit'), 0),
                        coalesce((SELECT max(id) FROM audit), 0))) AS audit_seq,
            (SELECT hash FROM audit ORDER BY id DESC LIMIT 1) AS audit_head,
            (SELECT seq FROM sqlite_sequence WHERE name = 'task') AS task_seq,
            k.value ->> 0 AS conversation_id,
            k.value ->> 1 AS session,
            c.expires_at,
            c.team,
            CASE k.value ->> 1 WHEN 'a' THEN c.token_digest_a ELSE c.token_digest_b END AS digest,
            s.status,
            s.status_at,
            s.last_heartbeat,
            s.last_seen,
            s.delivered_id,
            s.acked_id
        FROM (SELECT 1) AS heads
        LEFT JOIN json_each(?) AS k
        LEFT JOIN conversation AS c ON c.id = k.value ->> 0
        LEFT JOIN session AS s ON s.conversation_id = c.id AND s.session = k.value ->> 1;
        SELECT k.value AS task_id, t.id, t.team, t.conversation_id, t.title, t.body, t.state,
               t.attempts, t.unassigned, t.note, t.redacted, t.created_at, t.updated_at
        FROM json_each(?) AS k
        LEFT JOIN task AS t ON t.id = k.value;
        SELECT k.value AS yolo_key, y.enabled_at AS yolo_enabled_at, y.mode AS yolo_mode,
               y.workspace AS yolo_workspace, y.timeout_ms AS yolo_timeout_ms,
               y.configured_at AS yolo_configured_at, y.configured_by AS yolo_configured_by
        FROM json_each(?) AS k
        LEFT JOIN yolo AS y ON y.conversation_id = k.value;
        SELECT k.value AS approval_key, a.id AS approval_id,
               a.conversation_id AS approval_conversation, a.preview AS approval_preview,
               a.created_at AS approval_created_at, a.expires_at AS approval_expires_at,
               a.used_at AS approval_used_at
        FROM json_each(?) AS k
        LEFT JOIN approval AS a ON a.digest = unhex(k.value);
        SELECT k.value AS access_key, hex(x.digest) AS access_digest,
               x.created_at AS access_created_at, x.expires_at AS access_expires_at,
               x.last_used_at AS access_last_used_at
        FROM json_each(?) AS k
        JOIN access_key AS x ON x.name = k.value;
        SELECT k.value ->> 0 AS idem_conversation, k.value ->> 1 AS idem_session,
               k.value ->> 2 AS idem_key, i.tool AS idem_tool,
               hex(i.request_digest) AS idem_request, i.result_id AS idem_result,
               i.created_at AS idem_at
        FROM json_each(?) AS k
        JOIN idempotency AS i ON i.conversation_id = k.value ->> 0
                             AND i.session = k.value ->> 1
                             AND i.key_digest = unhex(k.value ->> 2);"
    };
}

/// The writes of a batch from JSON arrays, then `COMMIT`. Each statement takes
/// exactly one anonymous `?`, bound in order. (Numbered `?N` parameters do not
/// survive a multi-statement query in `sqlx`: in a statement whose highest
/// parameter is `?4` but that does not use `?1` to `?3`, those slots consume
/// positional arguments, and the named one can end up unbound, silently
/// NULL.) Messages and audit rows, the bulk of the data, travel as arrays in
/// column order, which SQLite takes apart faster than objects.
macro_rules! writes {
    () => {
        "INSERT INTO conversation (id, role_a, role_b, team, created_at, expires_at, token_digest_a, token_digest_b)
            SELECT value ->> 'id', value ->> 'role_a', value ->> 'role_b', value ->> 'team',
                   value ->> 'created_at', value ->> 'expires_at',
                   unhex(value ->> 'digest_a'), unhex(value ->> 'digest_b')
            FROM json_each(?);
        INSERT INTO session (conversation_id, session)
            SELECT c.value ->> 'id', s.column1 FROM json_each(?) AS c, (VALUES ('a'), ('b')) AS s;
        INSERT INTO task (id, team, conversation_id, title, body, state, attempts, unassigned,
                          note, redacted, created_at, updated_at)
            SELECT value ->> 'id', value ->> 'team', value ->> 'conversation_id', value ->> 'title',
                   value ->> 'body', value ->> 'state', value ->> 'attempts', value ->> 'unassigned',
                   value ->> 'note', value ->> 'redacted', value ->> 'created_at', value ->> 'updated_at'
            FROM json_each(?);
        UPDATE task
            SET conversation_id = u.value ->> 'conversation_id',
                state = u.value ->> 'state',
                attempts = u.value ->> 'attempts',
                unassigned = u.value ->> 'unassigned',
                note = u.value ->> 'note',
                updated_at = u.value ->> 'updated_at'
            FROM json_each(?) AS u
            WHERE task.id = u.value ->> 'id';
        INSERT INTO task_assignment (task_id, attempt, conversation_id, assigned_at)
            SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?);
        UPDATE task_assignment
            SET ended_at = u.value ->> 2, ended_by = u.value ->> 3
            FROM json_each(?) AS u
            WHERE task_assignment.task_id = u.value ->> 0 AND task_assignment.attempt = u.value ->> 1;
        INSERT INTO message (id, conversation_id, sender, recipient, body, action_type,
                             files_involved, metadata, redacted, created_at)
            SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4,
                   value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9
            FROM json_each(?);
        INSERT INTO idempotency (conversation_id, session, key_digest, tool, request_digest,
                                 result_id, created_at)
            SELECT value ->> 0, value ->> 1, unhex(value ->> 2), value ->> 3, unhex(value ->> 4),
                   value ->> 5, value ->> 6
            FROM json_each(?);
        UPDATE session
            SET status = u.value ->> 'status',
                status_at = u.value ->> 'status_at',
                last_heartbeat = u.value ->> 'last_heartbeat',
                last_seen = u.value ->> 'last_seen',
                delivered_id = u.value ->> 'delivered_id',
                acked_id = u.value ->> 'acked_id'
            FROM json_each(?) AS u
            WHERE session.conversation_id = u.value ->> 'conversation_id'
              AND session.session = u.value ->> 'session';
        UPDATE conversation
            SET token_digest_a = coalesce(unhex(u.value ->> 'a'), token_digest_a),
                token_digest_b = coalesce(unhex(u.value ->> 'b'), token_digest_b)
            FROM json_each(?) AS u
            WHERE conversation.id = u.value ->> 'id';
        INSERT INTO yolo (conversation_id, enabled_at, mode, workspace, timeout_ms,
                          configured_at, configured_by)
            SELECT value ->> 'conversation_id', value ->> 'enabled_at', value ->> 'mode',
                   value ->> 'workspace', value ->> 'timeout_ms', value ->> 'configured_at',
                   value ->> 'configured_by'
            FROM json_each(?) WHERE true
            ON CONFLICT (conversation_id) DO UPDATE
                SET enabled_at = excluded.enabled_at, mode = excluded.mode,
                    workspace = excluded.workspace, timeout_ms = excluded.timeout_ms,
                    configured_at = excluded.configured_at, configured_by = excluded.configured_by;
        DELETE FROM yolo WHERE conversation_id IN (SELECT value FROM json_each(?));
        INSERT INTO approval (digest, preview, conversation_id, created_at, expires_at)
            SELECT unhex(value ->> 'digest'), value ->> 'preview', value ->> 'conversation_id',
                   value ->> 'created_at', value ->> 'expires_at'
            FROM json_each(?);
        UPDATE approval SET used_at = u.value ->> 1
            FROM json_each(?) AS u
            WHERE approval.digest = unhex(u.value ->> 0);
        DELETE FROM approval WHERE id IN (SELECT value FROM json_each(?));
        INSERT INTO access_key (name, digest, created_at, expires_at, last_used_at)
            SELECT value ->> 'name', unhex(value ->> 'digest'), value ->> 'created_at',
                   value ->> 'expires_at', value ->> 'last_used_at'
            FROM json_each(?) WHERE true
            ON CONFLICT (name) DO UPDATE SET last_used_at = excluded.last_used_at;
        DELETE FROM access_key WHERE name IN (SELECT value FROM json_each(?));
        INSERT INTO audit (id, at, conversation_id, session, action, detail, prev_hash, hash)
            SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3,
                   value ->> 4, value ->> 5, value ->> 6, value ->> 7
            FROM json_each(?);
        DELETE FROM conversation WHERE id IN (SELECT value FROM json_each(?));
        COMMIT;"
    };
}

/// Slow path, first round trip: the write lock, then the state.
const READ_SQL: &str = concat!("BEGIN IMMEDIATE;", state_query!());

/// Slow path, second round trip.
const WRITE_SQL: &str = writes!();

/// Fast path: the lock, the state (returned in case the guard fires), the
/// guard (binds the remembered `data_version`), the writes.
const FAST_SQL: &str = concat!(
    "BEGIN IMMEDIATE;",
    state_query!(),
    "INSERT INTO writer_guard (data_version)
        SELECT data_version FROM pragma_data_version WHERE data_version IS NOT ?;",
    writes!()
);

/// The JSON arrays the writes read.
struct Params {
    conversations: String,
    new_tasks: String,
    task_updates: String,
    new_assignments: String,
    ended_assignments: String,
    messages: String,
    /// Writes recorded under idempotency keys.
    idempotency: String,
    sessions: String,
    /// New token digests: `{id, a, b}` per conversation, hex or null.
    rekeys: String,
    /// Command-execution settings inserted or changed, and removed.
    yolo: String,
    yolo_deletions: String,
    /// Approval tokens issued, used (`[digest, at]`), and removed (ids).
    new_approvals: String,
    used_approvals: String,
    approval_deletions: String,
    /// Access keys made or used (upserted whole), and revoked (names).
    access: String,
    access_deletions: String,
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

/// A message to insert; its id and time are assigned by
/// [`Batch::insert_message`].
#[derive(Clone)]
pub(crate) struct MessageRow {
    id: i64,
    pub(crate) conversation_id: ConversationId,
    pub(crate) sender: Sender,
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
        sender: Sender,
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

impl MessageRow {
    /// A message from mcp-bridge itself to `recipient`, of action type
    /// `info`, with `metadata` (naming the task it is about).
    pub(crate) fn system(
        conversation_id: &ConversationId,
        recipient: SessionId,
        body: String,
        metadata: serde_json::Value,
        redacted: bool,
    ) -> MessageRow {
        MessageRow::new(
            conversation_id.clone(),
            Sender::System,
            recipient,
            body,
            "info",
            "[]".to_owned(),
            Some(metadata.to_string()),
            redacted,
        )
    }
}

/// The state of one session as the writer sees it: read by a state query,
/// changed by operations, written back in full when changed.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SessionRow {
    #[serde(skip)]
    pub(crate) expires_at: Timestamp,
    #[serde(skip)]
    digest: Vec<u8>,
    #[serde(skip)]
    dirty: bool,
    /// Its token was replaced in this batch: `digest` is to be written.
    #[serde(skip)]
    rekeyed: bool,
    /// The conversation's team.
    #[serde(skip)]
    pub(crate) team: Option<String>,
    pub(crate) conversation_id: ConversationId,
    pub(crate) session: SessionId,
    pub(crate) status: Option<Status>,
    pub(crate) status_at: Option<i64>,
    pub(crate) last_heartbeat: Option<i64>,
    pub(crate) last_seen: Option<i64>,
    /// The highest message id ever handed to this session.
    pub(crate) delivered_id: i64,
    /// The last message confirmed as received.
    pub(crate) acked_id: i64,
}

/// A task as the writer sees it: read by a state query (or inserted by the
/// batch), changed by operations, written back in full when changed.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TaskRow {
    pub(crate) id: i64,
    pub(crate) team: Option<String>,
    pub(crate) conversation_id: ConversationId,
    pub(crate) title: String,
    pub(crate) body: String,
    pub(crate) state: TaskState,
    pub(crate) attempts: i64,
    pub(crate) unassigned: bool,
    pub(crate) note: Option<String>,
    pub(crate) redacted: bool,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// Inserted by this batch (else: updated, if `dirty`).
    #[serde(skip)]
    new: bool,
    #[serde(skip)]
    dirty: bool,
}

impl TaskRow {
    /// A task as read from the database.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read(
        id: i64,
        team: Option<String>,
        conversation_id: ConversationId,
        title: String,
        body: String,
        state: TaskState,
        attempts: i64,
        unassigned: bool,
        note: Option<String>,
        redacted: bool,
        created_at: i64,
        updated_at: i64,
    ) -> TaskRow {
        TaskRow {
            id,
            team,
            conversation_id,
            title,
            body,
            state,
            attempts,
            unassigned,
            note,
            redacted,
            created_at,
            updated_at,
            new: false,
            dirty: false,
        }
    }
}

/// A conversation's command-execution settings: enabled by the operator,
/// configured (mode, workspace, timeout) by an agent.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct YoloRow {
    pub(crate) conversation_id: ConversationId,
    pub(crate) enabled_at: i64,
    pub(crate) mode: Option<String>,
    pub(crate) workspace: Option<String>,
    pub(crate) timeout_ms: Option<i64>,
    pub(crate) configured_at: Option<i64>,
    pub(crate) configured_by: Option<SessionId>,
}

/// An approval token, by its digest: read by a state query or issued by
/// the batch.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ApprovalRow {
    /// The HMAC digest of the token, hex.
    pub(crate) digest: String,
    pub(crate) preview: String,
    pub(crate) conversation_id: Option<ConversationId>,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
    #[serde(skip)]
    pub(crate) used_at: Option<i64>,
    /// Issued by this batch.
    #[serde(skip)]
    new: bool,
}

impl ApprovalRow {
    /// A token issued now.
    pub(crate) fn issued(
        digest: String,
        preview: String,
        conversation_id: Option<ConversationId>,
        created_at: i64,
        expires_at: i64,
    ) -> ApprovalRow {
        ApprovalRow {
            digest,
            preview,
            conversation_id,
            created_at,
            expires_at,
            used_at: None,
            new: true,
        }
    }
}

/// An operator's access key, by name: read by a state query or made by the
/// batch.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct AccessRow {
    pub(crate) name: String,
    /// The HMAC digest of the key, hex.
    pub(crate) digest: String,
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
}

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

/// What the writer knows of the database: read by a state query, carried
/// forward by its own batches.
struct State {
    /// This connection's `data_version` when the state was read: it changes
    /// when any other connection commits.
    data_version: i64,
    last_message_id: i64,
    last_audit_id: i64,
    last_hash: String,
    last_task_id: i64,
    /// Every session looked up; `None` where its conversation does not exist.
    sessions: HashMap<Key, Option<SessionRow>>,
    /// Every task looked up (or inserted); `None` where it does not exist.
    tasks: HashMap<i64, Option<TaskRow>>,
    /// Command-execution settings looked up, by conversation; `None` where
    /// execution is not enabled. Not carried to the next batch.
    yolo: HashMap<ConversationId, Option<YoloRow>>,
    /// Approval tokens looked up, by digest; `None` where there is none.
    /// Not carried to the next batch.
    approvals: HashMap<String, Option<ApprovalRow>>,
    /// Access keys looked up, by name; `None` where there is none. Not
    /// carried to the next batch.
    access: HashMap<String, Option<AccessRow>>,
    /// Idempotency keys looked up or recorded. Unlike the rest, a key
    /// missing here counts as unused even on the fast path: the table's
    /// primary key is the check, and a batch that finds the key taken after
    /// all is run again on the slow path, whose state query reads it.
    idempotency: HashMap<IdempotencySlot, Option<IdempotencyRow>>,
}

impl State {
    /// Whether this state holds every row `lookups` asks for.
    fn covers(&self, lookups: &Lookups) -> bool {
        lookups
            .sessions
            .iter()
            .all(|key| self.sessions.contains_key(key))
            && lookups.tasks.iter().all(|id| self.tasks.contains_key(id))
            && lookups.yolo.iter().all(|id| self.yolo.contains_key(id))
            && lookups
                .approvals
                .iter()
                .all(|digest| self.approvals.contains_key(digest))
            && lookups
                .access
                .iter()
                .all(|name| self.access.contains_key(name))
    }

    /// The state from the rows of a state query for `lookups`.
    fn from_rows(shared: &Shared, lookups: &Lookups, rows: &[SqliteRow]) -> Result<State> {
        let corrupt = |error: sqlx::Error| shared.sqlx_error(error);
        let first = rows.first().ok_or_else(|| Error::Database {
            path: shared.path.clone(),
            message: "the state query returned no row".into(),
        })?;
        let last_hash: Option<String> = first.try_get("audit_head").map_err(corrupt)?;
        let head = |column: &str| -> Result<i64> {
            Ok(first
                .try_get::<Option<i64>, _>(column)
                .map_err(corrupt)?
                .unwrap_or(0))
        };
        let mut state = State {
            data_version: first.try_get("data_version").map_err(corrupt)?,
            last_message_id: head("message_seq")?,
            last_audit_id: head("audit_seq")?,
            last_task_id: head("task_seq")?,
            last_hash: last_hash.unwrap_or_else(|| GENESIS_HASH.to_owned()),
            sessions: lookups
                .sessions
                .iter()
                .map(|key| (key.clone(), None))
                .collect(),
            tasks: lookups.tasks.iter().map(|id| (*id, None)).collect(),
            yolo: lookups.yolo.iter().map(|id| (id.clone(), None)).collect(),
            approvals: lookups
                .approvals
                .iter()
                .map(|digest| (digest.clone(), None))
                .collect(),
            access: lookups
                .access
                .iter()
                .map(|name| (name.clone(), None))
                .collect(),
            idempotency: lookups
                .idempotency
                .iter()
                .map(|key| (key.clone(), None))
                .collect(),
        };
        for row in rows {
            if row.try_column("idem_key").is_ok() {
                let (key, found) = idempotency_from_row(row).map_err(corrupt)?;
                state.idempotency.insert(key, Some(found));
                continue;
            }
            if row.try_column("yolo_key").is_ok() {
                if let Some(yolo) = yolo_from_row(row).map_err(corrupt)? {
                    state.yolo.insert(yolo.conversation_id.clone(), Some(yolo));
                }
                continue;
            }
            if row.try_column("access_key").is_ok() {
                let access = access_from_row(row).map_err(corrupt)?;
                state.access.insert(access.name.clone(), Some(access));
                continue;
            }
            if row.try_column("approval_key").is_ok() {
                if let Some(approval) = approval_from_row(row).map_err(corrupt)? {
                    state
                        .approvals
                        .insert(approval.digest.clone(), Some(approval));
                }
                continue;
            }
            // The second statement's rows are the tasks'.
            if row.try_column("task_id").is_ok() {
                if let Some(task) = task_from_row(row).map_err(corrupt)? {
                    state.tasks.insert(task.id, Some(task));
                }
                continue;
            }
            let Some(expires_at) = row
                .try_get::<Option<i64>, _>("expires_at")
                .map_err(corrupt)?
            else {
                // No such conversation (or no keys at all).
                continue;
            };
            let conversation_id: String = row.try_get("conversation_id").map_err(corrupt)?;
            let session: String = row.try_get("session").map_err(corrupt)?;
            let status: Option<String> = row.try_get("status").map_err(corrupt)?;
            let key: Key = (conversation_id.parse()?, session.parse()?);
            let session_row = SessionRow {
                expires_at: Timestamp::from_millis(expires_at),
                digest: row.try_get("digest").map_err(corrupt)?,
                dirty: false,
                rekeyed: false,
                team: row.try_get("team").map_err(corrupt)?,
                conversation_id: key.0.clone(),
                session: key.1,
                status: status.map(|status| status.parse()).transpose()?,
                status_at: row.try_get("status_at").map_err(corrupt)?,
                last_heartbeat: row.try_get("last_heartbeat").map_err(corrupt)?,
                last_seen: row.try_get("last_seen").map_err(corrupt)?,
                delivered_id: row.try_get("delivered_id").map_err(corrupt)?,
                acked_id: row.try_get("acked_id").map_err(corrupt)?,
            };
            state.sessions.insert(key, Some(session_row));
        }
        Ok(state)
    }
}

/// A task row of the state query; `None` if the task does not exist.
fn task_from_row(row: &SqliteRow) -> Result<Option<TaskRow>, sqlx::Error> {
    let Some(id) = row.try_get::<Option<i64>, _>("id")? else {
        return Ok(None);
    };
    let decode = |error: Error| sqlx::Error::Decode(Box::new(error));
    let conversation_id: String = row.try_get("conversation_id")?;
    let state: String = row.try_get("state")?;
    Ok(Some(TaskRow::read(
        id,
        row.try_get("team")?,
        conversation_id.parse().map_err(decode)?,
        row.try_get("title")?,
        row.try_get("body")?,
        state.parse().map_err(decode)?,
        row.try_get("attempts")?,
        row.try_get("unassigned")?,
        row.try_get("note")?,
        row.try_get("redacted")?,
        row.try_get("created_at")?,
        row.try_get("updated_at")?,
    )))
}

/// A row of the state query's settings statement; `None` if execution is
/// not enabled for the conversation.
fn yolo_from_row(row: &SqliteRow) -> Result<Option<YoloRow>, sqlx::Error> {
    let Some(enabled_at) = row.try_get::<Option<i64>, _>("yolo_enabled_at")? else {
        return Ok(None);
    };
    let decode = |error: Error| sqlx::Error::Decode(Box::new(error));
    let conversation_id: String = row.try_get("yolo_key")?;
    let configured_by: Option<String> = row.try_get("yolo_configured_by")?;
    Ok(Some(YoloRow {
        conversation_id: conversation_id.parse().map_err(decode)?,
        enabled_at,
        mode: row.try_get("yolo_mode")?,
        workspace: row.try_get("yolo_workspace")?,
        timeout_ms: row.try_get("yolo_timeout_ms")?,
        configured_at: row.try_get("yolo_configured_at")?,
        configured_by: configured_by
            .map(|session| session.parse())
            .transpose()
            .map_err(decode)?,
    }))
}

/// A row of the state query's idempotency statement (only keys found have
/// one).
fn idempotency_from_row(row: &SqliteRow) -> Result<(IdempotencySlot, IdempotencyRow), sqlx::Error> {
    let decode = |error: Error| sqlx::Error::Decode(Box::new(error));
    let digest = |column: &str| -> Result<[u8; 32], sqlx::Error> {
        let text: String = row.try_get(column)?;
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(&text, &mut bytes)
            .map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
        Ok(bytes)
    };
    let conversation_id: String = row.try_get("idem_conversation")?;
    let session: String = row.try_get("idem_session")?;
    let key = (
        conversation_id.parse().map_err(decode)?,
        session.parse().map_err(decode)?,
        digest("idem_key")?,
    );
    let found = IdempotencyRow {
        tool: row.try_get("idem_tool")?,
        request_digest: digest("idem_request")?,
        result_id: row.try_get("idem_result")?,
        created_at: row.try_get("idem_at")?,
        new: false,
    };
    Ok((key, found))
}

/// A row of the state query's approval statement; `None` if no token has
/// that digest.
fn approval_from_row(row: &SqliteRow) -> Result<Option<ApprovalRow>, sqlx::Error> {
    if row.try_get::<Option<i64>, _>("approval_id")?.is_none() {
        return Ok(None);
    }
    let decode = |error: Error| sqlx::Error::Decode(Box::new(error));
    let conversation_id: Option<String> = row.try_get("approval_conversation")?;
    Ok(Some(ApprovalRow {
        digest: row.try_get("approval_key")?,
        preview: row.try_get("approval_preview")?,
        conversation_id: conversation_id
            .map(|id| id.parse())
            .transpose()
            .map_err(decode)?,
        created_at: row.try_get("approval_created_at")?,
        expires_at: row.try_get("approval_expires_at")?,
        used_at: row.try_get("approval_used_at")?,
        new: false,
    }))
}

/// A row of the state query's access-key statement.
fn access_from_row(row: &SqliteRow) -> Result<AccessRow, sqlx::Error> {
    Ok(AccessRow {
        name: row.try_get("access_key")?,
        digest: row.try_get("access_digest")?,
        created_at: row.try_get("access_created_at")?,
        expires_at: row.try_get("access_expires_at")?,
        last_used_at: row.try_get("access_last_used_at")?,
    })
}

/// Everything one batch reads and writes.
pub(crate) struct Batch<'a> {
    /// The time of the batch, taken once the write lock is held (or about to
    /// be), so that times along the audit chain never go backwards.
    pub(crate) now: Timestamp,
    shared: &'a Shared,
    state: State,
    /// What the operation now running has spent of the rate limits.
    spent: Spent,
    conversations: Vec<ConversationRow>,
    messages: Vec<MessageRow>,
    audits: Vec<AuditRow>,
    deletions: Vec<ConversationId>,
    /// Assignments begun: (task, attempt, conversation, at).
    new_assignments: Vec<(i64, i64, ConversationId, i64)>,
    /// Assignments ended: (task, attempt, at, why).
    ended_assignments: Vec<(i64, i64, i64, &'static str)>,
    /// Command-execution settings written, and removed.
    yolo: Vec<YoloRow>,
    yolo_deletions: Vec<ConversationId>,
    /// Approval tokens used: (digest, at).
    used_approvals: Vec<(String, i64)>,
    /// Approval tokens removed, by id.
    approval_deletions: Vec<i64>,
    /// Access keys made or used, and revoked.
    access: Vec<AccessRow>,
    access_deletions: Vec<String>,
}

impl<'a> Batch<'a> {
    fn new(shared: &'a Shared, state: State) -> Batch<'a> {
        Batch {
            now: Timestamp::now(),
            shared,
            state,
            spent: Spent::default(),
            conversations: Vec::new(),
            messages: Vec::new(),
            audits: Vec::new(),
            deletions: Vec::new(),
            new_assignments: Vec::new(),
            ended_assignments: Vec::new(),
            yolo: Vec::new(),
            yolo_deletions: Vec::new(),
            used_approvals: Vec::new(),
            approval_deletions: Vec::new(),
            access: Vec::new(),
            access_deletions: Vec::new(),
        }
    }

    /// A conversation's command-execution settings, if execution is
    /// enabled for it (looked up, or written by this batch).
    pub(crate) fn yolo(&self, conversation_id: &ConversationId) -> Option<&YoloRow> {
        self.state
            .yolo
            .get(conversation_id)
            .and_then(Option::as_ref)
    }

    /// Writes a conversation's command-execution settings.
    pub(crate) fn put_yolo(&mut self, row: YoloRow) {
        self.state
            .yolo
            .insert(row.conversation_id.clone(), Some(row.clone()));
        self.yolo.push(row);
    }

    /// Removes a conversation's command-execution settings.
    pub(crate) fn delete_yolo(&mut self, conversation_id: &ConversationId) {
        self.state.yolo.insert(conversation_id.clone(), None);
        self.yolo_deletions.push(conversation_id.clone());
    }

    /// The approval token of digest `digest` (hex), if there is one.
    pub(crate) fn approval(&self, digest: &str) -> Option<&ApprovalRow> {
        self.state.approvals.get(digest).and_then(Option::as_ref)
    }

    /// Records a newly issued approval token.
    pub(crate) fn insert_approval(&mut self, row: ApprovalRow) {
        self.state.approvals.insert(row.digest.clone(), Some(row));
    }

    /// Marks the approval token of digest `digest` used, now.
    pub(crate) fn use_approval(&mut self, digest: &str) {
        let now = self.now.as_millis();
        if let Some(Some(row)) = self.state.approvals.get_mut(digest) {
            row.used_at = Some(now);
        }
        self.used_approvals.push((digest.to_owned(), now));
    }

    /// Removes approval tokens by id.
    pub(crate) fn delete_approvals(&mut self, ids: impl IntoIterator<Item = i64>) {
        self.approval_deletions.extend(ids);
    }

    /// The access key named `name`, if there is one.
    pub(crate) fn access(&self, name: &str) -> Option<&AccessRow> {
        self.state.access.get(name).and_then(Option::as_ref)
    }

    /// Writes an access key: a new one, or one whose last use changed.
    pub(crate) fn put_access(&mut self, row: AccessRow) {
        self.state
            .access
            .insert(row.name.clone(), Some(row.clone()));
        self.access.push(row);
    }

    /// Revokes the access key named `name`.
    pub(crate) fn delete_access(&mut self, name: &str) {
        self.state.access.insert(name.to_owned(), None);
        self.access_deletions.push(name.to_owned());
    }

    /// The write recorded under an idempotency key, if the key was used.
    pub(crate) fn idempotent(&self, key: &IdempotencySlot) -> Option<&IdempotencyRow> {
        self.state.idempotency.get(key).and_then(Option::as_ref)
    }

    /// Records that `tool` returned `result_id` for the request of digest
    /// `request_digest` under `key`.
    pub(crate) fn record_idempotent(
        &mut self,
        key: IdempotencySlot,
        tool: &str,
        request_digest: [u8; 32],
        result_id: i64,
    ) {
        let row = IdempotencyRow {
            tool: tool.to_owned(),
            request_digest,
            result_id,
            created_at: self.now.as_millis(),
            new: true,
        };
        self.state.idempotency.insert(key, Some(row));
    }

    /// A task read for this batch, or inserted by it.
    pub(crate) fn task(&self, id: i64) -> Option<&TaskRow> {
        self.state.tasks.get(&id).and_then(Option::as_ref)
    }

    /// A task, to be changed; it is written back at commit (its
    /// `updated_at` set to the batch's time).
    pub(crate) fn task_mut(&mut self, id: i64) -> Option<&mut TaskRow> {
        let now = self.now.as_millis();
        let task = self.state.tasks.get_mut(&id)?.as_mut()?;
        task.dirty = true;
        task.updated_at = now;
        Some(task)
    }

    /// Adds a task, open and assigned to `conversation_id` (its first
    /// assignment begins); returns its id.
    pub(crate) fn insert_task(
        &mut self,
        team: Option<String>,
        conversation_id: &ConversationId,
        title: String,
        body: String,
        redacted: bool,
    ) -> i64 {
        self.state.last_task_id += 1;
        let id = self.state.last_task_id;
        let now = self.now.as_millis();
        let task = TaskRow {
            id,
            team,
            conversation_id: conversation_id.clone(),
            title,
            body,
            state: TaskState::Open,
            attempts: 1,
            unassigned: false,
            note: None,
            redacted,
            created_at: now,
            updated_at: now,
            new: true,
            dirty: false,
        };
        self.state.tasks.insert(id, Some(task));
        self.new_assignments
            .push((id, 1, conversation_id.clone(), now));
        id
    }

    /// Ends attempt `attempt` of a task's assignments, for `why`.
    pub(crate) fn end_assignment(&mut self, task_id: i64, attempt: i64, why: &'static str) {
        self.ended_assignments
            .push((task_id, attempt, self.now.as_millis(), why));
    }

    /// Begins attempt `attempt` of a task's assignments, to `conversation_id`.
    pub(crate) fn begin_assignment(
        &mut self,
        task_id: i64,
        attempt: i64,
        conversation_id: &ConversationId,
    ) {
        self.new_assignments.push((
            task_id,
            attempt,
            conversation_id.clone(),
            self.now.as_millis(),
        ));
    }

    /// Authenticates `credentials` and records the call in the session's
    /// `last_seen` (if that is older than the store's resolution). A wrong
    /// token within the failure budget is audited.
    pub(crate) fn authenticate(&mut self, credentials: &Credentials) -> Result<()> {
        let key = (credentials.conversation_id.clone(), credentials.session);
        let found = self
            .session(&key.0, key.1)
            .map(|row| (row.digest.as_slice(), row.expires_at));
        match self.shared.verify(credentials, found, self.now) {
            Ok(()) => {}
            Err(AuthFailure::Refused(error)) => return Err(error),
            Err(AuthFailure::WrongToken) => {
                let shared = self.shared;
                let (error, audit) = self
                    .spent
                    .wrong_token
                    .get_or_insert_with(|| shared.wrong_token(credentials))
                    .clone();
                if audit {
                    self.audit_auth_failure(&key.0, key.1);
                }
                return Err(error);
            }
        }
        let now = self.now;
        let resolution = self.shared.options.last_seen_resolution;
        let stale = self.session(&key.0, key.1).is_some_and(|row| {
            row.last_seen
                .is_none_or(|seen| Timestamp::from_millis(seen).age_at(now) >= resolution)
        });
        if stale && let Some(row) = self.session_mut(&key.0, key.1) {
            row.last_seen = Some(now.as_millis());
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

    /// The state of a session, if its conversation exists.
    pub(crate) fn session(
        &self,
        conversation_id: &ConversationId,
        session: SessionId,
    ) -> Option<&SessionRow> {
        self.state
            .sessions
            .get(&(conversation_id.clone(), session))
            .and_then(Option::as_ref)
    }

    /// The row of `session` of a conversation that exists and has not
    /// expired: what the operator's operations, which carry no token, check
    /// instead of authenticating.
    pub(crate) fn live_session(
        &self,
        conversation_id: &ConversationId,
        session: SessionId,
    ) -> Result<&SessionRow> {
        let Some(row) = self.session(conversation_id, session) else {
            return Err(Error::NoSuchConversation {
                conversation_id: conversation_id.clone(),
            });
        };
        if row.expires_at <= self.now {
            return Err(Error::Expired {
                conversation_id: conversation_id.clone(),
                expired_at: row.expires_at,
            });
        }
        Ok(row)
    }

    /// The state of a session, to be changed; it is written back at commit.
    pub(crate) fn session_mut(
        &mut self,
        conversation_id: &ConversationId,
        session: SessionId,
    ) -> Option<&mut SessionRow> {
        let row = self
            .state
            .sessions
            .get_mut(&(conversation_id.clone(), session))?
            .as_mut()?;
        row.dirty = true;
        Some(row)
    }

    /// Replaces a session's token digest, written at commit. Returns `false`
    /// if the session was not looked up (or does not exist).
    pub(crate) fn rekey(
        &mut self,
        conversation_id: &ConversationId,
        session: SessionId,
        digest: Vec<u8>,
    ) -> bool {
        let Some(row) = self.session_mut(conversation_id, session) else {
            return false;
        };
        row.digest = digest;
        row.rekeyed = true;
        true
    }

    /// Spends one write of the session's rate-limit quota (once per
    /// operation, however often it runs).
    pub(crate) fn check_write(&mut self, credentials: &Credentials) -> Result<()> {
        let limits = &self.shared.limits;
        self.spent
            .write
            .get_or_insert_with(|| {
                limits.check_write(&credentials.conversation_id, credentials.session)
            })
            .clone()
    }

    /// Adds a conversation and its two sessions.
    pub(crate) fn insert_conversation(&mut self, row: ConversationRow) {
        self.conversations.push(row);
    }

    /// Adds a message; returns its id and time.
    pub(crate) fn insert_message(&mut self, mut row: MessageRow) -> (i64, Timestamp) {
        self.state.last_message_id += 1;
        row.id = self.state.last_message_id;
        row.created_at = self.now.as_millis();
        self.messages.push(row);
        (self.state.last_message_id, self.now)
    }

    /// Deletes a conversation with everything that hangs off it. Later
    /// operations of the batch no longer find it.
    pub(crate) fn delete_conversation(&mut self, conversation_id: &ConversationId) {
        for ((id, _), row) in &mut self.state.sessions {
            if id == conversation_id {
                *row = None;
            }
        }
        for task in self.state.tasks.values_mut() {
            if task
                .as_ref()
                .is_some_and(|task| task.conversation_id == *conversation_id)
            {
                *task = None;
            }
        }
        self.state
            .idempotency
            .retain(|(id, _, _), _| id != conversation_id);
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
        let id = self.state.last_audit_id + 1;
        let at = self.now.as_millis();
        let detail = detail.to_string();
        let hash = audit::chain_hash(
            &self.state.last_hash,
            id,
            at,
            conversation_id.map(ConversationId::as_str),
            session.map(SessionId::as_str),
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
            prev_hash: std::mem::replace(&mut self.state.last_hash, hash.clone()),
            hash,
        });
        self.state.last_audit_id = id;
    }

    fn is_empty(&self) -> bool {
        self.conversations.is_empty()
            && self.messages.is_empty()
            && self.audits.is_empty()
            && self.deletions.is_empty()
            && self.new_assignments.is_empty()
            && self.ended_assignments.is_empty()
            && self.yolo.is_empty()
            && self.yolo_deletions.is_empty()
            && self.used_approvals.is_empty()
            && self.approval_deletions.is_empty()
            && self.access.is_empty()
            && self.access_deletions.is_empty()
            && !self.state.approvals.values().flatten().any(|row| row.new)
            && !self.state.idempotency.values().flatten().any(|row| row.new)
            && !self.state.sessions.values().flatten().any(|row| row.dirty)
            && !self
                .state
                .tasks
                .values()
                .flatten()
                .any(|task| task.dirty || task.new)
    }

    /// The JSON arrays of the writes.
    fn params(&self) -> Params {
        let sessions: Vec<&SessionRow> = self
            .state
            .sessions
            .values()
            .flatten()
            .filter(|row| row.dirty)
            .collect();
        // Column order of the writes' message and audit inserts.
        let messages: Vec<_> = self
            .messages
            .iter()
            .map(|m| {
                (
                    m.id,
                    &m.conversation_id,
                    m.sender,
                    m.recipient,
                    &m.body,
                    m.action_type,
                    &m.files_involved,
                    &m.metadata,
                    m.redacted,
                    m.created_at,
                )
            })
            .collect();
        let audits: Vec<_> = self
            .audits
            .iter()
            .map(|a| {
                (
                    a.id,
                    a.at,
                    &a.conversation_id,
                    a.session,
                    a.action,
                    &a.detail,
                    &a.prev_hash,
                    &a.hash,
                )
            })
            .collect();
        let mut rekeys: BTreeMap<&ConversationId, (Option<String>, Option<String>)> =
            BTreeMap::new();
        for row in sessions.iter().filter(|row| row.rekeyed) {
            let entry = rekeys.entry(&row.conversation_id).or_default();
            let digest = Some(hex::encode(&row.digest));
            match row.session {
                SessionId::A => entry.0 = digest,
                SessionId::B => entry.1 = digest,
            }
        }
        let rekeys: Vec<_> = rekeys
            .into_iter()
            .map(|(id, (a, b))| serde_json::json!({ "id": id, "a": a, "b": b }))
            .collect();
        let tasks = || self.state.tasks.values().flatten();
        let new_tasks: Vec<&TaskRow> = tasks().filter(|task| task.new).collect();
        let task_updates: Vec<&TaskRow> = tasks().filter(|task| task.dirty && !task.new).collect();
        let new_approvals: Vec<&ApprovalRow> = self
            .state
            .approvals
            .values()
            .flatten()
            .filter(|row| row.new)
            .collect();
        // Column order of the writes' idempotency insert.
        let idempotency: Vec<_> = self
            .state
            .idempotency
            .iter()
            .filter_map(|((conversation, session, key), row)| {
                let row = row.as_ref().filter(|row| row.new)?;
                Some((
                    conversation,
                    session,
                    hex::encode(key),
                    &row.tool,
                    hex::encode(row.request_digest),
                    row.result_id,
                    row.created_at,
                ))
            })
            .collect();
        Params {
            idempotency: to_json(&idempotency),
            yolo: to_json(&self.yolo),
            yolo_deletions: to_json(&self.yolo_deletions),
            new_approvals: to_json(&new_approvals),
            used_approvals: to_json(&self.used_approvals),
            approval_deletions: to_json(&self.approval_deletions),
            access: to_json(&self.access),
            access_deletions: to_json(&self.access_deletions),
            conversations: to_json(&self.conversations),
            new_tasks: to_json(&new_tasks),
            task_updates: to_json(&task_updates),
            new_assignments: to_json(&self.new_assignments),
            ended_assignments: to_json(&self.ended_assignments),
            messages: to_json(&messages),
            sessions: to_json(&sessions),
            rekeys: to_json(&rekeys),
            audits: to_json(&audits),
            deletions: to_json(&self.deletions),
        }
    }

    /// The state after this batch commits: what the next batch starts from.
    fn into_state(mut self) -> State {
        for row in self.state.sessions.values_mut().flatten() {
            row.dirty = false;
            row.rekeyed = false;
        }
        for task in self.state.tasks.values_mut().flatten() {
            task.dirty = false;
            task.new = false;
        }
        if self.state.idempotency.len() > REMEMBERED_KEYS {
            // Forgetting a key costs nothing but a slow path if it is used
            // again (see `State::idempotency`).
            self.state.idempotency.clear();
        }
        for row in self.state.idempotency.values_mut().flatten() {
            row.new = false;
        }
        // Rare, and cheap to read again: not remembered.
        self.state.yolo.clear();
        self.state.approvals.clear();
        self.state.access.clear();
        self.state
    }
}

/// Serializes rows made of strings, integers and booleans, which cannot fail.
fn to_json<T: Serialize>(rows: &T) -> String {
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".to_owned())
}

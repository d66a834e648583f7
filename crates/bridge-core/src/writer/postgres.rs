//! The PostgreSQL engine of the writer.
//!
//! A batch is at most two round trips, as a rule:
//!
//! 1. One call of `mcp_bridge_read` (migration `20261129000000`, as the
//!    function below) reads, without a lock, the rows the batch names and
//!    the `head` rows (the last message, audit and task ids, the audit
//!    chain's last hash, and the transaction that last wrote them, `xmin`),
//!    as one JSON document.
//! 2. The operations run in memory (the database-neutral [`Batch`]); then
//!    one call of `mcp_bridge_commit` (migration `20261130000000`) takes
//!    the whole write set, one JSON array per kind of row, and the batch's
//!    lookups. It locks the heads (`FOR UPDATE`, in name order, so that
//!    hubs never deadlock on them), checks that no batch committed since
//!    step 1 (the heads' `xmin` is still the one read: every batch of every
//!    hub rewrites the heads, so every row read is still as it was),
//!    writes, moves the heads, notifies the listening stores, and commits
//!    as it returns.
//!
//! Usually there is only the second: like the SQLite engine, this one
//! remembers the [`State`] its last batch left (heads, sessions and tasks it
//! has seen) and the transaction that committed it. If that covers the next
//! batch, the operations run against it and the call checks that the heads
//! were last written by that transaction: no other batch came in between,
//! so the state is current. If the batch used an idempotency key the state
//! does not know (a unique violation), nothing is written and the batch
//! reads.
//!
//! Every writer of the database, whatever hub it runs in, passes the lock
//! one at a time, so ids follow commit order and the audit chain stays one
//! chain; but the lock is held only while the server runs the function, not
//! across the round trips of the batch. A round trip costs about 80 µs on
//! loopback, and seven of them made the time of a batch (see
//! `docs/BENCHMARKS.md`).
//!
//! A batch another hub's commit overtook (its check fails) writes nothing,
//! and the call answers instead with the document step 1 reads, read under
//! the lock: what every batch before it committed. The operations run again
//! against that and call again, one round trip more and no lock held across
//! it. After [`OVERTAKEN_TRIES`] such calls the batch takes the lock first,
//! which cannot be overtaken: `BEGIN`, `mcp_bridge_read` locking the heads
//! before it reads (its read is a statement of its own, after the lock:
//! under `READ COMMITTED` each statement reads what was committed when it
//! began), the function, `COMMIT`.
//!
//! A failure rolls the transaction back, so a batch is never half applied;
//! the writer then retries its operations one by one. A connection that
//! broke is dropped and opened again for the next batch.
//!
//! A connection that breaks once the commit is on its way (the function
//! sent on its own, or `COMMIT`) leaves the batch in doubt: the server may
//! have committed it before the answer was lost. Retrying it then could
//! apply it twice, and reporting a failure would be a lie. So each writer
//! draws a random id when it starts and numbers its batches, and the
//! function records, in the same transaction, the number of the writer's
//! last batch (`writer_batch`). In doubt, the engine waits, on a new
//! connection, until the server process of the broken one is gone (it may
//! still be running the batch), then reads that number: its own batch's
//! means committed, an older one means nothing of it stands (retried). No
//! answer within the busy timeout is reported to every caller as a commit
//! in doubt, never retried.
//!
//! [`Batch`]: super::Batch

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgSeverity};
use sqlx::{Connection, Executor};

use crate::error::{Error, Result};
use crate::kinds::TaskState;
use crate::store::Shared;
use crate::time::Timestamp;

use super::batch::{Batch, Heads, State, run_jobs};
use super::rows::{
    AccessRow, ApprovalRow, IdempotencyRow, IdempotencySlot, Key, SessionRow, TaskRow, YoloRow,
};
use super::{Engine, Failure, Job, LookupJson, Lookups};

/// How many calls of one batch another batch may overtake before the
/// batch takes the lock first (which cannot be overtaken).
const OVERTAKEN_TRIES: usize = 4;

/// The writer's engine on PostgreSQL.
pub(crate) struct PgEngine {
    /// `None` after a failure that may have broken the connection.
    connection: Option<PgConnection>,
    /// The server process of `connection`, once asked.
    backend: Option<Backend>,
    connect: PgConnectOptions,
    /// This writer's random id, in `writer_batch` and its notifications.
    writer: Arc<str>,
    /// The number of its latest batch sent to the server.
    batches: i64,
    /// The state the last batch left, and its transaction (as the heads'
    /// `xmin` shows it): the next batch may start from it.
    remembered: Option<(State, String)>,
}

/// A server process, as `pg_stat_activity` names it: its id, and when it
/// started (ids are used again).
#[derive(sqlx::FromRow)]
struct Backend {
    pid: i32,
    started: String,
}

/// What the call of `mcp_bridge_commit` answered.
enum Called {
    /// Committed, by this transaction (as the heads' `xmin` shows it).
    Committed(String),
    /// Another batch committed since this one read: nothing written; what
    /// the batch must run against now, as `mcp_bridge_read` gives it.
    Overtaken(String),
}

/// How a batch ended, or why it must be tried another way.
enum Outcome {
    /// Done; whether it wrote.
    Done(bool),
    /// Its state may be wrong: a kept state that does not cover it, or
    /// that did not know an idempotency key taken since. Read.
    ReadAgain,
    /// Other batches overtook it [`OVERTAKEN_TRIES`] times: take the lock.
    Overtaken,
}

/// How the call of `mcp_bridge_commit` ended, when it did not answer.
enum Refusal {
    /// The server answered with an error: nothing written.
    Failed(sqlx::Error),
    /// No answer, or one that ended the connection ([`ends_connection`]):
    /// sent on its own, the batch may have committed.
    Broken(sqlx::Error),
}

impl PgEngine {
    /// The engine on `connection`; `connect` reopens it if it breaks.
    /// `writer` is its id ([`writer_id`]), which its notifications carry.
    pub(crate) fn new(
        connection: PgConnection,
        connect: PgConnectOptions,
        writer: Arc<str>,
    ) -> PgEngine {
        PgEngine {
            connection: Some(connection),
            backend: None,
            connect,
            writer,
            batches: 0,
            remembered: None,
        }
    }
}

/// A fresh random writer id: 32 hex digits.
pub(crate) fn writer_id() -> Result<Arc<str>> {
    Ok(hex::encode(crate::auth::random_bytes::<16>()?).into())
}

impl Engine for PgEngine {
    /// Commits the batch; while the server cannot be reached (restarting,
    /// say), tries again for up to the busy timeout, as SQLite waits for a
    /// lock. Nothing of a batch that failed before its commit was sent
    /// stands, so trying it again cannot apply it twice.
    async fn commit(
        &mut self,
        shared: &Shared,
        jobs: &mut [Box<dyn Job>],
    ) -> Result<bool, Failure> {
        let deadline = tokio::time::Instant::now() + shared.options.busy_timeout;
        let mut wait = Duration::from_millis(50);
        loop {
            match self.attempt(shared, jobs).await {
                Err(
                    Failure::Read(Error::Unreachable { .. })
                    | Failure::Write(Error::Unreachable { .. }),
                ) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                outcome => return outcome,
            }
        }
    }

    async fn close(&mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.close().await;
        }
    }
}

impl PgEngine {
    /// One attempt at committing the batch: against the kept state, or
    /// after a read; then, if other batches kept overtaking it, with the
    /// lock taken first.
    async fn attempt(
        &mut self,
        shared: &Shared,
        jobs: &mut [Box<dyn Job>],
    ) -> Result<bool, Failure> {
        let lookups = Lookups::of(jobs);
        let json = lookups.json();
        let mut outcome = self.remembered_way(shared, jobs, &lookups, &json).await?;
        if let Outcome::ReadAgain = outcome {
            outcome = self.unlocked(shared, jobs, &lookups, &json).await?;
        }
        match outcome {
            Outcome::Done(wrote) => Ok(wrote),
            Outcome::ReadAgain | Outcome::Overtaken => {
                tracing::debug!("other batches kept overtaking this one; taking the lock first");
                self.locked(shared, jobs, &lookups, &json).await
            }
        }
    }

    /// Commits the batch in one round trip, against the state the last
    /// batch left, if that covers it and nothing came in between.
    async fn remembered_way(
        &mut self,
        shared: &Shared,
        jobs: &mut [Box<dyn Job>],
        lookups: &Lookups,
        json: &LookupJson,
    ) -> Result<Outcome, Failure> {
        // Kept state comes with an open connection whose server process is
        // known (a commit in doubt asks after it); without one, read.
        let connected = self.connection.is_some() && self.backend.is_some();
        let Some((state, seen)) = self
            .remembered
            .take()
            .filter(|(state, _)| connected && state.covers(lookups))
        else {
            return Ok(Outcome::ReadAgain);
        };
        self.run_and_commit(shared, jobs, lookups, json, (state, seen), true)
            .await
    }

    /// Runs the jobs against `state`, whose heads transaction `seen` left,
    /// and commits what they wrote in one call; if another batch came in
    /// between, runs them again against what the call answered, up to
    /// [`OVERTAKEN_TRIES`] calls. For a state `kept` from the last batch
    /// rather than read, an idempotency key it did not know but another
    /// batch took means [`Outcome::ReadAgain`].
    async fn run_and_commit(
        &mut self,
        shared: &Shared,
        jobs: &mut [Box<dyn Job>],
        lookups: &Lookups,
        json: &LookupJson,
        (mut state, mut seen): (State, String),
        kept: bool,
    ) -> Result<Outcome, Failure> {
        let mut kept = kept;
        for _ in 0..OVERTAKEN_TRIES {
            let (batch, wrote) = run_jobs(shared, state, jobs);
            if !wrote {
                self.remember(batch.into_state(), seen);
                return Ok(Outcome::Done(false));
            }
            match self.call(&batch, &seen, json).await {
                Ok(Called::Committed(committed)) => {
                    self.remember(batch.into_state(), committed);
                    return Ok(Outcome::Done(true));
                }
                Ok(Called::Overtaken(document)) => {
                    (state, seen) =
                        state_from_json(shared, lookups, &document).map_err(Failure::Read)?;
                    kept = false;
                }
                Err(Refusal::Failed(error)) if kept && is_unique_violation(&error) => {
                    return Ok(Outcome::ReadAgain);
                }
                Err(Refusal::Failed(error)) => {
                    return Err(Failure::Write(shared.sqlx_error(error)));
                }
                Err(Refusal::Broken(error)) => {
                    return self.resolve_doubt(shared, error).await.map(Outcome::Done);
                }
            }
        }
        Ok(Outcome::Overtaken)
    }

    /// Keeps `state`, left by transaction `committed`, for the next batch.
    fn remember(&mut self, state: State, committed: String) {
        if state.small_enough_to_remember() {
            self.remembered = Some((state, committed));
        }
    }

    /// Reads without a lock, then commits through the function.
    async fn unlocked(
        &mut self,
        shared: &Shared,
        jobs: &mut [Box<dyn Job>],
        lookups: &Lookups,
        json: &LookupJson,
    ) -> Result<Outcome, Failure> {
        let read = match self.ready().await {
            Ok(connection) => read_call(false, json).fetch_one(connection).await,
            Err(error) => Err(error),
        };
        let document: String = match read {
            Ok(document) => document,
            Err(error) => {
                self.forget_if_broken(&error);
                return Err(Failure::Read(shared.sqlx_error(error)));
            }
        };
        let read = state_from_json(shared, lookups, &document).map_err(Failure::Read)?;
        self.run_and_commit(shared, jobs, lookups, json, read, false)
            .await
    }

    /// `BEGIN`, the lock on the heads, the read, the function, `COMMIT`.
    async fn locked(
        &mut self,
        shared: &Shared,
        jobs: &mut [Box<dyn Job>],
        lookups: &Lookups,
        json: &LookupJson,
    ) -> Result<bool, Failure> {
        let document = match self.begin_locked(json).await {
            Ok(document) => document,
            Err(error) => {
                self.abandon(&error).await;
                return Err(Failure::Read(shared.sqlx_error(error)));
            }
        };
        let (state, seen) = match state_from_json(shared, lookups, &document) {
            Ok(read) => read,
            Err(error) => {
                self.rollback().await;
                return Err(Failure::Read(error));
            }
        };
        let (batch, wrote) = run_jobs(shared, state, jobs);
        if !wrote {
            self.rollback().await;
            return Ok(false);
        }
        let committed = match self.call(&batch, &seen, json).await {
            Ok(Called::Committed(committed)) => committed,
            // It holds the lock: nothing can come in between.
            Ok(Called::Overtaken(_)) => {
                self.rollback().await;
                return Err(Failure::Write(Error::Database {
                    path: shared.path.clone(),
                    message: "a batch holding the lock on the heads was overtaken".to_owned(),
                }));
            }
            Err(Refusal::Failed(error)) => {
                self.rollback().await;
                return Err(Failure::Write(shared.sqlx_error(error)));
            }
            // No `COMMIT` was sent: the server rolls the batch back.
            Err(Refusal::Broken(error)) => {
                self.connection = None;
                return Err(Failure::Write(shared.sqlx_error(error)));
            }
        };
        let finished = match self.connection.as_mut() {
            Some(connection) => connection.execute("COMMIT").await,
            None => Err(sqlx::Error::PoolClosed),
        };
        match finished {
            Ok(_) => {
                self.remember(batch.into_state(), committed);
                Ok(true)
            }
            Err(error) if ends_connection(&error) => self.resolve_doubt(shared, error).await,
            // The server answered with an error: nothing was committed.
            Err(error) => {
                self.rollback().await;
                Err(Failure::Write(shared.sqlx_error(error)))
            }
        }
    }

    /// The connection, opened again if it broke, and its server process
    /// known.
    async fn ready(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.connection.is_none() {
            self.backend = None;
            self.connection = Some(PgConnection::connect_with(&self.connect).await?);
        }
        let connection = self.connection.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        if self.backend.is_none() {
            let backend = sqlx::query_as(BACKEND_SQL)
                .fetch_one(&mut *connection)
                .await;
            match backend {
                Ok(backend) => self.backend = Some(backend),
                Err(error) => {
                    self.forget_if_broken(&error);
                    return Err(error);
                }
            }
        }
        self.connection.as_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// `BEGIN`, then the lock on the heads and the rows the batch names.
    async fn begin_locked(&mut self, json: &LookupJson) -> Result<String, sqlx::Error> {
        let connection = self.ready().await?;
        connection.execute("BEGIN").await?;
        read_call(true, json).fetch_one(&mut *connection).await
    }

    /// Calls `mcp_bridge_commit` with the write set of `batch`, which read
    /// the heads as transaction `seen` left them, and its lookups: the
    /// transaction that committed it, as the heads' `xmin` now shows it, or
    /// what to run it against again.
    async fn call(
        &mut self,
        batch: &Batch<'_>,
        seen: &str,
        lookups: &LookupJson,
    ) -> Result<Called, Refusal> {
        let params = batch.params();
        let heads: Heads = batch.heads();
        self.batches += 1;
        let connection = self
            .connection
            .as_mut()
            .ok_or(Refusal::Broken(sqlx::Error::PoolClosed))?;
        let query = sqlx::query_as::<_, (Option<String>, Option<String>)>(COMMIT_SQL)
            .bind(seen)
            .bind(&*self.writer)
            .bind(self.batches)
            .bind(Timestamp::now().as_millis())
            .bind(heads.last_message_id)
            .bind(heads.last_audit_id)
            .bind(heads.last_task_id)
            .bind(heads.last_hash.as_deref())
            .bind(format!(
                "audit={},message={},task={}",
                heads.last_audit_id, heads.last_message_id, heads.last_task_id
            ))
            .bind(&params.conversations)
            .bind(&params.new_tasks)
            .bind(&params.task_updates)
            .bind(&params.new_assignments)
            .bind(&params.ended_assignments)
            .bind(&params.messages)
            .bind(&params.idempotency)
            .bind(&params.sessions)
            .bind(&params.rekeys)
            .bind(&params.yolo)
            .bind(&params.yolo_deletions)
            .bind(&params.new_approvals)
            .bind(&params.used_approvals)
            .bind(&params.approval_deletions)
            .bind(&params.access)
            .bind(&params.access_deletions)
            .bind(&params.audits)
            .bind(&params.deletions);
        let called = lookups
            .in_order()
            .into_iter()
            .fold(query, |query, array| query.bind(array))
            .fetch_one(connection)
            .await;
        match called {
            Ok((Some(committed), _)) => Ok(Called::Committed(committed)),
            Ok((None, Some(found))) => Ok(Called::Overtaken(found)),
            Ok((None, None)) => Err(Refusal::Failed(sqlx::Error::Protocol(
                "mcp_bridge_commit answered neither a transaction nor rows to read".into(),
            ))),
            Err(error) if ends_connection(&error) => Err(Refusal::Broken(error)),
            Err(error) => Err(Refusal::Failed(error)),
        }
    }

    /// After a commit whose answer was lost (`lost`): waits, on new
    /// connections, for up to the busy timeout, until the server process
    /// of the broken connection is gone, then asks whether this writer's
    /// last batch committed.
    async fn resolve_doubt(&mut self, shared: &Shared, lost: sqlx::Error) -> Result<bool, Failure> {
        let broken = self.backend.take();
        self.connection = None;
        let deadline = tokio::time::Instant::now() + shared.options.busy_timeout;
        let mut wait = Duration::from_millis(50);
        loop {
            match self.outcome(broken.as_ref()).await {
                Ok(Some(true)) => {
                    tracing::info!("the connection broke during a commit, which went through");
                    return Ok(true);
                }
                Ok(Some(false)) => return Err(Failure::Write(shared.sqlx_error(lost))),
                Ok(None) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Ok(None) | Err(_) => {
                    return Err(Failure::InDoubt(Error::Database {
                        path: shared.path.clone(),
                        message: format!(
                            "the connection broke during a commit ({lost}) and the server could \
                             not say within {} ms whether it went through; look before retrying",
                            shared.options.busy_timeout.as_millis()
                        ),
                    }));
                }
            }
        }
    }

    /// Whether this writer's last batch committed; `None` while the server
    /// process that ran it (`broken`) is still there.
    async fn outcome(&mut self, broken: Option<&Backend>) -> Result<Option<bool>, sqlx::Error> {
        let (writer, batch) = (Arc::clone(&self.writer), self.batches);
        let connection = self.ready().await?;
        if let Some(broken) = broken {
            let alive: i64 = sqlx::query_scalar(ALIVE_SQL)
                .bind(broken.pid)
                .bind(&broken.started)
                .fetch_one(&mut *connection)
                .await?;
            if alive > 0 {
                return Ok(None);
            }
        }
        let last: Option<i64> = sqlx::query_scalar(LAST_BATCH_SQL)
            .bind(&*writer)
            .fetch_optional(&mut *connection)
            .await?;
        Ok(Some(last == Some(batch)))
    }

    /// Ends the open transaction without writing.
    async fn rollback(&mut self) {
        if let Some(connection) = self.connection.as_mut()
            && connection.execute("ROLLBACK").await.is_err()
        {
            self.connection = None;
        }
    }

    /// Drops the connection if `error` may have broken it.
    fn forget_if_broken(&mut self, error: &sqlx::Error) {
        if ends_connection(error) {
            self.connection = None;
        }
    }

    /// Cleans up after a failed phase: rolls back if the database answered,
    /// drops the connection if it may be broken.
    async fn abandon(&mut self, error: &sqlx::Error) {
        if ends_connection(error) {
            self.connection = None;
        } else {
            self.rollback().await;
        }
    }
}

/// Whether `error` is a unique constraint's.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(error) if error.code().as_deref() == Some("23505"))
}

/// Whether `error` ended the connection: no answer at all, or a `FATAL`
/// one (the server process ending, say terminated by an administrator),
/// which may come after the transaction committed. An `ERROR` aborts the
/// transaction and leaves the connection usable.
fn ends_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => error
            .try_downcast_ref::<PgDatabaseError>()
            .is_some_and(|error| matches!(error.severity(), PgSeverity::Fatal | PgSeverity::Panic)),
        _ => true,
    }
}

/// The connection's server process.
const BACKEND_SQL: &str = "SELECT pid, backend_start::text AS started FROM pg_stat_activity \
                           WHERE pid = pg_backend_pid()";

/// Whether a server process ($1 its id, $2 its start) is still there.
const ALIVE_SQL: &str =
    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND backend_start::text = $2";

/// The number of the last batch writer $1 committed.
const LAST_BATCH_SQL: &str = "SELECT token FROM writer_batch WHERE writer = $1";

/// The commit: what the heads' transaction was when the batch read them,
/// the writer and its batch's number, the time, the heads the batch leaves
/// and their notification text, the arrays of the write set (see the
/// migrations for what each holds), then the lookups' arrays in
/// [`READ_SQL`]'s order, for the answer of an overtaken batch.
const COMMIT_SQL: &str = "SELECT transaction_id, reread FROM mcp_bridge_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, \
     $10::jsonb, $11::jsonb, $12::jsonb, $13::jsonb, $14::jsonb, $15::jsonb, $16::jsonb, \
     $17::jsonb, $18::jsonb, $19::jsonb, $20::jsonb, $21::jsonb, $22::jsonb, $23::jsonb, \
     $24::jsonb, $25::jsonb, $26::jsonb, $27::jsonb, $28::jsonb, $29::jsonb, $30::jsonb, \
     $31::jsonb, $32::jsonb, $33::jsonb)";

/// The heads and the rows a batch names, as one JSON document (see the
/// migration's `mcp_bridge_read`): whether to lock the heads first, then
/// the lookups' JSON arrays in their bind order.
const READ_SQL: &str = "SELECT mcp_bridge_read($1, $2::jsonb, $3::jsonb, $4::jsonb, $5::jsonb, \
                        $6::jsonb, $7::jsonb)";

/// The call of `mcp_bridge_read`, locking the heads first if `lock`.
fn read_call(
    lock: bool,
    lookups: &LookupJson,
) -> sqlx::query::QueryScalar<'_, sqlx::Postgres, String, sqlx::postgres::PgArguments> {
    lookups
        .in_order()
        .into_iter()
        .fold(sqlx::query_scalar(READ_SQL).bind(lock), |query, array| {
            query.bind(array)
        })
}

/// The document [`READ_SQL`] returns.
#[derive(Deserialize)]
struct Found {
    heads: Vec<FoundHead>,
    sessions: Vec<FoundSession>,
    tasks: Vec<FoundTask>,
    yolo: Vec<FoundYolo>,
    approvals: Vec<FoundApproval>,
    access: Vec<FoundAccess>,
    idempotency: Vec<FoundIdempotency>,
}

#[derive(Deserialize)]
struct FoundHead {
    name: String,
    last_id: i64,
    hash: Option<String>,
    written_by: String,
}

#[derive(Deserialize)]
struct FoundSession {
    conversation_id: String,
    session: String,
    expires_at: i64,
    team: Option<String>,
    digest: String,
    status: Option<String>,
    status_at: Option<i64>,
    last_heartbeat: Option<i64>,
    last_seen: Option<i64>,
    delivered_id: i64,
    acked_id: i64,
}

#[derive(Deserialize)]
struct FoundTask {
    id: i64,
    team: Option<String>,
    conversation_id: String,
    title: String,
    body: String,
    state: String,
    attempts: i64,
    unassigned: bool,
    note: Option<String>,
    redacted: bool,
    created_at: i64,
    updated_at: i64,
}

#[derive(Deserialize)]
struct FoundYolo {
    conversation_id: String,
    enabled_at: i64,
    mode: Option<String>,
    workspace: Option<String>,
    timeout_ms: Option<i64>,
    configured_at: Option<i64>,
    configured_by: Option<String>,
}

#[derive(Deserialize)]
struct FoundApproval {
    digest: String,
    preview: String,
    conversation_id: Option<String>,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
}

#[derive(Deserialize)]
struct FoundAccess {
    name: String,
    digest: String,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
}

#[derive(Deserialize)]
struct FoundIdempotency {
    conversation_id: String,
    session: String,
    key: String,
    tool: String,
    request: String,
    result_id: i64,
    created_at: i64,
}

/// The state from the lookup document, and the transaction that last
/// wrote the heads (what `mcp_bridge_commit` checks).
fn state_from_json(shared: &Shared, lookups: &Lookups, document: &str) -> Result<(State, String)> {
    let corrupt = |message: String| Error::Database {
        path: shared.path.clone(),
        message,
    };
    let found: Found = serde_json::from_str(document)
        .map_err(|error| corrupt(format!("the rows a batch read do not decode: {error}")))?;
    let head = |name: &str| {
        found
            .heads
            .iter()
            .find(|head| head.name == name)
            .ok_or_else(|| corrupt(format!("the head row {name:?} is missing")))
    };
    let audit = head("audit")?;
    let message = head("message")?;
    let task = head("task")?;
    let seen = [audit, message, task]
        .into_iter()
        .map(|head| head.written_by.clone())
        .min()
        .unwrap_or_default();
    let mut state = State::new(
        Heads {
            last_message_id: message.last_id,
            last_audit_id: audit.last_id,
            last_task_id: task.last_id,
            last_hash: audit.hash.clone(),
        },
        lookups,
    );
    let hex32 = |text: &str| -> Result<[u8; 32]> {
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|error| corrupt(format!("a digest does not decode: {error}")))?;
        Ok(bytes)
    };
    for row in found.sessions {
        let key: Key = (row.conversation_id.parse()?, row.session.parse()?);
        let digest = hex::decode(&row.digest)
            .map_err(|error| corrupt(format!("a token digest does not decode: {error}")))?;
        let session = SessionRow::read(
            key.clone(),
            Timestamp::from_millis(row.expires_at),
            digest,
            row.team,
            row.status.map(|status| status.parse()).transpose()?,
            row.status_at,
            row.last_heartbeat,
            row.last_seen,
            row.delivered_id,
            row.acked_id,
        );
        state.sessions.insert(key, Some(session));
    }
    for row in found.tasks {
        let state_name: TaskState = row.state.parse()?;
        let task = TaskRow::read(
            row.id,
            row.team,
            row.conversation_id.parse()?,
            row.title,
            row.body,
            state_name,
            row.attempts,
            row.unassigned,
            row.note,
            row.redacted,
            row.created_at,
            row.updated_at,
        );
        state.tasks.insert(task.id, Some(task));
    }
    for row in found.yolo {
        let yolo = YoloRow {
            conversation_id: row.conversation_id.parse()?,
            enabled_at: row.enabled_at,
            mode: row.mode,
            workspace: row.workspace,
            timeout_ms: row.timeout_ms,
            configured_at: row.configured_at,
            configured_by: row.configured_by.map(|by| by.parse()).transpose()?,
        };
        state.yolo.insert(yolo.conversation_id.clone(), Some(yolo));
    }
    for row in found.approvals {
        let approval = ApprovalRow::read(
            row.digest,
            row.preview,
            row.conversation_id.map(|id| id.parse()).transpose()?,
            row.created_at,
            row.expires_at,
            row.used_at,
        );
        state
            .approvals
            .insert(approval.digest.clone(), Some(approval));
    }
    for row in found.access {
        let access = AccessRow {
            name: row.name,
            digest: row.digest,
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
        };
        state.access.insert(access.name.clone(), Some(access));
    }
    for row in found.idempotency {
        let key: IdempotencySlot = (
            row.conversation_id.parse()?,
            row.session.parse()?,
            hex32(&row.key)?,
        );
        let found = IdempotencyRow::read(
            row.tool,
            hex32(&row.request)?,
            row.result_id,
            row.created_at,
        );
        state.idempotency.insert(key, Some(found));
    }
    Ok((state, seen))
}

//! The SQLite engine of the writer.
//!
//! SQLite admits one writer at a time, and through `sqlx` every statement is a
//! round trip to the connection's worker thread (two thread hand-offs). So a
//! batch goes out in one or two round trips:
//!
//! * **Fast path** (one round trip). The engine remembers the [`State`] its
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
//! deleting from the JSON arrays of the write set (`json_each`) and ending in
//! `COMMIT`; its text never changes, so SQLite prepares it once per
//! connection. If the writes fail, the batch is rolled back (and the writer
//! retries its operations one by one).

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{Connection, Executor, Row};

use crate::error::{Error, Result, sqlite_code};
use crate::store::Shared;
use crate::time::Timestamp;

use super::batch::{Heads, Params, State, run_jobs};
use super::rows::{
    AccessRow, ApprovalRow, IdempotencyRow, IdempotencySlot, Key, SessionRow, TaskRow, YoloRow,
};
use super::{Engine, Failure, Job, LookupJson, Lookups};

/// The message of the guard's error (see the `writer_guard` trigger).
const STALE: &str = "mcp-bridge: stale writer state";

/// A query on SQLite, its parameters bound in order.
type SqliteQuery<'q> = Query<'q, Sqlite, SqliteArguments>;

/// The writer's engine on SQLite.
pub(crate) struct SqliteEngine {
    /// `None` after a failure that may have broken the connection; the next
    /// batch reconnects.
    connection: Option<SqliteConnection>,
    connect: SqliteConnectOptions,
    busy_timeout: Duration,
    /// The state after the last committed batch, and this connection's
    /// `data_version` when it was read (it changes when any other connection
    /// commits), for the fast path; `None` after any failure.
    remembered: Option<(State, i64)>,
}

impl SqliteEngine {
    /// The engine on `connection`, which must not wait for locks itself
    /// (busy timeout zero, see [`LockWait`]), waiting up to `busy_timeout`
    /// for other processes' write locks; `connect` reopens the connection if
    /// it breaks.
    pub(crate) fn new(
        connection: SqliteConnection,
        connect: SqliteConnectOptions,
        busy_timeout: Duration,
    ) -> SqliteEngine {
        SqliteEngine {
            connection: Some(connection),
            connect,
            busy_timeout,
            remembered: None,
        }
    }
}

impl Engine for SqliteEngine {
    /// One batch, by the fast path if possible. Leaves `remembered` set only
    /// if the batch committed.
    async fn commit(
        &mut self,
        shared: &Shared,
        jobs: &mut [Box<dyn Job>],
    ) -> Result<bool, Failure> {
        if self.connection.is_none() {
            let connection = SqliteConnection::connect_with(&self.connect)
                .await
                .map_err(|error| Failure::Read(shared.sqlx_error(error)))?;
            self.connection = Some(connection);
        }
        let lookups = Lookups::of(jobs);
        let lookup_json = lookups.json();

        let remembered = self
            .remembered
            .take()
            .filter(|(state, _)| state.covers(&lookups));
        let fresh_rows = match remembered {
            Some((state, data_version)) => {
                let (batch, wrote) = run_jobs(shared, state, jobs);
                let params = batch.params();
                let mut wait = LockWait::new(self.busy_timeout);
                let outcome = loop {
                    match self.fast_script(&lookup_json, data_version, &params).await {
                        Err(FastFailure::Failed(error))
                            if is_busy(&error) && wait.again().await => {}
                        outcome => break outcome,
                    }
                };
                match outcome {
                    Ok(()) => {
                        self.remember(batch.into_state(), data_version);
                        return Ok(wrote);
                    }
                    // Stale: the lock is held and the fresh rows are here.
                    Err(FastFailure::Stale(rows)) => rows,
                    // An idempotency key used before this writer remembered
                    // it (see `State::idempotency`): the slow path reads it.
                    Err(FastFailure::Failed(error)) if is_constraint(&error) => {
                        self.abandon(&error).await;
                        self.read_or_abandon(shared, &lookup_json).await?
                    }
                    Err(FastFailure::Failed(error)) => {
                        self.abandon(&error).await;
                        return Err(Failure::Write(shared.sqlx_error(error)));
                    }
                }
            }
            None => self.read_or_abandon(shared, &lookup_json).await?,
        };

        let (state, data_version) = match state_from_rows(shared, &lookups, &fresh_rows) {
            Ok(read) => read,
            Err(error) => {
                self.rollback().await;
                return Err(Failure::Read(error));
            }
        };
        let (batch, wrote) = run_jobs(shared, state, jobs);
        if !wrote {
            self.rollback().await;
            self.remember(batch.into_state(), data_version);
            return Ok(false);
        }
        match self.write_phase(&batch.params()).await {
            Ok(()) => {
                self.remember(batch.into_state(), data_version);
                Ok(true)
            }
            Err(error) => {
                self.abandon(&error).await;
                Err(Failure::Write(shared.sqlx_error(error)))
            }
        }
    }

    async fn close(&mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.close().await;
        }
    }
}

impl SqliteEngine {
    /// The slow path's first round trip; on failure, cleans up.
    async fn read_or_abandon(
        &mut self,
        shared: &Shared,
        lookups: &LookupJson,
    ) -> Result<Vec<SqliteRow>, Failure> {
        match self.read_phase(lookups).await {
            Ok(rows) => Ok(rows),
            Err(error) => {
                self.abandon(&error).await;
                Err(Failure::Read(shared.sqlx_error(error)))
            }
        }
    }

    fn remember(&mut self, state: State, data_version: i64) {
        if state.small_enough_to_remember() {
            self.remembered = Some((state, data_version));
        }
    }

    fn connection(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        self.connection.as_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// `BEGIN IMMEDIATE` (waiting up to the busy timeout for the lock), then
    /// the state query.
    async fn read_phase(&mut self, lookups: &LookupJson) -> Result<Vec<SqliteRow>, sqlx::Error> {
        let mut wait = LockWait::new(self.busy_timeout);
        loop {
            let rows = bind_lookups(sqlx::query(READ_SQL), lookups)
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
        let query = bind_lookups(sqlx::query(FAST_SQL), lookups).bind(data_version);
        let mut stream = bind_writes(query, params).fetch(connection);
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
    async fn write_phase(&mut self, params: &Params) -> Result<(), sqlx::Error> {
        bind_writes(sqlx::query(WRITE_SQL), params)
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

/// Binds the state query's parameters, in its order.
fn bind_lookups<'q>(query: SqliteQuery<'q>, lookups: &'q LookupJson) -> SqliteQuery<'q> {
    lookups
        .in_order()
        .into_iter()
        .fold(query, |query, array| query.bind(array))
}

/// Binds the writes' parameters, in their order (the conversations twice:
/// once for their rows, once for their sessions).
fn bind_writes<'q>(query: SqliteQuery<'q>, params: &Params) -> SqliteQuery<'q> {
    query
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
        SELECT k.value AS access_key, lower(hex(x.digest)) AS access_digest,
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

/// The state from the rows of a state query for `lookups`, and the
/// connection's `data_version` they were read at.
fn state_from_rows(shared: &Shared, lookups: &Lookups, rows: &[SqliteRow]) -> Result<(State, i64)> {
    let corrupt = |error: sqlx::Error| shared.sqlx_error(error);
    let first = rows.first().ok_or_else(|| Error::Database {
        path: shared.path.clone(),
        message: "the state query returned no row".into(),
    })?;
    let head = |column: &str| -> Result<i64> {
        Ok(first
            .try_get::<Option<i64>, _>(column)
            .map_err(corrupt)?
            .unwrap_or(0))
    };
    let heads = Heads {
        last_message_id: head("message_seq")?,
        last_audit_id: head("audit_seq")?,
        last_task_id: head("task_seq")?,
        last_hash: first.try_get("audit_head").map_err(corrupt)?,
    };
    let data_version = first.try_get("data_version").map_err(corrupt)?;
    let mut state = State::new(heads, lookups);
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
        let session_row = SessionRow::read(
            key.clone(),
            Timestamp::from_millis(expires_at),
            row.try_get("digest").map_err(corrupt)?,
            row.try_get("team").map_err(corrupt)?,
            status.map(|status| status.parse()).transpose()?,
            row.try_get("status_at").map_err(corrupt)?,
            row.try_get("last_heartbeat").map_err(corrupt)?,
            row.try_get("last_seen").map_err(corrupt)?,
            row.try_get("delivered_id").map_err(corrupt)?,
            row.try_get("acked_id").map_err(corrupt)?,
        );
        state.sessions.insert(key, Some(session_row));
    }
    Ok((state, data_version))
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
    let found = IdempotencyRow::read(
        row.try_get("idem_tool")?,
        digest("idem_request")?,
        row.try_get("idem_result")?,
        row.try_get("idem_at")?,
    );
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
    Ok(Some(ApprovalRow::read(
        row.try_get("approval_key")?,
        row.try_get("approval_preview")?,
        conversation_id
            .map(|id| id.parse())
            .transpose()
            .map_err(decode)?,
        row.try_get("approval_created_at")?,
        row.try_get("approval_expires_at")?,
        row.try_get("approval_used_at")?,
    )))
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

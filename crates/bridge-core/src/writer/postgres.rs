//! The PostgreSQL engine of the writer.
//!
//! Every batch is one transaction of a few round trips:
//!
//! 1. `BEGIN`, then lock the three `head` rows (`FOR UPDATE`, in name order,
//!    so that hubs never deadlock on them) and read them: the last message,
//!    audit and task ids and the audit chain's last hash. Every writer of the
//!    database, whatever hub it runs in, passes here one at a time, so ids
//!    follow commit order and the audit chain stays one chain.
//! 2. The rows the batch names, read as one JSON document. This is a
//!    statement of its own, after the lock: under `READ COMMITTED` each
//!    statement reads what was committed when it began, so rows read in the
//!    statement that waited for the lock could predate the batch that held
//!    it.
//! 3. The operations run in memory (the database-neutral [`Batch`]); then
//!    one `INSERT`, `UPDATE` or `DELETE` per non-empty array of the write
//!    set, each taking its JSON array as one `jsonb` parameter, the heads,
//!    and `COMMIT`.
//!
//! A failure rolls the transaction back, so a batch is never half applied;
//! the writer then retries its operations one by one. A connection that
//! broke is dropped and opened again for the next batch.
//!
//! A connection that breaks during `COMMIT` leaves the batch in doubt: the
//! server may have committed it before the answer was lost. Retrying it
//! then could apply it twice, and reporting a failure would be a lie. So
//! the engine learns the transaction's id before committing, and in doubt
//! asks the server, on a new connection, what became of it
//! (`pg_xact_status`): committed is success, aborted is a failure like any
//! other (retried), and no answer within the busy timeout is reported to
//! every caller as a commit in doubt, never retried.
//!
//! [`Batch`]: super::Batch

use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, Executor, Row};

use crate::error::{Error, Result};
use crate::kinds::TaskState;
use crate::store::Shared;
use crate::time::Timestamp;
use crate::watch_pg::OwnCommits;

use super::batch::{Heads, Params, State, run_jobs};
use super::rows::{
    AccessRow, ApprovalRow, IdempotencyRow, IdempotencySlot, Key, SessionRow, TaskRow, YoloRow,
};
use super::{Engine, Failure, Job, LookupJson, Lookups};

/// The writer's engine on PostgreSQL.
pub(crate) struct PgEngine {
    /// `None` after a failure that may have broken the connection.
    connection: Option<PgConnection>,
    connect: PgConnectOptions,
    /// The notifications of its batches, for this store's watcher.
    own_commits: Arc<OwnCommits>,
}

impl PgEngine {
    /// The engine on `connection`; `connect` reopens it if it breaks. It
    /// records the notification of each batch in `own_commits`.
    pub(crate) fn new(
        connection: PgConnection,
        connect: PgConnectOptions,
        own_commits: Arc<OwnCommits>,
    ) -> PgEngine {
        PgEngine {
            connection: Some(connection),
            connect,
            own_commits,
        }
    }
}

impl Engine for PgEngine {
    /// Commits the batch; while the server cannot be reached (restarting,
    /// say), tries again for up to the busy timeout, as SQLite waits for a
    /// lock. Nothing of a batch that failed before `COMMIT` stands, so
    /// trying it again cannot apply it twice.
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
    /// One attempt at committing the batch.
    async fn attempt(
        &mut self,
        shared: &Shared,
        jobs: &mut [Box<dyn Job>],
    ) -> Result<bool, Failure> {
        if self.connection.is_none() {
            let connection = PgConnection::connect_with(&self.connect)
                .await
                .map_err(|error| Failure::Read(shared.sqlx_error(error)))?;
            self.connection = Some(connection);
        }
        let lookups = Lookups::of(jobs);
        let state = match self.read_phase(shared, &lookups).await {
            Ok(state) => state,
            Err(error) => {
                self.abandon(&error).await;
                return Err(Failure::Read(shared.sqlx_error(error)));
            }
        };
        let state = match state {
            Ok(state) => state,
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
        let heads = batch.heads();
        let xid = match self.write_phase(&batch.params(), &heads).await {
            Ok(xid) => xid,
            Err(error) => {
                self.abandon(&error).await;
                return Err(Failure::Write(shared.sqlx_error(error)));
            }
        };
        let committed = match self.connection() {
            Ok(connection) => connection.execute("COMMIT").await,
            Err(error) => Err(error),
        };
        match committed {
            Ok(_) => Ok(true),
            // The server answered: nothing was committed.
            Err(error @ sqlx::Error::Database(_)) => {
                self.rollback().await;
                Err(Failure::Write(shared.sqlx_error(error)))
            }
            Err(error) => {
                self.connection = None;
                self.resolve_doubt(shared, &xid, error).await
            }
        }
    }

    fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        self.connection.as_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// `BEGIN`, the lock on the heads, the rows the batch names. The outer
    /// error is the database's (the transaction may be open); the inner one
    /// a row that does not decode (the transaction is open).
    async fn read_phase(
        &mut self,
        shared: &Shared,
        lookups: &Lookups,
    ) -> Result<Result<State>, sqlx::Error> {
        let json = lookups.json();
        let connection = self.connection()?;
        connection.execute("BEGIN").await?;
        let heads: Vec<(String, i64, Option<String>)> =
            sqlx::query_as(LOCK_SQL).fetch_all(&mut *connection).await?;
        let document: String = bind_lookups(sqlx::query_scalar(LOOKUP_SQL), &json)
            .fetch_one(&mut *connection)
            .await?;
        Ok(state_from_json(shared, lookups, &heads, &document))
    }

    /// The write set and the heads; returns the transaction's id, for a
    /// commit in doubt.
    async fn write_phase(&mut self, params: &Params, heads: &Heads) -> Result<String, sqlx::Error> {
        let connection = self.connection()?;
        for (sql, array) in writes(params) {
            if array != "[]" {
                sqlx::query(sql)
                    .bind(array)
                    .execute(&mut *connection)
                    .await?;
            }
        }
        let done = sqlx::query(HEADS_SQL)
            .bind(heads.last_message_id)
            .bind(heads.last_audit_id)
            .bind(heads.last_task_id)
            .bind(heads.last_hash.as_deref())
            .bind(format!(
                "audit={},message={},task={}",
                heads.last_audit_id, heads.last_message_id, heads.last_task_id
            ))
            .fetch_one(&mut *connection)
            .await?;
        // Before `COMMIT`, so before the notification can reach a listener.
        self.own_commits.record(done.try_get(1)?);
        done.try_get(0)
    }

    /// After a `COMMIT` whose answer was lost (`lost`): asks the server, on
    /// new connections, for up to the busy timeout, whether transaction
    /// `xid` committed.
    async fn resolve_doubt(
        &mut self,
        shared: &Shared,
        xid: &str,
        lost: sqlx::Error,
    ) -> Result<bool, Failure> {
        let deadline = tokio::time::Instant::now() + shared.options.busy_timeout;
        let mut wait = Duration::from_millis(50);
        loop {
            match self.transaction_status(xid).await {
                Ok(Some(status)) if status == "committed" => {
                    tracing::info!("the connection broke during a commit, which went through");
                    return Ok(true);
                }
                // Aborted, or too old to know (then it cannot have been
                // this batch's, which just ran): nothing of it stands.
                Ok(Some(status)) if status != "in progress" => {
                    return Err(Failure::Write(shared.sqlx_error(lost)));
                }
                Ok(None) => return Err(Failure::Write(shared.sqlx_error(lost))),
                Ok(Some(_)) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Ok(Some(_)) | Err(_) => {
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

    /// What became of transaction `xid`, asked on a new connection (kept as
    /// the engine's).
    async fn transaction_status(&mut self, xid: &str) -> Result<Option<String>, sqlx::Error> {
        if self.connection.is_none() {
            self.connection = Some(PgConnection::connect_with(&self.connect).await?);
        }
        let status = sqlx::query_scalar(STATUS_SQL)
            .bind(xid)
            .fetch_one(self.connection()?)
            .await;
        if status.is_err() {
            self.connection = None;
        }
        status
    }

    /// Ends the open transaction without writing.
    async fn rollback(&mut self) {
        if let Some(connection) = self.connection.as_mut()
            && connection.execute("ROLLBACK").await.is_err()
        {
            self.connection = None;
        }
    }

    /// Cleans up after a failed phase: rolls back if the database answered,
    /// drops the connection if it may be broken.
    async fn abandon(&mut self, error: &sqlx::Error) {
        if matches!(error, sqlx::Error::Database(_)) {
            self.rollback().await;
        } else {
            self.connection = None;
        }
    }
}

/// Locks the heads, in name order, and reads them.
const LOCK_SQL: &str = "SELECT name, last_id, hash FROM head ORDER BY name FOR UPDATE";

/// Writes the heads a batch leaves ($1 message, $2 audit, $3 task, $4 the
/// audit chain's last hash) and notifies the stores listening (see
/// `watch_pg`) with them ($5) and the transaction's id, in the form the
/// watcher's periodic check reads them back; delivered when the transaction
/// commits. Returns the transaction's id and the notification's payload.
const HEADS_SQL: &str = "
WITH updated AS (
    UPDATE head
    SET last_id = CASE name WHEN 'message' THEN $1 WHEN 'audit' THEN $2 ELSE $3 END,
        hash = CASE name WHEN 'audit' THEN $4 ELSE hash END
    RETURNING 1)
SELECT xid, notice, pg_notify('mcp_bridge', notice)
FROM (SELECT pg_current_xact_id()::text AS xid,
             $5 || '@' || pg_current_xact_id()::xid AS notice,
             (SELECT count(*) FROM updated) AS done) AS batch";

/// What became of a transaction, by its id: `committed`, `aborted`, `in
/// progress`, or NULL for one too old to know.
const STATUS_SQL: &str = "SELECT pg_xact_status($1::xid8)";

/// The rows a batch names, as one JSON document of arrays (sessions, tasks,
/// yolo, approvals, access, idempotency), from the lookups' JSON arrays in
/// their bind order. Digests travel as lower-case hex, as in the write set
/// and as the operations compare them.
const LOOKUP_SQL: &str = "
SELECT json_build_object(
  'sessions', (SELECT coalesce(json_agg(json_build_object(
                  'conversation_id', c.id, 'session', s.session, 'expires_at', c.expires_at,
                  'team', c.team,
                  'digest', encode(CASE s.session WHEN 'a' THEN c.token_digest_a
                                                   ELSE c.token_digest_b END, 'hex'),
                  'status', s.status, 'status_at', s.status_at,
                  'last_heartbeat', s.last_heartbeat, 'last_seen', s.last_seen,
                  'delivered_id', s.delivered_id, 'acked_id', s.acked_id)), '[]')
               FROM jsonb_array_elements($1::jsonb) AS k
               JOIN conversation AS c ON c.id = k ->> 0
               JOIN session AS s ON s.conversation_id = c.id AND s.session = k ->> 1),
  'tasks', (SELECT coalesce(json_agg(t), '[]') FROM task AS t
            WHERE t.id IN (SELECT value::bigint FROM jsonb_array_elements_text($2::jsonb))),
  'yolo', (SELECT coalesce(json_agg(y), '[]') FROM yolo AS y
           WHERE y.conversation_id IN (SELECT value FROM jsonb_array_elements_text($3::jsonb))),
  'approvals', (SELECT coalesce(json_agg(json_build_object(
                   'digest', encode(a.digest, 'hex'), 'preview', a.preview,
                   'conversation_id', a.conversation_id, 'created_at', a.created_at,
                   'expires_at', a.expires_at, 'used_at', a.used_at)), '[]')
                FROM approval AS a
                WHERE a.digest IN (SELECT decode(value, 'hex')
                                   FROM jsonb_array_elements_text($4::jsonb))),
  'access', (SELECT coalesce(json_agg(json_build_object(
                'name', x.name, 'digest', encode(x.digest, 'hex'), 'created_at', x.created_at,
                'expires_at', x.expires_at, 'last_used_at', x.last_used_at)), '[]')
             FROM access_key AS x
             WHERE x.name IN (SELECT value FROM jsonb_array_elements_text($5::jsonb))),
  'idempotency', (SELECT coalesce(json_agg(json_build_object(
                     'conversation_id', i.conversation_id, 'session', i.session,
                     'key', encode(i.key_digest, 'hex'), 'tool', i.tool,
                     'request', encode(i.request_digest, 'hex'), 'result_id', i.result_id,
                     'created_at', i.created_at)), '[]')
                  FROM jsonb_array_elements($6::jsonb) AS k
                  JOIN idempotency AS i ON i.conversation_id = k ->> 0 AND i.session = k ->> 1
                                       AND i.key_digest = decode(k ->> 2, 'hex'))
)::text";

/// Binds the lookups' arrays, in [`LOOKUP_SQL`]'s order.
fn bind_lookups<'q, O>(
    query: sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    lookups: &'q LookupJson,
) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(lookups.sessions.as_str())
        .bind(lookups.tasks.as_str())
        .bind(lookups.yolo.as_str())
        .bind(lookups.approvals.as_str())
        .bind(lookups.access.as_str())
        .bind(lookups.idempotency.as_str())
}

/// Each write, with the array of the write set it takes, in the order the
/// SQLite script runs them (the conversations' deletion last).
fn writes(params: &Params) -> [(&'static str, &str); 19] {
    [
        (
            "INSERT INTO conversation (id, role_a, role_b, team, created_at, expires_at,
                                       token_digest_a, token_digest_b)
             SELECT v ->> 'id', v ->> 'role_a', v ->> 'role_b', v ->> 'team',
                    (v ->> 'created_at')::bigint, (v ->> 'expires_at')::bigint,
                    decode(v ->> 'digest_a', 'hex'), decode(v ->> 'digest_b', 'hex')
             FROM jsonb_array_elements($1::jsonb) AS v",
            &params.conversations,
        ),
        (
            "INSERT INTO session (conversation_id, session)
             SELECT v ->> 'id', s.name
             FROM jsonb_array_elements($1::jsonb) AS v, (VALUES ('a'), ('b')) AS s (name)",
            &params.conversations,
        ),
        (
            "INSERT INTO task (id, team, conversation_id, title, body, state, attempts, unassigned,
                               note, redacted, created_at, updated_at)
             SELECT (v ->> 'id')::bigint, v ->> 'team', v ->> 'conversation_id', v ->> 'title',
                    v ->> 'body', v ->> 'state', (v ->> 'attempts')::bigint,
                    (v ->> 'unassigned')::boolean, v ->> 'note', (v ->> 'redacted')::boolean,
                    (v ->> 'created_at')::bigint, (v ->> 'updated_at')::bigint
             FROM jsonb_array_elements($1::jsonb) AS v",
            &params.new_tasks,
        ),
        (
            "UPDATE task
             SET conversation_id = u ->> 'conversation_id', state = u ->> 'state',
                 attempts = (u ->> 'attempts')::bigint, unassigned = (u ->> 'unassigned')::boolean,
                 note = u ->> 'note', updated_at = (u ->> 'updated_at')::bigint
             FROM jsonb_array_elements($1::jsonb) AS u
             WHERE task.id = (u ->> 'id')::bigint",
            &params.task_updates,
        ),
        (
            "INSERT INTO task_assignment (task_id, attempt, conversation_id, assigned_at)
             SELECT (v ->> 0)::bigint, (v ->> 1)::bigint, v ->> 2, (v ->> 3)::bigint
             FROM jsonb_array_elements($1::jsonb) AS v",
            &params.new_assignments,
        ),
        (
            "UPDATE task_assignment SET ended_at = (u ->> 2)::bigint, ended_by = u ->> 3
             FROM jsonb_array_elements($1::jsonb) AS u
             WHERE task_assignment.task_id = (u ->> 0)::bigint
               AND task_assignment.attempt = (u ->> 1)::bigint",
            &params.ended_assignments,
        ),
        (
            "INSERT INTO message (id, conversation_id, sender, recipient, body, action_type,
                                  files_involved, metadata, redacted, created_at)
             SELECT (v ->> 0)::bigint, v ->> 1, v ->> 2, v ->> 3, v ->> 4, v ->> 5, v ->> 6,
                    v ->> 7, (v ->> 8)::boolean, (v ->> 9)::bigint
             FROM jsonb_array_elements($1::jsonb) AS v",
            &params.messages,
        ),
        (
            "INSERT INTO idempotency (conversation_id, session, key_digest, tool, request_digest,
                                      result_id, created_at)
             SELECT v ->> 0, v ->> 1, decode(v ->> 2, 'hex'), v ->> 3, decode(v ->> 4, 'hex'),
                    (v ->> 5)::bigint, (v ->> 6)::bigint
             FROM jsonb_array_elements($1::jsonb) AS v",
            &params.idempotency,
        ),
        (
            "UPDATE session
             SET status = u ->> 'status', status_at = (u ->> 'status_at')::bigint,
                 last_heartbeat = (u ->> 'last_heartbeat')::bigint,
                 last_seen = (u ->> 'last_seen')::bigint,
                 delivered_id = (u ->> 'delivered_id')::bigint,
                 acked_id = (u ->> 'acked_id')::bigint
             FROM jsonb_array_elements($1::jsonb) AS u
             WHERE session.conversation_id = u ->> 'conversation_id'
               AND session.session = u ->> 'session'",
            &params.sessions,
        ),
        (
            "UPDATE conversation
             SET token_digest_a = coalesce(decode(u ->> 'a', 'hex'), token_digest_a),
                 token_digest_b = coalesce(decode(u ->> 'b', 'hex'), token_digest_b)
             FROM jsonb_array_elements($1::jsonb) AS u
             WHERE conversation.id = u ->> 'id'",
            &params.rekeys,
        ),
        (
            "INSERT INTO yolo (conversation_id, enabled_at, mode, workspace, timeout_ms,
                               configured_at, configured_by)
             SELECT v ->> 'conversation_id', (v ->> 'enabled_at')::bigint, v ->> 'mode',
                    v ->> 'workspace', (v ->> 'timeout_ms')::bigint,
                    (v ->> 'configured_at')::bigint, v ->> 'configured_by'
             FROM jsonb_array_elements($1::jsonb) AS v
             ON CONFLICT (conversation_id) DO UPDATE
                 SET enabled_at = excluded.enabled_at, mode = excluded.mode,
                     workspace = excluded.workspace, timeout_ms = excluded.timeout_ms,
                     configured_at = excluded.configured_at,
                     configured_by = excluded.configured_by",
            &params.yolo,
        ),
        (
            "DELETE FROM yolo
             WHERE conversation_id IN (SELECT value FROM jsonb_array_elements_text($1::jsonb))",
            &params.yolo_deletions,
        ),
        (
            "INSERT INTO approval (digest, preview, conversation_id, created_at, expires_at)
             SELECT decode(v ->> 'digest', 'hex'), v ->> 'preview', v ->> 'conversation_id',
                    (v ->> 'created_at')::bigint, (v ->> 'expires_at')::bigint
             FROM jsonb_array_elements($1::jsonb) AS v",
            &params.new_approvals,
        ),
        (
            "UPDATE approval SET used_at = (u ->> 1)::bigint
             FROM jsonb_array_elements($1::jsonb) AS u
             WHERE approval.digest = decode(u ->> 0, 'hex')",
            &params.used_approvals,
        ),
        (
            "DELETE FROM approval
             WHERE id IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb))",
            &params.approval_deletions,
        ),
        (
            "INSERT INTO access_key (name, digest, created_at, expires_at, last_used_at)
             SELECT v ->> 'name', decode(v ->> 'digest', 'hex'), (v ->> 'created_at')::bigint,
                    (v ->> 'expires_at')::bigint, (v ->> 'last_used_at')::bigint
             FROM jsonb_array_elements($1::jsonb) AS v
             ON CONFLICT (name) DO UPDATE SET last_used_at = excluded.last_used_at",
            &params.access,
        ),
        (
            "DELETE FROM access_key
             WHERE name IN (SELECT value FROM jsonb_array_elements_text($1::jsonb))",
            &params.access_deletions,
        ),
        (
            "INSERT INTO audit (id, at, conversation_id, session, action, detail, prev_hash, hash)
             SELECT (v ->> 0)::bigint, (v ->> 1)::bigint, v ->> 2, v ->> 3, v ->> 4, v ->> 5,
                    v ->> 6, v ->> 7
             FROM jsonb_array_elements($1::jsonb) AS v",
            &params.audits,
        ),
        (
            "DELETE FROM conversation
             WHERE id IN (SELECT value FROM jsonb_array_elements_text($1::jsonb))",
            &params.deletions,
        ),
    ]
}

/// The document [`LOOKUP_SQL`] returns.
#[derive(Deserialize)]
struct Found {
    sessions: Vec<FoundSession>,
    tasks: Vec<FoundTask>,
    yolo: Vec<FoundYolo>,
    approvals: Vec<FoundApproval>,
    access: Vec<FoundAccess>,
    idempotency: Vec<FoundIdempotency>,
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

/// The state from the locked heads and the lookup document.
fn state_from_json(
    shared: &Shared,
    lookups: &Lookups,
    heads: &[(String, i64, Option<String>)],
    document: &str,
) -> Result<State> {
    let corrupt = |message: String| Error::Database {
        path: shared.path.clone(),
        message,
    };
    let head = |name: &str| {
        heads
            .iter()
            .find(|(head, _, _)| head == name)
            .ok_or_else(|| corrupt(format!("the head row {name:?} is missing")))
    };
    let audit = head("audit")?;
    let mut state = State::new(
        Heads {
            last_message_id: head("message")?.1,
            last_audit_id: audit.1,
            last_task_id: head("task")?.1,
            last_hash: audit.2.clone(),
        },
        lookups,
    );
    let found: Found = serde_json::from_str(document)
        .map_err(|error| corrupt(format!("the rows a batch read do not decode: {error}")))?;
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
    Ok(state)
}

//! Tasks, and moving them away from silent workers.
//!
//! The orchestrator (session `a`) assigns a task to the worker (session `b`)
//! of one of its conversations; the worker moves it `open → in_progress →
//! done | failed` (with an optional note); the orchestrator can cancel it.
//! Every change is audited and told to the other side in a message from
//! `system` (`action_type` `info`, metadata naming the task), so that an
//! agent that only reads messages still learns of it.
//!
//! The operator functions (whoever can open the database: the watchdog,
//! `reassign-tasks`, `bridgectl`) find silent workers, mark them silent and
//! recovered, and reassign their open and in-progress tasks to the alive
//! worker of the same team with the fewest open tasks. Each reassignment is
//! one change: the old assignment ends (`reassigned`, attempts + 1), the new
//! one begins, the new worker gets the task in a message, the orchestrator is
//! told in the silent worker's conversation what moved where, and it is
//! audited. It re-checks, under the write lock, that the task still is where
//! the plan found it, so two reassignments running at once never move a task
//! twice, and running one again changes nothing. With no alive worker in the
//! team, a task stays, is marked unassigned, and the orchestrator is told
//! once.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::auth::{ConversationId, Credentials, SessionId};
use crate::conversation::bounded_name;
use crate::error::{Error, Result};
use crate::idempotency::{IdempotencyKey, Idempotent, Tool};
use crate::kinds::{Status, TaskState};
use crate::message::MAX_BODY_CHARS;
use crate::redact;
use crate::store::Store;
use crate::time::Timestamp;
use crate::writer::{Batch, Lookups, MessageRow, Operation, TaskRow};

/// The longest task title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// The longest note on a task update, in characters.
pub const MAX_NOTE_CHARS: usize = 10_000;

/// A task to assign.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NewTask {
    /// A title, 1 to 200 characters.
    pub title: String,
    /// What to do, at most 50 000 characters.
    pub body: String,
    /// With a key, a retry of the same assignment by the same session
    /// assigns nothing and returns the first one's task.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl NewTask {
    /// A task with `title` and `body`, without an idempotency key.
    pub fn new(title: impl Into<String>, body: impl Into<String>) -> NewTask {
        NewTask {
            title: title.into(),
            body: body.into(),
            idempotency_key: None,
        }
    }
}

/// A task as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Task {
    /// The task's id.
    pub id: i64,
    /// The team of the conversation it was assigned in.
    pub team: Option<String>,
    /// The conversation it is assigned to now (its worker is session `b`).
    pub conversation_id: ConversationId,
    /// The title (secrets redacted).
    pub title: String,
    /// What to do (secrets redacted).
    pub body: String,
    /// Where it stands.
    pub state: TaskState,
    /// How many workers it has been assigned to.
    pub attempts: i64,
    /// Its worker is silent and no alive worker could take it yet.
    pub unassigned: bool,
    /// The last note of an update.
    pub note: Option<String>,
    /// When it was assigned first.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl From<&TaskRow> for Task {
    fn from(row: &TaskRow) -> Task {
        Task {
            id: row.id,
            team: row.team.clone(),
            conversation_id: row.conversation_id.clone(),
            title: row.title.clone(),
            body: row.body.clone(),
            state: row.state,
            attempts: row.attempts,
            unassigned: row.unassigned,
            note: row.note.clone(),
            created_at: Timestamp::from_millis(row.created_at),
            updated_at: Timestamp::from_millis(row.updated_at),
        }
    }
}

/// A worker (session `b`) of a live conversation and its signs of life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Worker {
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// The conversation's team.
    pub team: Option<String>,
    /// The worker's role.
    pub role: String,
    /// Its last status.
    pub status: Option<Status>,
    /// The younger of its last heartbeat and last call (or, never heard
    /// from, the conversation's creation).
    pub last_heard: Timestamp,
    /// Whether it was heard from within the liveness window.
    pub alive: bool,
    /// Its open and in-progress tasks.
    pub open_tasks: u64,
}

/// What one watchdog scan ([`Store::scan_workers`]) found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkerScan {
    /// Workers not heard from for the threshold (marked silent or not yet).
    pub silent: Vec<Worker>,
    /// Workers marked silent that have been heard from within the threshold.
    pub back: Vec<Worker>,
}

/// One task's move, planned or done, by [`Store::reassign_tasks`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reassignment {
    /// The task.
    pub task_id: i64,
    /// Its title.
    pub title: String,
    /// The silent worker's conversation.
    pub from: ConversationId,
    /// The alive worker's conversation it goes to; `None`: no alive worker
    /// in the team, the task stays, marked unassigned.
    pub to: Option<ConversationId>,
    /// What happened: `planned` (dry run), `moved`, `marked unassigned`,
    /// `still unassigned` (told before), `skipped` (it moved or finished
    /// meanwhile), `worker back` (its worker was heard from meanwhile), or
    /// `failed` (logged).
    pub outcome: &'static str,
}

/// Checks and redacts a title or body; returns the text and whether
/// anything was redacted.
fn task_text(field: &'static str, text: &str, max: usize) -> Result<(String, bool)> {
    let chars = text.chars().count();
    if chars > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters, got {chars}"),
        ));
    }
    if text.contains('\0') {
        return Err(Error::invalid(field, "must not contain NUL characters"));
    }
    let redaction = redact::redact(text);
    let redacted = redaction.redacted();
    Ok((redaction.text.into_owned(), redacted))
}

impl Store {
    /// The orchestrator (session `a`) assigns a task to the worker of its
    /// conversation, who is told in a message.
    pub async fn assign_task(&self, credentials: &Credentials, task: NewTask) -> Result<Task> {
        if credentials.session != SessionId::A {
            return Err(Error::NotAllowed {
                reason: "only session a (the orchestrator) assigns tasks".into(),
            });
        }
        let title = bounded_name("title", &task.title, 1..=MAX_TITLE_CHARS)?;
        let (title, title_redacted) = task_text("title", &title, MAX_TITLE_CHARS)?;
        if task.body.trim().is_empty() {
            return Err(Error::invalid("body", "must not be empty"));
        }
        let (body, body_redacted) = task_text("body", &task.body, MAX_BODY_CHARS)?;
        let idempotent = task.idempotency_key.as_ref().map(|key| {
            Idempotent::new(
                credentials,
                key,
                Tool::AssignTask,
                &(&task.title, &task.body),
            )
        });
        let assigned = self
            .submit(AssignOp {
                credentials: credentials.clone(),
                title,
                body,
                redacted: title_redacted || body_redacted,
                idempotent,
            })
            .await?;
        match assigned {
            Assigned::New(task) => Ok(task),
            Assigned::Before(id) => self.task_by_id(id).await?.ok_or(Error::NoSuchTask {
                conversation_id: credentials.conversation_id.clone(),
                task_id: id,
            }),
        }
    }

    /// The task `id`, wherever it is now, if it exists.
    async fn task_by_id(&self, id: i64) -> Result<Option<Task>> {
        let row: Option<TaskRead> = read!(self, fetch_optional, query_as(TASK_SQL), id)?;
        row.map_or(Ok(None), |row| row.task(self.path()))
    }

    /// The tasks assigned to the caller's conversation, oldest first, in one
    /// state or all.
    pub async fn list_tasks(
        &self,
        credentials: &Credentials,
        state: Option<TaskState>,
    ) -> Result<Vec<Task>> {
        let now = Timestamp::now();
        let rows: Vec<TaskRead> = read!(
            self,
            fetch_all,
            query_as(LIST_SQL),
            credentials.conversation_id.as_str(),
            credentials.session.as_str(),
            state.map(TaskState::as_str)
        )?;
        let first = rows.first();
        let found = first.map(|row| {
            (
                row.digest.as_deref().unwrap_or_default(),
                Timestamp::from_millis(row.expires_at),
            )
        });
        self.authenticate_read(credentials, found, now).await?;
        self.touch(credentials, first.and_then(|row| row.last_seen), now)
            .await?;
        rows.iter()
            .filter_map(|row| row.task(self.path()).transpose())
            .collect()
    }

    /// Moves a task on: the worker (session `b`) from `open` to
    /// `in_progress`, and to `done` or `failed`; the orchestrator (session
    /// `a`) to `cancelled`. The other side is told.
    pub async fn update_task(
        &self,
        credentials: &Credentials,
        task_id: i64,
        state: TaskState,
        note: Option<String>,
    ) -> Result<Task> {
        let (note, note_redacted) = match note.as_deref().map(str::trim) {
            Some("") | None => (None, false),
            Some(note) => {
                let (note, redacted) = task_text("note", note, MAX_NOTE_CHARS)?;
                (Some(note), redacted)
            }
        };
        self.submit(UpdateOp {
            credentials: credentials.clone(),
            task_id,
            state,
            note,
            note_redacted,
        })
        .await
    }

    /// The workers (sessions `b`) of live conversations, of one team or
    /// all, with their signs of life and open tasks.
    pub async fn workers(&self, team: Option<&str>) -> Result<Vec<Worker>> {
        let rows: Vec<WorkerRead> = read!(
            self,
            fetch_all,
            query_as(WORKERS_SQL),
            Timestamp::now().as_millis(),
            team
        )?;
        let window = self.options().liveness_window;
        let now = Timestamp::now();
        rows.into_iter()
            .map(|row| row.worker(now, window))
            .collect()
    }

    /// One watchdog scan: the workers (of one team, or all) not heard from
    /// for `threshold` or longer (never heard from: since their
    /// conversation's creation), and those marked silent that have been heard
    /// from since. One read, whose cost grows with the number of sessions
    /// only.
    pub async fn scan_workers(
        &self,
        threshold: Duration,
        team: Option<&str>,
    ) -> Result<WorkerScan> {
        let now = Timestamp::now();
        let before = now.as_millis() - i64::try_from(threshold.as_millis()).unwrap_or(i64::MAX);
        let rows: Vec<WorkerRead> = read!(
            self,
            fetch_all,
            query_as(SCAN_SQL),
            now.as_millis(),
            team,
            before
        )?;
        let window = self.options().liveness_window;
        let mut scan = WorkerScan::default();
        for row in rows {
            let worker = row.worker(now, window)?;
            if worker.last_heard.as_millis() < before {
                scan.silent.push(worker);
            } else {
                scan.back.push(worker);
            }
        }
        Ok(scan)
    }

    /// Marks a worker found by [`Store::scan_workers`] silent (status
    /// `silent`, audited), if it still has not been heard from for
    /// `threshold`. Returns `false` if it already was marked (the same
    /// silence: no new alert) or was heard from meanwhile.
    pub async fn mark_silent(
        &self,
        conversation_id: &ConversationId,
        threshold: Duration,
    ) -> Result<bool> {
        self.submit(SilenceOp {
            conversation_id: conversation_id.clone(),
            threshold: Some(threshold),
        })
        .await
    }

    /// Marks a worker that was silent as back (status `active`, audited).
    /// Returns `false` if it was not marked silent.
    pub async fn mark_recovered(&self, conversation_id: &ConversationId) -> Result<bool> {
        self.submit(SilenceOp {
            conversation_id: conversation_id.clone(),
            threshold: None,
        })
        .await
    }

    /// Reassigns the open and in-progress tasks held by the silent workers
    /// of `from` to the healthy workers of their teams, each task to the one
    /// with the fewest open tasks at that point. Healthy: alive (heard from
    /// within the liveness window), heard from within `threshold` too, and
    /// not marked silent. A task whose worker has been heard from within
    /// `threshold` by the time it would move stays (`worker back`). With
    /// `dry_run`, only plans. A task that fails to move is logged and
    /// reported `failed`; the others still move.
    pub async fn reassign_tasks(
        &self,
        from: &[ConversationId],
        threshold: Duration,
        dry_run: bool,
    ) -> Result<Vec<Reassignment>> {
        self.move_tasks(from, threshold, Some(threshold), dry_run)
            .await
    }

    /// Like [`Store::reassign_tasks`], but moves the tasks of `from`
    /// whether or not their workers are silent: an operator draining them.
    pub async fn drain_tasks(
        &self,
        from: &[ConversationId],
        threshold: Duration,
        dry_run: bool,
    ) -> Result<Vec<Reassignment>> {
        self.move_tasks(from, threshold, None, dry_run).await
    }

    async fn move_tasks(
        &self,
        from: &[ConversationId],
        threshold: Duration,
        quiet_for: Option<Duration>,
        dry_run: bool,
    ) -> Result<Vec<Reassignment>> {
        let now = Timestamp::now();
        let sources: HashSet<&ConversationId> = from.iter().collect();
        let mut held: Vec<TaskRow> = Vec::new();
        for conversation_id in from {
            let rows: Vec<TaskRead> = read!(
                self,
                fetch_all,
                query_as(HELD_SQL),
                conversation_id.as_str()
            )?;
            for row in &rows {
                if let Some(task) = row.task_row(self.path())? {
                    held.push(task);
                }
            }
        }
        held.sort_by_key(|task| task.id);

        // The alive workers of each team the tasks come from, by load.
        let mut candidates: BTreeMap<String, Vec<(u64, ConversationId)>> = BTreeMap::new();
        for team in held.iter().filter_map(|task| task.team.clone()) {
            if candidates.contains_key(&team) {
                continue;
            }
            let workers = self.workers(Some(&team)).await?;
            let alive = workers
                .into_iter()
                .filter(|worker| {
                    worker.alive
                        && worker.last_heard.age_at(now) < threshold
                        && worker.status != Some(Status::Silent)
                        && !sources.contains(&worker.conversation_id)
                })
                .map(|worker| (worker.open_tasks, worker.conversation_id))
                .collect();
            candidates.insert(team, alive);
        }

        let mut plan = Vec::with_capacity(held.len());
        for task in &held {
            let to = task
                .team
                .as_ref()
                .and_then(|team| candidates.get_mut(team))
                .and_then(|workers| {
                    let least = workers.iter_mut().min()?;
                    least.0 += 1;
                    Some(least.1.clone())
                });
            plan.push(Reassignment {
                task_id: task.id,
                title: task.title.clone(),
                from: task.conversation_id.clone(),
                to,
                outcome: "planned",
            });
        }
        if dry_run {
            return Ok(plan);
        }
        let moves = plan.iter().map(|planned| {
            self.submit(ReassignOp {
                task_id: planned.task_id,
                from: planned.from.clone(),
                to: planned.to.clone(),
                quiet_for,
            })
        });
        let outcomes = futures_util::future::join_all(moves).await;
        Ok(plan
            .into_iter()
            .zip(outcomes)
            .map(|(planned, outcome)| {
                let outcome = outcome.unwrap_or_else(|error| {
                    tracing::warn!(task_id = planned.task_id, %error, "task not moved");
                    "failed"
                });
                Reassignment { outcome, ..planned }
            })
            .collect())
    }
}

/// The caller's credentials row joined with the conversation's tasks, in one
/// state ($3) or all.
const LIST_SQL: &str = "
SELECT c.expires_at,
       CASE $2 WHEN 'a' THEN c.token_digest_a ELSE c.token_digest_b END AS digest,
       s.last_seen,
       t.id, t.team, t.conversation_id, t.title, t.body, t.state, t.attempts, t.unassigned,
       t.note, t.redacted, t.created_at, t.updated_at
FROM conversation AS c
JOIN session AS s ON s.conversation_id = c.id AND s.session = $2
LEFT JOIN (SELECT * FROM task WHERE conversation_id = $1 AND (CAST($3 AS TEXT) IS NULL OR state = $3)) AS t
     ON true
WHERE c.id = $1
ORDER BY t.id";

/// Task $1, in the shape of [`TaskRead`] (whose credentials columns go
/// unused here).
const TASK_SQL: &str = "
SELECT CAST(0 AS BIGINT) AS expires_at, CAST(NULL AS BYTEA) AS digest,
       CAST(NULL AS BIGINT) AS last_seen,
       id, team, conversation_id, title, body, state, attempts, unassigned, note, redacted,
       created_at, updated_at
FROM task WHERE id = $1";

/// The open and in-progress tasks held by conversation $1.
const HELD_SQL: &str = "
SELECT CAST(0 AS BIGINT) AS expires_at, CAST(NULL AS BYTEA) AS digest,
       CAST(NULL AS BIGINT) AS last_seen,
       id, team, conversation_id, title, body, state, attempts, unassigned, note, redacted,
       created_at, updated_at
FROM task WHERE conversation_id = $1 AND state IN ('open', 'in_progress')
ORDER BY id";

/// A task row of a read, with the caller's credentials columns (unused by
/// the operator's reads).
#[derive(sqlx::FromRow)]
pub(crate) struct TaskRead {
    expires_at: i64,
    /// `NULL` in the operator's reads.
    digest: Option<Vec<u8>>,
    last_seen: Option<i64>,
    id: Option<i64>,
    team: Option<String>,
    conversation_id: Option<String>,
    title: Option<String>,
    body: Option<String>,
    state: Option<String>,
    attempts: Option<i64>,
    unassigned: Option<bool>,
    note: Option<String>,
    redacted: Option<bool>,
    created_at: Option<i64>,
    updated_at: Option<i64>,
}

impl TaskRead {
    fn task_row(&self, path: &Path) -> Result<Option<TaskRow>> {
        let Some(id) = self.id else {
            return Ok(None);
        };
        let missing = || Error::Database {
            path: path.to_path_buf(),
            message: format!("task {id} has an unreadable row"),
        };
        Ok(Some(TaskRow::read(
            id,
            self.team.clone(),
            self.conversation_id
                .as_deref()
                .ok_or_else(missing)?
                .parse()?,
            self.title.clone().ok_or_else(missing)?,
            self.body.clone().ok_or_else(missing)?,
            self.state.as_deref().ok_or_else(missing)?.parse()?,
            self.attempts.ok_or_else(missing)?,
            self.unassigned.unwrap_or(false),
            self.note.clone(),
            self.redacted.unwrap_or(false),
            self.created_at.ok_or_else(missing)?,
            self.updated_at.ok_or_else(missing)?,
        )))
    }

    pub(crate) fn task(&self, path: &Path) -> Result<Option<Task>> {
        Ok(self.task_row(path)?.map(|row| Task::from(&row)))
    }
}

/// Workers of live conversations ($1 now), of team $2 or all, with their
/// open tasks.
const WORKERS_SQL: &str = "
SELECT c.id, c.team, c.role_b, c.created_at, s.status, s.last_heartbeat, s.last_seen,
       (SELECT count(*) FROM task AS t
        WHERE t.conversation_id = c.id AND t.state IN ('open', 'in_progress')) AS open_tasks
FROM conversation AS c
JOIN session AS s ON s.conversation_id = c.id AND s.session = 'b'
WHERE c.expires_at > $1 AND (CAST($2 AS TEXT) IS NULL OR c.team = $2)
ORDER BY c.id";

/// Workers of live conversations ($1 now), of team $2 or all, last heard
/// from before $3 (never heard from: counted from the conversation's
/// creation), then those marked silent that were heard from since; with
/// their open tasks. Both halves start from an index on `session`
/// (`heard_at`, `status = 'silent'`), so the scan reads the rows it returns,
/// not every session.
const SCAN_SQL: &str = "
SELECT c.id, c.team, c.role_b, c.created_at, s.status, s.last_heartbeat, s.last_seen,
       (SELECT count(*) FROM task AS t
        WHERE t.conversation_id = c.id AND t.state IN ('open', 'in_progress')) AS open_tasks
FROM session AS s
JOIN conversation AS c ON c.id = s.conversation_id
WHERE s.session = 'b' AND s.heard_at < $3 AND c.created_at < $3
  AND c.expires_at > $1 AND (CAST($2 AS TEXT) IS NULL OR c.team = $2)
UNION ALL
SELECT c.id, c.team, c.role_b, c.created_at, s.status, s.last_heartbeat, s.last_seen,
       (SELECT count(*) FROM task AS t
        WHERE t.conversation_id = c.id AND t.state IN ('open', 'in_progress')) AS open_tasks
FROM session AS s
JOIN conversation AS c ON c.id = s.conversation_id
WHERE s.session = 'b' AND s.status = 'silent' AND NOT (s.heard_at < $3 AND c.created_at < $3)
  AND c.expires_at > $1 AND (CAST($2 AS TEXT) IS NULL OR c.team = $2)
ORDER BY 1";

#[derive(sqlx::FromRow)]
struct WorkerRead {
    id: String,
    team: Option<String>,
    role_b: String,
    created_at: i64,
    status: Option<String>,
    last_heartbeat: Option<i64>,
    last_seen: Option<i64>,
    open_tasks: i64,
}

impl WorkerRead {
    fn worker(self, now: Timestamp, window: Duration) -> Result<Worker> {
        let heard = self.last_heartbeat.max(self.last_seen);
        let last_heard = Timestamp::from_millis(heard.unwrap_or(self.created_at));
        Ok(Worker {
            conversation_id: self.id.parse()?,
            team: self.team,
            role: self.role_b,
            status: self.status.as_deref().map(str::parse).transpose()?,
            last_heard,
            alive: heard.is_some() && last_heard.age_at(now) < window,
            open_tasks: u64::try_from(self.open_tasks).unwrap_or(0),
        })
    }
}

/// `assign_task` under the write lock.
struct AssignOp {
    credentials: Credentials,
    title: String,
    body: String,
    redacted: bool,
    idempotent: Option<Idempotent>,
}

/// What an [`AssignOp`] did.
enum Assigned {
    /// Assigned this task.
    New(Task),
    /// Nothing: the same assignment made this task before, under the same
    /// idempotency key.
    Before(i64),
}

impl Operation for AssignOp {
    type Output = Assigned;

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.credentials.conversation_id, self.credentials.session);
        if let Some(idempotent) = &self.idempotent {
            idempotent.lookups(out);
        }
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<Assigned> {
        batch.authenticate(&self.credentials)?;
        if let Some(idempotent) = &self.idempotent
            && let Some(replay) = idempotent.replay(batch)?
        {
            return Ok(Assigned::Before(replay.result_id));
        }
        batch.check_write(&self.credentials)?;
        let conversation_id = &self.credentials.conversation_id;
        let team = batch
            .session(conversation_id, SessionId::A)
            .and_then(|row| row.team.clone());
        let id = batch.insert_task(
            team,
            conversation_id,
            self.title.clone(),
            self.body.clone(),
            self.redacted,
        );
        batch.insert_message(MessageRow::system(
            conversation_id,
            SessionId::B,
            format!("New task #{id}: {}\n\n{}", self.title, self.body),
            serde_json::json!({ "task_id": id, "event": "assigned" }),
            self.redacted,
        ));
        batch.audit(
            Some(conversation_id),
            Some(SessionId::A),
            "task_assigned",
            serde_json::json!({ "task_id": id, "redacted": self.redacted }),
        );
        if let Some(idempotent) = &self.idempotent {
            idempotent.record(batch, id);
        }
        batch
            .task(id)
            .map(|task| Assigned::New(Task::from(task)))
            .ok_or(Error::Closed)
    }
}

/// `update_task` under the write lock.
struct UpdateOp {
    credentials: Credentials,
    task_id: i64,
    state: TaskState,
    note: Option<String>,
    note_redacted: bool,
}

/// Whether `session` may move a task from `from` to `to`.
fn allowed(session: SessionId, from: TaskState, to: TaskState) -> bool {
    use TaskState::{Cancelled, Done, Failed, InProgress, Open};
    match session {
        SessionId::B => matches!(
            (from, to),
            (Open, InProgress) | (Open | InProgress, Done | Failed)
        ),
        SessionId::A => from.is_active() && to == Cancelled,
    }
}

impl Operation for UpdateOp {
    type Output = Task;

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.credentials.conversation_id, self.credentials.session);
        out.task(self.task_id);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<Task> {
        batch.authenticate(&self.credentials)?;
        let conversation_id = &self.credentials.conversation_id;
        let session = self.credentials.session;
        let Some(task) = batch
            .task(self.task_id)
            .filter(|task| task.conversation_id == *conversation_id)
        else {
            return Err(Error::NoSuchTask {
                conversation_id: conversation_id.clone(),
                task_id: self.task_id,
            });
        };
        let (from, title, attempts) = (task.state, task.title.clone(), task.attempts);
        if !allowed(session, from, self.state) {
            let who = match session {
                SessionId::A => {
                    "the orchestrator (session a) can only cancel an open or in-progress task"
                }
                SessionId::B => {
                    "the worker (session b) moves a task from open to in_progress, and on to done or failed"
                }
            };
            return Err(Error::NotAllowed {
                reason: format!("task #{} is {from}; {who}", self.task_id),
            });
        }
        batch.check_write(&self.credentials)?;
        let mut redacted = self.note_redacted;
        if let Some(task) = batch.task_mut(self.task_id) {
            task.state = self.state;
            if self.note.is_some() {
                task.note.clone_from(&self.note);
                task.redacted |= self.note_redacted;
            }
            // Its worker is heard from: the task has a worker again.
            if session == SessionId::B {
                task.unassigned = false;
            }
            redacted |= task.redacted;
        }
        if !self.state.is_active() {
            batch.end_assignment(self.task_id, attempts, self.state.as_str());
        }
        let note = self
            .note
            .as_deref()
            .map_or_else(String::new, |note| format!(": {note}"));
        batch.insert_message(MessageRow::system(
            conversation_id,
            session.partner(),
            format!(
                "Task #{} ({title}) is now {}{note}",
                self.task_id, self.state
            ),
            serde_json::json!({ "task_id": self.task_id, "event": "updated", "state": self.state }),
            redacted,
        ));
        batch.audit(
            Some(conversation_id),
            Some(session),
            "task_updated",
            serde_json::json!({ "task_id": self.task_id, "from": from, "to": self.state }),
        );
        batch
            .task(self.task_id)
            .map(Task::from)
            .ok_or(Error::Closed)
    }
}

/// Marks a worker silent (`threshold` given) or recovered.
struct SilenceOp {
    conversation_id: ConversationId,
    threshold: Option<Duration>,
}

impl Operation for SilenceOp {
    type Output = bool;

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.conversation_id, SessionId::B);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<bool> {
        let now = batch.now;
        let Some(row) = batch.session(&self.conversation_id, SessionId::B) else {
            return Err(Error::NoSuchConversation {
                conversation_id: self.conversation_id.clone(),
            });
        };
        let was_silent = row.status == Some(Status::Silent);
        let heard = row
            .last_heartbeat
            .max(row.last_seen)
            .map(Timestamp::from_millis);
        let (status, action, detail) = match self.threshold {
            Some(threshold) => {
                let quiet = heard.is_none_or(|heard| heard.age_at(now) >= threshold);
                if was_silent || !quiet {
                    return Ok(false);
                }
                let detail = serde_json::json!({
                    "last_heard": heard.map(Timestamp::as_millis),
                    "threshold_ms": u64::try_from(threshold.as_millis()).unwrap_or(u64::MAX),
                });
                (Status::Silent, "worker_silent", detail)
            }
            None => {
                if !was_silent {
                    return Ok(false);
                }
                let detail = serde_json::json!({ "last_heard": heard.map(Timestamp::as_millis) });
                (Status::Active, "worker_recovered", detail)
            }
        };
        if let Some(row) = batch.session_mut(&self.conversation_id, SessionId::B) {
            row.status = Some(status);
            row.status_at = Some(now.as_millis());
        }
        batch.audit(
            Some(&self.conversation_id),
            Some(SessionId::B),
            action,
            detail,
        );
        Ok(true)
    }
}

/// Moves one task from a silent worker's conversation to another (or marks
/// it unassigned), if it is still where the plan found it and, with
/// `quiet_for`, its worker has still not been heard from for that long.
struct ReassignOp {
    task_id: i64,
    from: ConversationId,
    to: Option<ConversationId>,
    quiet_for: Option<Duration>,
}

impl Operation for ReassignOp {
    type Output = &'static str;

    fn lookups(&self, out: &mut Lookups) {
        out.task(self.task_id);
        out.session(&self.from, SessionId::A);
        out.session(&self.from, SessionId::B);
        if let Some(to) = &self.to {
            out.session(to, SessionId::B);
        }
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<&'static str> {
        let now = batch.now;
        let Some(task) = batch
            .task(self.task_id)
            .filter(|task| task.conversation_id == self.from && task.state.is_active())
        else {
            return Ok("skipped");
        };
        let (title, body, attempts, unassigned, redacted) = (
            task.title.clone(),
            task.body.clone(),
            task.attempts,
            task.unassigned,
            task.redacted,
        );
        if let Some(quiet_for) = self.quiet_for {
            let back = batch.session(&self.from, SessionId::B).is_some_and(|row| {
                row.last_heartbeat
                    .max(row.last_seen)
                    .is_some_and(|heard| Timestamp::from_millis(heard).age_at(now) < quiet_for)
            });
            if back {
                return Ok("worker back");
            }
        }
        let target = self.to.as_ref().filter(|to| {
            batch
                .session(to, SessionId::B)
                .is_some_and(|row| row.expires_at > now)
        });
        let Some(to) = target else {
            if unassigned {
                return Ok("still unassigned");
            }
            if let Some(task) = batch.task_mut(self.task_id) {
                task.unassigned = true;
            }
            batch.insert_message(MessageRow::system(
                &self.from,
                SessionId::A,
                format!(
                    "Task #{} ({title}) has no alive worker in its team to go to; it stays here, unassigned, until one appears.",
                    self.task_id
                ),
                serde_json::json!({ "task_id": self.task_id, "event": "unassigned" }),
                redacted,
            ));
            batch.audit(
                Some(&self.from),
                None,
                "task_unassigned",
                serde_json::json!({ "task_id": self.task_id }),
            );
            return Ok("marked unassigned");
        };
        batch.end_assignment(self.task_id, attempts, "reassigned");
        batch.begin_assignment(self.task_id, attempts + 1, to);
        if let Some(task) = batch.task_mut(self.task_id) {
            task.conversation_id = to.clone();
            task.state = TaskState::Open;
            task.attempts = attempts + 1;
            task.unassigned = false;
        }
        batch.insert_message(MessageRow::system(
            to,
            SessionId::B,
            format!(
                "Task #{} reassigned to you (its worker went silent): {title}\n\n{body}",
                self.task_id
            ),
            serde_json::json!({ "task_id": self.task_id, "event": "reassigned", "from": self.from }),
            redacted,
        ));
        batch.insert_message(MessageRow::system(
            &self.from,
            SessionId::B,
            format!(
                "Task #{} ({title}) was given to another worker because you went silent; stop working on it.",
                self.task_id
            ),
            serde_json::json!({ "task_id": self.task_id, "event": "taken_away", "to": to }),
            redacted,
        ));
        batch.insert_message(MessageRow::system(
            &self.from,
            SessionId::A,
            format!(
                "Task #{} ({title}) moved to conversation {to}: the worker here went silent.",
                self.task_id
            ),
            serde_json::json!({ "task_id": self.task_id, "event": "moved", "to": to }),
            redacted,
        ));
        batch.audit(
            Some(&self.from),
            None,
            "task_reassigned",
            serde_json::json!({
                "task_id": self.task_id,
                "from": self.from,
                "to": to,
                "attempt": attempts + 1,
            }),
        );
        Ok("moved")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_move_a_task_where() {
        use TaskState::*;
        assert!(allowed(SessionId::B, Open, InProgress));
        assert!(allowed(SessionId::B, InProgress, Done));
        assert!(allowed(SessionId::B, Open, Failed));
        assert!(!allowed(SessionId::B, Done, InProgress));
        assert!(!allowed(SessionId::B, Open, Cancelled));
        assert!(allowed(SessionId::A, InProgress, Cancelled));
        assert!(!allowed(SessionId::A, Open, Done));
        assert!(!allowed(SessionId::A, Done, Cancelled));
    }

    #[test]
    fn states_read_and_write_the_same() {
        for state in TaskState::ALL {
            assert_eq!(state.as_str().parse::<TaskState>().unwrap(), state);
        }
        assert_eq!(
            "started".parse::<TaskState>().unwrap_err().to_string(),
            "invalid state: expected one of open, in_progress, done, failed, cancelled"
        );
    }
}

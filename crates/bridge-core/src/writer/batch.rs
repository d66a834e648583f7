//! The [`Batch`] the operations of one commit apply themselves to, the
//! [`State`] it starts from, and the write set it leaves ([`Params`]).

use std::collections::{BTreeMap, HashMap};

use crate::audit::{self, GENESIS_HASH};
use crate::auth::{ConversationId, Credentials, SessionId};
use crate::error::{Error, Result};
use crate::kinds::TaskState;
use crate::store::{AuthFailure, Shared};
use crate::time::Timestamp;

use super::rows::{
    AccessRow, ApprovalRow, AuditRow, ConversationRow, IdempotencyRow, IdempotencySlot, Key,
    MessageRow, SessionRow, TaskRow, YoloRow,
};
use super::{Job, Lookups, Spent, to_json};

/// A state carried to the next batch forgets its idempotency keys beyond
/// this many (see [`State::idempotency`]).
const REMEMBERED_KEYS: usize = 4096;

/// An engine forgets the state it remembers beyond this many sessions.
const REMEMBERED_SESSIONS: usize = 4096;

/// Likewise for tasks, which carry their bodies (up to 50 000 characters).
const REMEMBERED_TASKS: usize = 1024;

/// The heads of the sequences and of the audit chain, as a state query
/// reads them.
pub(super) struct Heads {
    pub(super) last_message_id: i64,
    pub(super) last_audit_id: i64,
    pub(super) last_task_id: i64,
    /// The hash of the last audit row; `None` if there is none.
    pub(super) last_hash: Option<String>,
}

/// What the writer knows of the database: read by a state query, carried
/// forward by its own batches.
pub(super) struct State {
    last_message_id: i64,
    last_audit_id: i64,
    last_hash: String,
    last_task_id: i64,
    /// Every session looked up; `None` where its conversation does not exist.
    pub(super) sessions: HashMap<Key, Option<SessionRow>>,
    /// Every task looked up (or inserted); `None` where it does not exist.
    pub(super) tasks: HashMap<i64, Option<TaskRow>>,
    /// Command-execution settings looked up, by conversation; `None` where
    /// execution is not enabled. Not carried to the next batch.
    pub(super) yolo: HashMap<ConversationId, Option<YoloRow>>,
    /// Approval tokens looked up, by digest; `None` where there is none.
    /// Not carried to the next batch.
    pub(super) approvals: HashMap<String, Option<ApprovalRow>>,
    /// Access keys looked up, by name; `None` where there is none. Not
    /// carried to the next batch.
    pub(super) access: HashMap<String, Option<AccessRow>>,
    /// Idempotency keys looked up or recorded. Unlike the rest, a key
    /// missing here counts as unused even in a state carried from the last
    /// batch (SQLite's fast path): the table's primary key is the check, and
    /// a batch that finds the key taken after all is run again against a
    /// fresh state query, which reads it.
    pub(super) idempotency: HashMap<IdempotencySlot, Option<IdempotencyRow>>,
}

impl State {
    /// The state with `heads`, in which every row `lookups` names is not
    /// found until the engine inserts what its state query returned.
    pub(super) fn new(heads: Heads, lookups: &Lookups) -> State {
        State {
            last_message_id: heads.last_message_id,
            last_audit_id: heads.last_audit_id,
            last_task_id: heads.last_task_id,
            last_hash: heads.last_hash.unwrap_or_else(|| GENESIS_HASH.to_owned()),
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
        }
    }

    /// Whether an engine may keep this state for its next batch: an engine
    /// forgets one with more than [`REMEMBERED_SESSIONS`] sessions or
    /// [`REMEMBERED_TASKS`] tasks (the next batch then reads its rows).
    pub(super) fn small_enough_to_remember(&self) -> bool {
        self.sessions.len() <= REMEMBERED_SESSIONS && self.tasks.len() <= REMEMBERED_TASKS
    }

    /// Whether this state holds every row `lookups` asks for.
    pub(super) fn covers(&self, lookups: &Lookups) -> bool {
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
}

/// Runs every job against `state`; returns the batch and whether it writes
/// anything.
pub(super) fn run_jobs<'a>(
    shared: &'a Shared,
    state: State,
    jobs: &mut [Box<dyn Job>],
) -> (Batch<'a>, bool) {
    let mut batch = Batch::new(shared, state);
    for job in jobs.iter_mut() {
        job.apply(&mut batch);
    }
    let wrote = !batch.is_empty();
    (batch, wrote)
}

/// The write set of a batch: JSON arrays, one per statement of the writes
/// (rows as objects or, for the bulk of the data, arrays in column order).
pub(super) struct Params {
    pub(super) conversations: String,
    pub(super) new_tasks: String,
    pub(super) task_updates: String,
    pub(super) new_assignments: String,
    pub(super) ended_assignments: String,
    pub(super) messages: String,
    /// Writes recorded under idempotency keys.
    pub(super) idempotency: String,
    pub(super) sessions: String,
    /// New token digests: `{id, a, b}` per conversation, hex or null.
    pub(super) rekeys: String,
    /// Command-execution settings inserted or changed, and removed.
    pub(super) yolo: String,
    pub(super) yolo_deletions: String,
    /// Approval tokens issued, used (`[digest, at]`), and removed (ids).
    pub(super) new_approvals: String,
    pub(super) used_approvals: String,
    pub(super) approval_deletions: String,
    /// Access keys made or used (upserted whole), and revoked (names).
    pub(super) access: String,
    pub(super) access_deletions: String,
    pub(super) audits: String,
    pub(super) deletions: String,
}

/// Everything one batch reads and writes.
pub(crate) struct Batch<'a> {
    /// The time of the batch, taken once the write lock is held (or about to
    /// be), so that times along the audit chain never go backwards.
    pub(crate) now: Timestamp,
    shared: &'a Shared,
    state: State,
    /// What the operation now running has spent of the rate limits.
    pub(super) spent: Spent,
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

    /// The heads this batch leaves: what it writes back to the database's
    /// own record of them, where it has one (PostgreSQL's `head`).
    pub(super) fn heads(&self) -> Heads {
        Heads {
            last_message_id: self.state.last_message_id,
            last_audit_id: self.state.last_audit_id,
            last_task_id: self.state.last_task_id,
            last_hash: Some(self.state.last_hash.clone()),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
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
    pub(super) fn params(&self) -> Params {
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
    pub(super) fn into_state(mut self) -> State {
        for row in self.state.sessions.values_mut().flatten() {
            row.dirty = false;
            row.rekeyed = false;
        }
        for task in self.state.tasks.values_mut().flatten() {
            task.dirty = false;
            task.new = false;
        }
        if self.state.idempotency.len() > REMEMBERED_KEYS {
            // Forgetting a key costs nothing but a fresh state query if it
            // is used again (see `State::idempotency`).
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

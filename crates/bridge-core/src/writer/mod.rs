//! The single writer of a [`Store`](crate::Store): every state change goes
//! through it, in batches (group commit).
//!
//! The writer task takes every operation waiting in its queue and commits
//! them together, through an [`Engine`] that knows one database. This module
//! and [`batch`] are the database-neutral part:
//!
//! * the queue, batching, and the retry of a failed batch operation by
//!   operation, so that one bad operation cannot fail its neighbours;
//! * the [`Operation`]s themselves (the domain modules define them): each
//!   names the rows it needs ([`Lookups`]), then runs in memory against the
//!   [`Batch`], where it authenticates, checks limits, and adds rows. An
//!   operation that fails adds nothing (the exceptions, both harmless, are
//!   the audit row of a failed authentication and the `last_seen` of an
//!   authenticated call). An operation may run twice (an engine may retry a
//!   batch against fresher state); what it spends of a rate limit is
//!   remembered per operation, so it is spent once;
//! * the row types ([`rows`]) and the write set a committed batch leaves,
//!   as JSON arrays that an engine's scripts take apart.
//!
//! An engine owns its connection, how it reads the rows a batch needs under
//! the write lock, and how it writes the batch: see [`sqlite`].
//!
//! Callers submit an operation and await its typed result; a caller that stops
//! waiting does not cancel a write already queued.

mod batch;
pub(crate) mod postgres;
mod rows;
pub(crate) mod sqlite;

use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::auth::{ConversationId, SessionId};
use crate::error::{Error, Result};
use crate::store::Shared;

pub(crate) use batch::Batch;
pub(crate) use rows::{
    AccessRow, ApprovalRow, ConversationRow, IdempotencyRow, IdempotencySlot, Key, MessageRow,
    TaskRow, YoloRow,
};

/// At most this many operations are committed in one transaction.
const MAX_BATCH: usize = 256;

/// Operations waiting beyond this make callers wait to enqueue (back-pressure).
const QUEUE_DEPTH: usize = 4096;

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

    /// Every row the operations of `jobs` need, each named once.
    fn of(jobs: &[Box<dyn Job>]) -> Lookups {
        let mut lookups = Lookups::default();
        for job in jobs {
            job.lookups(&mut lookups);
        }
        lookups.tidy();
        lookups
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

/// The state query's parameters, JSON arrays.
struct LookupJson {
    sessions: String,
    tasks: String,
    yolo: String,
    approvals: String,
    access: String,
    idempotency: String,
}

impl LookupJson {
    /// The arrays in the order every state query binds them.
    fn in_order(&self) -> [&str; 6] {
        [
            &self.sessions,
            &self.tasks,
            &self.yolo,
            &self.approvals,
            &self.access,
            &self.idempotency,
        ]
    }
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
pub(crate) trait Job: Send {
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
    /// Starts the writer task, committing through `engine`.
    pub(crate) fn start<E: Engine>(shared: Arc<Shared>, engine: E) -> Writer {
        let (queue, commands) = mpsc::channel(QUEUE_DEPTH);
        let task = WriterTask { shared, engine };
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
pub(crate) enum Failure {
    /// Before any operation ran (no connection, lock not obtained): every
    /// operation of the batch would fail alike.
    Read(Error),
    /// In the write phase: one operation may be at fault.
    Write(Error),
    /// The commit's answer was lost and its outcome could not be learned:
    /// the batch may stand, so it is reported, never retried.
    InDoubt(Error),
}

/// A database the writer commits through.
pub(crate) trait Engine: Send + 'static {
    /// Commits `jobs` as one batch: reads what their lookups name under the
    /// database's write lock, runs them against it ([`batch::run_jobs`]),
    /// writes what they added, all or nothing. Returns whether anything was
    /// written. On failure nothing of the batch stands.
    fn commit(
        &mut self,
        shared: &Shared,
        jobs: &mut [Box<dyn Job>],
    ) -> impl Future<Output = Result<bool, Failure>> + Send;

    /// Closes the connection, after the last batch.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

struct WriterTask<E> {
    shared: Arc<Shared>,
    engine: E,
}

impl<E: Engine> WriterTask<E> {
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
        self.engine.close().await;
    }

    /// Commits `jobs` as one batch; if the writes fail, retries each job
    /// alone so that only the faulty one fails.
    async fn process(&mut self, mut jobs: Vec<Box<dyn Job>>) {
        match self.engine.commit(&self.shared, &mut jobs).await {
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
                    let outcome = self.engine.commit(&self.shared, &mut alone).await;
                    if matches!(outcome, Ok(true) | Err(Failure::InDoubt(_))) {
                        self.shared.notify_commit();
                    }
                    let failure = match outcome {
                        Ok(_) => None,
                        Err(
                            Failure::Read(error) | Failure::Write(error) | Failure::InDoubt(error),
                        ) => Some(error),
                    };
                    for job in alone {
                        job.finish(failure.as_ref());
                    }
                }
            }
            Err(Failure::InDoubt(error)) => {
                // The batch may stand: whoever waits for it looks.
                self.shared.notify_commit();
                for job in jobs {
                    job.finish(Some(&error));
                }
            }
            Err(Failure::Read(error) | Failure::Write(error)) => {
                for job in jobs {
                    job.finish(Some(&error));
                }
            }
        }
    }
}

/// Serializes rows made of strings, integers and booleans, which cannot fail.
fn to_json<T: Serialize>(rows: &T) -> String {
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".to_owned())
}

//! `bridge-core`: the store every mcp-bridge binary shares.
//!
//! # Brief overview
//!
//! Agents coordinate through **conversations** between two sessions, `a` (the
//! creator, usually an orchestrator) and `b` (usually a worker). Each session
//! proves who it is with a **token** that the store keeps only as an HMAC
//! digest. Sessions send **messages** (redacted of secrets before storing)
//! and read them through a per-session delivery cursor; they publish
//! **status** and heartbeats, from which their partner learns whether they
//! are alive. Every state change writes a hash-chained **audit** row in the
//! same transaction. Writes are **rate limited** per session, and a waiter can
//! **subscribe** to changes committed by any process.
//!
//! Everything goes through [`Store`], opened with [`StoreOptions`]. Errors
//! are one type, [`enum@Error`], whose messages are meant for people.
//!
//! ```no_run
//! # async fn demo() -> bridge_core::Result<()> {
//! use bridge_core::{NewConversation, NewMessage, SessionId, Store, StoreOptions};
//!
//! let store = Store::open(StoreOptions::new("/tmp/bridge.db")).await?;
//! let created = store.create_conversation(NewConversation::new("orchestrator", "worker")).await?;
//! let orchestrator = created.credentials(SessionId::A);
//! let worker = created.credentials(SessionId::B); // to hand to the worker, once
//! store.send(&orchestrator, NewMessage::new("Please review src/lib.rs")).await?;
//! let received = store.check(&worker, 100).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! * `store`: opening (files, schema, key, pool) and the state shared by
//!   readers and the writer.
//! * `writer`: the single writer task that commits operations in batches;
//!   `checkpoint`: WAL checkpoints in the background, off the write path.
//! * `conversation`, `message`, `status`, `task`: the domain operations
//!   (`task` also finds silent workers and reassigns their tasks).
//! * `delivery`: consuming reads, whose messages stay pending until the
//!   client confirms them, so that none is lost at a crash.
//! * `idempotency`: keys that make a retried write store nothing twice.
//! * `yolo`: command execution's gates in the store: the operator's switch
//!   per conversation, the agent's settings, single-use approval tokens, and
//!   the record of each command.
//! * `admin`: the operator's view (every conversation, task and audit row;
//!   token rotation), for `bridgectl`.
//! * `auth`: ids, sessions, tokens and the server key; `access`: the keys
//!   presented at the HTTP layer (the operator's access keys, and session
//!   tokens standing for their session).
//! * `audit`: the hash chain and its verification.
//! * `redact`, `limit`, `watch`: redaction, rate limits, change notification.
//! * `lockfile`: the lock file by which processes queue for setup and writes.
//! * `config`, `time`, `error`: defaults and paths, timestamps, the error type.
//!
//! Only this crate knows SQL. Binaries call [`Store`] and never write SQL.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

/// Runs a read statement on the store's read pool, whichever database it is
/// (the statements are written in the SQL both take): `read!(store, fetch,
/// query_as(SQL), binds…)`, where `fetch` is `fetch_all`, `fetch_optional`
/// or `fetch_one` and `query_as` may be `query_scalar`. The database's error
/// becomes the store's [`Error`].
macro_rules! read {
    ($store:expr, $fetch:ident, $make:ident($sql:expr) $(, $bind:expr)* $(,)?) => {
        match $store.readers() {
            $crate::store::Readers::Sqlite(pool) => {
                sqlx::$make($sql)$(.bind($bind))*.$fetch(pool).await
            }
            $crate::store::Readers::Postgres(pool) => {
                sqlx::$make($sql)$(.bind($bind))*.$fetch(pool).await
            }
        }
        .map_err(|error| $store.shared().sqlx_error(error))
    };
}
mod access;
mod admin;
mod audit;
mod auth;
mod census;
mod checkpoint;
pub mod config;
mod conversation;
mod copy;
mod delivery;
mod error;
mod idempotency;
mod kinds;
mod limit;
mod location;
mod lockfile;
mod message;
pub mod redact;
mod status;
mod store;
mod task;
mod time;
mod watch;
mod watch_pg;
mod writer;
mod yolo;

pub use access::{
    ACCESS_KEY_PREFIX, AccessKey, AccessKeyInfo, KeyHolder, MAX_ACCESS_NAME_CHARS, PresentedKey,
};
pub use admin::{
    Assignment, AuditEntry, ConversationDetail, ConversationInfo, SessionInfo, ShownMessage,
};
pub use audit::{AuditReport, BadRow};
pub use auth::{ConversationId, Credentials, SessionId, Token};
pub use census::{Census, Health};
pub use conversation::{CreatedConversation, NewConversation, ROLE_CHARS, TEAM_CHARS, TTL_RANGE};
pub use copy::CopyReport;
pub use error::{Error, Result};
pub use idempotency::{IdempotencyKey, MAX_IDEMPOTENCY_KEY_CHARS};
pub use kinds::{Sender, Status, TaskState};
pub use location::{Location, PostgresUrl};
pub use message::{
    ActionType, InboxSummary, MAX_BODY_CHARS, MAX_FILE_CHARS, MAX_FILES, MAX_METADATA_CHARS,
    MAX_READ_LIMIT, Message, NewMessage, SentMessage,
};
pub use status::SessionStatus;
pub use store::{Durability, Store, StoreOptions};
pub use task::{MAX_NOTE_CHARS, MAX_TITLE_CHARS, NewTask, Reassignment, Task, Worker, WorkerScan};
pub use time::Timestamp;
pub use watch::ChangeSubscription;
pub use yolo::{
    Approval, DEFAULT_APPROVAL_TTL, DEFAULT_COMMAND_TIMEOUT, Finished, MAX_APPROVAL_TTL,
    MAX_COMMAND_TIMEOUT, MODES, Started, YoloSettings,
};

//! The small enumerations the store keeps as text: who sent a message, what
//! a session says it is doing, where a task stands. They sit below both the
//! domain modules and the writer, which use them alike.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::auth::SessionId;
use crate::error::{Error, Result};

/// Who sent a message: one of the sessions, or mcp-bridge itself (telling a
/// session about its tasks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    /// Session `a`.
    A,
    /// Session `b`.
    B,
    /// mcp-bridge: task assignments, updates and reassignments.
    System,
}

impl Sender {
    /// `"a"`, `"b"` or `"system"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::A => "a",
            Sender::B => "b",
            Sender::System => "system",
        }
    }
}

impl From<SessionId> for Sender {
    fn from(session: SessionId) -> Sender {
        match session {
            SessionId::A => Sender::A,
            SessionId::B => Sender::B,
        }
    }
}

impl FromStr for Sender {
    type Err = Error;

    fn from_str(s: &str) -> Result<Sender> {
        match s {
            "system" => Ok(Sender::System),
            other => Ok(other.parse::<SessionId>()?.into()),
        }
    }
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a session says it is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Busy with its work.
    Working,
    /// Waiting for the partner.
    Waiting,
    /// Cannot go on without help.
    Blocked,
    /// Done.
    Complete,
    /// Set by the keep-alive daemon: the session's machine is up.
    Active,
    /// Set by the watchdog: nothing heard for longer than its threshold.
    Silent,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 6] = [
        Status::Working,
        Status::Waiting,
        Status::Blocked,
        Status::Complete,
        Status::Active,
        Status::Silent,
    ];

    /// The name used in storage and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Working => "working",
            Status::Waiting => "waiting",
            Status::Blocked => "blocked",
            Status::Complete => "complete",
            Status::Active => "active",
            Status::Silent => "silent",
        }
    }
}

impl FromStr for Status {
    type Err = Error;

    fn from_str(s: &str) -> Result<Status> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "status",
                    "expected one of working, waiting, blocked, complete, active, silent",
                )
            })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Assigned, not started.
    Open,
    /// The worker is on it.
    InProgress,
    /// Finished.
    Done,
    /// The worker gave up.
    Failed,
    /// The orchestrator called it off.
    Cancelled,
}

impl TaskState {
    /// Every state.
    pub const ALL: [TaskState; 5] = [
        TaskState::Open,
        TaskState::InProgress,
        TaskState::Done,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// The name used in storage and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Open => "open",
            TaskState::InProgress => "in_progress",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Open or in progress: work that a worker holds.
    pub fn is_active(self) -> bool {
        matches!(self, TaskState::Open | TaskState::InProgress)
    }
}

impl FromStr for TaskState {
    type Err = Error;

    fn from_str(s: &str) -> Result<TaskState> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "state",
                    "expected one of open, in_progress, done, failed, cancelled",
                )
            })
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

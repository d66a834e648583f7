//! The one error type of `bridge-core`.
//!
//! Every variant displays as one sentence a person can act on. No variant ever
//! carries a token: authentication errors name the conversation and session,
//! never the secret that was presented.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::{ConversationId, SessionId};
use crate::time::Timestamp;

/// `Result` with [`enum@Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `bridge-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token does not belong to that session of that conversation.
    #[error("invalid token for session {session} of conversation {conversation_id}")]
    InvalidToken {
        /// The conversation the caller claimed.
        conversation_id: ConversationId,
        /// The session the caller claimed.
        session: SessionId,
    },

    /// The conversation exists but its time to live has run out.
    #[error("expired conversation: {conversation_id} expired at {expired_at}")]
    Expired {
        /// The expired conversation.
        conversation_id: ConversationId,
        /// When it expired.
        expired_at: Timestamp,
    },

    /// No conversation has that id (never created, or cleaned up).
    #[error("no such conversation: {conversation_id}")]
    NoSuchConversation {
        /// The id that was asked for.
        conversation_id: ConversationId,
    },

    /// Too many calls (or too many failed authentications) in too short a time.
    #[error("rate limited (retry in {} s)", retry_seconds(*.retry_after))]
    RateLimited {
        /// How long to wait before the next call can succeed.
        retry_after: Duration,
    },

    /// A key presented at the HTTP layer stands for no one.
    #[error("not authenticated: {reason}")]
    Unauthenticated {
        /// Why not, without the key.
        reason: String,
    },

    /// The caller may not do this (e.g. a worker assigning a task).
    #[error("not allowed: {reason}")]
    NotAllowed {
        /// Why not.
        reason: String,
    },

    /// No task with that id is assigned to the caller's conversation.
    #[error("no such task in conversation {conversation_id}: #{task_id}")]
    NoSuchTask {
        /// The conversation asked in.
        conversation_id: ConversationId,
        /// The task id asked for.
        task_id: i64,
    },

    /// An argument is out of bounds or malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The argument's name, as the caller spelled it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The database file does not exist and the store was opened without `create`.
    #[error("database {} does not exist", .path.display())]
    DatabaseMissing {
        /// The path that was opened.
        path: PathBuf,
    },

    /// The PostgreSQL database exists but holds no store yet, and the store
    /// was opened without `create` (the daemons never make one).
    #[error(
        "database {} holds no mcp-bridge store yet: bridge-mcp or bridgectl create makes it",
        .path.display()
    )]
    NoStore {
        /// The database, as shown (never with its password).
        path: PathBuf,
    },

    /// The file exists but is not an SQLite database.
    #[error("{} is not an SQLite database", .path.display())]
    NotADatabase {
        /// The path that was opened.
        path: PathBuf,
    },

    /// The file is an SQLite database that belongs to some other program.
    #[error(
        "{} is a database of another program, not an mcp-bridge store",
        .path.display()
    )]
    ForeignDatabase {
        /// The path that was opened.
        path: PathBuf,
    },

    /// The database was migrated by a newer mcp-bridge than this one.
    #[error(
        "database {} has schema version {found}, newer than this mcp-bridge knows ({supported}); upgrade mcp-bridge",
        .path.display()
    )]
    SchemaTooNew {
        /// The path that was opened.
        path: PathBuf,
        /// The newest migration applied to the database.
        found: i64,
        /// The newest migration this binary carries.
        supported: i64,
    },

    /// The database (or its directory) cannot be written.
    #[error("database {} is read-only", .path.display())]
    ReadOnly {
        /// The database path.
        path: PathBuf,
    },

    /// Another process held the write lock for longer than the busy timeout.
    #[error(
        "database {} is locked by another process (gave up after {} ms)",
        .path.display(),
        .waited.as_millis()
    )]
    Locked {
        /// The database path.
        path: PathBuf,
        /// The busy timeout that ran out.
        waited: Duration,
    },

    /// A file or directory could not be created, opened or read.
    #[error("cannot {action} {}: {}", .path.display(), describe_io(.error))]
    Io {
        /// What was being attempted, e.g. `create directory`.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },

    /// The server key file is missing, malformed, or does not match the database.
    #[error("key file {}: {problem}", .path.display())]
    KeyFile {
        /// The key file path.
        path: PathBuf,
        /// What is wrong, as a sentence fragment.
        problem: String,
    },

    /// The database server cannot be reached now (down, restarting, a
    /// network in the way): it may heal by itself.
    #[error("cannot reach database {}: {reason}", .path.display())]
    Unreachable {
        /// The database, as shown (never with its password).
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },

    /// The database server answered and refused: a wrong password, a user
    /// or database it does not know, TLS that does not verify. Retrying
    /// the same way cannot help.
    #[error("database {} refused the connection: {reason}", .path.display())]
    Refused {
        /// The database, as shown (never with its password).
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },

    /// An unexpected error from the database engine.
    #[error("database {}: {message}", .path.display())]
    Database {
        /// The database path.
        path: PathBuf,
        /// The engine's message.
        message: String,
    },

    /// The store was closed while the call was waiting.
    #[error("the store is closed")]
    Closed,
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(action: &'static str, path: &Path, error: io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            error,
        }
    }

    /// Turns an engine error into the variant a person understands: by the
    /// SQLite primary result code, PostgreSQL's SQLSTATE, or the kind of a
    /// failure to connect.
    pub(crate) fn from_sqlx(error: sqlx::Error, path: &Path, busy_timeout: Duration) -> Error {
        const SQLITE_BUSY: i64 = 5;
        const SQLITE_READONLY: i64 = 8;
        const SQLITE_NOTADB: i64 = 26;
        let path = path.to_path_buf();
        if let Some(error) = connection_error(&error, &path) {
            return error;
        }
        match sqlite_code(&error) {
            Some(SQLITE_BUSY) => Error::Locked {
                path,
                waited: busy_timeout,
            },
            Some(SQLITE_READONLY) => Error::ReadOnly { path },
            Some(SQLITE_NOTADB) => Error::NotADatabase { path },
            _ => Error::Database {
                message: match &error {
                    sqlx::Error::Database(db) => db.message().to_owned(),
                    other => other.to_string(),
                },
                path,
            },
        }
    }
}

/// A failure to reach or to be let into a database server, in words; `None`
/// for any other error. The server's own message is kept where it is the
/// clearest (`no pg_hba.conf entry for host …`).
fn connection_error(error: &sqlx::Error, path: &Path) -> Option<Error> {
    let unreachable = |reason: String| Error::Unreachable {
        path: path.to_path_buf(),
        reason,
    };
    let refused = |reason: String| Error::Refused {
        path: path.to_path_buf(),
        reason,
    };
    match error {
        sqlx::Error::Io(error) => match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => Some(refused(format!("TLS: {tls}"))),
            None => Some(unreachable(describe_io(error))),
        },
        sqlx::Error::PoolTimedOut => Some(unreachable("no connection within the timeout".into())),
        sqlx::Error::Tls(error) => Some(refused(format!("TLS: {error}"))),
        sqlx::Error::Database(db) => {
            let code = db.code()?;
            let message = db.message();
            match code.as_ref() {
                "28P01" => Some(refused(
                    "wrong password for its user (check the URL or its PGPASSWORD)".into(),
                )),
                "28000" => Some(refused(message.to_owned())),
                "3D000" => Some(refused(format!(
                    "{message} on the server; create it first (createdb)"
                ))),
                // Starting up, shutting down, in recovery, too many clients.
                "57P01" | "57P02" | "57P03" | "53300" => Some(unreachable(message.to_owned())),
                class if class.starts_with("08") => Some(unreachable(message.to_owned())),
                _ => None,
            }
        }
        _ => None,
    }
}

/// SQLite's primary result code of an engine error (the low byte of the
/// extended code), if it is the database's own answer.
pub(crate) fn sqlite_code(error: &sqlx::Error) -> Option<i64> {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .map(|extended| extended & 0xff),
        _ => None,
    }
}

impl Clone for Error {
    /// A copy for each caller of a batch that failed as a whole. I/O errors
    /// keep their kind, OS code and message.
    fn clone(&self) -> Error {
        match self {
            Error::InvalidToken {
                conversation_id,
                session,
            } => Error::InvalidToken {
                conversation_id: conversation_id.clone(),
                session: *session,
            },
            Error::Expired {
                conversation_id,
                expired_at,
            } => Error::Expired {
                conversation_id: conversation_id.clone(),
                expired_at: *expired_at,
            },
            Error::NoSuchConversation { conversation_id } => Error::NoSuchConversation {
                conversation_id: conversation_id.clone(),
            },
            Error::RateLimited { retry_after } => Error::RateLimited {
                retry_after: *retry_after,
            },
            Error::Unauthenticated { reason } => Error::Unauthenticated {
                reason: reason.clone(),
            },
            Error::NotAllowed { reason } => Error::NotAllowed {
                reason: reason.clone(),
            },
            Error::NoSuchTask {
                conversation_id,
                task_id,
            } => Error::NoSuchTask {
                conversation_id: conversation_id.clone(),
                task_id: *task_id,
            },
            Error::Invalid { field, reason } => Error::Invalid {
                field,
                reason: reason.clone(),
            },
            Error::DatabaseMissing { path } => Error::DatabaseMissing { path: path.clone() },
            Error::NoStore { path } => Error::NoStore { path: path.clone() },
            Error::NotADatabase { path } => Error::NotADatabase { path: path.clone() },
            Error::ForeignDatabase { path } => Error::ForeignDatabase { path: path.clone() },
            Error::SchemaTooNew {
                path,
                found,
                supported,
            } => Error::SchemaTooNew {
                path: path.clone(),
                found: *found,
                supported: *supported,
            },
            Error::ReadOnly { path } => Error::ReadOnly { path: path.clone() },
            Error::Locked { path, waited } => Error::Locked {
                path: path.clone(),
                waited: *waited,
            },
            Error::Io {
                action,
                path,
                error,
            } => Error::Io {
                action,
                path: path.clone(),
                error: match error.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(error.kind(), error.to_string()),
                },
            },
            Error::KeyFile { path, problem } => Error::KeyFile {
                path: path.clone(),
                problem: problem.clone(),
            },
            Error::Unreachable { path, reason } => Error::Unreachable {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::Refused { path, reason } => Error::Refused {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::Database { path, message } => Error::Database {
                path: path.clone(),
                message: message.clone(),
            },
            Error::Closed => Error::Closed,
        }
    }
}

/// Whole seconds to wait, rounded up and never zero, as shown to the caller.
fn retry_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

/// The lower-case description of an I/O error, without the `(os error N)` suffix.
fn describe_io(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(_) => error.kind().to_string(),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_is_rounded_up_and_never_zero() {
        assert_eq!(retry_seconds(Duration::ZERO), 1);
        assert_eq!(retry_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_seconds(Duration::from_millis(2_001)), 3);
    }

    #[test]
    fn io_errors_read_as_one_sentence() {
        let error = Error::io(
            "create directory",
            Path::new("/x/y"),
            io::Error::from_raw_os_error(13),
        );
        assert_eq!(
            error.to_string(),
            "cannot create directory /x/y: permission denied"
        );
    }

    #[test]
    fn rate_limit_says_when_to_retry() {
        let error = Error::RateLimited {
            retry_after: Duration::from_millis(1_500),
        };
        assert_eq!(error.to_string(), "rate limited (retry in 2 s)");
    }
}

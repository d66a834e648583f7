//! Defaults and default paths shared by every binary.
//!
//! The database lives at `--db PATH`, else `$BRIDGE_DB`, else
//! `$XDG_STATE_HOME/mcp-bridge/bridge.db` (`~/.local/state/mcp-bridge/bridge.db`).
//! The key file sits beside it as `<database>.key` unless configured.

use std::ffi::OsString;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// The environment variable naming the database.
pub const DB_ENV: &str = "BRIDGE_DB";

/// Writes per minute per (conversation, session) unless configured.
pub const DEFAULT_RATE_LIMIT: u32 = 600;

/// Failed authentications per minute per conversation reported as invalid
/// (and audited) before further ones are refused as rate limited.
pub const DEFAULT_AUTH_FAILURES: NonZeroU32 = NonZeroU32::new(20).unwrap();

/// A session is alive while it was heard from within this window.
pub const DEFAULT_LIVENESS_WINDOW: Duration = Duration::from_secs(120);

/// Time to live of a conversation.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3 * 60 * 60);

/// How long to wait for another process's write lock.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The database path when neither `--db` nor `BRIDGE_DB` is given:
/// `$XDG_STATE_HOME/mcp-bridge/bridge.db`, else
/// `$HOME/.local/state/mcp-bridge/bridge.db`.
pub fn default_db_path() -> Result<PathBuf> {
    default_db_path_from(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

fn default_db_path_from(state_home: Option<OsString>, home: Option<OsString>) -> Result<PathBuf> {
    let absolute =
        |value: Option<OsString>| value.map(PathBuf::from).filter(|path| path.is_absolute());
    let state = match (absolute(state_home), absolute(home)) {
        (Some(state), _) => state,
        (None, Some(home)) => home.join(".local").join("state"),
        (None, None) => {
            return Err(Error::invalid(
                "database path",
                "neither XDG_STATE_HOME nor HOME is set; pass --db or set BRIDGE_DB",
            ));
        }
    };
    Ok(state.join("mcp-bridge").join("bridge.db"))
}

/// `$BRIDGE_DB` if set, else [`default_db_path`].
pub fn db_path_from_env() -> Result<PathBuf> {
    match std::env::var_os(DB_ENV) {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => default_db_path(),
    }
}

/// `<database>.key`: the key file used unless one is configured.
pub fn default_key_file(database: &Path) -> PathBuf {
    with_suffix(database, ".key")
}

/// `<database>.lock`: the lock held while a database is set up or upgraded.
pub(crate) fn lock_file(database: &Path) -> PathBuf {
    with_suffix(database, ".lock")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_follows_xdg_then_home() {
        assert_eq!(
            default_db_path_from(Some("/state".into()), Some("/home/u".into())).unwrap(),
            PathBuf::from("/state/mcp-bridge/bridge.db")
        );
        assert_eq!(
            default_db_path_from(None, Some("/home/u".into())).unwrap(),
            PathBuf::from("/home/u/.local/state/mcp-bridge/bridge.db")
        );
        // A relative XDG_STATE_HOME is invalid per the spec and ignored.
        assert_eq!(
            default_db_path_from(Some("rel".into()), Some("/home/u".into())).unwrap(),
            PathBuf::from("/home/u/.local/state/mcp-bridge/bridge.db")
        );
        let error = default_db_path_from(None, None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid database path: neither XDG_STATE_HOME nor HOME is set; pass --db or set BRIDGE_DB"
        );
    }

    #[test]
    fn key_and_lock_files_sit_beside_the_database() {
        let db = Path::new("/var/lib/mcp-bridge/bridge.db");
        assert_eq!(
            default_key_file(db),
            PathBuf::from("/var/lib/mcp-bridge/bridge.db.key")
        );
        assert_eq!(
            lock_file(db),
            PathBuf::from("/var/lib/mcp-bridge/bridge.db.lock")
        );
    }
}

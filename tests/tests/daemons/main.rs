//! End-to-end tests of the worker daemons: `keepalive-daemon`, `fs-watcher`
//! and `check-messages`, the real binaries on temporary databases.

mod check_messages;
mod fs_watcher;
mod keepalive;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bridge_core::Token;

/// Writes `token` to a file of mode 0600 in `dir`; returns its path.
fn token_file(dir: &Path, token: &Token) -> PathBuf {
    let path = dir.join(format!("{}.token", token.reveal().get(..8).unwrap_or("t")));
    std::fs::write(&path, format!("{}\n", token.reveal())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

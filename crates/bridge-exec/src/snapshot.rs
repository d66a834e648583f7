//! The git snapshot taken before a command runs, so that what it changes can
//! be undone.
//!
//! When the workspace is inside a git work tree, a branch
//! `bridge-snapshot-<UTC time>-<8 random hex digits>` is made pointing at
//! `git stash create` (a commit of the tracked changes, index and working
//! tree, that touches neither the user's branch, nor the index, nor the
//! files), or at `HEAD` when nothing tracked has changed. Untracked files are
//! not in it. The snapshot commit is written as `mcp-bridge`.
//!
//! Git runs with the command's scrubbed environment (and `LC_ALL=C`, so its
//! messages can be read), no terminal prompt, optional locks off, with
//! `core.fsmonitor` off and hooks pointed at `/dev/null`, each step killed
//! after [`SNAPSHOT_TIMEOUT`], and, under [`Sandbox::Bwrap`](crate::Sandbox),
//! inside the same sandbox as the command, where it can write only inside
//! the workspace: a sandboxed workspace below the top of its repository
//! (whose `.git` is outside it) gets a `snapshot_error` instead, found by
//! looking for `.git` in the workspace's parents. (Repository configuration
//! can still name clean filters that `git stash create` runs; unsandboxed, a
//! repository an agent could write `.git/config` in is trusted that far.)
//!
//! A failure (no commit yet, git missing, a repository git refuses) is
//! reported in `Outcome::snapshot_error`; the command runs all the same.
//! Outside a git work tree there is no snapshot and no error.

use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use crate::execution::{LaunchError, Launcher};
use crate::sandbox::Sandbox;

/// How long each git step may take.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

/// The start of every snapshot branch's name.
pub const SNAPSHOT_BRANCH_PREFIX: &str = "bridge-snapshot-";

/// Output kept from each git step.
const GIT_OUTPUT_CAP: usize = 16 * 1024;

/// Settings given to every git step, before its subcommand.
const GIT_SETTINGS: &[&str] = &[
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.hooksPath=/dev/null",
];

/// Environment given to every git step, on top of the scrubbed one.
const GIT_ENV: &[(&str, &str)] = &[
    ("LC_ALL", "C"),
    ("GIT_TERMINAL_PROMPT", "0"),
    ("GIT_OPTIONAL_LOCKS", "0"),
    ("GIT_AUTHOR_NAME", "mcp-bridge"),
    ("GIT_AUTHOR_EMAIL", "mcp-bridge@localhost"),
    ("GIT_COMMITTER_NAME", "mcp-bridge"),
    ("GIT_COMMITTER_EMAIL", "mcp-bridge@localhost"),
];

/// Tells snapshot names apart where random numbers cannot be had.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Takes the snapshot: the branch made, or why none could be (`(None,
/// None)` outside a git work tree).
pub(crate) async fn take(launcher: &Launcher) -> (Option<String>, Option<String>) {
    if launcher.sandbox == Sandbox::Bwrap
        && let Some(top) = repository_above(&launcher.workspace)
    {
        return (
            None,
            Some(format!(
                "no snapshot in the sandbox: the repository's .git is in {}, outside the workspace, where git cannot write",
                top.display()
            )),
        );
    }
    match inside_work_tree(launcher).await {
        Ok(false) => (None, None),
        Err(error) => (None, Some(error)),
        Ok(true) => match make_branch(launcher).await {
            Ok(branch) => (Some(branch), None),
            Err(error) => (None, Some(error)),
        },
    }
}

/// The nearest parent of `workspace` (not itself) holding a `.git`, if the
/// workspace holds none.
fn repository_above(workspace: &Path) -> Option<&Path> {
    if workspace.join(".git").exists() {
        return None;
    }
    workspace
        .ancestors()
        .skip(1)
        .find(|dir| dir.join(".git").exists())
}

/// What one git step printed, if it succeeded.
struct GitOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

impl GitOutput {
    /// The first line of stderr, or the exit status.
    fn error(&self, step: &str) -> String {
        match self
            .stderr
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
        {
            Some(line) => format!("git {step} failed: {line}"),
            None => format!("git {step} failed"),
        }
    }
}

async fn git(launcher: &Launcher, args: &[&str]) -> Result<GitOutput, String> {
    let step = args.first().copied().unwrap_or("");
    let command: Vec<OsString> = std::iter::once("git")
        .chain(GIT_SETTINGS.iter().copied())
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    let finished = launcher
        .execute(&command, GIT_ENV, SNAPSHOT_TIMEOUT, GIT_OUTPUT_CAP)
        .await
        .map_err(|LaunchError { program, source }| {
            if source.kind() == std::io::ErrorKind::NotFound {
                format!("{program} is not installed")
            } else {
                format!("{program} could not be started: {source}")
            }
        })?;
    if finished.timed_out {
        return Err(format!(
            "git {step} took longer than {} s",
            SNAPSHOT_TIMEOUT.as_secs()
        ));
    }
    let (stdout, _) = finished.stdout.into_text(GIT_OUTPUT_CAP);
    let (stderr, _) = finished.stderr.into_text(GIT_OUTPUT_CAP);
    Ok(GitOutput {
        success: finished.status.success(),
        stdout,
        stderr,
    })
}

/// Whether the workspace is inside a git work tree.
async fn inside_work_tree(launcher: &Launcher) -> Result<bool, String> {
    let output = git(launcher, &["rev-parse", "--is-inside-work-tree"]).await?;
    if output.success {
        return Ok(output.stdout.trim() == "true");
    }
    if output.stderr.contains("not a git repository") {
        return Ok(false);
    }
    Err(output.error("rev-parse"))
}

/// Makes the snapshot branch; its name.
async fn make_branch(launcher: &Launcher) -> Result<String, String> {
    let stash = git(launcher, &["stash", "create", "mcp-bridge snapshot"]).await?;
    if !stash.success {
        return Err(stash.error("stash create"));
    }
    let commit = stash.stdout.trim();
    let target = if commit.is_empty() { "HEAD" } else { commit };
    let name = branch_name(SystemTime::now());
    let branch = git(launcher, &["branch", &name, target]).await?;
    if !branch.success {
        return Err(branch.error("branch"));
    }
    Ok(name)
}

/// `bridge-snapshot-20250101T120000Z-0123abcd`.
fn branch_name(now: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':'], "");
    let suffix = getrandom::u32().unwrap_or_else(|_| {
        std::process::id().rotate_left(16) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
    });
    format!("{SNAPSHOT_BRANCH_PREFIX}{stamp}-{suffix:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_valid_refs_and_differ() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let name = branch_name(now);
        assert!(
            name.starts_with("bridge-snapshot-20231114T221320Z-"),
            "{name}"
        );
        assert_eq!(name.len(), "bridge-snapshot-20231114T221320Z-".len() + 8);
        assert!(!name.contains([':', ' ', '~', '^', '?', '*', '[', '\\']));
        assert_ne!(branch_name(now), branch_name(now));
    }
}

//! Helpers: temporary workspaces, running a command with a deadline,
//! watching processes through `/proc`, git in a test repository.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bridge_exec::{ExecError, Limits, Mode, Outcome, Validated, run, validate};
use tempfile::TempDir;

/// How long any wait in a test may take before it fails: generous, it is a
/// deadline, not a measurement.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A fresh, empty workspace.
pub fn workspace() -> TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// Limits for `workspace`, without a snapshot.
pub fn limits(workspace: &Path) -> Limits {
    Limits {
        snapshot: false,
        ..Limits::new(workspace)
    }
}

/// `command`, validated for `mode`.
pub fn validated(command: &str, mode: Mode) -> Validated {
    validate(command, mode).unwrap_or_else(|refusal| panic!("{command:?}: {refusal}"))
}

/// Runs `command` in `mode` within `limits`, failing the test if `run` does
/// not return by the deadline.
pub async fn try_run(command: &str, mode: Mode, limits: &Limits) -> Result<Outcome, ExecError> {
    let validated = validated(command, mode);
    tokio::time::timeout(DEADLINE, run(&validated, limits))
        .await
        .expect("run returns before the deadline")
}

/// [`try_run`], which must succeed in starting the command.
pub async fn run_ok(command: &str, mode: Mode, limits: &Limits) -> Outcome {
    try_run(command, mode, limits)
        .await
        .unwrap_or_else(|error| panic!("{command:?}: {error}"))
}

/// The names in `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("a readable directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Whether process `pid` is running (present in `/proc` and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| !matches!(state, "Z" | "X")),
        Err(_) => false,
    }
}

/// Waits until `predicate` holds, up to the deadline; whether it did.
pub fn eventually(mut predicate: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if predicate() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    predicate()
}

/// The process ids written one a line in `file`.
pub fn pids(file: &Path) -> Vec<u32> {
    std::fs::read_to_string(file)
        .expect("the pid file")
        .lines()
        .map(|line| line.trim().parse().expect("a pid"))
        .collect()
}

/// Runs git in `dir` with a test identity; its trimmed stdout. Fails the
/// test if git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_owned()
}

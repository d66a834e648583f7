//! Running a [`Validated`] command: [`run`], within [`Limits`], to an
//! [`Outcome`].
//!
//! One command runs like this:
//!
//! 1. The workspace must exist and be a directory ([`ExecError`] otherwise);
//!    it is made canonical, and it is the working directory.
//! 2. The environment is the parent's, scrubbed ([`crate::environment`]).
//! 3. Under [`Sandbox::Bwrap`], bwrap is checked first
//!    ([`ExecError::SandboxUnavailable`]).
//! 4. With [`Limits::snapshot`], the git snapshot ([`crate::snapshot`]).
//! 5. The program starts in a new process group, stdin from `/dev/null`,
//!    stdout and stderr piped and read at once, each kept up to
//!    [`Limits::output_cap`] bytes and drained past it so the child never
//!    blocks on a full pipe.
//! 6. When the program exits, or at the timeout, the whole process group is
//!    killed with SIGKILL before the program is reaped (so its id cannot
//!    have been reused): nothing it started in the background lingers or
//!    keeps the pipes open. Output still buffered is read for at most
//!    [`DRAIN_GRACE`]; a process that left the group (`setsid`) is not
//!    killed outside the sandbox, and after the grace its pipes are dropped.
//!
//! If the future of [`run`] is dropped half-way, the process group is killed
//! too.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use crate::sandbox::{self, Sandbox};
use crate::validation::{Mode, Program, Refusal, Validated, check_words};
use crate::{environment, snapshot};

/// Bytes kept of each of stdout and stderr, unless [`Limits`] says otherwise.
pub const DEFAULT_OUTPUT_CAP: usize = 64 * 1024;

/// How long a command may run, unless [`Limits`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long output is still read once the process group is killed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// The shell of [`Program::Shell`].
const SHELL: &str = "/bin/sh";

/// Where and how far a command may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The directory the command runs in (and, sandboxed, the only one it
    /// may write to). Must exist.
    pub workspace: PathBuf,
    /// How long the command may run before its process group is killed.
    pub timeout: Duration,
    /// Bytes kept of each of stdout and stderr; the rest is read and dropped.
    pub output_cap: usize,
    /// Whether to run inside bubblewrap.
    pub sandbox: Sandbox,
    /// Whether to make a git snapshot branch first (when the workspace is in
    /// a git work tree).
    pub snapshot: bool,
}

impl Limits {
    /// Limits for `workspace`: [`DEFAULT_TIMEOUT`], [`DEFAULT_OUTPUT_CAP`], no
    /// sandbox, a snapshot first (as the original did).
    pub fn new(workspace: impl Into<PathBuf>) -> Self {
        Limits {
            workspace: workspace.into(),
            timeout: DEFAULT_TIMEOUT,
            output_cap: DEFAULT_OUTPUT_CAP,
            sandbox: Sandbox::None,
            snapshot: true,
        }
    }
}

/// What happened when a command ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code, if the program exited (rather than being killed).
    pub exit_code: Option<i32>,
    /// The signal that killed the program, if one did (9 after a timeout).
    pub signal: Option<i32>,
    /// Whether the timeout was reached and the process group killed.
    pub timed_out: bool,
    /// From start to exit.
    pub duration: Duration,
    /// Standard output, lossy UTF-8, at most [`Limits::output_cap`] bytes,
    /// cut at a character boundary.
    pub stdout: String,
    /// Standard error, likewise.
    pub stderr: String,
    /// Whether stdout was longer than the cap.
    pub stdout_truncated: bool,
    /// Whether stderr was longer than the cap.
    pub stderr_truncated: bool,
    /// The git branch made before the command ran, if one was.
    pub snapshot: Option<String>,
    /// Why the snapshot could not be made, in a git work tree (or when git
    /// could not be run at all); never fatal.
    pub snapshot_error: Option<String>,
}

/// Why a command could not be run. (A command that ran and failed is an
/// [`Outcome`] with its exit code.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The workspace does not exist (or cannot be reached).
    #[error("the workspace {} does not exist or cannot be reached", .0.display())]
    WorkspaceMissing(PathBuf),
    /// The workspace is not a directory.
    #[error("the workspace {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// [`Sandbox::Bwrap`] was asked for and bwrap is not installed, or cannot
    /// build its sandbox here.
    #[error("the bwrap sandbox cannot be used here: {reason}")]
    SandboxUnavailable {
        /// What bwrap said, or that it is not installed.
        reason: String,
    },
    /// The program could not be started (not found, not executable, …).
    #[error("`{program}` could not be started: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The [`Validated`] value breaks its mode's rules (it was built or
    /// changed by hand, not by [`validate`](crate::validate)).
    #[error("the command breaks the rules of its mode: {0}")]
    Refused(#[from] Refusal),
}

/// Runs `validated` within `limits`, with this process's environment,
/// scrubbed. See the [module docs](self).
pub async fn run(validated: &Validated, limits: &Limits) -> Result<Outcome, ExecError> {
    let parent: Vec<_> = std::env::vars_os().collect();
    run_with_environment(validated, limits, parent).await
}

/// [`run`], with `parent` standing for this process's environment (it is
/// scrubbed all the same).
pub async fn run_with_environment(
    validated: &Validated,
    limits: &Limits,
    parent: Vec<(OsString, OsString)>,
) -> Result<Outcome, ExecError> {
    let command = command_line(validated)?;
    let workspace = workspace(&limits.workspace)?;
    let launcher = Launcher {
        env: environment::command_environment(parent, &workspace),
        workspace,
        sandbox: limits.sandbox,
    };
    if limits.sandbox == Sandbox::Bwrap {
        sandbox::probe(&launcher.env)
            .await
            .map_err(|reason| ExecError::SandboxUnavailable { reason })?;
    }
    let (snapshot, snapshot_error) = if limits.snapshot {
        snapshot::take(&launcher).await
    } else {
        (None, None)
    };
    let finished = launcher
        .execute(&command, &[], limits.timeout, limits.output_cap)
        .await
        .map_err(|LaunchError { program, source }| ExecError::Spawn { program, source })?;
    let (stdout, stdout_truncated) = finished.stdout.into_text(limits.output_cap);
    let (stderr, stderr_truncated) = finished.stderr.into_text(limits.output_cap);
    Ok(Outcome {
        exit_code: finished.status.code(),
        signal: finished.status.signal(),
        timed_out: finished.timed_out,
        duration: finished.duration,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        snapshot,
        snapshot_error,
    })
}

/// The program and arguments of `validated`, after checking again that its
/// mode allows them (its fields are public, so it may not come from
/// [`validate`](crate::validate)).
fn command_line(validated: &Validated) -> Result<Vec<OsString>, Refusal> {
    match &validated.program {
        Program::Shell(script) => {
            if validated.mode != Mode::Yolo {
                return Err(Refusal::NotAllowed {
                    program: SHELL.to_owned(),
                    mode: validated.mode,
                });
            }
            Ok(vec![SHELL.into(), "-c".into(), script.into()])
        }
        Program::Argv(words) => {
            check_words(words, validated.mode)?;
            Ok(words.iter().map(OsString::from).collect())
        }
    }
}

/// The canonical workspace, if it exists and is a directory. (Two quick
/// metadata calls, made in place.)
fn workspace(path: &Path) -> Result<PathBuf, ExecError> {
    let metadata =
        std::fs::metadata(path).map_err(|_| ExecError::WorkspaceMissing(path.to_owned()))?;
    if !metadata.is_dir() {
        return Err(ExecError::NotADirectory(path.to_owned()));
    }
    std::fs::canonicalize(path).map_err(|_| ExecError::WorkspaceMissing(path.to_owned()))
}

/// Starts programs in one workspace, with one environment, maybe sandboxed:
/// the command, and the git commands of the snapshot.
pub(crate) struct Launcher {
    /// Canonical.
    pub(crate) workspace: PathBuf,
    /// Scrubbed, `PATH` made safe.
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) sandbox: Sandbox,
}

/// A program that could not be started.
#[derive(Debug)]
pub(crate) struct LaunchError {
    pub(crate) program: String,
    pub(crate) source: io::Error,
}

/// A program that ran.
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) timed_out: bool,
    pub(crate) duration: Duration,
    pub(crate) stdout: Captured,
    pub(crate) stderr: Captured,
}

impl Launcher {
    /// Runs `command` (program and arguments) with `extra_env` on top of the
    /// launcher's environment, killing its process group at `timeout` or
    /// when it exits, keeping `cap` bytes of each output.
    pub(crate) async fn execute(
        &self,
        command: &[OsString],
        extra_env: &[(&str, &str)],
        timeout: Duration,
        cap: usize,
    ) -> Result<Finished, LaunchError> {
        let argv = match self.sandbox {
            Sandbox::None => command.to_vec(),
            Sandbox::Bwrap => sandbox::bwrap_argv(&self.workspace, command),
        };
        let spawn_error = |source| LaunchError {
            program: argv
                .first()
                .map(|program| program.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source,
        };
        let Some((program, args)) = argv.split_first() else {
            return Err(spawn_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty command",
            )));
        };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .envs(extra_env.iter().copied())
            .current_dir(&self.workspace)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let started = Instant::now();
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw)
            .ok_or_else(|| spawn_error(io::Error::other("the child has no process id")))?;
        // Declared after `child`, so dropped (and the group killed) first.
        let mut group = GroupKiller(Some(pid));
        let stop = CancellationToken::new();
        let _stop_on_drop = stop.clone().drop_guard();
        let stdout = tokio::spawn(read_capped(child.stdout.take(), cap, stop.clone()));
        let stderr = tokio::spawn(read_capped(child.stderr.take(), cap, stop.clone()));

        let timed_out = tokio::time::timeout(timeout, exited(pid)).await.is_err();
        group.kill();
        let status = child.wait().await.map_err(spawn_error)?;
        group.0 = None;
        let duration = started.elapsed();

        let grace = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(DRAIN_GRACE).await;
                stop.cancel();
            })
        };
        let stdout = stdout.await.unwrap_or_default();
        let stderr = stderr.await.unwrap_or_default();
        grace.abort();
        Ok(Finished {
            status,
            timed_out,
            duration,
            stdout,
            stderr,
        })
    }
}

/// Kills a process group with SIGKILL when told, and when dropped until
/// disarmed (set to `None`).
struct GroupKiller(Option<Pid>);

impl GroupKiller {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            // ESRCH (nobody left in the group) is what we want anyway.
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the child `pid` has exited, without reaping it: while it is
/// a zombie its id (the process group's id) cannot be given to another
/// process.
async fn exited(pid: Pid) {
    let waited = tokio::task::spawn_blocking(move || {
        loop {
            match rustix::process::waitid(
                WaitId::Pid(pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                // Exited, or cannot be waited for (then killing the group
                // and reaping is all that is left to do).
                _ => return,
            }
        }
    });
    let _ = waited.await;
}

/// Output kept from one stream.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Captured {
    /// The kept bytes as text of at most `cap` bytes: an incomplete character
    /// at the cut is dropped, invalid UTF-8 becomes U+FFFD. And whether
    /// anything was dropped.
    pub(crate) fn into_text(self, cap: usize) -> (String, bool) {
        let Captured {
            mut bytes,
            mut truncated,
        } = self;
        if truncated {
            cut_incomplete_tail(&mut bytes);
        }
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if text.len() > cap {
            // U+FFFD takes three bytes where an invalid byte took one.
            let mut end = cap;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            truncated = true;
        }
        (text, truncated)
    }
}

/// Drops a UTF-8 sequence cut short at the end of `bytes`.
fn cut_incomplete_tail(bytes: &mut Vec<u8>) {
    // The last byte that is not a continuation byte starts the last
    // sequence; it is at most 3 bytes before the end.
    let Some(start) = (bytes.len().saturating_sub(4)..bytes.len())
        .rev()
        .find(|&i| bytes[i] & 0b1100_0000 != 0b1000_0000)
    else {
        return;
    };
    let needed = match bytes[start] {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return,
    };
    if bytes.len() - start < needed {
        bytes.truncate(start);
    }
}

/// Reads `reader` to its end (or until `stop`), keeping the first `cap`
/// bytes and dropping the rest.
async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
    stop: CancellationToken,
) -> Captured {
    let mut captured = Captured::default();
    let Some(mut reader) = reader else {
        return captured;
    };
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            read = reader.read(&mut buffer) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let room = cap.saturating_sub(captured.bytes.len());
        if n > room {
            captured.truncated = true;
        }
        captured.bytes.extend_from_slice(&buffer[..n.min(room)]);
    }
    captured
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8], truncated: bool, cap: usize) -> (String, bool) {
        Captured {
            bytes: bytes.to_vec(),
            truncated,
        }
        .into_text(cap)
    }

    #[test]
    fn a_cut_character_is_dropped() {
        // "éé" and the first byte of a third "é".
        assert_eq!(text(b"\xc3\xa9\xc3\xa9\xc3", true, 5), ("éé".into(), true));
        // The first two bytes of "€" (three bytes).
        assert_eq!(text(b"a\xe2\x82", true, 3), ("a".into(), true));
        // A whole character at the end stays.
        assert_eq!(text("aé".as_bytes(), true, 3), ("aé".into(), true));
        // Not truncated: what came is shown, invalid end and all.
        assert_eq!(text(b"a\xc3", false, 10), ("a\u{fffd}".into(), false));
    }

    #[test]
    fn replacement_characters_stay_within_the_cap() {
        let (shown, truncated) = text(b"\xff\xff\xff\xff", false, 4);
        assert_eq!(shown, "\u{fffd}");
        assert!(truncated);
    }

    #[test]
    fn a_shell_outside_yolo_is_refused() {
        for mode in [Mode::Safe, Mode::Restricted] {
            let validated = Validated {
                mode,
                program: Program::Shell("ls".into()),
            };
            assert!(matches!(
                command_line(&validated),
                Err(Refusal::NotAllowed { .. })
            ));
        }
        let validated = Validated {
            mode: Mode::Safe,
            program: Program::Argv(vec!["rm".into(), "-r".into(), ".".into()]),
        };
        assert!(command_line(&validated).is_err());
    }

    #[test]
    fn the_future_can_move_between_threads() {
        fn send<T: Send>(_: &T) {}
        let validated = Validated {
            mode: Mode::Safe,
            program: Program::Argv(vec!["ls".into()]),
        };
        let limits = Limits::new("/nonexistent");
        send(&run(&validated, &limits));
    }
}

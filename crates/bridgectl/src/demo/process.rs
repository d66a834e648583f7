//! The demo's processes: the workspace's binaries, found beside
//! `bridgectl`, started on the demo's database with a clean environment.
//! Their output lines, tagged with who printed them, all arrive on one
//! channel; each is stopped with SIGTERM (then SIGKILL if it lingers), and
//! killed if the demo ends early.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The binaries the demo starts.
const NEEDED: [&str; 4] = [
    "bridge-mcp",
    "keepalive-daemon",
    "fs-watcher",
    "watchdog-monitor",
];

/// How long a process may take to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);

/// Environment variables a process of the demo must not inherit: they
/// would point it at another database, conversation or token.
const SCRUBBED: [&str; 7] = [
    "BRIDGE_DB",
    "BRIDGE_KEY_FILE",
    "BRIDGE_TOKEN",
    "BRIDGE_TOKEN_FILE",
    "BRIDGE_CONVERSATION_ID",
    "BRIDGE_RATE_LIMIT",
    "RUST_LOG",
];

/// The directory holding the workspace's binaries.
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// The directory of the running `bridgectl`, if every binary the demo
    /// needs is there.
    pub fn beside_me() -> anyhow::Result<Binaries> {
        let me = std::env::current_exe().context("cannot find the bridgectl binary")?;
        let dir = me
            .parent()
            .context("the bridgectl binary has no directory")?
            .to_path_buf();
        let missing: Vec<_> = NEEDED
            .iter()
            .filter(|name| !dir.join(name).is_file())
            .copied()
            .collect();
        if !missing.is_empty() {
            bail!(
                "the demo needs {} beside bridgectl in {}; build them all with \
                 `cargo build --release --workspace --bins`",
                missing.join(", "),
                dir.display()
            );
        }
        Ok(Binaries { dir })
    }

    /// A command running binary `name` on `database`, its environment
    /// scrubbed of the caller's bridge settings, killed if dropped.
    pub fn command(&self, name: &str, database: &Path) -> Command {
        let mut command = Command::new(self.dir.join(name));
        for variable in SCRUBBED {
            command.env_remove(variable);
        }
        command
            .env("BRIDGE_DB", database)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }
}

/// One line a process printed.
#[derive(Debug)]
pub struct Line {
    /// Who printed it: the name the demo gave the process.
    pub who: String,
    /// Whether it came on stdout (else stderr, where the logs go).
    pub stdout: bool,
    /// The line, without its newline.
    pub text: String,
}

/// A daemon the demo started.
pub struct Daemon {
    /// The binary's name.
    pub name: &'static str,
    child: Child,
}

impl Daemon {
    /// Starts `command` (from [`Binaries::command`]) and sends its stdout
    /// and stderr lines, tagged `who`, to `lines`.
    pub fn spawn(
        name: &'static str,
        mut command: Command,
        who: &str,
        lines: &mpsc::UnboundedSender<Line>,
    ) -> anyhow::Result<Daemon> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        if let Some(stdout) = child.stdout.take() {
            forward(stdout, who, true, lines.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            forward(stderr, who, false, lines.clone());
        }
        Ok(Daemon { name, child })
    }

    /// The process id (0 once it has been reaped).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit; kills the process if it has
    /// not exited after [`GRACE`].
    pub async fn stop(mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        terminate(self.pid());
        match tokio::time::timeout(GRACE, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                bail!(
                    "{} did not stop within {GRACE:?} of SIGTERM and was killed",
                    self.name
                )
            }
        }
    }
}

/// Sends SIGTERM to `pid`, if it names a process.
pub fn terminate(pid: u32) {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        // Gone already is fine: that is what we want.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Whether `pid` is a running process (a zombie is not).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Sends each line of `pipe` to `lines` until the pipe closes.
fn forward(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    who: &str,
    stdout: bool,
    lines: mpsc::UnboundedSender<Line>,
) {
    let who = who.to_owned();
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(text)) = reader.next_line().await {
            let line = Line {
                who: who.clone(),
                stdout,
                text,
            };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
}

//! Daemons started by tests: the real binaries, their stdout lines as they
//! come, their stderr, signals. A daemon still running when its test ends
//! is killed.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::bin;

/// A running daemon.
pub struct Daemon {
    child: Child,
    /// Stdout lines, with the instant each was read.
    lines: mpsc::Receiver<(Instant, String)>,
    stderr: Arc<Mutex<String>>,
    /// Says when stderr reached its end (after the daemon exited).
    stderr_closed: mpsc::Receiver<()>,
}

impl Daemon {
    /// Starts the workspace binary `name` with `args` on `database` (or
    /// on the hub of `BRIDGE_URL`, if `env` has it), with `env` added (and
    /// no inherited `BRIDGE_*`/`RUST_LOG`).
    pub fn start(name: &str, database: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_under(&[], name, database, args, env)
    }

    /// Starts the daemon as [`Daemon::start`] does, under `wrapper` (e.g.
    /// `ip netns exec NAME`, which runs it in a network namespace).
    pub fn start_under(
        wrapper: &[&str],
        name: &str,
        database: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut command = command(wrapper, name, database, env);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the daemon");
        let (send, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        let (closed, stderr_closed) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = pipe.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
            let _ = closed.send(());
        });
        Daemon {
            child,
            lines,
            stderr,
            stderr_closed,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, if one comes within `timeout`.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.timed_line(timeout).map(|(_, line)| line)
    }

    /// The next stdout line and the instant it was read.
    pub fn timed_line(&self, timeout: Duration) -> Option<(Instant, String)> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Everything on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `text` (up to `timeout`).
    pub fn wait_for_stderr(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends `signal` (e.g. `TERM`) and waits up to `timeout` for the exit;
    /// returns the status and how long it took.
    pub fn signal(&mut self, signal: &str, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        let sent = Instant::now();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
        self.wait(timeout).map(|status| (status, sent.elapsed()))
    }

    /// Waits up to `timeout` for the daemon to exit by itself. Once it has,
    /// [`Daemon::stderr`] holds all it wrote (unless a child of its own
    /// still holds the pipe a second later).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let _ = self.stderr_closed.recv_timeout(Duration::from_secs(1));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the workspace binary `name` to completion; returns its exit code,
/// stdout and stderr.
pub fn run(
    name: &str,
    database: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let output = command(&[], name, database, env)
        .args(args)
        .output()
        .expect("run the binary");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The workspace binary `name` on `database`, or on the hub of
/// `BRIDGE_URL` if `env` has it (then without `BRIDGE_DB`, which would
/// conflict), with `env`, and nothing inherited of `BRIDGE_*`/`RUST_LOG`
/// but the key file of the PostgreSQL run for its databases.
fn command(wrapper: &[&str], name: &str, database: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = Command::new(program);
            command.args(wrapper_args).arg(bin::path(name));
            command
        }
        None => Command::new(bin::path(name)),
    };
    for (key, _) in std::env::vars() {
        if key.starts_with("BRIDGE_") {
            command.env_remove(key);
        }
    }
    command.env_remove("RUST_LOG");
    if !env.iter().any(|(key, _)| *key == "BRIDGE_URL") {
        command.env("BRIDGE_DB", database);
        if let Some(key_file) = crate::postgres::key_file_of_run(database) {
            command.env("BRIDGE_KEY_FILE", key_file);
        }
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

//! `fs-watcher`: reports each new message for a session the moment another
//! process commits it.
//!
//! It waits on `bridge-core`'s change notification (inotify on the
//! database's WAL, not inotify-tools and a shell) and, for each new message,
//! in order, prints one line (JSON by default, or text) and, with `--exec
//! CMD`, runs `sh -c CMD` with the message on stdin and
//! `BRIDGE_CONVERSATION_ID`, `BRIDGE_SESSION`, `BRIDGE_MESSAGE_ID`,
//! `BRIDGE_ACTION_TYPE` in its environment (a failing command is logged,
//! never fatal). It peeks: the agent still receives every message from
//! `check_messages`. It keeps its own place: the last id it reported, in
//! memory, and in `--state-file` if given. On start it reports what the
//! session has not confirmed, or with `--from-now` only what comes next. It
//! records a heartbeat every `--heartbeat` as it goes.
//!
//! # Delivery
//!
//! With `--state-file`, the guarantee of `check_messages`: no message is
//! skipped across restarts, and none is reported twice unless it is marked.
//! Before it reports a batch (or, with `--exec`, before each command) the
//! watcher records in the state file what it is about to report; once done,
//! that it did. Killed in between, its next start reports those messages
//! again, marked: `"redelivered": true` in JSON, `(redelivered)` in text,
//! `BRIDGE_REDELIVERED=1` in a command's environment. So a command cut short
//! by a crash (or by systemd) runs again, and can tell. The state file is
//! written whole (a temporary file, then a rename) and synced.
//!
//! # Where the messages come from
//!
//! The hub is the database on this machine (`--db`): woken by its change
//! notification; or a `bridge-mcp --http` on another machine (`--url`, the
//! token as its key; see `bridge-hub`): woken by the server's, through
//! `wait_for_messages` with `after_id`, a call that waits on the hub and
//! marks nothing read. Either way it reads after its own place, never
//! moving the agent's.
//!
//! Like `keepalive-daemon`: it waits for a database that does not exist yet
//! or a hub out of reach (said once; what came meanwhile is reported when
//! it is back, from its own place), reopens a database that was replaced,
//! stops on SIGTERM or SIGINT, speaks systemd's notification protocol
//! (ready once the first heartbeat was accepted; watchdog pings while it
//! waits), and exits 77 on a wrong or expired token, 78 on a hub whose
//! certificate does not verify.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use bridge_cli::agent::AgentArgs;
use bridge_cli::daemon::systemd;
use bridge_cli::{LogArgs, exit, parse_duration, shutdown_signal};
use bridge_core::Credentials;
use bridge_hub::{Hub, HubArgs, HubError, Incoming, Start};
use clap::{Parser, ValueEnum};
use tokio::io::AsyncWriteExt;

/// Messages read at a time.
const BATCH: u32 = 500;

/// Reports each new message for a session as soon as it is committed.
#[derive(Parser, Debug)]
#[command(name = "fs-watcher", version)]
struct Args {
    #[command(flatten)]
    agent: AgentArgs,

    /// The format of the line printed for each message
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,

    /// Run this shell command for each message, with the message on stdin
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,

    /// Remember the last id reported in this file, across restarts
    #[arg(long, value_name = "PATH")]
    state_file: Option<PathBuf>,

    /// Report only messages that arrive after the start, not those already unread
    #[arg(long)]
    from_now: bool,

    /// Time between heartbeats
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    heartbeat: Duration,

    #[command(flatten)]
    hub: HubArgs,

    #[command(flatten)]
    log: LogArgs,
}

/// How a message is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One JSON object per line.
    Json,
    /// One readable line (newlines in the message shown as \n).
    Text,
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    let code = exit::block_on("fs-watcher", run(args));
    systemd::stopping();
    code
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.heartbeat.is_zero() {
        anyhow::bail!("--heartbeat must be longer than zero");
    }
    // First: from here on, a signal is caught rather than fatal.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let credentials = args.agent.credentials()?;
    let state = read_state(args.state_file.as_deref())?;
    let watchdog = systemd::watchdog_interval();
    let Some(mut hub) = Hub::connect(&args.hub, credentials.clone(), &mut shutdown)
        .await
        .map_err(fatal)?
    else {
        return Ok(());
    };
    // Reported, or perhaps reported, before a crash: marked if again.
    let redeliver_upto = state.and_then(|state| state.reporting).unwrap_or(0);
    let start = if args.from_now {
        Start::Now
    } else {
        Start::Unconfirmed
    };
    // The first heartbeat proves the token: ready only once it is accepted.
    let first = loop {
        let attempt = async {
            hub.heartbeat().await?;
            match state {
                Some(state) => Ok(state.last),
                None => hub.start(start).await,
            }
        };
        match attempt.await {
            Ok(last) => break Some(last),
            Err(error) => {
                if !survive(&mut hub, error, &mut shutdown, watchdog).await? {
                    break None;
                }
            }
        }
    };
    let Some(mut last) = first else {
        hub.close().await;
        return Ok(());
    };
    tracing::info!(
        conversation_id = %credentials.conversation_id,
        session = %credentials.session,
        hub = %hub.location(),
        after = last,
        "watching"
    );
    systemd::ready();
    let mut next_beat = tokio::time::Instant::now() + args.heartbeat;
    let reporter = Reporter {
        args: &args,
        credentials: &credentials,
        redeliver_upto,
        watchdog,
    };
    // What the hub handed over while waiting, to report first.
    let mut arrived: Vec<Incoming> = Vec::new();
    let stopped = 'watching: loop {
        // Everything after `last`, in batches, before waiting again.
        loop {
            let messages = if arrived.is_empty() {
                match hub.peek_after(last, BATCH).await {
                    Ok(messages) => messages,
                    Err(error) => {
                        if survive(&mut hub, error, &mut shutdown, watchdog).await? {
                            continue;
                        }
                        break 'watching Stop::Signal;
                    }
                }
            } else {
                std::mem::take(&mut arrived)
            };
            let full = messages.len() >= BATCH as usize;
            if messages.is_empty() {
                break;
            }
            if let Some(stop) = reporter
                .report_all(messages, &mut last, &mut shutdown)
                .await?
            {
                break 'watching stop;
            }
            if !full {
                break;
            }
        }
        let now = tokio::time::Instant::now();
        if now >= next_beat {
            next_beat = now + args.heartbeat;
            if !hub.refresh(&mut shutdown).await.map_err(fatal)? {
                break Stop::Signal;
            }
            if let Err(error) = hub.heartbeat().await {
                if !error.is_transient() {
                    let error = fatal(error);
                    if exit::code_for(&error) != exit::FAILURE {
                        hub.close().await;
                        return Err(error);
                    }
                    tracing::warn!("heartbeat failed: {error:#}");
                } else if !survive(&mut hub, error, &mut shutdown, watchdog).await? {
                    break Stop::Signal;
                }
            }
            continue;
        }
        // Wait for what comes after `last`, until the next heartbeat.
        let waited = pinging(
            hub.wait_after(last, next_beat - now),
            &mut shutdown,
            watchdog,
        )
        .await;
        match waited {
            None => break Stop::Signal,
            Some(Ok(messages)) => arrived = messages,
            Some(Err(error)) => {
                if !survive(&mut hub, error, &mut shutdown, watchdog).await? {
                    break Stop::Signal;
                }
            }
        }
    };
    match stopped {
        Stop::Signal => tracing::info!("stopping"),
        Stop::Command => tracing::info!("stopping; the command will run again at the next start"),
        Stop::Stdout => tracing::info!("stdout is closed; stopping"),
    }
    hub.close().await;
    Ok(())
}

/// Why the watcher stops.
enum Stop {
    /// SIGTERM or SIGINT.
    Signal,
    /// A signal while `--exec` ran: the command runs again at the next start.
    Command,
    /// Nobody reads stdout any more.
    Stdout,
}

/// A hub's error as this program reports it (and exits with its code).
fn fatal(error: HubError) -> anyhow::Error {
    error.report()
}

/// After a failed call: waits for the hub if it is out of reach (or the
/// database locked or replaced), pinging the watchdog; `false` if a signal
/// came first. Any other error ends the watcher.
async fn survive(
    hub: &mut Hub,
    error: HubError,
    shutdown: &mut (impl Future<Output = &'static str> + Unpin),
    watchdog: Option<Duration>,
) -> anyhow::Result<bool> {
    if !error.is_transient() {
        return Err(fatal(error));
    }
    tracing::debug!(%error, "waiting for the hub");
    match pinging(
        hub.recover(std::future::pending::<()>()),
        shutdown,
        watchdog,
    )
    .await
    {
        None => Ok(false),
        Some(recovered) => recovered.map_err(fatal),
    }
}

/// Runs `work` to its end while pinging systemd's watchdog; `None` if a
/// signal came first (`work` is then dropped).
async fn pinging<T>(
    work: impl Future<Output = T>,
    shutdown: &mut (impl Future<Output = &'static str> + Unpin),
    watchdog: Option<Duration>,
) -> Option<T> {
    tokio::pin!(work);
    let mut pings = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            done = &mut work => return Some(done),
            _ = &mut *shutdown => return None,
            _ = pings.tick(), if watchdog.is_some() => systemd::watchdog(),
        }
    }
}

/// Reports messages: prints them, runs `--exec`, keeps the state file.
struct Reporter<'a> {
    args: &'a Args,
    credentials: &'a Credentials,
    /// Messages up to this id may have been reported before a crash.
    redeliver_upto: i64,
    watchdog: Option<Duration>,
}

impl Reporter<'_> {
    /// Reports `messages` (the ones after `last`, in order) and moves
    /// `last` on; `Some` if the watcher must stop.
    async fn report_all(
        &self,
        mut messages: Vec<Incoming>,
        last: &mut i64,
        shutdown: &mut (impl Future<Output = &'static str> + Unpin),
    ) -> anyhow::Result<Option<Stop>> {
        let args = self.args;
        for message in &mut messages {
            message.redelivered = message.id <= self.redeliver_upto;
        }
        let Some(batch_last) = messages.last().map(|message| message.id) else {
            return Ok(None);
        };
        let state_file = args.state_file.as_deref();
        if args.exec.is_none() {
            write_state(state_file, State::reporting(*last, batch_last))?;
        }
        for message in &messages {
            if let Some(command) = &args.exec {
                write_state(state_file, State::reporting(*last, message.id))?;
                if !report(args, self.credentials, message) {
                    return Ok(Some(Stop::Stdout));
                }
                let ran =
                    run_command(command, self.credentials, message, shutdown, self.watchdog).await;
                if !ran {
                    return Ok(Some(Stop::Command));
                }
                *last = message.id;
                write_state(state_file, State::done(*last))?;
            } else if !report(args, self.credentials, message) {
                return Ok(Some(Stop::Stdout));
            }
        }
        *last = batch_last;
        if args.exec.is_none() {
            write_state(state_file, State::done(*last))?;
        }
        Ok(None)
    }
}

/// Prints the line for `message`. Returns `false` if stdout is gone (nobody
/// is listening any more).
fn report(args: &Args, credentials: &Credentials, message: &Incoming) -> bool {
    let line = match args.format {
        Format::Json => {
            let mut line = serde_json::json!({
                "id": message.id,
                "conversation_id": credentials.conversation_id,
                "from": message.from,
                "action_type": message.action_type,
                "timestamp": message.timestamp,
                "message": message.body,
                "files_involved": message.files_involved,
            });
            if message.redelivered {
                line["redelivered"] = true.into();
            }
            line.to_string()
        }
        Format::Text => format!(
            "#{} {} from {} ({}){}: {}",
            message.id,
            message.timestamp,
            message.from,
            message.action_type,
            if message.redelivered {
                " (redelivered)"
            } else {
                ""
            },
            message.body.replace('\\', "\\\\").replace('\n', "\\n")
        ),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// Runs `sh -c command` with the message on stdin; a failure is logged.
/// Pings systemd's watchdog while it waits. Returns `false` if a signal
/// came first (the command is then killed).
async fn run_command(
    command: &str,
    credentials: &Credentials,
    message: &Incoming,
    shutdown: &mut (impl Future<Output = &'static str> + Unpin),
    watchdog: Option<Duration>,
) -> bool {
    let mut child = tokio::process::Command::new("sh");
    child
        .arg("-c")
        .arg(command)
        .env(
            "BRIDGE_CONVERSATION_ID",
            credentials.conversation_id.as_str(),
        )
        .env("BRIDGE_SESSION", credentials.session.as_str())
        .env("BRIDGE_MESSAGE_ID", message.id.to_string())
        .env("BRIDGE_ACTION_TYPE", &message.action_type)
        .env_remove("BRIDGE_TOKEN")
        .env_remove("BRIDGE_REDELIVERED")
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    if message.redelivered {
        child.env("BRIDGE_REDELIVERED", "1");
    }
    let mut child = match child.spawn() {
        Ok(child) => child,
        Err(error) => {
            tracing::warn!(message_id = message.id, %error, "cannot run --exec");
            return true;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine.
        let _ = stdin.write_all(message.body.as_bytes()).await;
    }
    let mut pings = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            signal = &mut *shutdown => {
                tracing::info!(signal, message_id = message.id, "stopping the running --exec");
                return false;
            }
            _ = pings.tick(), if watchdog.is_some() => systemd::watchdog(),
        }
    };
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => tracing::warn!(message_id = message.id, %status, "--exec failed"),
        Err(error) => tracing::warn!(message_id = message.id, %error, "--exec failed"),
    }
    true
}

/// What the state file records: the last id reported, and what was being
/// reported (up to which id) when it was written, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    last: i64,
    reporting: Option<i64>,
}

impl State {
    /// Everything up to `last` reported.
    fn done(last: i64) -> State {
        State {
            last,
            reporting: None,
        }
    }

    /// Up to `last` reported; what follows up to `upto` being reported.
    fn reporting(last: i64, upto: i64) -> State {
        State {
            last,
            reporting: Some(upto),
        }
    }
}

/// The state file's content: `LAST`, or `LAST REPORTING_UPTO`, if there is
/// one.
fn read_state(path: Option<&Path>) -> anyhow::Result<Option<State>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot read state file {}", path.display()));
        }
    };
    let bad = || format!("state file {} does not hold a message id", path.display());
    let mut ids = text.split_whitespace().map(str::parse::<i64>);
    let last = ids.next().with_context(bad)?.with_context(bad)?;
    let reporting = ids.next().transpose().with_context(bad)?;
    if ids.next().is_some() {
        anyhow::bail!(bad());
    }
    Ok(Some(State { last, reporting }))
}

/// Records `state` in the state file, whole or not at all (write, sync,
/// rename).
fn write_state(path: Option<&Path>, state: State) -> anyhow::Result<()> {
    use std::io::Write as _;
    let Some(path) = path else {
        return Ok(());
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let text = match state.reporting {
        Some(upto) => format!("{} {upto}\n", state.last),
        None => format!("{}\n", state.last),
    };
    std::fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("cannot write state file {}", path.display()))
}

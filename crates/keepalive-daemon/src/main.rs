//! `keepalive-daemon`: keeps a worker's session alive.
//!
//! Every `--interval` (default 30 s, plus up to a tenth of it at random, so
//! that a hundred workers do not write in the same millisecond) it records a
//! heartbeat for the session and logs how many messages wait for it (a peek:
//! nothing is marked read). Replaces the original `keepalive-daemon.sh` and
//! `keepalive-client.py`, which never checked the token.
//!
//! The hub is the database on this machine (`--db`), or a `bridge-mcp
//! --http` on another one (`--url`, with the token as its key; see
//! `bridge-hub`). It waits for a database that does not exist yet, or a hub
//! that cannot be reached (said once), reopens a database that was
//! replaced, stops within a second on SIGTERM or SIGINT, and under systemd
//! (`Type=notify`, `WatchdogSec=`) says it is ready once its first heartbeat
//! was accepted, and pings the watchdog from its loop. A wrong or expired
//! token ends it with exit code 77, which the systemd unit does not
//! restart; a hub whose certificate does not verify, with 78.

use std::process::ExitCode;
use std::time::Duration;

use bridge_cli::agent::AgentArgs;
use bridge_cli::daemon::systemd;
use bridge_cli::{LogArgs, exit, parse_duration, shutdown_signal};
use bridge_hub::{Hub, HubArgs, HubError};
use clap::Parser;

/// Records a heartbeat for a session every interval, and logs how many
/// messages wait for it.
#[derive(Parser, Debug)]
#[command(name = "keepalive-daemon", version)]
struct Args {
    #[command(flatten)]
    agent: AgentArgs,

    /// Time between heartbeats
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    interval: Duration,

    #[command(flatten)]
    hub: HubArgs,

    #[command(flatten)]
    log: LogArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    let code = exit::block_on("keepalive-daemon", run(args));
    systemd::stopping();
    code
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.interval.is_zero() {
        anyhow::bail!("--interval must be longer than zero");
    }
    // First: from here on, a signal is caught rather than fatal.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let credentials = args.agent.credentials()?;
    let Some(mut hub) = Hub::connect(&args.hub, credentials.clone(), &mut shutdown)
        .await
        .map_err(fatal)?
    else {
        return Ok(());
    };
    // The first heartbeat proves the token: ready only once it is accepted.
    let mut last_unread = loop {
        match beat(&mut hub, None).await {
            Ok(unread) => break unread,
            Err(error) if error.is_transient() => {
                if !hub.recover(&mut shutdown).await.map_err(fatal)? {
                    hub.close().await;
                    return Ok(());
                }
            }
            Err(error) => {
                hub.close().await;
                return Err(fatal(error));
            }
        }
    };
    tracing::info!(
        conversation_id = %credentials.conversation_id,
        session = %credentials.session,
        hub = %hub.location(),
        interval = ?args.interval,
        "beating"
    );
    systemd::ready();
    let watchdog = systemd::watchdog_interval();
    let mut watchdog_ticks = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut next = tokio::time::Instant::now() + jittered(args.interval);
    loop {
        tokio::select! {
            signal = &mut shutdown => {
                tracing::info!(signal, "stopping");
                break;
            }
            _ = watchdog_ticks.tick(), if watchdog.is_some() => systemd::watchdog(),
            () = tokio::time::sleep_until(next) => {
                next += jittered(args.interval);
                if !hub.refresh(&mut shutdown).await.map_err(fatal)? {
                    return Ok(());
                }
                match beat(&mut hub, last_unread).await {
                    Ok(unread) => last_unread = unread,
                    // Out of reach (said once by the hub), locked, or a
                    // moment of trouble: try again next time.
                    Err(error) if error.is_transient() => {
                        tracing::debug!(%error, "no heartbeat this time");
                    }
                    Err(error) => {
                        let error = fatal(error);
                        if exit::code_for(&error) != exit::FAILURE {
                            hub.close().await;
                            return Err(error);
                        }
                        tracing::warn!("heartbeat failed: {error:#}");
                    }
                }
            }
        }
    }
    hub.close().await;
    Ok(())
}

/// A hub's error as this program reports it (and exits with its code).
fn fatal(error: HubError) -> anyhow::Error {
    error.report()
}

/// One heartbeat, and the unread count, logged when it changed. Returns the
/// count.
async fn beat(hub: &mut Hub, last_unread: Option<u64>) -> Result<Option<u64>, HubError> {
    let unread = hub.heartbeat().await?;
    if last_unread != Some(unread) {
        tracing::info!(
            unread,
            "heartbeat; {unread} unread message{}",
            if unread == 1 { "" } else { "s" }
        );
    } else {
        tracing::debug!(unread, "heartbeat");
    }
    Ok(Some(unread))
}

/// `interval` plus up to a tenth of it. The randomness (the clock's
/// nanoseconds mixed with the pid) only needs to differ between workers.
fn jittered(interval: Duration) -> Duration {
    let tenth = interval / 10;
    let random = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            since.subsec_nanos() ^ std::process::id().rotate_left(16)
        });
    interval + tenth.mul_f64(f64::from(random % 1_000) / 1_000.0)
}

//! `keepalive-daemon`: keeps a worker's session alive.
//!
//! Every `--interval` (default 30 s, plus up to a tenth of it at random, so
//! that a hundred workers do not write in the same millisecond) it records a
//! heartbeat for the session and logs how many messages wait for it (a peek:
//! nothing is marked read). Replaces the original `keepalive-daemon.sh` and
//! `keepalive-client.py`, which never checked the token.
//!
//! It waits for a database that does not exist yet, reopens one that was
//! replaced, stops within a second on SIGTERM or SIGINT, and under systemd
//! (`Type=notify`, `WatchdogSec=`) says when it is ready and pings the
//! watchdog from its loop. A wrong or expired token ends it with exit code
//! 77, which the systemd unit does not restart.

use std::process::ExitCode;
use std::time::Duration;

use bridge_cli::agent::AgentArgs;
use bridge_cli::daemon::{open_when_ready, systemd};
use bridge_cli::{LogArgs, RateLimitArgs, StoreArgs, exit, parse_duration, shutdown_signal};
use bridge_core::{Credentials, Store};
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
    store: StoreArgs,

    #[command(flatten)]
    limit: RateLimitArgs,

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
    let mut options = args.store.options()?;
    args.limit.apply(&mut options);
    options.readers = 1;

    let Some(mut store) = open_when_ready(options.clone(), &mut shutdown).await? else {
        return Ok(());
    };
    let mut last_unread = beat(&store, &credentials, None).await?;
    tracing::info!(
        conversation_id = %credentials.conversation_id,
        session = %credentials.session,
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
                if store.replaced() {
                    tracing::warn!(database = %store.path().display(), "the database file was replaced; reopening it");
                    store.close().await;
                    let Some(reopened) = open_when_ready(options.clone(), &mut shutdown).await? else {
                        return Ok(());
                    };
                    store = reopened;
                }
                match beat(&store, &credentials, last_unread).await {
                    Ok(unread) => last_unread = unread,
                    Err(error) if exit::code_for(&error) == exit::AUTH => {
                        store.close().await;
                        return Err(error);
                    }
                    // Locked, or a moment of trouble: try again next time.
                    Err(error) => tracing::warn!("heartbeat failed: {error:#}"),
                }
            }
        }
    }
    store.close().await;
    Ok(())
}

/// One heartbeat, and the unread count, logged when it changed. Returns the
/// count.
async fn beat(
    store: &Store,
    credentials: &Credentials,
    last_unread: Option<u64>,
) -> anyhow::Result<Option<u64>> {
    store.heartbeat(credentials).await?;
    let unread = store.inbox_summary(credentials).await?.unread;
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

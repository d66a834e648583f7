//! `bridge-cli`: what every mcp-bridge binary shares, so that they all
//! behave alike (DESIGN.md §4).
//!
//! * [`StoreArgs`], [`RateLimitArgs`]: `--db` (`BRIDGE_DB`), `--key-file`
//!   (`BRIDGE_KEY_FILE`), `--durability` (`BRIDGE_DURABILITY`),
//!   `--rate-limit` (`BRIDGE_RATE_LIMIT`), turned into
//!   [`StoreOptions`]. Flags win over the environment, which wins over the
//!   defaults (clap's `env` feature).
//! * [`LogArgs`]: `--log-format text|json` and `-v`, logging to stderr with
//!   `tracing` (`RUST_LOG` overrides the level).
//! * [`exit`]: the exit codes, and the one line an error prints.
//! * [`agent`]: who a daemon acts as (`<conversation_id> [token]`,
//!   `--token-file`, `BRIDGE_TOKEN`, `--session`).
//! * [`daemon`]: opening a database that may not exist yet; systemd's
//!   readiness and watchdog notifications.
//! * [`shutdown_signal`]: SIGINT or SIGTERM, whichever comes first.
//! * [`parse_duration`]: `30s`, `5m`, `1h30m` or plain seconds.
//!
//! `bridge-core` knows nothing of command lines; this crate knows nothing of
//! SQL.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod agent;
pub mod daemon;
pub mod exit;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bridge_core::{Durability, Location, StoreOptions, config};
use clap::{Args, ValueEnum};

/// Where the store is: `--db` and `--key-file` (before or after a
/// subcommand, in a binary that has them).
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// The database: an SQLite file, or postgres://USER@HOST/DATABASE
    /// [default: $XDG_STATE_HOME/mcp-bridge/bridge.db]
    #[arg(long, global = true, env = config::DB_ENV, value_name = "PATH|URL")]
    pub db: Option<String>,

    /// The server key file [default: <database>.key; required with PostgreSQL]
    #[arg(long, global = true, env = "BRIDGE_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,

    /// When a write is acknowledged: full (on stable storage) or normal
    /// (handed to the OS: a power loss can lose the last writes)
    #[arg(long, global = true, env = "BRIDGE_DURABILITY", value_enum, default_value_t = DurabilityArg::Full)]
    pub durability: DurabilityArg,
}

/// `--durability`: when a write is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Once on stable storage (each commit syncs the WAL).
    #[default]
    Full,
    /// Once handed to the operating system.
    Normal,
}

impl StoreArgs {
    /// The store options these flags describe, with the defaults of
    /// `bridge-core` for everything else.
    pub fn options(&self) -> anyhow::Result<StoreOptions> {
        let location = match &self.db {
            Some(db) => Location::parse(db)?,
            None => Location::File(config::default_db_path().context("no database given")?),
        };
        let mut options = StoreOptions::at(location);
        options.key_file.clone_from(&self.key_file);
        options.durability = match self.durability {
            DurabilityArg::Full => Durability::Full,
            DurabilityArg::Normal => Durability::Normal,
        };
        Ok(options)
    }
}

/// How many writes a session may make: `--rate-limit`.
#[derive(Args, Clone, Debug)]
pub struct RateLimitArgs {
    /// Writes per minute per conversation and session (0 = no limit)
    #[arg(
        long,
        env = "BRIDGE_RATE_LIMIT",
        value_name = "PER_MINUTE",
        default_value_t = config::DEFAULT_RATE_LIMIT
    )]
    pub rate_limit: u32,
}

impl RateLimitArgs {
    /// Applies the limit to `options`.
    pub fn apply(&self, options: &mut StoreOptions) {
        options.rate_limit_per_minute = self.rate_limit;
    }
}

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per event, for journald and log collectors.
    Json,
}

/// Logging: `--log-format` and `-v`.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// The format of log lines (on stderr)
    #[arg(long, global = true, env = "BRIDGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More detail, -v, -vv, -vvv: up to everything (RUST_LOG overrides)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The crates whose log lines are ours; other crates log warnings only,
/// unless asked for more.
const OUR_CRATES: &[&str] = &[
    "bridge_core",
    "bridge_cli",
    "bridge_mcp",
    "bridge_hub",
    "keepalive_daemon",
    "fs_watcher",
    "check_messages",
    "watchdog_monitor",
    "reassign_tasks",
    "bridgectl",
];

impl LogArgs {
    /// The filter these flags ask for, unless `RUST_LOG` says otherwise: a
    /// daemon's own events at info (its log is its output); a `quiet`
    /// command's at warn (its output is its answer), `-v` for info.
    pub fn filter(&self, quiet: bool) -> String {
        let ours = |level: &str| {
            OUR_CRATES
                .iter()
                .map(|krate| format!("{krate}={level}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self.verbose.saturating_add(u8::from(!quiet)) {
            0 => "warn".to_owned(),
            1 => format!("warn,{}", ours("info")),
            2 => format!("info,{}", ours("debug")),
            _ => "trace".to_owned(),
        }
    }

    /// Sends log lines to stderr. Call once, first thing in `main`.
    pub fn init(&self) {
        self.init_with(false);
    }

    /// Like [`init`](Self::init), for a command that is not a daemon: only
    /// warnings unless `-v`.
    pub fn init_quiet(&self) {
        self.init_with(true);
    }

    fn init_with(&self, quiet: bool) {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(self.filter(quiet)));
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr);
        let registry = tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::filter::filter_fn(not_protocol_detail));
        // A second initialisation (tests) keeps the first.
        let _ = match self.log_format {
            LogFormat::Text => registry.with(layer.with_target(false)).try_init(),
            LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
        };
    }
}

/// Whether an event may be logged whatever the filter says: `rmcp` logs
/// every request and response at debug level with its arguments, tokens
/// included, so nothing of it below info is ever written, even with `-vv` or
/// `RUST_LOG=trace`. Its client's transport worker logs each failed
/// connection as an error; the daemons say once that the hub is out of
/// reach, and once that it is back, so those are not written either.
fn not_protocol_detail(metadata: &tracing::Metadata<'_>) -> bool {
    let target = metadata.target();
    if target.starts_with("rmcp::transport::worker") {
        return false;
    }
    !(target.starts_with("rmcp") && *metadata.level() > tracing::Level::INFO)
}

/// A future that resolves on SIGINT or SIGTERM and says which came.
///
/// The handlers are installed when this is called, not when the future is
/// first polled: a signal that arrives in between is caught too, instead of
/// killing the process with the default action. Call it first thing, inside
/// the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            },
            (Ok(mut terminate), Err(_)) => {
                terminate.recv().await;
                "SIGTERM"
            }
            (Err(_), Ok(mut interrupt)) => {
                interrupt.recv().await;
                "SIGINT"
            }
            (Err(_), Err(_)) => std::future::pending().await,
        }
    }
}

/// Parses a duration: `30s`, `5m`, `1h30m`, `250ms`, or a plain number of
/// seconds. For clap's `value_parser`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is not a duration (try 30s, 5m, 1h30m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(
            parse_duration("soon"),
            Err("\"soon\" is not a duration (try 30s, 5m, 1h30m)".to_owned())
        );
    }

    #[test]
    fn verbosity_raises_our_crates_first() {
        let args = |verbose| LogArgs {
            log_format: LogFormat::Text,
            verbose,
        };
        assert!(args(0).filter(false).starts_with("warn,bridge_core=info"));
        assert!(args(1).filter(false).starts_with("info,bridge_core=debug"));
        assert_eq!(args(2).filter(false), "trace");
        assert_eq!(args(0).filter(true), "warn");
        assert!(args(1).filter(true).starts_with("warn,bridge_core=info"));
        assert_eq!(args(3).filter(true), "trace");
    }
}

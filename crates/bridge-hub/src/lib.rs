//! `bridge-hub`: what a worker's daemons (`keepalive-daemon`, `fs-watcher`,
//! `check-messages`) need from the hub, wherever it is.
//!
//! With `--db` (the default), the hub is the store on this machine, opened
//! directly ([`local`]). With `--url` (`BRIDGE_URL`), it is a `bridge-mcp
//! --http` on another machine, spoken to over Streamable HTTP with `rmcp`'s
//! client, the session token as the bearer key ([`remote`]). Either way the
//! daemons ask the same questions of one [`Hub`]: record a heartbeat (and
//! say how many messages wait), where to start watching, the messages after
//! an id (now, or once one arrives), and, for `check-messages`, a read that
//! consumes and its confirmation. Each answer is the same in both modes; the
//! tests run the daemons' suites against both.
//!
//! Failures come in four kinds ([`HubError`]), which the daemons treat
//! alike in both modes: the token refused (exit 77), a configuration that
//! cannot work (exit 78: a certificate that does not verify, a file that is
//! not a bridge database), the hub out of reach for now (waited for, with
//! backoff, said once), and anything else.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod local;
pub mod remote;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use bridge_cli::exit::Misconfigured;
use bridge_cli::{RateLimitArgs, StoreArgs};
use bridge_core::Credentials;
use clap::Args;
use serde::Deserialize;

use crate::local::LocalHub;
use crate::remote::{RemoteHub, RemoteOptions};

/// Where the hub is: `--url` and `--ca-file`, or the shared store flags.
#[derive(Args, Clone, Debug)]
pub struct HubArgs {
    /// The hub's MCP endpoint on another machine, e.g.
    /// https://hub.example.org:8765/mcp, instead of --db
    #[arg(long, env = "BRIDGE_URL", value_name = "URL", conflicts_with = "db")]
    pub url: Option<String>,

    /// With --url: trust the hub's certificate if this PEM file's CA signed
    /// it (else the system's trusted CAs)
    #[arg(long, env = "BRIDGE_CA_FILE", value_name = "PEM", requires = "url")]
    pub ca_file: Option<PathBuf>,

    // The store's flags, for --db.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub store: StoreArgs,

    #[allow(missing_docs)]
    #[command(flatten)]
    pub limit: RateLimitArgs,
}

impl HubArgs {
    /// The store's options for a daemon: one reader is enough.
    fn store_options(&self) -> Result<bridge_core::StoreOptions, Misconfigured> {
        let mut options = self
            .store
            .options()
            .map_err(|error| Misconfigured(format!("{error:#}")))?;
        self.limit.apply(&mut options);
        options.readers = 1;
        Ok(options)
    }
}

/// A message for the session, as the daemons report it (the same fields
/// from the store and from the MCP server).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Incoming {
    /// Its id.
    pub id: i64,
    /// Who sent it: `a`, `b` or `system`.
    pub from: String,
    /// The session it is for.
    pub to: String,
    /// What kind it is.
    pub action_type: String,
    /// When it was stored (RFC 3339).
    pub timestamp: String,
    /// The text, after redaction.
    #[serde(rename = "message")]
    pub body: String,
    /// The paths it is about.
    pub files_involved: Vec<String>,
    /// Its metadata, after redaction, if it has any.
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Handed out before without its receipt being confirmed.
    #[serde(default)]
    pub redelivered: bool,
}

impl From<bridge_core::Message> for Incoming {
    fn from(message: bridge_core::Message) -> Incoming {
        Incoming {
            id: message.id,
            from: message.from.to_string(),
            to: message.to.to_string(),
            action_type: message.action_type.to_string(),
            timestamp: message.created_at.to_string(),
            body: message.body,
            files_involved: message.files_involved,
            metadata: message.metadata,
            redelivered: message.redelivered,
        }
    }
}

/// Why the hub did not answer.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The store refused, or a local failure (a locked database, say);
    /// its own variants say which (an invalid token exits 77).
    #[error(transparent)]
    Store(#[from] bridge_core::Error),
    /// A configuration that cannot work: exit 78.
    #[error(transparent)]
    Misconfigured(#[from] Misconfigured),
    /// The hub cannot be reached now (down, restarting, the network): wait
    /// for it.
    #[error("the hub at {url} cannot be reached: {reason}")]
    Unavailable {
        /// The hub's URL.
        url: String,
        /// What went wrong, in the HTTP client's words.
        reason: String,
    },
    /// The hub answered, but not as a bridge does.
    #[error("the hub at {url} answered unexpectedly: {reason}")]
    Protocol {
        /// The hub's URL.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

impl HubError {
    /// The error as a program reports it: the store's or the
    /// configuration's own where it is one, so that the exit code for it is
    /// found in the error's chain (`bridge_cli::exit::code_for`), else this
    /// one.
    pub fn report<E>(self) -> E
    where
        E: From<bridge_core::Error> + From<Misconfigured> + From<HubError>,
    {
        match self {
            HubError::Store(error) => error.into(),
            HubError::Misconfigured(error) => error.into(),
            other => E::from(other),
        }
    }

    /// Whether waiting may cure it: the hub out of reach, or a database
    /// that is locked, not there yet, or its server out of reach.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HubError::Unavailable { .. }
                | HubError::Store(
                    bridge_core::Error::Locked { .. }
                        | bridge_core::Error::DatabaseMissing { .. }
                        | bridge_core::Error::NoStore { .. }
                        | bridge_core::Error::Unreachable { .. }
                )
        )
    }
}

/// Where a watcher starts when it has no place of its own yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// After the last message the session confirmed: what the agent has
    /// not received is reported.
    Unconfirmed,
    /// After the newest message: only what comes next.
    Now,
}

/// The hub, on this machine or another.
pub enum Hub {
    /// The store, opened directly.
    Local(LocalHub),
    /// A `bridge-mcp --http` on another machine.
    Remote(RemoteHub),
}

impl Hub {
    /// Opens the store (waiting while the database does not exist yet) or
    /// connects to the hub (waiting while it cannot be reached), for
    /// `credentials`. `None` if `stop` came first. A refused token is not
    /// found here but at the first call.
    pub async fn connect(
        args: &HubArgs,
        credentials: Credentials,
        stop: impl Future,
    ) -> Result<Option<Hub>, HubError> {
        match &args.url {
            Some(url) => {
                let options = RemoteOptions::new(url, args.ca_file.as_deref())?;
                Ok(RemoteHub::connect(options, credentials, stop)
                    .await?
                    .map(Hub::Remote))
            }
            None => {
                let options = args.store_options()?;
                Ok(LocalHub::open(options, credentials, stop)
                    .await?
                    .map(Hub::Local))
            }
        }
    }

    /// Opens the store or connects to the hub once, without waiting: a
    /// database that does not exist, or a hub out of reach, is the error.
    pub async fn connect_once(args: &HubArgs, credentials: Credentials) -> Result<Hub, HubError> {
        match &args.url {
            Some(url) => {
                let options = RemoteOptions::new(url, args.ca_file.as_deref())?;
                Ok(Hub::Remote(
                    RemoteHub::connect_once(options, credentials).await?,
                ))
            }
            None => {
                let options = args.store_options()?;
                Ok(Hub::Local(LocalHub::open_once(options, credentials).await?))
            }
        }
    }

    /// Where the hub is, for log lines: the database file or the URL.
    pub fn location(&self) -> String {
        match self {
            Hub::Local(hub) => hub.location(),
            Hub::Remote(hub) => hub.location(),
        }
    }

    /// Records a heartbeat; returns how many messages wait for the session
    /// (not yet confirmed).
    pub async fn heartbeat(&mut self) -> Result<u64, HubError> {
        match self {
            Hub::Local(hub) => hub.heartbeat().await,
            Hub::Remote(hub) => hub.heartbeat().await,
        }
    }

    /// The id after which a watcher without a place of its own starts.
    pub async fn start(&mut self, start: Start) -> Result<i64, HubError> {
        match self {
            Hub::Local(hub) => hub.start(start).await,
            Hub::Remote(hub) => hub.start(start).await,
        }
    }

    /// Up to `limit` messages for the session after `after`, marking
    /// nothing.
    pub async fn peek_after(&mut self, after: i64, limit: u32) -> Result<Vec<Incoming>, HubError> {
        match self {
            Hub::Local(hub) => hub.peek_after(after, limit).await,
            Hub::Remote(hub) => hub.peek_after(after, limit).await,
        }
    }

    /// The messages for the session after `after`, marking nothing, once
    /// there is at least one; empty if `timeout` passes first. Woken by the
    /// store's change notification, locally or on the hub: not a polling
    /// loop.
    pub async fn wait_after(
        &mut self,
        after: i64,
        timeout: Duration,
    ) -> Result<Vec<Incoming>, HubError> {
        match self {
            Hub::Local(hub) => hub.wait_after(after, timeout).await,
            Hub::Remote(hub) => hub.wait_after(after, timeout).await,
        }
    }

    /// Up to `limit` unread messages, leaving them unread.
    pub async fn peek(&mut self, limit: u32) -> Result<Vec<Incoming>, HubError> {
        match self {
            Hub::Local(hub) => hub.peek(limit).await,
            Hub::Remote(hub) => hub.peek(limit).await,
        }
    }

    /// Up to `limit` unread messages, handed out: pending until
    /// [`Hub::ack`] confirms them.
    pub async fn deliver(&mut self, limit: u32) -> Result<Vec<Incoming>, HubError> {
        match self {
            Hub::Local(hub) => hub.deliver(limit).await,
            Hub::Remote(hub) => hub.deliver(limit).await,
        }
    }

    /// Confirms every message up to `up_to`.
    pub async fn ack(&mut self, up_to: i64) -> Result<(), HubError> {
        match self {
            Hub::Local(hub) => hub.ack(up_to).await,
            Hub::Remote(hub) => hub.ack(up_to).await,
        }
    }

    /// After a transient failure: waits until the hub can be reached again
    /// (reopening a database that was replaced, or connecting anew), with
    /// backoff and one log line. `false` if `stop` came first.
    pub async fn recover(&mut self, stop: impl Future) -> Result<bool, HubError> {
        match self {
            Hub::Local(hub) => hub.recover(stop).await,
            Hub::Remote(hub) => hub.recover(stop).await,
        }
    }

    /// Reopens the database if its file was replaced (a restore); nothing
    /// for a remote hub, whose client reconnects by itself. `false` if
    /// `stop` came first.
    pub async fn refresh(&mut self, stop: impl Future) -> Result<bool, HubError> {
        match self {
            Hub::Local(hub) => hub.refresh(stop).await,
            Hub::Remote(_) => Ok(true),
        }
    }

    /// Closes the store or the MCP session.
    pub async fn close(self) {
        match self {
            Hub::Local(hub) => hub.close().await,
            Hub::Remote(hub) => hub.close().await,
        }
    }
}

/// Waits `wait`, doubled each time up to `max`, between attempts; `false`
/// if `stop` came first.
pub(crate) async fn back_off(
    wait: &mut Duration,
    max: Duration,
    stop: &mut (impl Future + Unpin),
) -> bool {
    tokio::select! {
        _ = stop => false,
        () = tokio::time::sleep(*wait) => {
            *wait = (*wait * 2).min(max);
            true
        }
    }
}

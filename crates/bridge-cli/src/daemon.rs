//! What the daemons share: opening a database that may not exist yet, and
//! talking to systemd.

use std::future::Future;
use std::time::Duration;

use bridge_core::{Error, Store, StoreOptions};

/// Opens the store at `options.location`, waiting while the database does not
/// exist yet, is locked, or its server cannot be reached (saying so once), until it opens, another error
/// occurs, or `stop` resolves (then `None`). Never creates the database:
/// that is the MCP server's or `bridgectl`'s job.
pub async fn open_when_ready(
    mut options: StoreOptions,
    stop: impl Future,
) -> Result<Option<Store>, Error> {
    options.create = false;
    tokio::pin!(stop);
    let mut wait = Duration::from_millis(100);
    let mut said = false;
    loop {
        match Store::open(options.clone()).await {
            Ok(store) => {
                if said {
                    tracing::info!(database = %options.location, "the database is here");
                }
                return Ok(Some(store));
            }
            Err(
                error @ (Error::DatabaseMissing { .. }
                | Error::NoStore { .. }
                | Error::Locked { .. }
                | Error::Unreachable { .. }),
            ) => {
                if !said {
                    tracing::warn!(%error, "waiting for the database");
                    said = true;
                }
            }
            Err(error) => return Err(error),
        }
        tokio::select! {
            _ = &mut stop => return Ok(None),
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// systemd's notification protocol (`Type=notify`, `WatchdogSec=`). Every
/// call does nothing when the process was not started by systemd
/// (`NOTIFY_SOCKET` unset).
pub mod systemd {
    use std::time::Duration;

    use sd_notify::NotifyState;

    /// Tells systemd the service is up.
    pub fn ready() {
        notify(&[NotifyState::Ready]);
    }

    /// Tells systemd the service is stopping.
    pub fn stopping() {
        notify(&[NotifyState::Stopping]);
    }

    /// How often to ping the watchdog: half of `WATCHDOG_USEC`, if set for
    /// this process.
    pub fn watchdog_interval() -> Option<Duration> {
        sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
    }

    /// Tells the watchdog the service is alive.
    pub fn watchdog() {
        notify(&[NotifyState::Watchdog]);
    }

    fn notify(state: &[NotifyState<'_>]) {
        if let Err(error) = sd_notify::notify(state) {
            tracing::warn!(%error, "cannot notify systemd");
        }
    }
}

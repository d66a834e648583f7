//! Change notification on PostgreSQL: `LISTEN`/`NOTIFY`.
//!
//! Every batch the writer commits sends `NOTIFY mcp_bridge` inside its
//! transaction (delivered at commit, never for a batch rolled back), its
//! payload the ids it leaves behind (audit, message, task), its
//! transaction's id and, after a space, the writer's id, far below
//! PostgreSQL's 8,000-byte limit. A listener per store wakes its
//! subscribers at each notification from another store's writer; they
//! re-read past their own cursors, as on SQLite, so a notification carries
//! no data anyone relies on. Its own writer's it skips: that writer has
//! woken the subscribers already.
//!
//! A notification can be lost: PostgreSQL keeps none for a connection that
//! is not there. So when the listener's connection breaks, it wakes every
//! subscriber, which re-reads, and reconnects (sqlx's `PgListener` does, on
//! the next receive). And a connection can go silent without breaking (a
//! half-open TCP connection). Every poll interval the watcher reads the
//! heads itself (their ids and the transaction that last wrote them, which
//! every batch does, as the notifications carry them) and compares them
//! with the last notification's. A difference may be a notification still
//! on its way; one that stands at the next check, with no notification in
//! between, means the feed is silent: it wakes the subscribers, reconnects,
//! and says so once.
//!
//! The watcher listens from the moment its store is open, before anyone
//! can subscribe, so no commit falls between a subscription and the first
//! `LISTEN`.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::watch::Changes;

/// The channel every store of one database notifies and listens on.
pub(crate) const CHANNEL: &str = "mcp_bridge";

/// The heads, as one text, in the form of the writer's notifications:
/// what the periodic check compares. Every batch rewrites them, so the
/// transaction id that last did (`xmin`, the same on every row) changes at
/// every commit, whatever the commit changed.
const HEADS_SQL: &str = "SELECT string_agg(name || '=' || last_id, ',' ORDER BY name) \
                         || '@' || min(xmin::text) FROM head";

/// Listens for other stores' commits and checks the heads periodically.
pub(crate) struct PgWatcher {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl PgWatcher {
    /// Listens through a connection of its own (made with `connect`), and
    /// checks the heads through `pool` every `poll_interval`; skips the
    /// notifications of the store's own writer, `writer`. Returns once it
    /// listens.
    pub(crate) async fn start(
        connect: PgConnectOptions,
        pool: PgPool,
        changes: Changes,
        poll_interval: Duration,
        writer: Arc<str>,
    ) -> Result<PgWatcher, sqlx::Error> {
        let listener = connect_listener(&connect).await?;
        // The heads as they are now, before the store is handed out: the
        // check compares with them, so no commit after `open` is missed.
        let heads = read_heads(&pool).await;
        let (stop, stopped) = oneshot::channel();
        let feed = Feed {
            connect,
            pool,
            changes,
            poll_interval,
            writer,
        };
        let task = tokio::spawn(feed.listen(listener, heads, stopped));
        Ok(PgWatcher {
            task,
            stop: Some(stop),
        })
    }

    /// Stops listening and closes the listener's connection.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for PgWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the watcher's task works with.
struct Feed {
    connect: PgConnectOptions,
    pool: PgPool,
    changes: Changes,
    poll_interval: Duration,
    /// The id of the store's own writer.
    writer: Arc<str>,
}

impl Feed {
    /// Listens until `stopped`; `heads` are the ones the last notification
    /// carried (or the check last read).
    async fn listen(
        self,
        listener: PgListener,
        mut heads: Option<String>,
        mut stopped: oneshot::Receiver<()>,
    ) {
        let mut listener = Some(listener);
        let mut said_silent = false;
        // The last check found heads that no notification had carried.
        let mut suspect = false;
        let mut check = tokio::time::interval(self.poll_interval);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if listener.is_none() {
                match connect_listener(&self.connect).await {
                    Ok(connected) => listener = Some(connected),
                    Err(error) => tracing::debug!(%error, "cannot listen for changes yet"),
                }
                // Whatever was committed while no one listened: look again.
                self.changes.notify();
            }
            // In this order: notifications that are in already come before
            // a check that would miss them.
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                received = receive(listener.as_mut()) => match received {
                    Ok(Some(notice)) => {
                        let (written, writer) = notice.split_once(' ').unwrap_or((&notice, ""));
                        if writer != &*self.writer {
                            self.changes.notify();
                        }
                        heads = Some(written.to_owned());
                        suspect = false;
                        said_silent = false;
                    }
                    Ok(None) => {
                        tracing::debug!("the change-feed connection was lost; reconnecting");
                        self.changes.notify();
                    }
                    Err(error) => {
                        tracing::debug!(%error, "the change-feed connection broke; reconnecting");
                        listener = None;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = check.tick() => match read_heads(&self.pool).await {
                    Some(now) if heads.as_ref() != Some(&now) => {
                        if suspect {
                            if !said_silent {
                                tracing::warn!(
                                    "the database changed without a notification; \
                                     the change-feed connection may be silent, reconnecting it"
                                );
                                said_silent = true;
                            }
                            listener = None;
                            self.changes.notify();
                            heads = Some(now);
                        }
                        suspect = !suspect;
                    }
                    Some(_) => suspect = false,
                    // Nothing to compare with: the next check looks again.
                    None => {}
                },
            }
        }
        if let Some(mut listener) = listener {
            let _ = listener.unlisten_all().await;
        }
    }
}

/// The payload of the next notification, or `None`, the news that the
/// connection was lost (the next receive reconnects, and what was sent
/// meanwhile is gone); pending forever without a listener.
async fn receive(listener: Option<&mut PgListener>) -> Result<Option<String>, sqlx::Error> {
    match listener {
        Some(listener) => Ok(listener
            .try_recv()
            .await?
            .map(|notification| notification.payload().to_owned())),
        None => std::future::pending().await,
    }
}

async fn connect_listener(connect: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(connect.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn read_heads(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar(HEADS_SQL).fetch_one(pool).await.ok()
}

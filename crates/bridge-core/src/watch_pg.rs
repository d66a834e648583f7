//! Change notification on PostgreSQL: `LISTEN`/`NOTIFY`.
//!
//! Every batch the writer commits sends `NOTIFY mcp_bridge` inside its
//! transaction (delivered at commit, never for a batch rolled back), its
//! payload the ids it leaves behind (message, audit, task), far below
//! PostgreSQL's 8,000-byte limit. A listener per store wakes its
//! subscribers at each notification; they re-read past their own cursors, as
//! on SQLite, so a notification carries no data anyone relies on.
//!
//! A notification can be lost: PostgreSQL keeps none for a connection that
//! is not there. So when the listener's connection breaks, it wakes every
//! subscriber, which re-reads, and reconnects (sqlx's `PgListener` does, on
//! the next receive). And a connection can go silent without
//! breaking (a half-open TCP connection): every poll interval the watcher
//! reads the heads itself (their ids and the transaction that last wrote
//! them, which every batch does), and wakes the subscribers if they moved
//! without a notification, saying so once.
//!
//! The watcher listens from the moment its store is open, before anyone
//! can subscribe, so no commit falls between a subscription and the first
//! `LISTEN`.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::watch::Changes;

/// The channel every store of one database notifies and listens on.
pub(crate) const CHANNEL: &str = "mcp_bridge";

/// The heads, as one text: what the periodic check compares. Every batch
/// rewrites them, so the transaction id that last did (`xmin`) changes at
/// every commit, whatever the commit changed.
const HEADS_SQL: &str =
    "SELECT string_agg(name || '=' || last_id || '@' || xmin, ',' ORDER BY name) FROM head";

/// Listens for other stores' commits and checks the heads periodically.
pub(crate) struct PgWatcher {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl PgWatcher {
    /// Listens through a connection of its own (made with `connect`), and
    /// checks the heads through `pool` every `poll_interval`. Returns once
    /// it listens.
    pub(crate) async fn start(
        connect: PgConnectOptions,
        pool: PgPool,
        changes: Changes,
        poll_interval: Duration,
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
}

impl Feed {
    async fn listen(
        self,
        listener: PgListener,
        mut heads: Option<String>,
        mut stopped: oneshot::Receiver<()>,
    ) {
        let mut listener = Some(listener);
        let mut said_silent = false;
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
            tokio::select! {
                _ = &mut stopped => break,
                _ = check.tick() => {
                    let now = read_heads(&self.pool).await;
                    if now.is_some() && now != heads {
                        if !said_silent {
                            tracing::warn!(
                                "the database changed without a notification; \
                                 the change-feed connection may be silent, reconnecting it"
                            );
                            said_silent = true;
                        }
                        listener = None;
                        self.changes.notify();
                    }
                    heads = now;
                }
                received = receive(listener.as_mut()) => match received {
                    Ok(true) => {
                        // Wake first: the heads are only for the next check.
                        self.changes.notify();
                        heads = read_heads(&self.pool).await.or(heads);
                        said_silent = false;
                    }
                    Ok(false) => {
                        tracing::debug!("the change-feed connection was lost; reconnecting");
                        self.changes.notify();
                    }
                    Err(error) => {
                        tracing::debug!(%error, "the change-feed connection broke; reconnecting");
                        listener = None;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        if let Some(mut listener) = listener {
            let _ = listener.unlisten_all().await;
        }
    }
}

/// The next notification (`true`), or the news that the connection was
/// lost (`false`: the next receive reconnects, and what was sent meanwhile
/// is gone); pending forever without a listener.
async fn receive(listener: Option<&mut PgListener>) -> Result<bool, sqlx::Error> {
    match listener {
        Some(listener) => listener.try_recv().await.map(|received| received.is_some()),
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

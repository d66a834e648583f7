//! WAL checkpoints, off the write path.
//!
//! By default SQLite checkpoints inside the commit that pushes the WAL past
//! 1000 pages: that caller waits for the copy into the database file and its
//! `fsync`, a latency spike of milliseconds on an otherwise sub-millisecond
//! write. The store turns automatic checkpoints off on its writer and runs
//! passive checkpoints from a connection of their own, shortly after its
//! writer committed. A passive checkpoint never blocks writers or readers.
//! (The last connection to close still checkpoints and removes the WAL.)

use std::path::PathBuf;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::watch::{ChangeSubscription, Changes};

/// How long after a commit the checkpoint runs: commits within this window
/// share one checkpoint.
const DELAY: Duration = Duration::from_millis(500);

/// The checkpointing task of one store.
pub(crate) struct Checkpointer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Checkpointer {
    /// Starts checkpointing after the commits that `commits` signals (this
    /// store's own: other processes checkpoint theirs).
    pub(crate) fn start(
        connect: SqliteConnectOptions,
        commits: &Changes,
        path: PathBuf,
    ) -> Checkpointer {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(connect, commits.subscribe(), path, stopped));
        Checkpointer { stop, task }
    }

    /// Stops the task and closes its connection.
    pub(crate) async fn close(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn run(
    connect: SqliteConnectOptions,
    mut changes: ChangeSubscription,
    path: PathBuf,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connection: Option<SqliteConnection> = None;
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
        tokio::select! {
            _ = &mut stopped => break,
            () = tokio::time::sleep(DELAY) => {}
        }
        let open = match connection.take() {
            Some(open) => Ok(open),
            None => SqliteConnection::connect_with(&connect).await,
        };
        match open {
            Ok(mut open) => {
                match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&mut open)
                    .await
                {
                    Ok(_) => connection = Some(open),
                    Err(error) => {
                        tracing::debug!(database = %path.display(), %error, "checkpoint failed; retrying after the next commit");
                    }
                }
            }
            Err(error) => {
                tracing::debug!(database = %path.display(), %error, "cannot open a connection to checkpoint");
            }
        }
    }
    if let Some(connection) = connection {
        let _ = connection.close().await;
    }
}

//! Change notification: waking waiters when any process commits to the
//! database.
//!
//! In WAL mode every commit writes `<database>-wal`, and only checkpoints
//! write the database file itself. So a change of the WAL means "something
//! may have changed", and so does the database file appearing, disappearing
//! or being renamed (a replaced database); a checkpoint writing it does not.
//! The events come from `notify` (inotify on Linux). Events
//! carry no data: a woken waiter queries past its cursor, so a missed or
//! duplicated event costs one query, never a message. Bursts coalesce: a
//! waiter that was busy sees one wake-up for any number of events.
//!
//! A write of the WAL is not yet a commit others can read: SQLite writes the
//! frames, syncs them (with durability `full`), and only then publishes the
//! commit in the WAL index (`-shm`, written through shared memory, which
//! sends no event). A waiter woken by the write may query before that and
//! find nothing. So every store's writer, once a commit is published, sets
//! the WAL's modification time ([`announce_commit`]): one more modification
//! event, which comes after the commit is visible. Writers that are not ours (the
//! `sqlite3` shell) announce nothing; their commits are found by the poll.
//!
//! Two other sources feed the same signal: the store's own writer, after each
//! commit (so waiters in the same process wake without the round trip through
//! the kernel), and a slow poll for file systems that send no events
//! (network file systems, some containers). The poll asks SQLite whether a
//! commit was published since it last looked (`PRAGMA data_version`, exact
//! whatever the file times say) and compares the files' size, time and
//! inode (a replaced database).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// The signal: a counter bumped on every possible change, and whether the
/// store is closed.
#[derive(Clone)]
pub(crate) struct Changes(Arc<Signal>);

struct Signal {
    counter: watch::Sender<u64>,
    closed: AtomicBool,
}

impl Changes {
    pub(crate) fn new() -> Changes {
        Changes(Arc::new(Signal {
            counter: watch::Sender::new(0),
            closed: AtomicBool::new(false),
        }))
    }

    /// Wakes every subscriber.
    pub(crate) fn notify(&self) {
        self.0
            .counter
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self) -> ChangeSubscription {
        ChangeSubscription {
            signal: Arc::clone(&self.0),
            counter: self.0.counter.subscribe(),
        }
    }

    /// Ends every subscription: their waits fail with [`Error::Closed`].
    pub(crate) fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.notify();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::SeqCst)
    }
}

/// A waiter's view of the change signal, from
/// [`Store::subscribe`](crate::Store::subscribe).
///
/// The pattern that loses nothing: subscribe, query, and only then wait, then
/// query again after each wake-up.
pub struct ChangeSubscription {
    signal: Arc<Signal>,
    counter: watch::Receiver<u64>,
}

impl ChangeSubscription {
    /// Waits until something changed since the subscription was made or
    /// last woke. Fails with [`Error::Closed`] once the store is closed.
    pub async fn changed(&mut self) -> Result<()> {
        let closed = |signal: &Signal| signal.closed.load(Ordering::SeqCst);
        if closed(&self.signal) {
            return Err(Error::Closed);
        }
        self.counter.changed().await.map_err(|_| Error::Closed)?;
        if closed(&self.signal) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// How many changes were signalled so far, every one of them now marked
    /// seen. A query begun after this call shows every change the count
    /// covers: the signal of a commit comes once the commit can be read.
    pub fn version(&mut self) -> u64 {
        *self.counter.borrow_and_update()
    }
}

/// The WAL file of `database`.
pub(crate) fn wal_of(database: &Path) -> PathBuf {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Tells watchers in other processes that a commit is published: sets the
/// modification time of the database's WAL (`wal`), by its path (opening and
/// closing a database file would drop this process's SQLite locks on it).
/// Linux reports a change of the modification time alone as a modification
/// of the file (`IN_MODIFY`, what a write reports), not as a change of
/// metadata. A failure only delays their wake-up to the poll, so it is
/// logged at debug level.
pub(crate) fn announce_commit(wal: &Path) {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
    };
    if let Err(error) = rustix::fs::utimensat(CWD, wal, &times, AtFlags::empty()) {
        tracing::debug!(wal = %wal.display(), %error, "cannot announce a commit");
    }
}

/// Watches one database's files and feeds [`Changes`]. Stops when dropped,
/// or, closing its connection first, with [`DatabaseWatcher::stop`].
pub(crate) struct DatabaseWatcher {
    /// `None` if the file system refused to watch (poll only).
    _events: Option<RecommendedWatcher>,
    poll: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for DatabaseWatcher {
    fn drop(&mut self) {
        self.poll.abort();
    }
}

impl DatabaseWatcher {
    /// Starts watching `database` (its directory, for events on the database
    /// and its WAL) and polling every `poll_interval` through a connection
    /// made with `connect`.
    pub(crate) fn start(
        database: &Path,
        changes: Changes,
        poll_interval: Duration,
        connect: SqliteConnectOptions,
    ) -> DatabaseWatcher {
        let files = Files::of(database);
        let events = match files.watch(changes.clone()) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(
                    database = %database.display(),
                    %error,
                    "cannot watch the database for changes; polling every {poll_interval:?} instead"
                );
                None
            }
        };
        let (stop, stopped) = oneshot::channel();
        let version = DataVersion {
            connect,
            connection: None,
            last: None,
        };
        let poll = tokio::spawn(poll(files, changes, poll_interval, version, stopped));
        DatabaseWatcher {
            _events: events,
            poll,
            stop: Some(stop),
        }
    }

    /// Stops watching and closes the poll's connection.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the poll has ended already.
            let _ = stop.send(());
        }
        // Its end, whatever it was, is all that is awaited.
        let _ = (&mut self.poll).await;
    }
}

/// The files whose changes mean a commit.
#[derive(Clone)]
struct Files {
    database: PathBuf,
    wal: PathBuf,
}

impl Files {
    fn of(database: &Path) -> Files {
        Files {
            database: database.to_path_buf(),
            wal: wal_of(database),
        }
    }

    /// Whether an event may mean a commit: the WAL written (or its
    /// modification time set, see [`announce_commit`]), created, removed or
    /// renamed (not its other metadata: SQLite changes the owner of a WAL it
    /// opens as root), or the database file created, removed or renamed (not
    /// written: that is a checkpoint).
    fn signals_commit(&self, event: &notify::Event) -> bool {
        use notify::event::ModifyKind;
        event.paths.iter().any(|path| {
            if *path == self.wal {
                matches!(
                    event.kind,
                    EventKind::Create(_)
                        | EventKind::Remove(_)
                        | EventKind::Modify(
                            ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any
                        )
                        | EventKind::Any
                )
            } else if *path == self.database {
                matches!(
                    event.kind,
                    EventKind::Create(_)
                        | EventKind::Remove(_)
                        | EventKind::Modify(ModifyKind::Name(_))
                )
            } else {
                false
            }
        })
    }

    fn watch(&self, changes: Changes) -> notify::Result<RecommendedWatcher> {
        let files = self.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match event {
                    Ok(event) => {
                        if files.signals_commit(&event) {
                            changes.notify();
                        }
                    }
                    // Lost events (e.g. an overflowing queue): wake everyone, the
                    // query will tell.
                    Err(_) => changes.notify(),
                }
            })?;
        let dir = match self.database.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }

    /// What the poll compares: size, modification time and inode of each file.
    fn signature(&self) -> [Option<(u64, SystemTime, u64)>; 2] {
        use std::os::unix::fs::MetadataExt;
        let of = |path: &Path| {
            std::fs::metadata(path).ok().map(|m| {
                (
                    m.len(),
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.ino(),
                )
            })
        };
        [of(&self.database), of(&self.wal)]
    }
}

/// The safety net: wakes subscribers when a commit was published or the
/// files changed since the last look, until told to stop.
async fn poll(
    files: Files,
    changes: Changes,
    interval: Duration,
    mut version: DataVersion,
    mut stop: oneshot::Receiver<()>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = files.signature();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut stop => break,
        }
        let committed = version.changed().await;
        let now = files.signature();
        if committed || now != last {
            last = now;
            changes.notify();
        }
    }
    version.close().await;
}

/// Whether another connection published a commit since the last look:
/// `PRAGMA data_version` on a connection of the poll's own.
struct DataVersion {
    connect: SqliteConnectOptions,
    /// Made at the first look, and again after an error.
    connection: Option<SqliteConnection>,
    last: Option<i64>,
}

impl DataVersion {
    /// Whether the version moved since the last look. A look that fails
    /// (the database is gone or locked for long) says no and drops the
    /// connection; the files' signature still tells of a replaced database.
    async fn changed(&mut self) -> bool {
        if self.connection.is_none() {
            self.connection = self.connect.connect().await.ok();
        }
        let Some(connection) = self.connection.as_mut() else {
            return false;
        };
        match sqlx::query_scalar::<_, i64>("PRAGMA data_version")
            .fetch_one(connection)
            .await
        {
            Ok(version) => {
                let moved = self.last.is_some_and(|last| last != version);
                self.last = Some(version);
                moved
            }
            Err(error) => {
                tracing::debug!(%error, "cannot read the data version; trying again at the next poll");
                self.connection = None;
                self.last = None;
                false
            }
        }
    }

    async fn close(self) {
        if let Some(connection) = self.connection {
            // Closing a read connection fails only if it is broken: then
            // there is nothing left to close.
            let _ = connection.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqliteJournalMode;

    #[tokio::test]
    async fn the_data_version_moves_only_with_a_commit_of_another_connection() {
        let dir = tempfile::tempdir().unwrap();
        let connect = SqliteConnectOptions::new()
            .filename(dir.path().join("version.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let mut writer = connect.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (x)")
            .execute(&mut writer)
            .await
            .unwrap();
        let mut version = DataVersion {
            connect: connect.clone().read_only(true),
            connection: None,
            last: None,
        };
        assert!(!version.changed().await, "the first look only records");
        assert!(!version.changed().await, "nothing committed");
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut writer)
            .await
            .unwrap();
        assert!(version.changed().await, "a commit");
        assert!(!version.changed().await, "seen already");
        version.close().await;
        writer.close().await.unwrap();
    }
}

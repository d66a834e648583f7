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
//! Two other sources feed the same signal: the store's own writer, after each
//! commit (so waiters in the same process wake without the round trip through
//! the kernel), and a slow poll of the files' size, time and inode, for file
//! systems that send no events (network file systems, some containers).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;
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
}

/// Watches one database's files and feeds [`Changes`]. Stops when dropped.
pub(crate) struct DatabaseWatcher {
    /// `None` if the file system refused to watch (poll only).
    _events: Option<RecommendedWatcher>,
    poll: JoinHandle<()>,
}

impl Drop for DatabaseWatcher {
    fn drop(&mut self) {
        self.poll.abort();
    }
}

impl DatabaseWatcher {
    /// Starts watching `database` (its directory, for events on the database
    /// and its WAL) and polling every `poll_interval`.
    pub(crate) fn start(
        database: &Path,
        changes: Changes,
        poll_interval: Duration,
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
        let poll = tokio::spawn(poll(files, changes, poll_interval));
        DatabaseWatcher {
            _events: events,
            poll,
        }
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
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        Files {
            database: database.to_path_buf(),
            wal: PathBuf::from(wal),
        }
    }

    /// Whether an event may mean a commit: the WAL written, created, removed
    /// or renamed (not its metadata: SQLite changes the owner of a WAL it
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

/// The safety net: wakes subscribers when the files changed since last look.
async fn poll(files: Files, changes: Changes, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = files.signature();
    loop {
        ticker.tick().await;
        let now = files.signature();
        if now != last {
            last = now;
            changes.notify();
        }
    }
}

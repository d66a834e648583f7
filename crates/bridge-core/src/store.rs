//! Opening the store: the database file, its schema, the server key, the
//! connection pool and the writer.
//!
//! [`Store::open`] creates what is missing (parent directories with mode 0700,
//! the database and key files with mode 0600), switches the database to WAL,
//! applies the embedded migrations, and checks that the key file is the one
//! that issued the stored token digests. First-time setup and upgrades run
//! under the exclusive lock of `<database>.lock` (see `lockfile`), so that
//! many processes can open a new database at the same moment; an up-to-date
//! database is opened without it.
//!
//! Reads go through a pool of read-only connections, each call one statement;
//! writes go through the [`Writer`](crate::writer). Both share [`Shared`].

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::num::NonZeroU32;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::auth::{ConversationId, Credentials, ServerKey, SessionId};
use crate::checkpoint::Checkpointer;
use crate::config;
use crate::error::{Error, Result};
use crate::limit::Limits;
use crate::location::{Location, PostgresUrl};
use crate::lockfile::LockFile;
use crate::time::Timestamp;
use crate::watch::{self, ChangeSubscription, Changes, DatabaseWatcher};
use crate::watch_pg::PgWatcher;
use crate::writer::postgres::{PgEngine, writer_id};
use crate::writer::sqlite::SqliteEngine;
use crate::writer::{Lookups, Operation, Writer};

/// The migrations, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The PostgreSQL migrations, embedded at build time.
static PG_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The `meta` key under which the server key's fingerprint is kept.
const FINGERPRINT_KEY: &str = "key_fingerprint";

/// How to open a [`Store`]. Start from [`StoreOptions::new`] and change the
/// fields that differ from the defaults.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Where the store is: an SQLite file (the default) or a PostgreSQL
    /// database.
    pub location: Location,
    /// The server key file. `None` means `<database>.key` beside an SQLite
    /// database; a PostgreSQL store needs it given, since every hub of one
    /// database must use the same key.
    pub key_file: Option<PathBuf>,
    /// Create the database, its directory and the key if they are missing.
    /// Without it, a missing database is [`Error::DatabaseMissing`] (an
    /// SQLite file) or [`Error::NoStore`] (a PostgreSQL database without
    /// the store's tables).
    pub create: bool,
    /// How long to wait for another process's write lock.
    pub busy_timeout: Duration,
    /// Read connections in the pool.
    pub readers: u32,
    /// Writes per minute per (conversation, session); 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// Failed authentications per minute per conversation that are reported
    /// as invalid and audited; past that, they are refused as rate limited.
    pub auth_failures_per_minute: NonZeroU32,
    /// A session is alive while its last heartbeat or call is younger than this.
    pub liveness_window: Duration,
    /// `last_seen` is rewritten by a read-only call only once it is older than
    /// this, so that polling does not take the write lock on every call.
    pub last_seen_resolution: Duration,
    /// Time to live of a conversation created without one.
    pub default_ttl: Duration,
    /// How often change notification looks at the files when the file system
    /// sends no events (the safety net of [`Store::subscribe`]).
    pub poll_interval: Duration,
    /// When a write is acknowledged: once on stable storage, or once handed
    /// to the operating system.
    pub durability: Durability,
}

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Once it is on stable storage: each commit waits for the WAL to be
    /// synced (SQLite's `synchronous = FULL`; on PostgreSQL the server's
    /// `synchronous_commit`), so a power loss or a kernel panic loses no
    /// acknowledged write. Group commit pays one sync per batch.
    #[default]
    Full,
    /// Once the operating system has it (SQLite's `synchronous = NORMAL`;
    /// on PostgreSQL `synchronous_commit = off` for the store's writes): a
    /// crash of the process loses nothing, a power loss can lose the last
    /// commits (never the database's integrity).
    Normal,
}

impl Durability {
    fn synchronous(self) -> SqliteSynchronous {
        match self {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        }
    }
}

impl StoreOptions {
    /// The defaults for the SQLite database at `path`, created if missing.
    pub fn new(path: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions::at(Location::File(path.into()))
    }

    /// The defaults for the store at `location`, created if missing.
    pub fn at(location: Location) -> StoreOptions {
        StoreOptions {
            location,
            key_file: None,
            create: true,
            busy_timeout: config::DEFAULT_BUSY_TIMEOUT,
            readers: 2,
            rate_limit_per_minute: config::DEFAULT_RATE_LIMIT,
            auth_failures_per_minute: config::DEFAULT_AUTH_FAILURES,
            liveness_window: config::DEFAULT_LIVENESS_WINDOW,
            last_seen_resolution: Duration::from_secs(5),
            default_ttl: config::DEFAULT_TTL,
            poll_interval: Duration::from_secs(1),
            durability: Durability::Full,
        }
    }

    /// The key file these options use: `--key-file`, or beside an SQLite
    /// database. A PostgreSQL store without one is refused.
    pub fn key_path(&self) -> Result<PathBuf> {
        match (&self.key_file, &self.location) {
            (Some(path), _) => Ok(path.clone()),
            (None, Location::File(database)) => Ok(config::default_key_file(database)),
            (None, Location::Postgres(url)) => Err(Error::Invalid {
                field: "key file",
                reason: format!(
                    "a PostgreSQL store ({url}) needs --key-file (or BRIDGE_KEY_FILE): \
                     every hub of one database must use the same server key"
                ),
            }),
        }
    }
}

/// What the store's readers and its writer share.
pub(crate) struct Shared {
    pub(crate) path: PathBuf,
    pub(crate) options: StoreOptions,
    pub(crate) key: ServerKey,
    pub(crate) limits: Limits,
    /// Every possible change, from any process: what subscribers wait on.
    pub(crate) changes: Changes,
    /// This store's own commits: what the checkpointer follows.
    pub(crate) commits: Changes,
    /// SQLite's WAL, whose times announce commits to other processes.
    pub(crate) wal: Option<PathBuf>,
}

/// Why an authentication failed.
pub(crate) enum AuthFailure {
    /// The token does not match: [`Shared::wrong_token`] decides what to say.
    WrongToken,
    /// No such conversation, or it expired.
    Refused(Error),
}

impl Shared {
    /// What a store opened at `path` (the URL without its password, for
    /// PostgreSQL) shares, with `options` and the server `key`; `wal` is
    /// SQLite's.
    fn new(path: PathBuf, wal: Option<PathBuf>, options: StoreOptions, key: ServerKey) -> Shared {
        Shared {
            limits: Limits::new(
                options.rate_limit_per_minute,
                options.auth_failures_per_minute,
            ),
            changes: Changes::new(),
            commits: Changes::new(),
            wal,
            key,
            path,
            options,
        }
    }

    /// Tells subscribers, the checkpointer and other processes' watchers
    /// that the writer committed.
    pub(crate) fn notify_commit(&self) {
        self.changes.notify();
        self.commits.notify();
        if let Some(wal) = &self.wal {
            watch::announce_commit(wal);
        }
    }

    /// An engine error, in the words a person understands.
    pub(crate) fn sqlx_error(&self, error: sqlx::Error) -> Error {
        Error::from_sqlx(error, &self.path, self.options.busy_timeout)
    }

    /// Checks `credentials` against the stored token digest and expiry of
    /// the conversation (`None`: no such conversation). No side effects.
    pub(crate) fn verify(
        &self,
        credentials: &Credentials,
        found: Option<(&[u8], Timestamp)>,
        now: Timestamp,
    ) -> Result<(), AuthFailure> {
        let conversation_id = &credentials.conversation_id;
        let Some((digest, expires_at)) = found else {
            return Err(AuthFailure::Refused(Error::NoSuchConversation {
                conversation_id: conversation_id.clone(),
            }));
        };
        if !self.key.verify(&credentials.token, digest) {
            return Err(AuthFailure::WrongToken);
        }
        if expires_at <= now {
            return Err(AuthFailure::Refused(Error::Expired {
                conversation_id: conversation_id.clone(),
                expired_at: expires_at,
            }));
        }
        Ok(())
    }

    /// Spends one of the conversation's budget of failed authentications.
    /// Returns the error to report and whether to audit it: within the
    /// budget an audited "invalid token", past it an unaudited "rate limited".
    pub(crate) fn wrong_token(&self, credentials: &Credentials) -> (Error, bool) {
        let conversation_id = &credentials.conversation_id;
        match self.limits.record_failure(conversation_id) {
            Ok(()) => {
                tracing::warn!(
                    conversation_id = %conversation_id,
                    session = %credentials.session,
                    "authentication failed: invalid token"
                );
                let error = Error::InvalidToken {
                    conversation_id: conversation_id.clone(),
                    session: credentials.session,
                };
                (error, true)
            }
            Err(retry_after) => (Error::RateLimited { retry_after }, false),
        }
    }
}

/// The mcp-bridge store: one SQLite database shared by any number of
/// processes. Cheap to clone; clones share the pool and the writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    readers: Readers,
    writer: Writer,
    /// Checkpoints the WAL after the writer's commits; taken by `close`.
    checkpointer: Mutex<Option<Checkpointer>>,
    /// On SQLite started by the first [`Store::subscribe`], on PostgreSQL
    /// with the store; stopped with the store.
    watcher: Mutex<Option<Watcher>>,
    /// How the SQLite watcher's poll connects (`None` on PostgreSQL).
    sqlite_watch: Option<SqliteConnectOptions>,
    /// Device and inode of the database file when opened, to notice that it
    /// was replaced.
    identity: Option<(u64, u64)>,
}

/// What notices other processes' commits: SQLite's file events and poll, or
/// PostgreSQL's notifications.
enum Watcher {
    Files(DatabaseWatcher),
    Postgres(PgWatcher),
}

/// The pool of read connections, of either database. Reads go through
/// `read!`, which runs one statement text on either.
pub(crate) enum Readers {
    Sqlite(SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Empties `slot` (a part the store stops once), whatever a panic elsewhere
/// left in its lock.
fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .take()
}

/// Device and inode of `path`, if it exists.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|meta| (meta.dev(), meta.ino()))
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.shared.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (and if allowed, creates) the store described by `options`.
    pub async fn open(options: StoreOptions) -> Result<Store> {
        let key_path = options.key_path()?;
        let path = match &options.location {
            Location::File(path) => path.clone(),
            Location::Postgres(url) => {
                let url = url.clone();
                return open_postgres(options, &url, &key_path).await;
            }
        };
        prepare_database_file(&path, options.create)?;

        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(false)
            .foreign_keys(true)
            .synchronous(options.durability.synchronous())
            .busy_timeout(options.busy_timeout)
            // Checkpoints run in the background (see `checkpoint`); after one,
            // a WAL grown by a burst is cut back to this size.
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", "67108864")
            // Deleted rows (cleanup's messages) are overwritten, not left
            // readable in free pages.
            .pragma("secure_delete", "ON");
        let sqlx_error = |error| Error::from_sqlx(error, &path, options.busy_timeout);
        // Setup runs through a pool of one: the migrator's future is only
        // `Send` when given a pool. Its connection then becomes the writer's.
        let setup_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect.clone())
            .await
            .map_err(sqlx_error)?;
        let key = setup(&setup_pool, &path, &key_path, options.busy_timeout).await?;
        check_writable(&setup_pool).await.map_err(sqlx_error)?;
        let mut connection = setup_pool.acquire().await.map_err(sqlx_error)?.detach();
        setup_pool.close().await;
        // The writer waits for other processes' locks itself (see `writer`).
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&mut connection)
            .await
            .map_err(sqlx_error)?;

        let readers = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .min_connections(1)
            .test_before_acquire(false)
            .connect_with(connect.clone().read_only(true))
            .await
            .map_err(sqlx_error)?;

        let wal = Some(watch::wal_of(&path));
        let shared = Arc::new(Shared::new(path, wal, options, key));
        let checkpointer =
            Checkpointer::start(connect.clone(), &shared.commits, shared.path.clone());
        let engine = SqliteEngine::new(
            connection,
            connect.clone().busy_timeout(Duration::ZERO),
            shared.options.busy_timeout,
        );
        let writer = Writer::start(Arc::clone(&shared), engine);
        tracing::debug!(database = %shared.path.display(), "store opened");
        let identity = file_identity(&shared.path);
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                readers: Readers::Sqlite(readers),
                writer,
                checkpointer: Mutex::new(Some(checkpointer)),
                watcher: Mutex::new(None),
                sqlite_watch: Some(connect.read_only(true)),
                identity,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// Whether the file at the store's path is no longer the one it opened
    /// (deleted, or replaced by another database). The store keeps using
    /// the file it opened; a long-running process should close it and open
    /// the path again.
    pub fn replaced(&self) -> bool {
        file_identity(self.path()) != self.inner.identity
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.shared.options
    }

    /// Finishes queued writes, then closes every connection. Calls made
    /// afterwards fail with [`Error::Closed`].
    pub async fn close(&self) {
        match take(&self.inner.watcher) {
            Some(Watcher::Files(watcher)) => watcher.stop().await,
            Some(Watcher::Postgres(watcher)) => watcher.stop().await,
            None => {}
        }
        if let Some(checkpointer) = take(&self.inner.checkpointer) {
            checkpointer.close().await;
        }
        // The writer's connection last: the last connection to close
        // checkpoints the WAL and removes it, which a read-only one cannot.
        match &self.inner.readers {
            Readers::Sqlite(pool) => pool.close().await,
            Readers::Postgres(pool) => pool.close().await,
        }
        self.inner.writer.close().await;
        self.inner.shared.changes.close();
        self.inner.shared.commits.close();
    }

    /// A subscription that wakes whenever any process commits to the
    /// database, until the store is closed. The first call starts watching
    /// the database's directory. Must be called inside a Tokio runtime.
    pub fn subscribe(&self) -> ChangeSubscription {
        let shared = &self.inner.shared;
        let mut watcher = self
            .inner
            .watcher
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if watcher.is_none()
            && !shared.changes.is_closed()
            && let Some(connect) = &self.inner.sqlite_watch
        {
            *watcher = Some(Watcher::Files(DatabaseWatcher::start(
                &shared.path,
                shared.changes.clone(),
                shared.options.poll_interval,
                connect.clone(),
            )));
        }
        shared.changes.subscribe()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    pub(crate) fn readers(&self) -> &Readers {
        &self.inner.readers
    }

    /// Queues a state change with the writer and waits for its commit.
    pub(crate) async fn submit<O: Operation>(&self, operation: O) -> Result<O::Output> {
        self.inner.writer.submit(operation).await
    }

    /// Authenticates a read-path call from the row its query returned, and
    /// audits a wrong token through the writer.
    pub(crate) async fn authenticate_read(
        &self,
        credentials: &Credentials,
        found: Option<(&[u8], Timestamp)>,
        now: Timestamp,
    ) -> Result<()> {
        match self.shared().verify(credentials, found, now) {
            Ok(()) => Ok(()),
            Err(AuthFailure::Refused(error)) => Err(error),
            Err(AuthFailure::WrongToken) => {
                let (error, audit) = self.shared().wrong_token(credentials);
                if audit {
                    self.submit(AuthFailureOp {
                        conversation_id: credentials.conversation_id.clone(),
                        session: credentials.session,
                    })
                    .await?;
                }
                Err(error)
            }
        }
    }

    /// Admits a read-path call by the caller's row its query returned
    /// (`None`: no such conversation): authenticates it (auditing a wrong
    /// token), records it in `last_seen` if that is stale, and hands the row
    /// back.
    pub(crate) async fn admit<R: CallerRow>(
        &self,
        credentials: &Credentials,
        row: Option<R>,
        now: Timestamp,
    ) -> Result<R> {
        let found = row
            .as_ref()
            .map(|row| (row.digest(), Timestamp::from_millis(row.expires_at())));
        self.authenticate_read(credentials, found, now).await?;
        let Some(row) = row else {
            return Err(Error::NoSuchConversation {
                conversation_id: credentials.conversation_id.clone(),
            });
        };
        self.touch(credentials, row.caller_last_seen(), now).await?;
        Ok(row)
    }

    /// Records an authenticated read-only call in `last_seen`, if the stored
    /// value is older than the resolution (otherwise writes nothing).
    pub(crate) async fn touch(
        &self,
        credentials: &Credentials,
        last_seen: Option<i64>,
        now: Timestamp,
    ) -> Result<()> {
        let resolution = self.options().last_seen_resolution;
        let fresh =
            last_seen.is_some_and(|seen| Timestamp::from_millis(seen).age_at(now) < resolution);
        if fresh {
            return Ok(());
        }
        self.submit(TouchOp {
            credentials: credentials.clone(),
        })
        .await
    }
}

/// What a read-path query returns about its caller beside its data: the
/// token digest and expiry of the caller's session, and its `last_seen`.
pub(crate) trait CallerRow {
    fn digest(&self) -> &[u8];
    /// Milliseconds since the epoch.
    fn expires_at(&self) -> i64;
    fn caller_last_seen(&self) -> Option<i64>;
}

/// Audits a failed authentication seen on the read path.
struct AuthFailureOp {
    conversation_id: ConversationId,
    session: SessionId,
}

impl Operation for AuthFailureOp {
    type Output = ();

    fn lookups(&self, _: &mut Lookups) {}

    fn apply(&self, batch: &mut crate::writer::Batch<'_>) -> Result<()> {
        batch.audit_auth_failure(&self.conversation_id, self.session);
        Ok(())
    }
}

/// Refreshes `last_seen` after an authenticated read-only call.
struct TouchOp {
    credentials: Credentials,
}

impl Operation for TouchOp {
    type Output = ();

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.credentials.conversation_id, self.credentials.session);
    }

    fn apply(&self, batch: &mut crate::writer::Batch<'_>) -> Result<()> {
        batch.authenticate(&self.credentials)
    }
}

/// Opens (creating its tables on first use) the PostgreSQL store at `url`.
///
/// TLS is as the URL says (`sslmode`, `sslrootcert`; rustls with ring).
async fn open_postgres(options: StoreOptions, url: &PostgresUrl, key_path: &Path) -> Result<Store> {
    let shown = PathBuf::from(url.to_string());
    let sqlx_error = |error| Error::from_sqlx(error, &shown, options.busy_timeout);
    let connect: PgConnectOptions =
        url.secret()
            .parse()
            .map_err(|error: sqlx::Error| Error::Database {
                path: shown.clone(),
                message: format!("not a PostgreSQL URL: {error}"),
            })?;
    // The writer's connection, and each it reconnects with, acknowledges
    // as the durability says.
    let writer_connect = match options.durability {
        Durability::Full => connect.clone(),
        Durability::Normal => connect.clone().options([("synchronous_commit", "off")]),
    };
    // The writer's connection first, on its own: a pool would retry a
    // server out of reach until its timeout and then say only that.
    let connection = PgConnection::connect_with(&writer_connect)
        .await
        .map_err(sqlx_error)?;
    // Setup runs through a pool of one, as on SQLite (the migrator's future
    // is only `Send` when given a pool).
    let setup_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(connect.clone())
        .await
        .map_err(sqlx_error)?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(&setup_pool)
    .await
    .map_err(sqlx_error)?;
    if tables.is_empty() && !options.create {
        setup_pool.close().await;
        return Err(Error::NoStore { path: shown });
    }
    let has = |name: &str| tables.iter().any(|table| table == name);
    let applied: BTreeSet<i64> = if has("_sqlx_migrations") {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&setup_pool)
            .await
            .map_err(sqlx_error)?
            .into_iter()
            .collect()
    } else {
        BTreeSet::new()
    };
    let found = Found {
        wal: true,
        applied,
        foreign_tables: !tables.is_empty() && !has("_sqlx_migrations"),
        fingerprint: None,
    };
    check_schema_of(&PG_MIGRATOR, &found, &shown)?;
    // The migrator holds an advisory lock while it runs: hubs starting
    // together apply each migration once.
    PG_MIGRATOR
        .run(&setup_pool)
        .await
        .map_err(|error| migrate_error(error, &shown))?;
    let recorded: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
        .bind(FINGERPRINT_KEY)
        .fetch_optional(&setup_pool)
        .await
        .map_err(sqlx_error)?;
    let key = match recorded {
        Some(fingerprint) => matching_key(key_path, &shown, Some(&fingerprint))?,
        None => {
            let key = load_or_create_key(key_path)?;
            // Two hubs setting up at once: the first fingerprint stands, and
            // the other hub's key is checked against it.
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(FINGERPRINT_KEY)
                .bind(key.fingerprint())
                .execute(&setup_pool)
                .await
                .map_err(sqlx_error)?;
            let recorded: Option<String> =
                sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                    .bind(FINGERPRINT_KEY)
                    .fetch_optional(&setup_pool)
                    .await
                    .map_err(sqlx_error)?;
            matching_key(key_path, &shown, recorded.as_deref())?;
            key
        }
    };
    setup_pool.close().await;
    let readers = PgPoolOptions::new()
        .max_connections(options.readers.max(1))
        .connect_with(connect.clone())
        .await
        .map_err(sqlx_error)?;
    let shared = Arc::new(Shared::new(shown, None, options, key));
    let writer_id = writer_id()?;
    let watcher = PgWatcher::start(
        connect.clone(),
        readers.clone(),
        shared.changes.clone(),
        shared.options.poll_interval,
        Arc::clone(&writer_id),
    )
    .await
    .map_err(|error| Error::from_sqlx(error, &shared.path, shared.options.busy_timeout))?;
    let writer = Writer::start(
        Arc::clone(&shared),
        PgEngine::new(connection, writer_connect, writer_id),
    );
    tracing::debug!(database = %shared.path.display(), "store opened");
    Ok(Store {
        inner: Arc::new(Inner {
            shared,
            readers: Readers::Postgres(readers),
            writer,
            checkpointer: Mutex::new(None),
            watcher: Mutex::new(Some(Watcher::Postgres(watcher))),
            sqlite_watch: None,
            identity: None,
        }),
    })
}

/// Makes sure the database file exists (creating it and its parents, mode
/// 0600 and 0700, when `create` is set), without opening it through SQLite.
fn prepare_database_file(path: &Path, create: bool) -> Result<()> {
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => return Ok(()),
        Ok(_) => return Err(Error::NotADatabase { path: path.into() }),
        // NotADirectory: a parent is a file; creating the directory says so.
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) => {}
        Err(error) => return Err(Error::io("open database", path, error)),
    }
    if !create {
        return Err(Error::DatabaseMissing { path: path.into() });
    }
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|error| Error::io("create directory", dir, error))?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {
            tracing::info!(database = %path.display(), "created a new database");
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(Error::io("create database", path, error)),
    }
}

/// What [`setup`] finds in a database.
struct Found {
    wal: bool,
    applied: BTreeSet<i64>,
    foreign_tables: bool,
    fingerprint: Option<String>,
}

async fn inspect(pool: &SqlitePool) -> Result<Found, sqlx::Error> {
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(pool)
    .await?;
    let has = |name: &str| tables.iter().any(|table| table == name);
    let applied = if has("_sqlx_migrations") {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    let fingerprint = if has("meta") {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = ?1")
            .bind(FINGERPRINT_KEY)
            .fetch_optional(pool)
            .await?
    } else {
        None
    };
    Ok(Found {
        wal: journal_mode.eq_ignore_ascii_case("wal"),
        applied: applied.into_iter().collect(),
        foreign_tables: !tables.is_empty() && !has("_sqlx_migrations"),
        fingerprint,
    })
}

/// Brings the database up to date and returns the server key that belongs
/// to it.
async fn setup(
    pool: &SqlitePool,
    path: &Path,
    key_path: &Path,
    busy_timeout: Duration,
) -> Result<ServerKey> {
    let sqlx_error = |error| Error::from_sqlx(error, path, busy_timeout);
    let found = inspect(pool).await.map_err(sqlx_error)?;
    check_schema(&found, path)?;
    let ours: BTreeSet<i64> = MIGRATOR.iter().map(|migration| migration.version).collect();
    let ready = found.wal && found.applied == ours && found.fingerprint.is_some();
    if ready {
        return matching_key(key_path, path, found.fingerprint.as_deref());
    }

    let _lock = LockFile::open(path)?.lock().await?;
    // Another process may have done the work while we waited for the lock.
    let found = inspect(pool).await.map_err(sqlx_error)?;
    check_schema(&found, path)?;
    if !found.wal {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(pool)
            .await
            .map_err(sqlx_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Database {
                path: path.into(),
                message: format!(
                    "cannot switch to WAL mode (the journal mode stays {mode}); is the file system local?"
                ),
            });
        }
    }
    if found.applied != ours {
        MIGRATOR
            .run(pool)
            .await
            .map_err(|error| migrate_error(error, path))?;
        tracing::info!(database = %path.display(), "database schema is up to date");
    }
    match found.fingerprint {
        Some(fingerprint) => matching_key(key_path, path, Some(&fingerprint)),
        None => {
            let key = load_or_create_key(key_path)?;
            sqlx::query("INSERT INTO meta (key, value) VALUES (?1, ?2)")
                .bind(FINGERPRINT_KEY)
                .bind(key.fingerprint())
                .execute(pool)
                .await
                .map_err(sqlx_error)?;
            Ok(key)
        }
    }
}

/// SQLite opens a file it cannot write read-only, without a word, and even
/// grants `BEGIN IMMEDIATE`; only a write fails. Find out at open rather than
/// at the first write, with a write that changes nothing and is rolled back.
async fn check_writable(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut probe = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("UPDATE meta SET value = value WHERE key = ?1")
        .bind(FINGERPRINT_KEY)
        .execute(&mut *probe)
        .await?;
    probe.rollback().await
}

/// Refuses databases that are newer than this binary or belong to another
/// program.
fn check_schema(found: &Found, path: &Path) -> Result<()> {
    check_schema_of(&MIGRATOR, found, path)
}

/// [`check_schema`] against the migrations of `migrator`.
fn check_schema_of(migrator: &Migrator, found: &Found, path: &Path) -> Result<()> {
    let supported = migrator
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0);
    if let Some(&newest) = found.applied.iter().next_back()
        && newest > supported
    {
        return Err(Error::SchemaTooNew {
            path: path.into(),
            found: newest,
            supported,
        });
    }
    let unknown = found.applied.iter().any(|version| {
        !migrator
            .iter()
            .any(|migration| migration.version == *version)
    });
    if found.foreign_tables || unknown {
        return Err(Error::ForeignDatabase { path: path.into() });
    }
    Ok(())
}

/// The key in `key_path`, made there if there is none yet (a database
/// that records no fingerprint is new).
fn load_or_create_key(key_path: &Path) -> Result<ServerKey> {
    match ServerKey::load(key_path)? {
        Some(key) => Ok(key),
        None => ServerKey::create(key_path),
    }
}

/// Loads the key file and checks it against the database's fingerprint.
fn matching_key(key_path: &Path, path: &Path, fingerprint: Option<&str>) -> Result<ServerKey> {
    let key = ServerKey::load(key_path)?.ok_or_else(|| Error::KeyFile {
        path: key_path.into(),
        problem: format!(
            "is missing, but database {} holds tokens issued with a key; restore the key file or point --key-file at it",
            path.display()
        ),
    })?;
    if fingerprint.is_some_and(|fingerprint| fingerprint != key.fingerprint()) {
        return Err(Error::KeyFile {
            path: key_path.into(),
            problem: format!(
                "does not match database {} (its tokens were issued with another key)",
                path.display()
            ),
        });
    }
    Ok(key)
}

fn migrate_error(error: MigrateError, path: &Path) -> Error {
    match error {
        MigrateError::Execute(error) | MigrateError::ExecuteMigration(error, _) => {
            Error::from_sqlx(error, path, Duration::ZERO)
        }
        other => Error::Database {
            path: path.into(),
            message: other.to_string(),
        },
    }
}

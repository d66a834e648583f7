//! Opening the store: files and modes, schema, and every way it can fail.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bridge_core::{Error, Store, StoreOptions};
use bridge_tests::{
    NOBODY, TempDb, assert_child_passed, in_child, pair, raw_sqlite, rerun_in_child,
    running_as_root, scalar,
};

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn creates_directories_database_and_key_private() {
    let db = TempDb::new();
    let path = db.dir.path().join("deep/er/bridge.db");
    let store = Store::open(StoreOptions::new(&path)).await.unwrap();
    let conversation = pair(&store).await;
    store.heartbeat(&conversation.b).await.unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&db.dir.path().join("deep/er/bridge.db.key")), 0o600);
    assert_eq!(mode(&db.dir.path().join("deep/er/bridge.db-wal")), 0o600);
    assert_eq!(mode(&db.dir.path().join("deep/er")), 0o700);
    assert_eq!(mode(&db.dir.path().join("deep")), 0o700);

    let mut raw = raw_sqlite(&path).await;
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    store.close().await;
}

#[tokio::test]
async fn reopening_keeps_the_data_and_the_key() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    store.close().await;
    let key = fs::read(bridge_core::config::default_key_file(&db.path)).unwrap();

    let store = db.open().await;
    store.heartbeat(&conversation.a).await.unwrap();
    assert_eq!(
        fs::read(bridge_core::config::default_key_file(&db.path)).unwrap(),
        key
    );
    store.close().await;
}

#[tokio::test]
async fn a_missing_database_is_refused_without_create() {
    let db = TempDb::new();
    let mut options = StoreOptions::new(&db.path);
    options.create = false;
    let error = Store::open(options).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("database {} does not exist", db.path.display())
    );
    assert!(!db.exists(), "nothing may be created");
}

#[tokio::test]
async fn a_directory_that_cannot_be_created() {
    let db = TempDb::new();
    let blocker = db.dir.path().join("file");
    fs::write(&blocker, "not a directory").unwrap();
    let path = blocker.join("sub/bridge.db");
    let error = Store::open(StoreOptions::new(&path)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "cannot create directory {}: not a directory",
            blocker.join("sub").display()
        )
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database() {
    let db = TempDb::new();
    fs::write(&db.path, "these are my notes, not a database\n".repeat(200)).unwrap();
    let before = fs::read(&db.path).unwrap();
    let error = Store::open(db.options()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{} is not an SQLite database", db.path.display())
    );
    assert_eq!(
        fs::read(&db.path).unwrap(),
        before,
        "the file must be left alone"
    );
}

#[tokio::test]
async fn a_directory_where_the_database_should_be() {
    let db = TempDb::new();
    fs::create_dir(&db.path).unwrap();
    let error = Store::open(db.options()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{} is not an SQLite database", db.path.display())
    );
}

#[tokio::test]
async fn another_programs_database_is_refused() {
    let db = TempDb::new();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db.path)
        .create_if_missing(true);
    let mut raw = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE recipes (name TEXT)")
        .execute(&mut raw)
        .await
        .unwrap();
    let error = Store::open(db.options()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{} is a database of another program, not an mcp-bridge store",
            db.path.display()
        )
    );
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_schema WHERE type = 'table'")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(tables, 1, "nothing may be added to a foreign database");
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    let db = TempDb::new();
    db.open().await.close().await;
    let mut raw = db.raw().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (29991231000000, 'from the future', TRUE, x'00', 0)",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    let error = Store::open(db.options()).await.unwrap_err();
    assert!(matches!(
        error,
        Error::SchemaTooNew {
            found: 29991231000000,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        format!(
            "database {} has schema version 29991231000000, newer than this mcp-bridge knows (20261127000000); upgrade mcp-bridge",
            db.path.display()
        )
    );
}

/// A database of the first schema (before tasks), with a conversation and a
/// message in it, is upgraded on open and keeps its data.
#[tokio::test]
async fn a_database_of_the_first_schema_is_upgraded_and_keeps_its_data() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    store
        .send(&conversation.a, bridge_core::NewMessage::new("from before"))
        .await
        .unwrap();
    store.close().await;
    // Back to the first schema, as the previous release left it.
    let mut raw = db.raw().await;
    sqlx::raw_sql(
        "DROP INDEX session_by_heard_at;
         DROP INDEX session_silent;
         ALTER TABLE session DROP COLUMN heard_at;
         DROP TABLE task_assignment;
         DROP TABLE task;
         DELETE FROM sqlite_sequence WHERE name = 'task';
         DELETE FROM _sqlx_migrations WHERE version = 20261121000001;",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM sqlite_master WHERE name = 'task'"
        )
        .await,
        0
    );

    let store = db.open().await;
    let received = store.check(&conversation.b, 10).await.unwrap();
    assert_eq!(received[0].body, "from before");
    let task = store
        .assign_task(
            &conversation.a,
            bridge_core::NewTask::new("after the upgrade", "works"),
        )
        .await
        .unwrap();
    assert_eq!(task.id, 1);
    store.heartbeat(&conversation.b).await.unwrap();
    let scan = store
        .scan_workers(Duration::from_secs(300), None)
        .await
        .unwrap();
    assert!(scan.silent.is_empty() && scan.back.is_empty());
    // The scan's index works on the upgraded rows: quiet for 50 ms, the
    // worker is found with a threshold of 20 ms.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let scan = store
        .scan_workers(Duration::from_millis(20), None)
        .await
        .unwrap();
    assert_eq!(scan.silent.len(), 1);
    assert_eq!(scan.silent[0].conversation_id, conversation.created.id);
    assert!(store.verify_audit().await.unwrap().is_intact());
    store.close().await;
}

#[tokio::test]
async fn a_missing_key_file_is_not_silently_replaced() {
    let db = TempDb::new();
    db.open().await.close().await;
    let key = bridge_core::config::default_key_file(&db.path);
    fs::remove_file(&key).unwrap();
    let error = Store::open(db.options()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "key file {}: is missing, but database {} holds tokens issued with a key; restore the key file or point --key-file at it",
            key.display(),
            db.path.display()
        )
    );
    assert!(!key.exists(), "a new key would invalidate every token");
}

#[tokio::test]
async fn a_key_file_of_another_database_is_refused() {
    let (one, two) = (TempDb::new(), TempDb::new());
    one.open().await.close().await;
    two.open().await.close().await;
    let mut options = one.options();
    options.key_file = Some(bridge_core::config::default_key_file(&two.path));
    let error = Store::open(options).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "key file {}: does not match database {} (its tokens were issued with another key)",
            bridge_core::config::default_key_file(&two.path).display(),
            one.path.display()
        )
    );
}

#[tokio::test]
async fn a_configured_key_file_is_created_where_asked() {
    let db = TempDb::new();
    let key = db.dir.path().join("secrets/bridge.key");
    fs::create_dir(db.dir.path().join("secrets")).unwrap();
    let mut options = db.options();
    options.key_file = Some(key.clone());
    let store = Store::open(options).await.unwrap();
    assert_eq!(mode(&key), 0o600);
    assert!(!bridge_core::config::default_key_file(&db.path).exists());
    store.close().await;
}

#[tokio::test]
async fn many_stores_opening_a_new_database_at_once_agree_on_everything() {
    let db = TempDb::new();
    let opens = (0..8).map(|_| {
        let options = db.options();
        tokio::spawn(async move { Store::open(options).await })
    });
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().unwrap());
    }
    // A conversation created through one store authenticates through all.
    let conversation = pair(&stores[0]).await;
    for store in &stores {
        store.heartbeat(&conversation.b).await.unwrap();
    }
    for store in stores {
        store.close().await;
    }
}

#[tokio::test]
async fn a_locked_database_gives_up_after_the_busy_timeout_and_loses_nothing() {
    let db = TempDb::new();
    let mut options = db.options();
    options.busy_timeout = Duration::from_millis(200);
    let store = Store::open(options).await.unwrap();
    let conversation = pair(&store).await;

    let mut holder = db.raw().await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let error = store
        .send(
            &conversation.a,
            bridge_core::NewMessage::new("while locked"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "database {} is locked by another process (gave up after 200 ms)",
            db.path.display()
        )
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    // The failed send wrote nothing; the store works again.
    assert_eq!(scalar(&mut holder, "SELECT count(*) FROM message").await, 0);
    store
        .send(
            &conversation.a,
            bridge_core::NewMessage::new("after the lock"),
        )
        .await
        .unwrap();
    let messages = store.check(&conversation.b, 10).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body, "after the lock");
    store.close().await;
}

/// Opening where the user cannot write: as root (which ignores
/// permissions) the checks run in a child process as `nobody`.
#[tokio::test]
async fn read_only_directory_and_file() {
    if !in_child() && running_as_root() {
        let output = rerun_in_child("open::read_only_directory_and_file", &[], Some(NOBODY));
        assert_child_passed(&output);
        return;
    }
    let db = TempDb::new();
    fs::set_permissions(db.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let [empty, existing, locked] =
        ["empty", "existing", "locked"].map(|name| db.dir.path().join(name));
    for dir in [&empty, &existing, &locked] {
        fs::create_dir(dir).unwrap();
    }
    for dir in [&existing, &locked] {
        let store = Store::open(StoreOptions::new(dir.join("bridge.db")))
            .await
            .unwrap();
        store.close().await;
        assert!(
            !dir.join("bridge.db-wal").exists(),
            "a clean close removes the WAL"
        );
    }

    // A new database in a directory that cannot be written.
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o555)).unwrap();
    let missing = empty.join("bridge.db");
    let error = Store::open(StoreOptions::new(&missing)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "cannot create database {}: permission denied",
            missing.display()
        )
    );

    // An existing database whose directory cannot be written: SQLite cannot
    // create the WAL beside it.
    fs::set_permissions(&existing, fs::Permissions::from_mode(0o555)).unwrap();
    let path = existing.join("bridge.db");
    let error = Store::open(StoreOptions::new(&path)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("database {} is read-only", path.display())
    );

    // A database file that cannot be written.
    let path = locked.join("bridge.db");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    let error = Store::open(StoreOptions::new(&path)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("database {} is read-only", path.display())
    );
    for dir in [&empty, &existing] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// `BRIDGE_DB` names the database when no path is given.
#[test]
fn bridge_db_names_the_database() {
    if !in_child() {
        let output = rerun_in_child(
            "open::bridge_db_names_the_database",
            &[
                ("BRIDGE_DB", "/srv/agents/team.db"),
                ("HOME", "/home/someone"),
            ],
            None,
        );
        assert_child_passed(&output);
        return;
    }
    assert_eq!(
        bridge_core::config::db_path_from_env().unwrap(),
        std::path::PathBuf::from("/srv/agents/team.db")
    );
}

#[tokio::test]
async fn a_replaced_database_file_is_noticed() {
    let db = TempDb::new();
    let store = db.open().await;
    assert!(!store.replaced());
    let moved = db.dir.path().join("old.db");
    fs::rename(&db.path, &moved).unwrap();
    assert!(store.replaced(), "the file is gone from the path");
    fs::rename(&moved, &db.path).unwrap();
    assert!(!store.replaced(), "the same file is back");
    fs::remove_file(&db.path).unwrap();
    fs::write(&db.path, b"another file in its place").unwrap();
    assert!(store.replaced(), "a new file at the path");
    store.close().await;
}

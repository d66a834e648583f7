//! `bridgectl copy --to postgres://…`: an SQLite store moved into an empty
//! PostgreSQL database, whole; tokens, keys and the audit chain carry over,
//! and a database that holds data is refused with nothing written.

use std::path::Path;
use std::time::Duration;

use bridge_core::{
    Location, NewMessage, NewTask, PresentedKey, Store, StoreOptions, config::default_key_file,
};
use bridge_tests::daemon::run;
use bridge_tests::postgres::PgServer;
use bridge_tests::{TempDb, pair, scalar};

/// `bridgectl --db <source> copy --to <url> [--json]`, the password in
/// PGPASSWORD as an operator would give it.
fn copy(source: &Path, url: &str, password: &str, json: bool) -> (Option<i32>, String, String) {
    let mut args = vec!["copy", "--to", url];
    if json {
        args.push("--json");
    }
    run("bridgectl", source, &args, &[("PGPASSWORD", password)])
}

#[tokio::test]
async fn a_copy_carries_everything_and_the_old_tokens_work_on_it() {
    let Some(server) = PgServer::start().await else {
        return;
    };
    let dir = TempDb::new();
    let source = dir.dir.path().join("source.db");
    let store = Store::open(StoreOptions::new(&source)).await.unwrap();
    let conversation = pair(&store).await;
    for body in ["one", "two", "three"] {
        store
            .send(&conversation.a, NewMessage::new(body))
            .await
            .unwrap();
    }
    // The worker has read the first two; the third is still new to it (as
    // is the message that assigns it the task).
    assert_eq!(store.check(&conversation.b, 2).await.unwrap().len(), 2);
    store
        .assign_task(&conversation.a, NewTask::new("port", "Port the store."))
        .await
        .unwrap();
    store.heartbeat(&conversation.b).await.unwrap();
    let (key, _) = store.create_access_key("ci", None).await.unwrap();
    store.enable_yolo(&conversation.created.id).await.unwrap();
    let (approval, _) = store
        .issue_approval(Duration::from_secs(600), Some(&conversation.created.id))
        .await
        .unwrap();
    let audit_rows = store.verify_audit().await.unwrap().rows;
    store.close().await;

    server.create_database("moved").await;
    let url = format!("postgres://bridge@127.0.0.1:{}/moved", server.port());
    let (code, stdout, stderr) = copy(&source, &url, server.password(), false);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with(&format!("Copied {} into {url}:\n", source.display())),
        "{stdout}"
    );
    for line in [
        "conversation             1 rows",
        "session                  2 rows",
        "message                  4 rows",
        "task                     1 rows",
        "access_key               1 rows",
        "approval                 1 rows",
    ] {
        assert!(stdout.contains(line), "{line:?} in\n{stdout}");
    }
    assert!(!stdout.contains(server.password()) && !stderr.contains(server.password()));

    // The copy, opened with the same key: the old tokens, the old cursors.
    let mut options = StoreOptions::at(Location::parse(&server.url("moved")).unwrap());
    options.key_file = Some(default_key_file(&source));
    let copied = Store::open(options).await.unwrap();
    // Unread: the third message, and the one that assigned the task.
    let unread = copied.check(&conversation.b, 10).await.unwrap();
    assert_eq!(unread.len(), 2);
    assert_eq!(unread[0].body, "three");
    let tasks = copied.all_tasks(None).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].title, "port");
    let presented: PresentedKey = key.reveal().parse().unwrap();
    copied.authenticate_key(&presented).await.unwrap();
    assert_eq!(
        copied.approvals().await.unwrap()[0].preview,
        approval.reveal()[..8]
    );
    // New rows continue the ids and the chain.
    let sent = copied
        .send(&conversation.b, NewMessage::new("from the copy"))
        .await
        .unwrap();
    assert_eq!(sent.id, 5);
    let report = copied.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert!(report.rows > audit_rows);
    copied.close().await;
    let (code, stdout, stderr) = run(
        "bridgectl",
        Path::new(&url),
        &["audit", "verify"],
        &[
            ("PGPASSWORD", server.password()),
            (
                "BRIDGE_KEY_FILE",
                default_key_file(&source).to_str().unwrap(),
            ),
        ],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    // Into a database that holds data: refused, nothing written.
    let mut raw = bridge_tests::raw_connection(Path::new(&server.url("moved"))).await;
    let before = scalar(&mut raw, "SELECT count(*) FROM message").await;
    let (code, stdout, stderr) = copy(&source, &url, server.password(), true);
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr.lines().last().unwrap(),
        format!(
            "bridgectl: invalid to: {url} already holds a store with data; \
             copy writes only into an empty one"
        )
    );
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM message").await,
        before
    );

    // Only into PostgreSQL.
    let (code, _, stderr) = copy(&source, "sqlite:elsewhere.db", "", false);
    assert_eq!(code, Some(1));
    assert!(
        stderr.ends_with(
            "bridgectl: invalid to: copy writes into a PostgreSQL database \
             (postgres://USER@HOST/DATABASE)\n"
        ),
        "{stderr}"
    );
}

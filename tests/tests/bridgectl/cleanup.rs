//! `bridgectl cleanup`: expired conversations go with their sessions,
//! messages and tasks; live ones stay whole; the removal is audited and
//! the chain still holds.

use bridge_core::{NewMessage, NewTask, Status, TaskState};
use bridge_tests::{TempDb, scalar};
use serde_json::json;
use sqlx::AnyConnection;

use crate::{Made, ctl, make, millis_ago};

/// Messages both ways, statuses, a read, two tasks (one started).
async fn busy(store: &bridge_core::Store, made: &Made) {
    let (a, b) = (made.credentials("a"), made.credentials("b"));
    for title in ["one", "two"] {
        let task = NewTask::new(title, format!("Do {title}."));
        store.assign_task(&a, task).await.unwrap();
    }
    let first = store.list_tasks(&b, None).await.unwrap()[0].id;
    store
        .update_task(&b, first, TaskState::InProgress, None)
        .await
        .unwrap();
    store.send(&a, NewMessage::new("hello")).await.unwrap();
    store.check(&b, 100).await.unwrap();
    store.send(&b, NewMessage::new("hi")).await.unwrap();
    store.set_status(&a, Status::Waiting).await.unwrap();
    store.set_status(&b, Status::Working).await.unwrap();
}

/// The rows of each table that belong to conversation `id`.
async fn rows_of(raw: &mut AnyConnection, id: &str) -> [i64; 5] {
    let mut counts = [0; 5];
    let tables = [
        "conversation WHERE id",
        "session WHERE conversation_id",
        "message WHERE conversation_id",
        "task WHERE conversation_id",
        "task_assignment WHERE conversation_id",
    ];
    for (count, table) in counts.iter_mut().zip(tables) {
        *count = scalar(raw, &format!("SELECT count(*) FROM {table} = '{id}'")).await;
    }
    counts
}

#[tokio::test]
async fn cleanup_removes_only_expired_conversations_with_everything_theirs() {
    let db = TempDb::new();
    let live = make(&db.path, "orchestrator", "worker 0", &["--team", "core"]);
    let expired = make(&db.path, "orchestrator", "worker 1", &["--team", "core"]);
    let empty = make(&db.path, "orchestrator", "worker 2", &[]);
    let store = db.open().await;
    busy(&store, &live).await;
    busy(&store, &expired).await;
    store.close().await;
    let mut raw = db.raw().await;
    for (made, seconds) in [(&expired, 120), (&empty, 60)] {
        sqlx::query("UPDATE conversation SET expires_at = $1 WHERE id = $2")
            .bind(millis_ago(seconds))
            .bind(&made.id)
            .execute(&mut raw)
            .await
            .unwrap();
    }
    let live_rows = rows_of(&mut raw, &live.id).await;
    let expired_rows = rows_of(&mut raw, &expired.id).await;
    assert_eq!(live_rows, expired_rows);
    // Messages: two task notices, one update notice, two written.
    assert_eq!(
        live_rows,
        [1, 2, 5, 2, 2],
        "conversation, sessions, messages, tasks, assignments"
    );
    let live_view = ctl(&db.path, &["show", &live.id, "--json"]).json();
    let audit_rows = scalar(&mut raw, "SELECT count(*) FROM audit").await;

    // A dry run lists them, oldest expiry first, and touches nothing.
    assert_eq!(
        ctl(&db.path, &["cleanup", "--dry-run"]).ok(),
        format!(
            "2 expired conversations would be removed (dry run)\n  {}\n  {}\n",
            expired.id, empty.id
        )
    );
    assert_eq!(
        ctl(&db.path, &["cleanup", "--dry-run", "--json"]).json(),
        json!({ "dry_run": true, "removed": [expired.id, empty.id] })
    );
    assert_eq!(rows_of(&mut raw, &expired.id).await, expired_rows);
    assert_eq!(rows_of(&mut raw, &empty.id).await, [1, 2, 0, 0, 0]);
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM audit").await,
        audit_rows
    );

    assert_eq!(
        ctl(&db.path, &["cleanup"]).ok(),
        format!(
            "2 expired conversations removed\n  {}\n  {}\n",
            expired.id, empty.id
        )
    );
    assert_eq!(rows_of(&mut raw, &expired.id).await, [0; 5]);
    assert_eq!(rows_of(&mut raw, &empty.id).await, [0; 5]);
    assert_eq!(rows_of(&mut raw, &live.id).await, live_rows);
    assert_eq!(
        ctl(&db.path, &["show", &live.id, "--json"]).json(),
        live_view,
        "the live conversation is whole"
    );
    let store = db.open().await;
    assert_eq!(
        store
            .list_tasks(&live.credentials("b"), None)
            .await
            .unwrap()
            .len(),
        2
    );
    store.close().await;

    // Audited, one row each, and the chain holds.
    let audit = ctl(&db.path, &["audit", "--json", "--limit", "2"]).json();
    for (row, made, seconds) in [(0, &expired, 120), (1, &empty, 60)] {
        assert_eq!(audit[row]["action"], "conversation_expired");
        assert_eq!(audit[row]["conversation_id"], made.id.as_str());
        let detail: serde_json::Value =
            serde_json::from_str(audit[row]["detail"].as_str().unwrap()).unwrap();
        let expired_at = detail["expired_at"].as_i64().unwrap();
        assert!(expired_at <= millis_ago(seconds), "{detail}");
    }
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM audit").await,
        audit_rows + 2
    );
    let verified = ctl(&db.path, &["audit", "verify"]).ok();
    assert!(
        verified.starts_with(&format!(
            "audit trail intact: {} rows, head ",
            audit_rows + 2
        )),
        "{verified}"
    );

    // Nothing left to do; the removed one is gone for every command.
    assert_eq!(
        ctl(&db.path, &["cleanup"]).ok(),
        "0 expired conversations removed\n"
    );
    assert_eq!(
        ctl(&db.path, &["cleanup", "--json"]).json(),
        json!({ "dry_run": false, "removed": [] })
    );
    ctl(&db.path, &["show", &expired.id]).failed(
        77,
        &format!("bridgectl: no such conversation: {}", expired.id),
    );
    let list = ctl(&db.path, &["list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], live.id.as_str());
}

#[tokio::test]
async fn one_expired_conversation_is_named_in_the_singular() {
    let db = TempDb::new();
    let made = make(&db.path, "orchestrator", "worker", &[]);
    let mut raw = db.raw().await;
    sqlx::query("UPDATE conversation SET expires_at = $1 WHERE id = $2")
        .bind(millis_ago(1))
        .bind(&made.id)
        .execute(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        ctl(&db.path, &["cleanup", "--dry-run"]).ok(),
        format!(
            "1 expired conversation would be removed (dry run)\n  {}\n",
            made.id
        )
    );
    assert_eq!(
        ctl(&db.path, &["cleanup"]).ok(),
        format!("1 expired conversation removed\n  {}\n", made.id)
    );
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM conversation").await,
        0
    );
}

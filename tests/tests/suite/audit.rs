//! The audit trail: one row per state change, in the same transaction, and a
//! chain that catches edited, deleted and reordered rows.

use bridge_core::{BadRow, Credentials, NewMessage, Status, Token};
use bridge_tests::{TempDb, pair};
use sqlx::AnyConnection;

/// A store with a few rows of every kind in its audit trail.
async fn busy_database() -> TempDb {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await; // 1: conversation_created
    store
        .send(&conversation.a, NewMessage::new("one"))
        .await
        .unwrap(); // 2
    store
        .send(&conversation.a, NewMessage::new("two"))
        .await
        .unwrap(); // 3
    store.check(&conversation.b, 10).await.unwrap(); // 4: messages_read
    store
        .set_status(&conversation.b, Status::Working)
        .await
        .unwrap(); // 5
    let stranger = Credentials {
        token: Token::generate().unwrap(),
        ..conversation.b.clone()
    };
    store.heartbeat(&stranger).await.unwrap_err(); // 6: auth_failed
    store
        .send(&conversation.b, NewMessage::new("three"))
        .await
        .unwrap(); // 7
    store.close().await;
    db
}

async fn actions(raw: &mut AnyConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT action FROM audit ORDER BY id")
        .fetch_all(raw)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_state_change_writes_exactly_one_row() {
    let db = busy_database().await;
    let mut raw = db.raw().await;
    assert_eq!(
        actions(&mut raw).await,
        vec![
            "conversation_created",
            "message_sent",
            "message_sent",
            "messages_read",
            "status_changed",
            "auth_failed",
            "message_sent",
        ]
    );
    let detail: String = sqlx::query_scalar("SELECT detail FROM audit WHERE id = 2")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["message_id"], 1);
    assert_eq!(detail["chars"], 3);
    assert_eq!(detail["to"], "b");
    assert!(
        detail.get("body").is_none(),
        "the trail never holds message bodies"
    );

    let store = db.open().await;
    let report = store.verify_audit().await.unwrap();
    assert!(report.is_intact());
    assert_eq!(report.rows, 7);
    let head: String = sqlx::query_scalar("SELECT hash FROM audit WHERE id = 7")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(report.head, Some(head));
    store.close().await;
}

/// Runs `tampering` on a busy database's raw file, then verifies the chain
/// through a store; returns the first bad row.
async fn tampered(tampering: &str) -> BadRow {
    let db = busy_database().await;
    let mut raw = db.raw().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(tampering.to_owned()))
        .execute(&mut raw)
        .await
        .unwrap();
    let store = db.open().await;
    let report = store.verify_audit().await.unwrap();
    store.close().await;
    report.first_bad.expect("the tampering was not found")
}

/// The hash of a row as `audit.rs` documents it, computed independently:
/// `SHA-256(prev_hash ‖ [id, at, conversation_id, session, action, detail])`.
fn documented_hash(
    prev_hash: &str,
    id: i64,
    at: i64,
    conversation_id: Option<&str>,
    session: Option<&str>,
    action: &str,
    detail: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::json!([id, at, conversation_id, session, action, detail]);
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    at: i64,
    conversation_id: Option<String>,
    session: Option<String>,
    action: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

#[tokio::test]
async fn anyone_can_recompute_the_chain_from_the_documentation() {
    let db = busy_database().await;
    let mut raw = db.raw().await;
    let rows: Vec<Row> = sqlx::query_as("SELECT * FROM audit ORDER BY id")
        .fetch_all(&mut raw)
        .await
        .unwrap();
    let mut prev = "0".repeat(64);
    for row in &rows {
        assert_eq!(row.prev_hash, prev, "row {}", row.id);
        let hash = documented_hash(
            &row.prev_hash,
            row.id,
            row.at,
            row.conversation_id.as_deref(),
            row.session.as_deref(),
            &row.action,
            &row.detail,
        );
        assert_eq!(row.hash, hash, "row {}", row.id);
        prev = hash;
    }
    assert_eq!(rows.len(), 7);
}

#[tokio::test]
async fn an_edited_row_is_found() {
    let bad =
        tampered(r#"UPDATE audit SET detail = '{"from":null,"to":"complete"}' WHERE id = 5"#).await;
    assert_eq!(bad.id, 5);
    assert_eq!(
        bad.to_string(),
        "audit row 5: its contents do not match its hash; the row was edited"
    );
}

#[tokio::test]
async fn an_edit_with_a_recomputed_hash_is_found_at_the_next_row() {
    // The forger rewrites row 3 and gives it the correct hash of its new
    // contents; row 4 still points at the old hash.
    let db = busy_database().await;
    let mut raw = db.raw().await;
    let row: Row = sqlx::query_as("SELECT * FROM audit WHERE id = 3")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    let forged_detail =
        r#"{"action_type":"info","chars":1,"message_id":2,"redacted":false,"to":"b"}"#;
    let forged_hash = documented_hash(
        &row.prev_hash,
        row.id,
        row.at,
        row.conversation_id.as_deref(),
        row.session.as_deref(),
        &row.action,
        forged_detail,
    );
    sqlx::query("UPDATE audit SET detail = $1, hash = $2 WHERE id = 3")
        .bind(forged_detail)
        .bind(&forged_hash)
        .execute(&mut raw)
        .await
        .unwrap();
    let store = db.open().await;
    let bad = store.verify_audit().await.unwrap().first_bad.unwrap();
    store.close().await;
    assert_eq!(bad.id, 4);
    assert_eq!(
        bad.problem,
        "its prev_hash is not the hash of the row before it; rows were removed or reordered"
    );
}

#[tokio::test]
async fn a_deleted_row_is_found() {
    let bad = tampered("DELETE FROM audit WHERE id = 4").await;
    assert_eq!(bad.id, 5);
    assert_eq!(
        bad.to_string(),
        "audit row 5: expected row 4 here; rows were removed or reordered"
    );
}

#[tokio::test]
async fn two_swapped_rows_are_found() {
    // Swap the contents of rows 2 and 3, keeping their ids in place.
    let bad = tampered(
        "UPDATE audit SET (at, conversation_id, session, action, detail, prev_hash, hash) =
            (SELECT at, conversation_id, session, action, detail, prev_hash, hash
             FROM audit AS other WHERE other.id = 5 - audit.id)
         WHERE id IN (2, 3)",
    )
    .await;
    assert_eq!(bad.id, 2);
    assert_eq!(
        bad.problem,
        "its prev_hash is not the hash of the row before it; rows were removed or reordered"
    );
}

#[tokio::test]
async fn rows_removed_from_the_end_are_found() {
    let bad = tampered("DELETE FROM audit WHERE id >= 6").await;
    assert_eq!(
        bad.to_string(),
        "audit row 6: rows 6 to 7 are missing; rows were removed from the end"
    );
}

#[tokio::test]
async fn the_chain_continues_across_stores_and_reopenings() {
    let db = busy_database().await;
    let one = db.open().await;
    let two = db.open().await;
    let conversation = pair(&one).await;
    for n in 0..20 {
        let store = if n % 2 == 0 { &one } else { &two };
        store
            .send(&conversation.a, NewMessage::new(format!("{n}")))
            .await
            .unwrap();
    }
    let report = two.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{:?}", report.first_bad);
    assert_eq!(report.rows, 7 + 1 + 20);
    one.close().await;
    two.close().await;
}

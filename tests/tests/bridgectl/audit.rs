//! `bridgectl audit`: the trail, all of it or one conversation's, and
//! `audit verify`, which names the first row an edit or a deletion broke.

use bridge_core::{NewMessage, Status};
use bridge_tests::{TempDb, raw_connection};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use crate::{Made, Run, ctl, make, table};

/// A database whose trail has six rows: two conversations created, a
/// message sent and read, a status, a rotation.
async fn busy_database() -> (TempDb, Made, Made) {
    let db = TempDb::new();
    let first = make(&db.path, "orchestrator", "worker", &["--team", "core"]); // 1
    let second = make(&db.path, "lead", "helper", &[]); // 2
    let store = db.open().await;
    store
        .send(&first.credentials("a"), NewMessage::new("hello"))
        .await
        .unwrap(); // 3
    store.check(&first.credentials("b"), 10).await.unwrap(); // 4
    store
        .set_status(&first.credentials("b"), Status::Working)
        .await
        .unwrap(); // 5
    store.close().await;
    ctl(&db.path, &["rotate-tokens", &first.id, "--session", "a"]).ok(); // 6
    (db, first, second)
}

async fn execute(raw: &mut AnyConnection, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(raw)
        .await
        .unwrap();
}

/// Asserts that `audit verify` found the chain broken at row `id` with
/// `problem`, after checking `rows` rows.
#[track_caller]
fn assert_broken(run: Run, id: i64, problem: &str, rows: u64) {
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!("audit trail BROKEN at row {id}: {problem} ({rows} rows checked)\n")
    );
    assert_eq!(
        run.stderr.lines().last(),
        Some(format!("bridgectl: the audit trail is broken at row {id}: {problem}").as_str()),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn audit_lists_the_latest_rows_of_all_or_one_conversation() {
    let (db, first, second) = busy_database().await;
    let stdout = ctl(&db.path, &["audit"]).ok();
    assert!(
        stdout.starts_with("ID  AT                        CONVERSATION           SESSION  ACTION "),
        "{stdout}"
    );
    let rows = table(&stdout);
    let summary: Vec<[&str; 4]> = rows
        .iter()
        .map(|row| {
            [
                row["ID"].as_str(),
                row["CONVERSATION"].as_str(),
                row["SESSION"].as_str(),
                row["ACTION"].as_str(),
            ]
        })
        .collect();
    assert_eq!(
        summary,
        [
            ["1", &first.id, "", "conversation_created"],
            ["2", &second.id, "", "conversation_created"],
            ["3", &first.id, "a", "message_sent"],
            ["4", &first.id, "b", "messages_read"],
            ["5", &first.id, "b", "status_changed"],
            ["6", &first.id, "", "tokens_rotated"],
        ]
    );
    let created: Value = serde_json::from_str(&rows[1]["DETAIL"]).unwrap();
    assert_eq!(created["role_a"], "lead");
    assert_eq!(created["role_b"], "helper");
    assert_eq!(rows[5]["DETAIL"], r#"{"sessions":["a"]}"#);

    let ids = |args: &[&str]| -> Vec<String> {
        table(&ctl(&db.path, args).ok())
            .into_iter()
            .map(|row| row["ID"].clone())
            .collect()
    };
    assert_eq!(ids(&["audit", &second.id]), ["2"]);
    assert_eq!(ids(&["audit", &first.id]), ["1", "3", "4", "5", "6"]);
    assert_eq!(
        ids(&["audit", "--limit", "2"]),
        ["5", "6"],
        "the latest, oldest first"
    );
    assert_eq!(ids(&["audit", &first.id, "--limit", "3"]), ["4", "5", "6"]);
    assert_eq!(
        ctl(&db.path, &["audit", "conv_0123456789abcdef"]).ok(),
        "No audit rows.\n"
    );

    let json = ctl(&db.path, &["audit", &second.id, "--json"]).json();
    let at = json[0]["at"].as_str().unwrap().to_owned();
    assert_eq!(
        json,
        json!([{
            "id": 2,
            "at": at,
            "conversation_id": second.id,
            "session": null,
            "action": "conversation_created",
            "detail": rows[1]["DETAIL"],
        }])
    );

    let run = ctl(&db.path, &["audit", "--limit", "0"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .starts_with("error: invalid value '0' for '--limit <LIMIT>': 0 is not in 1..=100000"),
        "{}",
        run.stderr
    );
    let run = ctl(&db.path, &["audit", "conv_xyz"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .starts_with("error: invalid value 'conv_xyz' for '[ID]': invalid conversation_id"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn verify_names_the_row_that_was_edited() {
    let (db, _, _) = busy_database().await;
    let mut raw = raw_connection(&db.path).await;
    let head: String = sqlx::query_scalar("SELECT hash FROM audit ORDER BY id DESC LIMIT 1")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        ctl(&db.path, &["audit", "verify"]).ok(),
        format!("audit trail intact: 6 rows, head {head}\n")
    );
    assert_eq!(
        ctl(&db.path, &["audit", "verify", "--json"]).json(),
        json!({ "rows": 6, "head": head, "first_bad": null })
    );

    let edited = "its contents do not match its hash; the row was edited";
    let detail: String = sqlx::query_scalar("SELECT detail FROM audit WHERE id = 3")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    execute(
        &mut raw,
        r#"UPDATE audit SET detail = '{"chars":1}' WHERE id = 3"#,
    )
    .await;
    assert_broken(ctl(&db.path, &["audit", "verify"]), 3, edited, 3);
    let run = ctl(&db.path, &["audit", "verify", "--json"]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).unwrap(),
        json!({ "rows": 3, "head": null, "first_bad": { "id": 3, "problem": edited } })
    );

    // Put back, the chain holds again: it was that edit that broke it.
    sqlx::query("UPDATE audit SET detail = $1 WHERE id = 3")
        .bind(&detail)
        .execute(&mut raw)
        .await
        .unwrap();
    ctl(&db.path, &["audit", "verify"]).ok();

    // Another column: the time of row 5.
    execute(&mut raw, "UPDATE audit SET at = at + 1 WHERE id = 5").await;
    assert_broken(ctl(&db.path, &["audit", "verify"]), 5, edited, 5);
    execute(&mut raw, "UPDATE audit SET at = at - 1 WHERE id = 5").await;
    ctl(&db.path, &["audit", "verify"]).ok();

    // An edit whose row hash is recomputed to fit is found at the next row.
    type Row = (
        i64,
        i64,
        Option<String>,
        Option<String>,
        String,
        String,
        String,
    );
    let (id, at, conversation_id, session, _, detail, prev_hash): Row = sqlx::query_as(
        "SELECT id, at, conversation_id, session, action, detail, prev_hash FROM audit WHERE id = 2",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    let canonical = json!([id, at, conversation_id, session, "nothing", detail]).to_string();
    let hash = hex::encode(Sha256::digest(format!("{prev_hash}{canonical}")));
    sqlx::query("UPDATE audit SET action = 'nothing', hash = $1 WHERE id = 2")
        .bind(hash)
        .execute(&mut raw)
        .await
        .unwrap();
    assert_broken(
        ctl(&db.path, &["audit", "verify"]),
        3,
        "its prev_hash is not the hash of the row before it; rows were removed or reordered",
        3,
    );
}

#[tokio::test]
async fn verify_names_where_rows_were_deleted() {
    let (db, _, _) = busy_database().await;
    let mut raw = raw_connection(&db.path).await;
    execute(&mut raw, "DELETE FROM audit WHERE id = 4").await;
    assert_broken(
        ctl(&db.path, &["audit", "verify"]),
        5,
        "expected row 4 here; rows were removed or reordered",
        4,
    );

    let (db, _, _) = busy_database().await;
    let mut raw = raw_connection(&db.path).await;
    execute(&mut raw, "DELETE FROM audit WHERE id = 6").await;
    assert_broken(
        ctl(&db.path, &["audit", "verify"]),
        6,
        "rows 6 to 6 are missing; rows were removed from the end",
        5,
    );

    // The first row gone: the chain starts at the wrong place.
    let (db, _, _) = busy_database().await;
    let mut raw = raw_connection(&db.path).await;
    execute(&mut raw, "DELETE FROM audit WHERE id = 1").await;
    assert_broken(
        ctl(&db.path, &["audit", "verify"]),
        2,
        "expected row 1 here; rows were removed or reordered",
        1,
    );
}

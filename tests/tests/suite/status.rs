//! Status, heartbeats and liveness.

use std::time::Duration;

use bridge_core::{SessionId, Status, Store};
use bridge_tests::{TempDb, pair, scalar};

#[tokio::test]
async fn a_partner_never_heard_from_is_unknown_and_not_alive() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let partner = store.partner_status(&conversation.a).await.unwrap();
    assert_eq!(partner.session, SessionId::B);
    assert_eq!(partner.role, "worker");
    assert_eq!(partner.status, None);
    assert_eq!(partner.last_heartbeat, None);
    assert_eq!(partner.age, None);
    assert!(!partner.alive);
    let json = serde_json::to_value(&partner).unwrap();
    assert_eq!(json["age_seconds"], serde_json::Value::Null);
    assert_eq!(json["alive"], false);
    store.close().await;
}

#[tokio::test]
async fn status_and_heartbeat_are_seen_by_the_partner() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    store
        .set_status(&conversation.b, Status::Working)
        .await
        .unwrap();
    let partner = store.partner_status(&conversation.a).await.unwrap();
    assert_eq!(partner.status, Some(Status::Working));
    assert!(partner.alive);
    assert!(partner.age.unwrap() < Duration::from_secs(2));
    assert!(
        partner.last_heartbeat.is_some(),
        "setting a status is a heartbeat"
    );
    let first_heartbeat = partner.last_heartbeat.unwrap();

    tokio::time::sleep(Duration::from_millis(20)).await;
    store.heartbeat(&conversation.b).await.unwrap();
    let partner = store.partner_status(&conversation.a).await.unwrap();
    assert!(partner.last_heartbeat.unwrap() > first_heartbeat);
    assert_eq!(
        partner.status,
        Some(Status::Working),
        "a heartbeat keeps the status"
    );
    assert_eq!(
        store.partner_status(&conversation.b).await.unwrap().role,
        "orchestrator"
    );
    let error = "sleeping".parse::<Status>().unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid status: expected one of working, waiting, blocked, complete, active, silent"
    );
    store.close().await;
}

#[tokio::test]
async fn the_liveness_window_is_configurable() {
    let db = TempDb::new();
    let mut options = db.options();
    options.liveness_window = Duration::from_millis(300);
    let store = Store::open(options).await.unwrap();
    let conversation = pair(&store).await;
    store.heartbeat(&conversation.b).await.unwrap();
    assert!(store.partner_status(&conversation.a).await.unwrap().alive);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let partner = store.partner_status(&conversation.a).await.unwrap();
    assert!(!partner.alive);
    assert!(partner.age.unwrap() >= Duration::from_millis(300));
    store.close().await;
}

#[tokio::test]
async fn any_authenticated_call_counts_as_seen() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    // The worker only reads its messages: no heartbeat, yet it is alive.
    store.peek(&conversation.b, 10).await.unwrap();
    let partner = store.partner_status(&conversation.a).await.unwrap();
    assert_eq!(partner.last_heartbeat, None);
    assert!(partner.last_seen.is_some());
    assert!(partner.alive);
    store.close().await;
}

#[tokio::test]
async fn only_changes_of_status_are_audited() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let mut raw = db.raw().await;
    let count = "SELECT count(*) FROM audit WHERE action = 'status_changed'";
    store
        .set_status(&conversation.b, Status::Working)
        .await
        .unwrap();
    store
        .set_status(&conversation.b, Status::Working)
        .await
        .unwrap();
    store.heartbeat(&conversation.b).await.unwrap();
    assert_eq!(scalar(&mut raw, count).await, 1);
    store
        .set_status(&conversation.b, Status::Blocked)
        .await
        .unwrap();
    assert_eq!(scalar(&mut raw, count).await, 2);
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM audit WHERE action = 'status_changed' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    assert_eq!(detail, r#"{"from":"working","to":"blocked"}"#);
    store.close().await;
}

/// A store's writer remembers the state its last batch left; a change made
/// through another store (another process) in between must not be missed.
#[tokio::test]
async fn a_change_through_another_store_is_not_missed() {
    let db = TempDb::new();
    let one = db.open().await;
    let two = db.open().await;
    let conversation = pair(&one).await;
    one.set_status(&conversation.b, Status::Working)
        .await
        .unwrap();
    two.set_status(&conversation.b, Status::Blocked)
        .await
        .unwrap();
    // `one` remembers "working"; the database says "blocked".
    one.set_status(&conversation.b, Status::Working)
        .await
        .unwrap();
    let mut raw = db.raw().await;
    let details: Vec<String> =
        sqlx::query_scalar("SELECT detail FROM audit WHERE action = 'status_changed' ORDER BY id")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    assert_eq!(
        details,
        vec![
            r#"{"from":null,"to":"working"}"#,
            r#"{"from":"working","to":"blocked"}"#,
            r#"{"from":"blocked","to":"working"}"#,
        ]
    );
    assert_eq!(
        one.partner_status(&conversation.a).await.unwrap().status,
        Some(Status::Working)
    );
    assert!(one.verify_audit().await.unwrap().is_intact());
    one.close().await;
    two.close().await;
}

//! Change notification across stores: a commit through one store (its own
//! pool and writer, as another process would have) wakes a waiter on another.

use std::time::Duration;

use bridge_core::NewMessage;
use bridge_tests::{TempDb, pair};
use tokio::time::timeout;

#[tokio::test]
async fn a_commit_by_another_store_wakes_the_waiter() {
    let db = TempDb::new();
    let waiter_store = db.open().await;
    let writer_store = db.open().await;
    let conversation = pair(&writer_store).await;
    // The first call records the session's last_seen, a change of its own.
    assert!(
        waiter_store
            .check(&conversation.b, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mut changes = waiter_store.subscribe();
    // That change's wake-ups (the writer's, an inotify event, a PostgreSQL
    // notification) may still be on their way on a loaded machine: let
    // them all arrive, then see that a read changes nothing.
    while let Ok(woken) = timeout(Duration::from_millis(300), changes.changed()).await {
        woken.expect("store open");
    }
    let check = waiter_store.check(&conversation.b, 10).await.unwrap();
    assert!(check.is_empty());
    // Nothing happens: no wake-up.
    assert!(
        timeout(Duration::from_millis(300), changes.changed())
            .await
            .is_err()
    );

    let waiting = tokio::spawn(async move {
        timeout(Duration::from_secs(5), changes.changed())
            .await
            .expect("woken within 5 s")
            .expect("store open");
        changes
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    writer_store
        .send(&conversation.a, NewMessage::new("wake up"))
        .await
        .unwrap();
    let _changes = waiting.await.unwrap();
    let messages = waiter_store.check(&conversation.b, 10).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body, "wake up");
    waiter_store.close().await;
    writer_store.close().await;
}

#[tokio::test]
async fn a_burst_of_commits_coalesces() {
    let db = TempDb::new();
    // The events of the burst, not the slow poll (which may look in the
    // middle of a burst that lasts longer than its interval, each commit
    // waiting for its sync).
    let mut options = db.options();
    options.poll_interval = Duration::from_secs(60);
    let waiter_store = bridge_core::Store::open(options).await.unwrap();
    let writer_store = db.open().await;
    let conversation = pair(&writer_store).await;
    let mut changes = waiter_store.subscribe();
    for n in 0..100 {
        writer_store
            .send(&conversation.a, NewMessage::new(format!("{n}")))
            .await
            .unwrap();
    }
    // Let every event of the burst arrive, then: one wake-up for all of it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    timeout(Duration::from_millis(100), changes.changed())
        .await
        .expect("the burst was noticed")
        .unwrap();
    assert!(
        timeout(Duration::from_millis(300), changes.changed())
            .await
            .is_err(),
        "a second wake-up without a new commit"
    );
    waiter_store.close().await;
    writer_store.close().await;
}

#[tokio::test]
async fn a_write_in_the_same_store_wakes_directly() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let mut changes = store.subscribe();
    store
        .send(&conversation.a, NewMessage::new("local"))
        .await
        .unwrap();
    timeout(Duration::from_secs(1), changes.changed())
        .await
        .unwrap()
        .unwrap();
    store.close().await;
}

#[tokio::test]
async fn closing_the_store_ends_the_subscription() {
    let db = TempDb::new();
    let store = db.open().await;
    let mut changes = store.subscribe();
    let other = store.clone();
    store.close().await;
    drop(store);
    drop(other);
    let result = timeout(Duration::from_secs(1), changes.changed())
        .await
        .unwrap();
    assert_eq!(result.unwrap_err().to_string(), "the store is closed");
}

//! Idempotency keys: a retried write stores nothing twice.

use bridge_core::{ActionType, Error, IdempotencyKey, NewMessage, NewTask, Store};
use bridge_tests::{TempDb, pair, scalar};

fn keyed(body: &str, key: &str) -> NewMessage {
    let mut message = NewMessage::new(body);
    message.idempotency_key = Some(key.parse().unwrap());
    message
}

#[tokio::test]
async fn a_retried_send_returns_the_first_result_and_stores_nothing() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let first = store
        .send(&conversation.a, keyed("deploy password=hunter22", "k-1"))
        .await
        .unwrap();
    assert!(!first.replayed);
    assert_eq!(first.redactions, vec!["password"]);

    // The same from another process (a restarted server), and again here.
    let other = Store::open(db.options()).await.unwrap();
    for store in [&other, &store] {
        let again = store
            .send(&conversation.a, keyed("deploy password=hunter22", "k-1"))
            .await
            .unwrap();
        assert!(again.replayed);
        assert_eq!(
            (again.id, again.created_at, again.redactions.clone()),
            (first.id, first.created_at, first.redactions.clone())
        );
    }
    other.close().await;

    let mut raw = db.raw().await;
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM message").await, 1);
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM audit WHERE action = 'message_sent'"
        )
        .await,
        1
    );
    // The key is kept as a digest, not as the client wrote it.
    assert!(!db.stores_text("k-1").await);

    // The same key in the other session, or another key: new messages.
    let b = store
        .send(&conversation.b, keyed("deploy password=hunter22", "k-1"))
        .await
        .unwrap();
    let a = store
        .send(&conversation.a, keyed("deploy password=hunter22", "k-2"))
        .await
        .unwrap();
    assert!(!b.replayed && !a.replayed);
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM message").await, 3);
    store.close().await;
}

#[tokio::test]
async fn the_same_key_with_other_content_is_refused_and_stores_nothing() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    store
        .send(&conversation.a, keyed("first", "k"))
        .await
        .unwrap();
    let mut question = keyed("first", "k");
    question.action_type = ActionType::Question;
    for message in [keyed("second", "k"), question] {
        let error = store.send(&conversation.a, message).await.unwrap_err();
        assert!(matches!(
            error,
            Error::Invalid {
                field: "idempotency_key",
                ..
            }
        ));
        assert_eq!(
            error.to_string(),
            "invalid idempotency_key: this session already used the key for a different request; \
             a retry must repeat the request exactly, and a new request needs a new key"
        );
    }
    // Nor may a task take a message's key.
    let mut task = NewTask::new("t", "b");
    task.idempotency_key = Some("k".parse().unwrap());
    let error = store.assign_task(&conversation.a, task).await.unwrap_err();
    assert!(matches!(
        error,
        Error::Invalid {
            field: "idempotency_key",
            ..
        }
    ));
    let mut raw = db.raw().await;
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM message").await, 1);
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM task").await, 0);
    store.close().await;
}

#[test]
fn a_key_outside_its_bounds_is_refused_by_name() {
    let too_long = "k".repeat(101).parse::<IdempotencyKey>().unwrap_err();
    assert_eq!(
        too_long.to_string(),
        "invalid idempotency_key: must be 1 to 100 characters, got 101"
    );
    let empty = "".parse::<IdempotencyKey>().unwrap_err();
    assert_eq!(
        empty.to_string(),
        "invalid idempotency_key: must be 1 to 100 characters, got 0"
    );
    let control = "a\nb".parse::<IdempotencyKey>().unwrap_err();
    assert_eq!(
        control.to_string(),
        "invalid idempotency_key: must not contain control characters"
    );
    assert!(
        "é".repeat(100).parse::<IdempotencyKey>().is_ok(),
        "characters, not bytes"
    );
}

#[tokio::test]
async fn a_retried_assignment_returns_the_same_task() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let assign = || {
        let mut task = NewTask::new("Review", "Review src/lib.rs");
        task.idempotency_key = Some("assign-1".parse().unwrap());
        task
    };
    let first = store.assign_task(&conversation.a, assign()).await.unwrap();
    let again = store.assign_task(&conversation.a, assign()).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.title, first.title);
    let mut raw = db.raw().await;
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM task").await, 1);
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM message").await,
        1,
        "the worker is told once"
    );
    store.close().await;
}

/// Many retries of one keyed send at once, through two stores (two
/// processes' writers): exactly one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_retries_store_one_message() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let other = Store::open(db.options()).await.unwrap();
    let mut attempts = Vec::new();
    for n in 0..40 {
        let store = if n % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let credentials = conversation.a.clone();
        attempts.push(tokio::spawn(async move {
            store
                .send(&credentials, keyed("once", "race"))
                .await
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    let mut written = 0;
    for attempt in attempts {
        let sent = attempt.await.unwrap();
        ids.push(sent.id);
        written += usize::from(!sent.replayed);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every attempt answers the same message");
    assert_eq!(written, 1, "one of them wrote it");
    let mut raw = db.raw().await;
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM message").await, 1);
    other.close().await;
    store.close().await;
}

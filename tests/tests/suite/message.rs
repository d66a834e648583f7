//! Messages: sending, the delivery cursor, bounds and redaction.

use bridge_core::{ActionType, Credentials, MAX_BODY_CHARS, NewMessage, Sender, SessionId, Token};
use bridge_tests::{TempDb, pair, scalar};
use serde_json::json;

#[tokio::test]
async fn check_consumes_peek_does_not_history_rereads() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;

    let mut question = NewMessage::new("Which branch?");
    question.action_type = ActionType::Question;
    question.files_involved = vec!["src/main.rs".into(), "Cargo.toml".into()];
    question.metadata = Some(json!({"priority": 2}).as_object().unwrap().clone());
    let first = store.send(&conversation.a, question).await.unwrap();
    let second = store
        .send(&conversation.a, NewMessage::new("Also: rebase."))
        .await
        .unwrap();
    assert!(second.id > first.id);
    assert!(!first.redacted());

    let peeked = store.peek(&conversation.b, 10).await.unwrap();
    assert_eq!(peeked.len(), 2);
    assert_eq!(
        store.peek(&conversation.b, 10).await.unwrap(),
        peeked,
        "peek moves nothing"
    );

    let received = store.check(&conversation.b, 10).await.unwrap();
    assert_eq!(received, peeked);
    let message = &received[0];
    assert_eq!(message.id, first.id);
    assert_eq!((message.from, message.to), (Sender::A, SessionId::B));
    assert_eq!(message.body, "Which branch?");
    assert_eq!(message.action_type, ActionType::Question);
    assert_eq!(message.files_involved, vec!["src/main.rs", "Cargo.toml"]);
    assert_eq!(
        message.metadata,
        Some(json!({"priority": 2}).as_object().unwrap().clone())
    );
    assert_eq!(message.created_at, first.created_at);
    assert_eq!(
        received[1].action_type,
        ActionType::Info,
        "info is the default"
    );

    assert!(
        store.check(&conversation.b, 10).await.unwrap().is_empty(),
        "consumed once"
    );
    assert!(store.peek(&conversation.b, 10).await.unwrap().is_empty());
    assert!(
        store.check(&conversation.a, 10).await.unwrap().is_empty(),
        "a's own messages are not for a"
    );

    let reply = store
        .send(&conversation.b, NewMessage::new("main"))
        .await
        .unwrap();
    let history = store.history(&conversation.a, None, 50).await.unwrap();
    let ids: Vec<i64> = history.iter().map(|m| m.id).collect();
    assert_eq!(
        ids,
        vec![first.id, second.id, reply.id],
        "both directions, in id order"
    );
    let since = store
        .history(&conversation.b, Some(first.id), 50)
        .await
        .unwrap();
    assert_eq!(
        since.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![second.id, reply.id]
    );
    let latest = store.history(&conversation.b, None, 2).await.unwrap();
    assert_eq!(
        latest.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![second.id, reply.id]
    );
    store.close().await;
}

#[tokio::test]
async fn check_respects_its_limit_and_continues_where_it_stopped() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let mut sent = Vec::new();
    for n in 0..7 {
        sent.push(
            store
                .send(&conversation.a, NewMessage::new(format!("m{n}")))
                .await
                .unwrap()
                .id,
        );
    }
    let mut received = Vec::new();
    loop {
        let batch = store.check(&conversation.b, 3).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 3);
        received.extend(batch.iter().map(|m| m.id));
    }
    assert_eq!(received, sent);
    store.close().await;
}

#[tokio::test]
async fn bounds_are_enforced_and_nothing_is_written() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let mut raw = db.raw().await;
    let audit_before = scalar(&mut raw, "SELECT count(*) FROM audit").await;

    let too_long = NewMessage::new("x".repeat(MAX_BODY_CHARS + 1));
    let mut too_many_files = NewMessage::new("files");
    too_many_files.files_involved = (0..21).map(|n| format!("f{n}.rs")).collect();
    let mut empty_path = NewMessage::new("files");
    empty_path.files_involved = vec![String::new()];
    let mut huge_metadata = NewMessage::new("meta");
    huge_metadata.metadata = Some(
        json!({"blob": "m".repeat(10_000)})
            .as_object()
            .unwrap()
            .clone(),
    );
    let cases = [
        (
            too_long,
            "invalid message: must be at most 50000 characters, got 50001",
        ),
        (
            NewMessage::new("  \n "),
            "invalid message: must not be empty",
        ),
        (
            NewMessage::new("a\0b"),
            "invalid message: must not contain NUL characters",
        ),
        (
            too_many_files,
            "invalid files_involved: at most 20 paths, got 21",
        ),
        (
            empty_path,
            "invalid files_involved: each path must be 1 to 4096 characters, got 0",
        ),
        (
            huge_metadata,
            "invalid metadata: must be at most 10000 characters of JSON, got 10011",
        ),
    ];
    for (message, expected) in cases {
        let error = store.send(&conversation.a, message).await.unwrap_err();
        assert_eq!(error.to_string(), expected);
    }
    assert_eq!(
        "urgent".parse::<ActionType>().unwrap_err().to_string(),
        "invalid action_type: expected one of question, info, proposal, blocked, complete"
    );
    for limit in [0, 1001] {
        let error = store.check(&conversation.b, limit).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("invalid limit: must be 1 to 1000, got {limit}")
        );
    }
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM message").await, 0);
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM audit").await,
        audit_before
    );

    // Exactly at the bounds is fine: 50 000 characters (multi-byte ones too).
    let sent = store
        .send(&conversation.a, NewMessage::new("é".repeat(MAX_BODY_CHARS)))
        .await
        .unwrap();
    let received = store.check(&conversation.b, 1).await.unwrap();
    assert_eq!(received[0].id, sent.id);
    assert_eq!(received[0].body.chars().count(), MAX_BODY_CHARS);
    store.close().await;
}

#[tokio::test]
async fn a_refused_send_leaves_no_message() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let stranger = Credentials {
        token: Token::generate().unwrap(),
        ..conversation.a.clone()
    };
    store
        .send(&stranger, NewMessage::new("let me in"))
        .await
        .unwrap_err();
    let mut raw = db.raw().await;
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM message").await, 0);
    assert!(store.peek(&conversation.b, 10).await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn secrets_are_redacted_before_storage_and_the_receiver_sees_the_redaction() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let aws = "AKIAIOSFODNN7EXAMPLE";
    let github = format!("ghp_{}", "Z".repeat(36));
    let mut message = NewMessage::new(format!("deploy with {aws} please"));
    message.files_involved = vec![format!("secrets/{github}.txt")];
    message.metadata = Some(
        json!({"auth": "Bearer abcdefghijklmnop", "n": 1})
            .as_object()
            .unwrap()
            .clone(),
    );
    let sent = store.send(&conversation.a, message).await.unwrap();
    assert!(sent.redacted());
    assert_eq!(
        sent.redactions,
        vec!["aws_access_key", "github_token", "bearer_token"]
    );

    let received = &store.check(&conversation.b, 1).await.unwrap()[0];
    assert!(received.redacted);
    assert_eq!(
        received.body,
        "deploy with [REDACTED:aws_access_key] please"
    );
    assert_eq!(
        received.files_involved,
        vec!["secrets/[REDACTED:github_token].txt"]
    );
    assert_eq!(
        received.metadata,
        Some(
            json!({"auth": "Bearer [REDACTED:bearer_token]", "n": 1})
                .as_object()
                .unwrap()
                .clone()
        )
    );

    store.close().await;
    for secret in [aws, github.as_str()] {
        assert!(!db.stores_text(secret).await, "the database holds a secret");
    }
}

#[tokio::test]
async fn a_check_that_finds_nothing_writes_nothing() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    // The first call records last_seen; after that, empty polls are reads.
    assert!(store.check(&conversation.b, 10).await.unwrap().is_empty());

    let mut raw = db.raw().await;
    let version = db.commit_marker(&mut raw).await;
    let audit = scalar(&mut raw, "SELECT count(*) FROM audit").await;
    for _ in 0..200 {
        assert!(store.check(&conversation.b, 10).await.unwrap().is_empty());
        assert!(store.peek(&conversation.b, 10).await.unwrap().is_empty());
    }
    assert_eq!(
        db.commit_marker(&mut raw).await,
        version,
        "no other connection may have committed"
    );
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM audit").await, audit);

    // A message makes the next check write (the cursor and its audit row).
    store
        .send(&conversation.a, NewMessage::new("now there is one"))
        .await
        .unwrap();
    let version = db.commit_marker(&mut raw).await;
    assert_eq!(store.check(&conversation.b, 10).await.unwrap().len(), 1);
    assert_ne!(db.commit_marker(&mut raw).await, version);
    store.close().await;
}

#[tokio::test]
async fn a_watcher_reads_after_its_own_place_and_moves_no_cursor() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let empty = store.inbox_summary(&conversation.b).await.unwrap();
    assert_eq!(
        (empty.unread, empty.delivered_id, empty.newest_id),
        (0, 0, 0)
    );

    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            store
                .send(&conversation.a, NewMessage::new(format!("m{n}")))
                .await
                .unwrap()
                .id,
        );
    }
    // A message the other way is not the watcher's.
    store
        .send(&conversation.b, NewMessage::new("reply"))
        .await
        .unwrap();

    let after: Vec<i64> = store
        .peek_after(&conversation.b, ids[1], 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(after, ids[2..]);
    assert_eq!(
        store
            .peek_after(&conversation.b, ids[4], 100)
            .await
            .unwrap(),
        vec![]
    );

    // The agent consumes two; the watcher's reads changed nothing for it.
    assert_eq!(store.check(&conversation.b, 2).await.unwrap().len(), 2);
    let summary = store.inbox_summary(&conversation.b).await.unwrap();
    assert_eq!(summary.unread, 3);
    assert_eq!(summary.delivered_id, ids[1]);
    assert_eq!(summary.newest_id, ids[4]);
    assert_eq!(
        store
            .peek_after(&conversation.b, 0, 100)
            .await
            .unwrap()
            .len(),
        5
    );

    let stranger = Credentials {
        token: Token::generate().unwrap(),
        ..conversation.b.clone()
    };
    assert!(store.inbox_summary(&stranger).await.is_err());
    assert!(store.peek_after(&stranger, 0, 10).await.is_err());
    store.close().await;
}

#[tokio::test]
async fn the_operators_view_shows_the_latest_messages_both_ways_oldest_first() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let other = pair(&store).await;
    let mut sent = Vec::new();
    for n in 0..9 {
        let from = if n % 3 == 0 {
            &conversation.b
        } else {
            &conversation.a
        };
        sent.push(
            store
                .send(from, NewMessage::new(format!("m{n}")))
                .await
                .unwrap()
                .id,
        );
        // Another conversation's messages in between are not shown.
        store
            .send(&other.a, NewMessage::new("elsewhere"))
            .await
            .unwrap();
    }
    let detail = store
        .conversation_detail(&conversation.a.conversation_id, 5)
        .await
        .unwrap();
    let shown: Vec<i64> = detail
        .recent_messages
        .iter()
        .map(|shown| shown.message.id)
        .collect();
    assert_eq!(shown, sent[4..], "the latest five, both ways, oldest first");
    let bodies: Vec<&str> = detail
        .recent_messages
        .iter()
        .map(|shown| shown.message.body.as_str())
        .collect();
    assert_eq!(bodies, ["m4", "m5", "m6", "m7", "m8"]);
    store.close().await;
}

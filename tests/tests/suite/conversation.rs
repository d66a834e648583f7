//! Conversations and tokens: creation, bounds, and the distinct ways
//! authentication fails.

use std::time::Duration;

use bridge_core::{Credentials, Error, NewConversation, NewMessage, SessionId, Token};
use bridge_tests::{TempDb, pair, scalar};

#[tokio::test]
async fn create_returns_an_id_two_tokens_and_the_expiry() {
    let db = TempDb::new();
    let store = db.open().await;
    let mut new = NewConversation::new("  orchestrator ", "backend worker");
    new.team = Some("alpha".into());
    let created = store.create_conversation(new).await.unwrap();

    let id = created.id.as_str();
    assert_eq!(id.len(), 21);
    assert!(
        id.starts_with("conv_")
            && id[5..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let (a, b) = (created.token_a.reveal(), created.token_b.reveal());
    for token in [&a, &b] {
        assert_eq!(token.len(), 64);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
    assert_ne!(a, b);
    assert_eq!(created.role_a, "orchestrator", "roles are trimmed");
    assert_eq!(created.team.as_deref(), Some("alpha"));
    let ttl = created.expires_at.as_millis() - created.created_at.as_millis();
    assert_eq!(
        ttl,
        3 * 60 * 60 * 1000,
        "the default time to live is 3 hours"
    );

    let mut raw = db.raw().await;
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM conversation").await,
        1
    );
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM session").await, 2);
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT length(token_digest_a) + length(token_digest_b) FROM conversation"
        )
        .await,
        64,
        "only the two 32-byte digests are stored"
    );
    store.close().await;
}

#[tokio::test]
async fn bounds_are_checked_and_nothing_is_written() {
    let db = TempDb::new();
    let store = db.open().await;
    let long = "r".repeat(101);
    let cases: Vec<(NewConversation, &str)> = vec![
        (
            NewConversation::new("ab", "worker"),
            "invalid my_role: must be 3 to 100 characters, got 2",
        ),
        (
            NewConversation::new("orchestrator", long.as_str()),
            "invalid partner_role: must be 3 to 100 characters, got 101",
        ),
        (
            NewConversation::new("   ", "worker"),
            "invalid my_role: must be 3 to 100 characters, got 0",
        ),
        (
            NewConversation::new("orc\nhestrator", "worker"),
            "invalid my_role: must not contain control characters",
        ),
        (
            {
                let mut new = NewConversation::new("orchestrator", "worker");
                new.team = Some(String::new());
                new
            },
            "invalid team: must be 1 to 100 characters, got 0",
        ),
        (
            {
                let mut new = NewConversation::new("orchestrator", "worker");
                new.ttl = Some(Duration::ZERO);
                new
            },
            "invalid ttl_seconds: must be between 1 second and 365 days, got 0 seconds",
        ),
        (
            {
                let mut new = NewConversation::new("orchestrator", "worker");
                new.ttl = Some(Duration::from_secs(366 * 24 * 3600));
                new
            },
            "invalid ttl_seconds: must be between 1 second and 365 days, got 31622400 seconds",
        ),
    ];
    for (new, expected) in cases {
        let error = store.create_conversation(new).await.unwrap_err();
        assert_eq!(error.to_string(), expected);
    }
    // 3 and 100 characters are fine.
    store
        .create_conversation(NewConversation::new("abc", "é".repeat(100)))
        .await
        .unwrap();
    let mut raw = db.raw().await;
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM conversation").await,
        1
    );
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM audit").await, 1);
    store.close().await;
}

#[tokio::test]
async fn invalid_token_expired_and_missing_are_distinct_errors() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;

    // A token of the other session is invalid for this one.
    let wrong = Credentials {
        token: conversation.b.token.clone(),
        ..conversation.a.clone()
    };
    let error = store.heartbeat(&wrong).await.unwrap_err();
    assert!(matches!(error, Error::InvalidToken { .. }));
    assert_eq!(
        error.to_string(),
        format!(
            "invalid token for session a of conversation {}",
            conversation.created.id
        )
    );

    let missing = Credentials {
        conversation_id: "conv_0000000000000000".parse().unwrap(),
        ..conversation.a.clone()
    };
    let error = store.peek(&missing, 10).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "no such conversation: conv_0000000000000000"
    );

    let mut short = NewConversation::new("orchestrator", "worker");
    short.ttl = Some(Duration::from_secs(1));
    let expiring = bridge_tests::pair_of(store.create_conversation(short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let error = store
        .send(&expiring.a, NewMessage::new("too late"))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "expired conversation: {} expired at {}",
            expiring.created.id, expiring.created.expires_at
        )
    );
    // An expired conversation with a wrong token says "invalid token", not
    // whether it has expired.
    let error = store
        .heartbeat(&Credentials {
            token: Token::generate().unwrap(),
            ..expiring.b.clone()
        })
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        Error::InvalidToken {
            session: SessionId::B,
            ..
        }
    ));
    store.close().await;
}

#[tokio::test]
async fn malformed_credentials_are_refused_before_the_database() {
    let error = Credentials::parse("conv_xyz", "a", &"0".repeat(64)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid conversation_id: expected conv_ followed by 16 lowercase hex characters"
    );
    let error = Credentials::parse("conv_0123456789abcdef", "c", &"0".repeat(64)).unwrap_err();
    assert_eq!(error.to_string(), "invalid session_id: expected a or b");
    let error = Credentials::parse("conv_0123456789abcdef", "a", "secret").unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid token: a token is 64 hexadecimal characters (got 6 characters)"
    );
}

#[tokio::test]
async fn cleanup_removes_only_expired_conversations_with_their_messages() {
    let db = TempDb::new();
    let store = db.open().await;
    let lasting = pair(&store).await;
    let mut short = NewConversation::new("orchestrator", "worker");
    short.ttl = Some(Duration::from_secs(1));
    let expiring = bridge_tests::pair_of(store.create_conversation(short).await.unwrap());
    store
        .send(&expiring.a, NewMessage::new("soon gone"))
        .await
        .unwrap();
    store
        .send(&lasting.a, NewMessage::new("stays"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let planned = store.cleanup_expired(true).await.unwrap();
    assert_eq!(planned, vec![expiring.created.id.clone()]);
    let mut raw = db.raw().await;
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM conversation").await,
        2,
        "a dry run deletes nothing"
    );

    let removed = store.cleanup_expired(false).await.unwrap();
    assert_eq!(removed, vec![expiring.created.id.clone()]);
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM conversation").await,
        1
    );
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM session").await, 2);
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM message").await, 1);
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM audit WHERE action = 'conversation_expired'"
        )
        .await,
        1
    );
    let error = store.peek(&expiring.a, 10).await.unwrap_err();
    assert!(matches!(error, Error::NoSuchConversation { .. }));
    assert_eq!(store.check(&lasting.b, 10).await.unwrap()[0].body, "stays");
    assert!(store.cleanup_expired(false).await.unwrap().is_empty());
    assert!(store.verify_audit().await.unwrap().is_intact());
    store.close().await;
}

/// What `cleanup` removes is gone from the files too, not left readable in
/// free pages: the database overwrites deleted content.
#[tokio::test]
async fn cleanup_leaves_no_trace_of_a_message_in_the_files() {
    let db = TempDb::new();
    let store = db.open().await;
    let mut short = NewConversation::new("orchestrator", "worker");
    short.ttl = Some(Duration::from_secs(1));
    let expiring = bridge_tests::pair_of(store.create_conversation(short).await.unwrap());
    let secret = "the launch code is tangerine-orbit-4471";
    store
        .send(&expiring.a, NewMessage::new(secret))
        .await
        .unwrap();
    let lasting = pair(&store).await;
    store
        .send(&lasting.a, NewMessage::new("stays"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(store.cleanup_expired(false).await.unwrap().len(), 1);
    store.close().await;

    let mut searched = 0;
    for entry in std::fs::read_dir(db.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let found = bytes
            .windows(secret.len())
            .any(|window| window == secret.as_bytes());
        assert!(!found, "{} still holds the message", path.display());
        if bytes.windows(5).any(|window| window == b"stays") {
            searched += 1;
        }
    }
    assert!(searched >= 1, "the live message is still there to be found");
}

//! Rate limits: per-session write quotas and the budget of failed
//! authentications.

use std::num::NonZeroU32;

use bridge_core::{Credentials, Error, NewMessage, Status, Store, Token};
use bridge_tests::{TempDb, pair, scalar};

#[tokio::test]
async fn writes_are_limited_per_session_with_a_retry_hint() {
    let db = TempDb::new();
    let mut options = db.options();
    options.rate_limit_per_minute = 5;
    let store = Store::open(options).await.unwrap();
    let conversation = pair(&store).await;
    for n in 0..4 {
        store
            .send(&conversation.a, NewMessage::new(format!("m{n}")))
            .await
            .unwrap();
    }
    // Status writes spend the same quota.
    store
        .set_status(&conversation.a, Status::Working)
        .await
        .unwrap();
    let error = store
        .send(&conversation.a, NewMessage::new("one too many"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::RateLimited { .. }));
    assert_eq!(error.to_string(), "rate limited (retry in 12 s)");
    let error = store.heartbeat(&conversation.a).await.unwrap_err();
    assert!(matches!(error, Error::RateLimited { .. }));

    // The partner has its own quota; reading is not limited.
    store
        .send(&conversation.b, NewMessage::new("my own quota"))
        .await
        .unwrap();
    assert_eq!(store.check(&conversation.b, 100).await.unwrap().len(), 4);
    let mut raw = db.raw().await;
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM message").await, 5);
    store.close().await;
}

#[tokio::test]
async fn zero_turns_the_limit_off() {
    let db = TempDb::new();
    let store = db.open().await; // the helper's options have rate_limit_per_minute = 0
    let conversation = pair(&store).await;
    for n in 0..700 {
        store
            .heartbeat(&conversation.a)
            .await
            .unwrap_or_else(|e| panic!("heartbeat {n}: {e}"));
    }
    store.close().await;
}

#[tokio::test]
async fn bad_tokens_spend_no_quota_and_never_lock_out_the_real_session() {
    let db = TempDb::new();
    let mut options = db.options();
    options.rate_limit_per_minute = 3;
    options.auth_failures_per_minute = NonZeroU32::new(5).unwrap();
    let store = Store::open(options).await.unwrap();
    let conversation = pair(&store).await;
    let attacker = Credentials {
        token: Token::generate().unwrap(),
        ..conversation.a.clone()
    };
    let mut invalid = 0;
    let mut limited = 0;
    for _ in 0..50 {
        match store
            .send(&attacker, NewMessage::new("spam"))
            .await
            .unwrap_err()
        {
            Error::InvalidToken { .. } => invalid += 1,
            Error::RateLimited { .. } => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        (invalid, limited),
        (5, 45),
        "5 failures reported, the rest refused as rate limited"
    );
    let mut raw = db.raw().await;
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM audit WHERE action = 'auth_failed'"
        )
        .await,
        5,
        "failures past the budget are not audited"
    );
    // The real session still has its whole quota of 3 writes.
    for n in 0..3 {
        store
            .send(&conversation.a, NewMessage::new(format!("real {n}")))
            .await
            .unwrap();
    }
    assert!(
        store
            .send(&conversation.a, NewMessage::new("fourth"))
            .await
            .is_err()
    );
    // Reads with the real token work too.
    assert_eq!(store.peek(&conversation.b, 10).await.unwrap().len(), 3);
    store.close().await;
}

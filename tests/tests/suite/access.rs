//! Keys presented at the HTTP layer: the operator's access keys (made,
//! listed, used, expired, revoked) and session tokens standing for their
//! session.

use std::time::Duration;

use bridge_core::{Error, KeyHolder, PresentedKey, SessionId};
use bridge_tests::{TempDb, pair, scalar};

fn refusal(error: Error) -> String {
    match error {
        Error::Unauthenticated { .. } | Error::Expired { .. } | Error::Invalid { .. } => {
            error.to_string()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn an_access_key_works_until_revoked_and_only_its_digest_is_stored() {
    let db = TempDb::new();
    let store = db.open().await;
    let (key, info) = store.create_access_key("orchestrator", None).await.unwrap();
    assert_eq!(info.name, "orchestrator");
    assert_eq!(info.expires_at, None);
    let shown = key.reveal();
    let presented: PresentedKey = shown.parse().unwrap();
    match store.authenticate_key(&presented).await.unwrap() {
        KeyHolder::Operator { name } => assert_eq!(name, "orchestrator"),
        other => panic!("expected the operator, got {other:?}"),
    }
    let listed = store.access_keys().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used_at.is_some(), "the use is recorded");

    // The key itself is nowhere in the database.
    store.close().await;
    assert!(!db.stores_text(&shown[5..]).await);
    let store = db.open().await;

    let again = store.create_access_key("orchestrator", None).await;
    assert_eq!(
        refusal(again.unwrap_err()),
        "invalid name: an access key named orchestrator already exists; revoke it first, or \
         choose another name"
    );
    store.revoke_access_key("orchestrator").await.unwrap();
    assert_eq!(
        refusal(store.authenticate_key(&presented).await.unwrap_err()),
        "not authenticated: the access key is not known (revoked, or never made)"
    );
    assert_eq!(
        refusal(store.revoke_access_key("orchestrator").await.unwrap_err()),
        "invalid name: no access key is named orchestrator"
    );
    assert!(store.access_keys().await.unwrap().is_empty());
    let mut raw = db.raw().await;
    let audited = scalar(
        &mut raw,
        "SELECT count(*) FROM audit WHERE action IN ('access_key_created', 'access_key_revoked')",
    )
    .await;
    assert_eq!(audited, 2);
    assert!(store.verify_audit().await.unwrap().first_bad.is_none());
}

#[tokio::test]
async fn an_expired_access_key_is_refused_and_named() {
    let db = TempDb::new();
    let store = db.open().await;
    let (key, info) = store
        .create_access_key("ci", Some(Duration::from_millis(50)))
        .await
        .unwrap();
    assert!(info.expires_at.is_some());
    tokio::time::sleep(Duration::from_millis(80)).await;
    let error = store
        .authenticate_key(&key.reveal().parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        refusal(error).starts_with("not authenticated: the access key ci expired at "),
        "the holder learns which key expired"
    );
    assert_eq!(
        refusal(
            store
                .create_access_key("ci", Some(Duration::ZERO))
                .await
                .unwrap_err()
        ),
        "invalid expires: must be longer than 0 s"
    );
}

#[tokio::test]
async fn a_session_token_stands_for_its_session_until_rotated() {
    let db = TempDb::new();
    let store = db.open().await;
    let pair = pair(&store).await;
    for (credentials, session) in [(&pair.a, SessionId::A), (&pair.b, SessionId::B)] {
        let presented = PresentedKey::Session(credentials.token.clone());
        match store.authenticate_key(&presented).await.unwrap() {
            KeyHolder::Session(found) => {
                assert_eq!(found.conversation_id, credentials.conversation_id);
                assert_eq!(found.session, session);
            }
            other => panic!("expected a session, got {other:?}"),
        }
    }
    store
        .rotate_tokens(&pair.a.conversation_id, &[SessionId::B])
        .await
        .unwrap();
    let old = PresentedKey::Session(pair.b.token.clone());
    assert_eq!(
        refusal(store.authenticate_key(&old).await.unwrap_err()),
        "not authenticated: the key is not a live session token (mistyped, rotated, or its \
         conversation was removed)"
    );
}

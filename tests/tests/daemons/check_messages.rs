//! `check-messages`.

use bridge_core::NewMessage;
use bridge_tests::daemon::run;
use bridge_tests::{TempDb, pair};

use crate::{Hub, Mode, in_both_modes};

in_both_modes! {
async fn peek_by_default_mark_read_on_request(mode: Mode) {
    let db = TempDb::new();
    let store = db.open().await;
    let hub = Hub::start(mode, &db);
    let conversation = pair(&store).await;
    let id = conversation.created.id.to_string();
    let token = conversation.b.token.reveal();
    let env = [("BRIDGE_TOKEN", token.as_str())];

    let (code, out, _) = run("check-messages", &db.path, &[&id], &hub.env(&env));
    assert_eq!((code, out.as_str()), (Some(0), "No new messages\n"));

    let mut message = NewMessage::new("please review");
    message.files_involved = vec!["src/lib.rs".into()];
    let first = store.send(&conversation.a, message).await.unwrap();
    let second = store
        .send(&conversation.a, NewMessage::new("and the tests"))
        .await
        .unwrap();

    for _ in 0..2 {
        let (code, out, _) = run("check-messages", &db.path, &[&id], &hub.env(&env));
        assert_eq!(code, Some(0));
        assert!(
            out.starts_with(&format!("#{} from a (info) at ", first.id)),
            "{out}"
        );
        assert!(out.contains("please review\nFiles: src/lib.rs\n"), "{out}");
        assert!(out.contains("and the tests"), "{out}");
    }
    let summary = store.inbox_summary(&conversation.b).await.unwrap();
    assert_eq!(
        (summary.unread, summary.delivered_id),
        (2, 0),
        "peeking left the cursor"
    );

    let (code, out, _) = run(
        "check-messages",
        &db.path,
        &[&id, "--json", "--mark-read"],
        &hub.env(&env),
    );
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ids: Vec<i64> = json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![first.id, second.id]);
    assert_eq!(json["messages"][0]["body"], "please review");
    assert_eq!(
        store
            .inbox_summary(&conversation.b)
            .await
            .unwrap()
            .delivered_id,
        second.id
    );
    let (_, out, _) = run("check-messages", &db.path, &[&id], &hub.env(&env));
    assert_eq!(out, "No new messages\n");
    assert!(
        store.check(&conversation.b, 10).await.unwrap().is_empty(),
        "consumed for the agent too"
    );
    store.close().await;
}
}

#[tokio::test]
async fn a_missing_database_is_refused_and_not_made() {
    let db = TempDb::new();
    let (code, _, stderr) = run(
        "check-messages",
        &db.path,
        &["conv_0123456789abcdef", &"ab".repeat(32)],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains(&db.missing_error()), "{stderr}");
    assert!(!db.exists(), "check-messages never creates a database");
}

in_both_modes! {
async fn the_other_sessions_token_is_refused(mode: Mode) {
    let db = TempDb::new();
    let store = db.open().await;
    let hub = Hub::start(mode, &db);
    let conversation = pair(&store).await;
    let token_a = conversation.a.token.reveal();
    let (code, _, stderr) = run(
        "check-messages",
        &db.path,
        &[conversation.created.id.as_str()],
        &hub.env(&[("BRIDGE_TOKEN", &token_a)]),
    );
    assert_eq!(code, Some(77), "the token of session a is not session b's");
    let said = match mode {
        Mode::Db => "invalid token for session b",
        Mode::Https => "not allowed: this request's key is the token of session a",
    };
    assert!(stderr.contains(said), "{stderr}");
    assert!(!stderr.contains(&token_a));
    let (code, out, _) = run(
        "check-messages",
        &db.path,
        &[conversation.created.id.as_str(), "--session", "a"],
        &hub.env(&[("BRIDGE_TOKEN", &token_a)]),
    );
    assert_eq!((code, out.as_str()), (Some(0), "No new messages\n"));
    store.close().await;
}
}

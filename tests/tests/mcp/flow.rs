//! Two agents, each with its own `bridge-mcp` over stdio on one database.

use std::time::Duration;

use bridge_tests::TempDb;
use bridge_tests::mcp::{Agent, caller};
use serde_json::{Value, json};

/// A conversation created by `orchestrator`; returns (id, token a, token b).
async fn create(orchestrator: &Agent, more: Value) -> (String, String, String) {
    let mut arguments = json!({"my_role": "orchestrator", "partner_role": "reviewer"});
    if let (Value::Object(arguments), Value::Object(more)) = (&mut arguments, more) {
        arguments.extend(more);
    }
    orchestrator.create(arguments).await
}

#[tokio::test]
async fn two_agents_over_stdio_full_flow() {
    let db = TempDb::new();
    let orchestrator = Agent::stdio(&db.path, &[]).await;
    let worker = Agent::stdio(&db.path, &[]).await;

    let reply = orchestrator
        .call(
            "create_conversation",
            json!({"my_role": "orchestrator", "partner_role": "reviewer", "team": "alpha"}),
        )
        .await;
    let created = reply.structured();
    let id = created["conversation_id"].as_str().unwrap().to_owned();
    let token_a = created["session_a_token"].as_str().unwrap().to_owned();
    let token_b = created["session_b_token"].as_str().unwrap().to_owned();
    assert_eq!(created["team"], "alpha");
    let text = reply.text();
    assert!(
        text.contains(&format!("Keep your token secret: {token_a}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("session_id b, token {token_b}")),
        "{text}"
    );
    let a = |more| caller(&id, "a", &token_a, more);
    let b = |more| caller(&id, "b", &token_b, more);

    let status = orchestrator.ok("check_partner_status", a(json!({}))).await;
    assert_eq!(status["status"], "unknown");
    assert_eq!(status["alive"], false);
    worker
        .ok("update_my_status", b(json!({"status": "working"})))
        .await;
    let status = orchestrator.ok("check_partner_status", a(json!({}))).await;
    assert_eq!(status["status"], "working");
    assert_eq!(status["role"], "reviewer");
    assert_eq!(status["alive"], true);

    let sent = orchestrator
        .ok(
            "send_to_partner",
            a(json!({
                "message": "Review src/lib.rs; the key is AKIAIOSFODNN7EXAMPLE",
                "action_type": "question",
                "files_involved": ["src/lib.rs"],
            })),
        )
        .await;
    assert_eq!(sent["redacted"], true);
    assert_eq!(sent["redactions"], json!(["aws_access_key"]));

    let peeked = worker.ok("check_messages", b(json!({"peek": true}))).await;
    assert_eq!(peeked["messages"].as_array().unwrap().len(), 1);
    let received = worker.call("check_messages", b(json!({}))).await;
    let messages = received.structured()["messages"].clone();
    assert_eq!(messages.as_array().unwrap().len(), 1);
    let message = &messages[0];
    assert_eq!(message["id"], sent["message_id"]);
    assert_eq!(message["from"], "a");
    assert_eq!(
        message["message"],
        "Review src/lib.rs; the key is [REDACTED:aws_access_key]"
    );
    assert_eq!(message["action_type"], "question");
    assert_eq!(message["files_involved"], json!(["src/lib.rs"]));
    assert!(received.text().contains("[REDACTED:aws_access_key]"));
    assert!(!received.text().contains("AKIAIOSFODNN7EXAMPLE"));
    let again = worker.call("check_messages", b(json!({}))).await;
    assert_eq!(again.text(), "No new messages.");

    worker
        .ok(
            "send_to_partner",
            b(json!({"message": "Done: two nits.", "action_type": "complete"})),
        )
        .await;
    let waited = orchestrator
        .ok("wait_for_messages", a(json!({"timeout_seconds": 5})))
        .await;
    assert_eq!(waited["timed_out"], false);
    assert_eq!(waited["messages"][0]["message"], "Done: two nits.");

    let history = worker.ok("read_history", b(json!({}))).await;
    let bodies: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["message"].as_str().unwrap())
        .collect();
    assert_eq!(bodies.len(), 2, "both directions");
    assert_eq!(bodies[1], "Done: two nits.");
    orchestrator.stop().await;
    worker.stop().await;
}

#[tokio::test]
async fn wrong_token_expired_conversation_and_oversized_message_are_refused() {
    let db = TempDb::new();
    let agent = Agent::stdio(&db.path, &[]).await;
    let (id, token_a, token_b) = create(&agent, json!({})).await;

    let text = agent
        .refused(
            "send_to_partner",
            caller(&id, "a", &token_b, json!({"message": "hi"})),
        )
        .await;
    assert_eq!(
        text,
        format!("invalid token for session a of conversation {id}")
    );
    assert!(!text.contains(&token_b) && !text.contains(&token_a));

    let text = agent
        .refused(
            "send_to_partner",
            caller(&id, "a", &token_a, json!({"message": "x".repeat(50_001)})),
        )
        .await;
    assert_eq!(
        text,
        "invalid message: must be at most 50000 characters, got 50001"
    );
    let too_many: Vec<String> = (0..21).map(|n| format!("f{n}")).collect();
    let text = agent
        .refused(
            "send_to_partner",
            caller(
                &id,
                "a",
                &token_a,
                json!({"message": "m", "files_involved": too_many}),
            ),
        )
        .await;
    assert_eq!(text, "invalid files_involved: at most 20 paths, got 21");
    let text = agent
        .refused(
            "wait_for_messages",
            caller(&id, "a", &token_a, json!({"timeout_seconds": 301})),
        )
        .await;
    assert_eq!(text, "invalid timeout_seconds: must be 1 to 300, got 301");
    let text = agent
        .refused(
            "read_history",
            caller(&id, "a", &token_a, json!({"limit": 201})),
        )
        .await;
    assert_eq!(text, "invalid limit: must be 1 to 200, got 201");

    let (short, short_a, _) = create(&agent, json!({"ttl_seconds": 1})).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let text = agent
        .refused("check_messages", caller(&short, "a", &short_a, json!({})))
        .await;
    assert!(
        text.starts_with(&format!("expired conversation: {short} expired at ")),
        "{text}"
    );

    let text = agent
        .refused(
            "check_partner_status",
            caller("conv_0000000000000000", "a", &token_a, json!({})),
        )
        .await;
    assert_eq!(text, "no such conversation: conv_0000000000000000");
    agent.stop().await;
}

#[tokio::test]
async fn wait_for_messages_is_woken_by_a_send_from_another_process() {
    let db = TempDb::new();
    let orchestrator = Agent::stdio(&db.path, &[]).await;
    let worker = Agent::stdio(&db.path, &[]).await;
    let (id, token_a, token_b) = create(&orchestrator, json!({})).await;

    let waiting = {
        let arguments = caller(&id, "b", &token_b, json!({"timeout_seconds": 60}));
        async move {
            let waited = worker.ok("wait_for_messages", arguments).await;
            (worker, waited)
        }
    };
    let sending = async {
        // Give the waiter time to find nothing and wait.
        tokio::time::sleep(Duration::from_millis(300)).await;
        orchestrator
            .ok(
                "send_to_partner",
                caller(&id, "a", &token_a, json!({"message": "wake up"})),
            )
            .await
    };
    let ((worker, waited), sent) = tokio::join!(waiting, sending);
    assert_eq!(waited["timed_out"], false);
    assert_eq!(waited["messages"][0]["id"], sent["message_id"]);
    assert_eq!(waited["messages"][0]["message"], "wake up");

    // Nothing more: the wait times out empty.
    let waited = worker
        .ok(
            "wait_for_messages",
            caller(&id, "b", &token_b, json!({"timeout_seconds": 1})),
        )
        .await;
    assert_eq!(waited["timed_out"], true);
    assert_eq!(waited["messages"], json!([]));
    orchestrator.stop().await;
    worker.stop().await;
}

//! The task tools between an orchestrator and a worker, each with its own
//! `bridge-mcp` over stdio on one database.

use bridge_tests::TempDb;
use bridge_tests::mcp::{Agent, caller};
use serde_json::json;

#[tokio::test]
async fn an_orchestrator_assigns_and_a_worker_reports_through_the_tools() {
    let db = TempDb::new();
    let orchestrator = Agent::stdio(&db.path, &[]).await;
    let worker = Agent::stdio(&db.path, &[]).await;
    let created = orchestrator
        .ok(
            "create_conversation",
            json!({"my_role": "orchestrator", "partner_role": "worker", "team": "core"}),
        )
        .await;
    let other = orchestrator
        .ok(
            "create_conversation",
            json!({"my_role": "orchestrator", "partner_role": "another worker"}),
        )
        .await;
    let field = |value: &serde_json::Value, key: &str| value[key].as_str().unwrap().to_owned();
    let id = field(&created, "conversation_id");
    let (token_a, token_b) = (
        field(&created, "session_a_token"),
        field(&created, "session_b_token"),
    );
    let a = |more| caller(&id, "a", &token_a, more);
    let b = |more| caller(&id, "b", &token_b, more);
    let stranger = |more| {
        caller(
            other["conversation_id"].as_str().unwrap(),
            "b",
            other["session_b_token"].as_str().unwrap(),
            more,
        )
    };

    let assigned = orchestrator
        .call(
            "assign_task",
            a(json!({"title": "Fix the parser", "body": "Handle CRLF line endings."})),
        )
        .await;
    let task = assigned.structured();
    let task_id = task["id"].as_i64().unwrap();
    assert_eq!(task["state"], "open");
    assert_eq!(task["attempts"], 1);
    assert!(
        assigned
            .text()
            .starts_with(&format!("Task #{task_id} assigned to session b"))
    );

    let told = worker.ok("check_messages", b(json!({}))).await;
    let message = &told["messages"][0];
    assert_eq!(message["from"], "system");
    assert_eq!(message["action_type"], "info");
    assert_eq!(message["metadata"]["task_id"], task_id);
    assert!(
        message["message"]
            .as_str()
            .unwrap()
            .contains("Handle CRLF line endings.")
    );

    let listed = worker.call("list_tasks", b(json!({"state": "open"}))).await;
    assert_eq!(listed.structured()["tasks"][0]["id"], task_id);
    assert!(
        listed
            .text()
            .contains(&format!("#{task_id} [open] Fix the parser")),
        "{}",
        listed.text()
    );

    let refusal = worker
        .refused("assign_task", b(json!({"title": "t", "body": "b"})))
        .await;
    assert_eq!(
        refusal,
        "not allowed: only session a (the orchestrator) assigns tasks"
    );
    let refusal = orchestrator
        .refused(
            "update_task",
            stranger(json!({"task_id": task_id, "state": "done"})),
        )
        .await;
    assert_eq!(
        refusal,
        format!(
            "no such task in conversation {}: #{task_id}",
            other["conversation_id"].as_str().unwrap()
        )
    );
    let refusal = worker
        .refused(
            "update_task",
            b(json!({"task_id": task_id, "state": "started"})),
        )
        .await;
    assert_eq!(
        refusal,
        "invalid state: expected one of open, in_progress, done, failed, cancelled, got the text \"started\""
    );
    let refusal = orchestrator
        .refused(
            "assign_task",
            a(json!({"title": "x".repeat(201), "body": "b"})),
        )
        .await;
    assert_eq!(
        refusal,
        "invalid title: must be 1 to 200 characters, got 201"
    );

    worker
        .ok(
            "update_task",
            b(json!({"task_id": task_id, "state": "in_progress"})),
        )
        .await;
    let done = worker
        .call(
            "update_task",
            b(json!({"task_id": task_id, "state": "done", "note": "CRLF handled"})),
        )
        .await;
    assert_eq!(done.structured()["state"], "done");
    assert_eq!(done.structured()["note"], "CRLF handled");
    assert_eq!(
        done.text(),
        format!("Task #{task_id} is now done; your partner is told in a message.")
    );
    let told = orchestrator.ok("check_messages", a(json!({}))).await;
    let bodies: Vec<&str> = told["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(bodies.len(), 2);
    assert!(bodies[0].contains("is now in_progress"));
    assert!(bodies[1].contains("is now done: CRLF handled"));
    let refusal = orchestrator
        .refused(
            "update_task",
            a(json!({"task_id": task_id, "state": "cancelled"})),
        )
        .await;
    assert!(refusal.starts_with(&format!("not allowed: task #{task_id} is done;")));

    orchestrator.stop().await;
    worker.stop().await;
}

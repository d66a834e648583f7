//! The command-execution tools over MCP: gate 1 (`YOLO_MODE=1`), the
//! operator's switch, dry runs, approval tokens, the partner told.

use std::time::Duration;

use bridge_tests::mcp::{Agent, caller};
use bridge_tests::{TempDb, pair};
use serde_json::{Value, json};

const YOLO: [(&str, &str); 1] = [("YOLO_MODE", "1")];

fn names(tools: &[rmcp::model::Tool]) -> Vec<String> {
    tools.iter().map(|tool| tool.name.to_string()).collect()
}

#[tokio::test]
async fn without_yolo_mode_the_tools_do_not_exist() {
    let db = TempDb::new();
    for env in [
        &[][..],
        &[("YOLO_MODE", "0")][..],
        &[("YOLO_MODE", "yes")][..],
    ] {
        let agent = Agent::stdio(&db.path, env).await;
        let listed = names(&agent.tools().await);
        assert_eq!(listed.len(), 10, "{listed:?}");
        assert!(
            !listed
                .iter()
                .any(|name| name.contains("yolo") || name == "execute_command")
        );
        let error = agent
            .try_call("execute_command", json!({"command": "ls"}))
            .await
            .err()
            .expect("an unknown tool is a protocol error");
        assert!(error.contains("tool not found"), "{error}");
        agent.stop().await;
    }
    let agent = Agent::stdio(&db.path, &YOLO).await;
    let listed = names(&agent.tools().await);
    assert_eq!(listed.len(), 12);
    assert!(listed.contains(&"enable_yolo_mode".to_owned()));
    assert!(listed.contains(&"execute_command".to_owned()));
    agent.stop().await;
}

#[tokio::test]
async fn a_command_runs_only_when_enabled_configured_and_approved() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let other = pair(&store).await;
    let id = conversation.created.id.to_string();
    let b = |more: Value| caller(&id, "b", &conversation.b.token.reveal(), more);
    let workspace = tempfile::tempdir().unwrap();
    let workspace_path = workspace.path().to_str().unwrap().to_owned();
    let agent = Agent::stdio(&db.path, &YOLO).await;

    // Gates 2 and 3 not passed: the operator has not enabled it.
    let refused = agent
        .refused(
            "enable_yolo_mode",
            b(json!({"mode": "safe", "workspace": workspace_path})),
        )
        .await;
    assert!(
        refused.starts_with("not allowed: command execution is not enabled"),
        "{refused}"
    );
    store.enable_yolo(&conversation.created.id).await.unwrap();
    let set = agent
        .ok(
            "enable_yolo_mode",
            b(json!({"mode": "safe", "workspace": workspace_path, "timeout": 10})),
        )
        .await;
    assert_eq!(
        set,
        json!({"mode": "safe", "workspace": workspace_path, "timeout_seconds": 10})
    );

    // Gate 4: without an approval token, a dry run.
    let dry = agent
        .ok("execute_command", b(json!({"command": "ls ; touch pwned"})))
        .await;
    assert_eq!(dry["ran"], false);
    assert_eq!(dry["not_run_because"], "no approval token");
    assert!(dry["would_run"].as_str().unwrap().contains("ls"), "{dry}");

    // A blocked pattern, or a program outside the mode's list, is refused.
    let blocked = agent
        .refused("execute_command", b(json!({"command": "sudo ls"})))
        .await;
    assert!(blocked.starts_with("blocked: "), "{blocked}");
    let blocked = agent
        .refused("execute_command", b(json!({"command": "ls; touch pwned"})))
        .await;
    assert_eq!(
        blocked,
        "blocked: `ls;` is not an allowed program in safe mode"
    );

    // Approved: it runs, without a shell, and the partner is told.
    let (approval, _) = store
        .issue_approval(Duration::from_secs(300), None)
        .await
        .unwrap();
    let ran = agent
        .ok(
            "execute_command",
            b(json!({"command": "ls ; touch pwned", "approval_token": approval.reveal()})),
        )
        .await;
    assert_eq!(ran["ran"], true, "{ran}");
    assert_ne!(ran["exit_code"], 0, "ls finds no file named `;`: {ran}");
    assert!(
        !workspace.path().join("pwned").exists(),
        "no second command ran"
    );
    let told = store.check(&conversation.a, 10).await.unwrap();
    assert_eq!(told.len(), 1);
    assert!(
        told[0]
            .body
            .starts_with("Command run by session b (mode safe):"),
        "{}",
        told[0].body
    );
    assert_eq!(Some(told[0].id), ran["message_id"].as_i64());

    // Output is redacted before the caller, the partner or the trail see it.
    let (second, _) = store
        .issue_approval(Duration::from_secs(300), None)
        .await
        .unwrap();
    let echoed = agent
        .ok(
            "execute_command",
            b(json!({"command": "echo password=hunter2hunter2", "approval_token": second.reveal()})),
        )
        .await;
    assert_eq!(echoed["exit_code"], 0, "{echoed}");
    assert_eq!(echoed["stdout"], "password=[REDACTED:password]\n");
    let told = store.check(&conversation.a, 10).await.unwrap();
    assert!(
        told[0].body.contains("password=[REDACTED:password]"),
        "{}",
        told[0].body
    );
    assert!(!told[0].body.contains("hunter2"), "{}", told[0].body);

    // Used once: the same token gives a dry run.
    let again = agent
        .ok(
            "execute_command",
            b(json!({"command": "pwd", "approval_token": approval.reveal()})),
        )
        .await;
    assert_eq!(again["ran"], false);
    assert_eq!(
        again["not_run_because"],
        "the approval token was already used"
    );

    // A token bound to another conversation: a dry run.
    let (theirs, _) = store
        .issue_approval(Duration::from_secs(300), Some(&other.created.id))
        .await
        .unwrap();
    let elsewhere = agent
        .ok(
            "execute_command",
            b(json!({"command": "pwd", "approval_token": theirs.reveal()})),
        )
        .await;
    assert_eq!(
        elsewhere["not_run_because"],
        "the approval token belongs to another conversation"
    );

    // A wrong session token is refused like everywhere.
    let wrong = agent
        .refused(
            "execute_command",
            caller(&id, "b", &"0".repeat(64), json!({"command": "pwd"})),
        )
        .await;
    assert!(wrong.starts_with("invalid token"), "{wrong}");

    let mut raw = db.raw().await;
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit WHERE action LIKE 'command_%' ORDER BY id")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    assert_eq!(
        actions,
        [
            "command_blocked",
            "command_blocked",
            "command_started",
            "command_completed",
            "command_started",
            "command_completed",
        ]
    );
    let details: Vec<String> = sqlx::query_scalar("SELECT detail FROM audit")
        .fetch_all(&mut raw)
        .await
        .unwrap();
    assert!(!details.iter().any(|detail| detail.contains("hunter2")));
    assert!(store.verify_audit().await.unwrap().is_intact());
    agent.stop().await;
    store.close().await;
}

/// A workspace gone since it was chosen: nothing runs, the caller and the
/// partner are told why, and the spent token is not given back.
#[tokio::test]
async fn a_workspace_removed_since_is_reported_not_run() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let id = conversation.created.id.to_string();
    let b = |more: Value| caller(&id, "b", &conversation.b.token.reveal(), more);
    let workspace = tempfile::tempdir().unwrap();
    let workspace_path = workspace.path().to_str().unwrap().to_owned();
    store.enable_yolo(&conversation.created.id).await.unwrap();
    let agent = Agent::stdio(&db.path, &YOLO).await;
    agent
        .ok(
            "enable_yolo_mode",
            b(json!({"mode": "safe", "workspace": workspace_path})),
        )
        .await;
    drop(workspace);
    let (approval, _) = store
        .issue_approval(Duration::from_secs(300), None)
        .await
        .unwrap();
    let reply = agent
        .call(
            "execute_command",
            b(json!({"command": "pwd", "approval_token": approval.reveal()})),
        )
        .await;
    let result = reply.structured();
    assert_eq!(result["ran"], false);
    assert_eq!(
        result["error"],
        format!("the workspace {workspace_path} does not exist or cannot be reached")
    );
    assert!(
        reply
            .text()
            .starts_with("Not run (the approval token is spent): ")
    );
    let told = store.check(&conversation.a, 10).await.unwrap();
    assert!(
        told[0].body.contains("could not run: the workspace"),
        "{}",
        told[0].body
    );
    assert!(store.approvals().await.unwrap().is_empty());
    agent.stop().await;
    store.close().await;
}

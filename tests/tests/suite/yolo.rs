//! Command execution's gates in the store: the operator's switch, the
//! agent's settings, single-use approval tokens, the record of a command.

use std::time::Duration;

use bridge_core::{Error, Finished, NewConversation, Timestamp, Token, YoloSettings};
use bridge_tests::{TempDb, pair, scalar};

fn not_allowed(error: Error) -> String {
    match error {
        Error::NotAllowed { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Settings for a conversation not (yet) configured.
fn unconfigured(id: &bridge_core::ConversationId) -> YoloSettings {
    YoloSettings {
        conversation_id: id.clone(),
        enabled_at: Timestamp::from_millis(0),
        mode: None,
        workspace: None,
        timeout_ms: None,
        configured_by: None,
    }
}

fn finished() -> Finished {
    Finished {
        exit_code: Some(0),
        timed_out: false,
        duration_ms: 12,
        stdout_bytes: 3,
        stderr_bytes: 0,
        snapshot: None,
    }
}

#[tokio::test]
async fn nothing_runs_until_the_operator_enables_and_an_agent_configures() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let id = &conversation.created.id;
    let workspace_dir = tempfile::tempdir().unwrap();
    let workspace = workspace_dir.path();

    let refused = store
        .configure_yolo(&conversation.b, "safe", workspace, None)
        .await
        .unwrap_err();
    assert_eq!(
        not_allowed(refused),
        format!(
            "command execution is not enabled for conversation {id}; \
             the operator enables it with `bridgectl yolo enable {id}`"
        )
    );
    let (token, approval) = store
        .issue_approval(Duration::from_secs(300), None)
        .await
        .unwrap();
    assert_eq!(approval.preview, token.reveal()[..8]);
    let refused = store
        .begin_command(&conversation.b, &unconfigured(id), &token, "ls")
        .await
        .unwrap_err();
    assert!(not_allowed(refused).starts_with("command execution is not enabled"));

    let enabled = store.enable_yolo(id).await.unwrap();
    assert_eq!(enabled.mode, None);
    // Enabled, not configured: still nothing runs, and the token is kept.
    let refused = store
        .begin_command(&conversation.b, &unconfigured(id), &token, "ls")
        .await
        .unwrap_err();
    assert_eq!(
        not_allowed(refused),
        "command execution is not configured: call enable_yolo_mode first"
    );
    let settings = store
        .configure_yolo(
            &conversation.b,
            "restricted",
            workspace,
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert_eq!(settings.mode.as_deref(), Some("restricted"));
    assert_eq!(settings.timeout_ms, Some(5_000));
    assert_eq!(
        store.yolo_settings(&conversation.a).await.unwrap(),
        settings
    );
    // Enabling again keeps the settings.
    assert_eq!(
        store.enable_yolo(id).await.unwrap().mode.as_deref(),
        Some("restricted")
    );

    // Settings changed since the command was checked: refused, token kept.
    let stale = store
        .begin_command(&conversation.b, &unconfigured(id), &token, "git status")
        .await
        .unwrap_err();
    assert_eq!(
        not_allowed(stale),
        "the execution settings changed while the command was checked; call again"
    );
    let started = store
        .begin_command(&conversation.b, &settings, &token, "git status")
        .await
        .unwrap();
    assert_eq!(started.mode, "restricted");
    let message_id = store
        .finish_command(&conversation.b, &started, &finished(), "git status: exit 0")
        .await
        .unwrap();
    // The partner is told, by the system.
    let told = store.check(&conversation.a, 10).await.unwrap();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].id, message_id);
    assert_eq!(told[0].body, "git status: exit 0");

    // The token worked once.
    let reused = store
        .begin_command(&conversation.b, &settings, &token, "git status")
        .await
        .unwrap_err();
    assert_eq!(not_allowed(reused), "the approval token was already used");

    let mut raw = db.raw().await;
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit ORDER BY id")
        .fetch_all(&mut raw)
        .await
        .unwrap();
    let yolo: Vec<&str> = actions
        .iter()
        .map(String::as_str)
        .filter(|action| !matches!(*action, "conversation_created" | "messages_read"))
        .collect();
    assert_eq!(
        yolo,
        [
            "approval_issued",
            "yolo_enabled",
            "yolo_configured",
            "command_started",
            "command_completed"
        ]
    );
    let detail: String =
        sqlx::query_scalar("SELECT detail FROM audit WHERE action = 'command_completed'")
            .fetch_one(&mut raw)
            .await
            .unwrap();
    assert!(detail.contains("\"command\":\"git status\""), "{detail}");
    assert!(store.verify_audit().await.unwrap().is_intact());
    store.close().await;
}

#[tokio::test]
async fn an_approval_token_works_once_in_time_and_in_its_own_conversation() {
    let db = TempDb::new();
    let store = db.open().await;
    let ours = pair(&store).await;
    let theirs = pair(&store).await;
    let workspace = tempfile::tempdir().unwrap();
    for conversation in [&ours, &theirs] {
        store.enable_yolo(&conversation.created.id).await.unwrap();
        store
            .configure_yolo(&conversation.b, "safe", workspace.path(), None)
            .await
            .unwrap();
    }
    let refusal = |error| not_allowed(error);
    let ours_settings = store.yolo_settings(&ours.b).await.unwrap();
    let theirs_settings = store.yolo_settings(&theirs.b).await.unwrap();

    let unknown = Token::generate().unwrap();
    let error = store
        .begin_command(&ours.b, &ours_settings, &unknown, "ls")
        .await
        .unwrap_err();
    assert_eq!(refusal(error), "the approval token is not known");

    let (bound, listed) = store
        .issue_approval(Duration::from_secs(60), Some(&theirs.created.id))
        .await
        .unwrap();
    assert_eq!(listed.conversation_id.as_ref(), Some(&theirs.created.id));
    let error = store
        .begin_command(&ours.b, &ours_settings, &bound, "ls")
        .await
        .unwrap_err();
    assert_eq!(
        refusal(error),
        "the approval token belongs to another conversation"
    );
    // Refused, it is still good where it belongs.
    store
        .begin_command(&theirs.b, &theirs_settings, &bound, "ls")
        .await
        .unwrap();

    let (short, _) = store
        .issue_approval(Duration::from_secs(1), None)
        .await
        .unwrap();
    let (spare, _) = store
        .issue_approval(Duration::from_secs(60), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let error = store
        .begin_command(&ours.b, &ours_settings, &short, "ls")
        .await
        .unwrap_err();
    assert_eq!(refusal(error), "the approval token has expired");

    // Listings show the usable ones only, by preview; cleanup removes the
    // used and the expired.
    let active = store.approvals().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].preview, spare.reveal()[..8]);
    assert_eq!(store.cleanup_approvals().await.unwrap(), 2);
    assert_eq!(store.cleanup_approvals().await.unwrap(), 0);
    let mut raw = db.raw().await;
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM approval").await, 1);

    // Only digests are stored.
    for token in [&bound, &short, &spare] {
        assert!(!db.stores_text(&token.reveal()).await);
    }
    assert!(store.verify_audit().await.unwrap().is_intact());
    store.close().await;
}

#[tokio::test]
async fn settings_are_checked_and_disabling_or_cleanup_removes_them() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let id = &conversation.created.id;
    store.enable_yolo(id).await.unwrap();
    let invalid = |error: Error| error.to_string();
    let error = store
        .configure_yolo(&conversation.b, "reckless", db.dir.path(), None)
        .await
        .unwrap_err();
    assert_eq!(
        invalid(error),
        "invalid mode: must be one of safe, restricted, yolo, got \"reckless\""
    );
    let missing = db.dir.path().join("missing");
    let error = store
        .configure_yolo(&conversation.b, "safe", &missing, None)
        .await
        .unwrap_err();
    assert_eq!(
        invalid(error),
        format!(
            "invalid workspace: {} is not an existing directory given by its absolute path",
            missing.display()
        )
    );
    let error = store
        .configure_yolo(
            &conversation.b,
            "safe",
            db.dir.path(),
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap_err();
    assert_eq!(
        invalid(error),
        "invalid timeout: must be between 1 and 600 seconds"
    );
    let error = store
        .issue_approval(Duration::ZERO, None)
        .await
        .unwrap_err();
    assert_eq!(invalid(error), "invalid ttl: must be between 1 s and 24 h");
    let mut refused = vec![(
        std::path::PathBuf::from("/"),
        "is the root directory".to_owned(),
    )];
    // A PostgreSQL store has no file for commands to rewrite.
    if !db.is_postgres() {
        refused.push((
            db.dir.path().to_path_buf(),
            format!(
                "holds {}: commands could rewrite the bridge's own files",
                db.path.canonicalize().unwrap().display()
            ),
        ));
    }
    for (workspace, why) in refused {
        let error = store
            .configure_yolo(&conversation.b, "yolo", &workspace, None)
            .await
            .unwrap_err();
        assert_eq!(
            invalid(error),
            format!("invalid workspace: {} {why}", workspace.display())
        );
    }
    let mut wrong = conversation.b.clone();
    wrong.token = Token::generate().unwrap();
    assert!(matches!(
        store.yolo_settings(&wrong).await.unwrap_err(),
        Error::InvalidToken { .. }
    ));

    assert!(store.disable_yolo(id).await.unwrap());
    assert!(!store.disable_yolo(id).await.unwrap());
    assert!(store.yolo_settings(&conversation.b).await.is_err());

    // A conversation removed by cleanup takes its settings and tokens along.
    let mut short = NewConversation::new("orchestrator", "worker");
    short.ttl = Some(Duration::from_secs(1));
    let expiring = store.create_conversation(short).await.unwrap();
    store.enable_yolo(&expiring.id).await.unwrap();
    store
        .issue_approval(Duration::from_secs(60), Some(&expiring.id))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(matches!(
        store.enable_yolo(&expiring.id).await.unwrap_err(),
        Error::Expired { .. }
    ));
    store.cleanup_expired(false).await.unwrap();
    let mut raw = db.raw().await;
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM yolo").await, 0);
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM approval").await, 0);
    assert!(store.verify_audit().await.unwrap().is_intact());
    store.close().await;
}

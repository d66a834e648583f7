//! No token anywhere it could leak: not in the database files, not in any
//! log line at any level (sqlx's included), not in `Debug` output. A test
//! binary of its own, because it captures every log line of the process.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bridge_core::{Credentials, NewMessage, Status, Token};
use bridge_tests::{TempDb, pair};
use tracing_subscriber::fmt::MakeWriter;

/// Every log line of the process, as written.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Asserts that none of `tokens` occurs in `haystack`, as lower- or
/// upper-case hex or as raw bytes.
fn assert_absent(what: &str, haystack: &[u8], tokens: &[&Token]) {
    let text = String::from_utf8_lossy(haystack).to_lowercase();
    for token in tokens {
        let hex = token.reveal();
        assert!(!text.contains(&hex), "{what} contains a token in hex");
        let raw: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert!(
            !haystack.windows(32).any(|window| window == raw.as_slice()),
            "{what} contains a token's raw bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_never_stored_or_logged() {
    let logs = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .try_init()
        .unwrap();

    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let wrong = Credentials {
        token: Token::generate().unwrap(),
        ..conversation.b.clone()
    };
    // Careless logging of everything that carries a token.
    tracing::info!(created = ?conversation.created, a = ?conversation.a, b = ?conversation.b, "debug output");

    store
        .send(&conversation.a, NewMessage::new("hello"))
        .await
        .unwrap();
    store.check(&conversation.b, 10).await.unwrap();
    store.peek(&conversation.a, 10).await.unwrap();
    store.history(&conversation.b, None, 10).await.unwrap();
    store
        .set_status(&conversation.b, Status::Working)
        .await
        .unwrap();
    store.heartbeat(&conversation.a).await.unwrap();
    store.partner_status(&conversation.a).await.unwrap();
    let error = store
        .send(&wrong, NewMessage::new("intruder"))
        .await
        .unwrap_err();
    let error_text = error.to_string();
    assert!(store.verify_audit().await.unwrap().is_intact());
    store.close().await;

    let tokens = [
        &conversation.created.token_a,
        &conversation.created.token_b,
        &wrong.token,
    ];
    assert_absent("an error message", error_text.as_bytes(), &tokens);
    let mut files = 0;
    for entry in std::fs::read_dir(db.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        assert_absent(
            &path.display().to_string(),
            &std::fs::read(&path).unwrap(),
            &tokens,
        );
        files += 1;
    }
    assert!(files >= 2, "the database and the key file were searched");

    let logs = logs.0.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&logs);
    // The capture works: the store's and sqlx's lines are there.
    assert!(text.contains("conversation created"), "store logs captured");
    assert!(text.contains(conversation.created.id.as_str()));
    assert!(text.contains("authentication failed"));
    assert!(
        text.to_lowercase().contains("insert into"),
        "sqlx statement logs captured"
    );
    assert!(text.contains("Token(<hidden>)"));
    assert_absent("the logs", &logs, &tokens);
}

/// `bridge-mcp` at the most verbose level the environment can ask for logs
/// no token: not the tokens `create_conversation` answers with, nor the ones
/// agents send with every call (`rmcp` would log both, in its requests and
/// responses at debug level).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_mcp_at_trace_level_logs_no_token() {
    use bridge_tests::mcp::{Agent, caller};
    use serde_json::json;
    use tokio::io::AsyncReadExt;

    let db = TempDb::new();
    let (agent, mut stderr) = Agent::stdio_logged(&db.path, &[("RUST_LOG", "trace")]).await;
    let created = agent
        .ok(
            "create_conversation",
            json!({"my_role": "orchestrator", "partner_role": "worker"}),
        )
        .await;
    let id = created["conversation_id"].as_str().unwrap().to_owned();
    let token_a: Token = created["session_a_token"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let token_b: Token = created["session_b_token"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    agent
        .ok(
            "send_to_partner",
            caller(&id, "a", &token_a.reveal(), json!({"message": "hello"})),
        )
        .await;
    agent
        .ok(
            "check_messages",
            caller(&id, "b", &token_b.reveal(), json!({})),
        )
        .await;
    agent.stop().await;
    let mut logs = Vec::new();
    stderr.read_to_end(&mut logs).await.unwrap();

    let text = String::from_utf8_lossy(&logs);
    // The level is really trace: our crates' and sqlx's detail is there.
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "{text}");
    assert!(text.to_lowercase().contains("insert into"), "{text}");
    assert!(text.contains(&id), "{text}");
    assert_absent("bridge-mcp's log", &logs, &[&token_a, &token_b]);
}

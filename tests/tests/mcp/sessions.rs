//! Bounded HTTP sessions: a cap on live sessions (`--max-sessions`), an idle
//! expiry (`--session-idle`) that never ends a session with a request in
//! flight, and places freed by `DELETE` or expiry.

use std::time::{Duration, Instant};

use bridge_tests::http::{Connection, Session};
use bridge_tests::mcp::HttpServer;
use bridge_tests::{TempDb, pair};
use serde_json::json;

/// `initialize` on a new connection; its response.
fn initialize(authority: &str) -> bridge_tests::http::Response {
    let mut connection = Connection::open(authority);
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}});
    connection.post(None, body.to_string().as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_a_new_session_gets_503_and_the_others_keep_working() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &["--max-sessions", "3"]);
    let authority = server.authority().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut sessions = Vec::new();
        for _ in 0..3 {
            let mut connection = Connection::open(&authority);
            let session = Session::open(&mut connection);
            sessions.push((connection, session));
        }
        let refused = initialize(&authority);
        assert_eq!(refused.status, 503);
        assert_eq!(
            refused.text(),
            "Service Unavailable: this server already serves its limit of 3 MCP sessions \
             (--max-sessions); try again once one ends, or close sessions you no longer use"
        );
        assert_eq!(refused.header("retry-after"), Some("120"));
        for (connection, session) in &mut sessions {
            let created = session.call(
                connection,
                "create_conversation",
                json!({"my_role": "orchestrator", "partner_role": "worker"}),
            );
            assert_eq!(created["isError"], false, "the others keep working");
        }
        // A session its client closes frees its place at once.
        let (mut connection, session) = sessions.pop().unwrap();
        let closed = connection.request("DELETE", &session.id);
        assert!(closed.status < 300, "{}", closed.status);
        let response = initialize(&authority);
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(initialize(&authority).status, 503, "full again");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expires_but_not_one_with_a_request_in_flight() {
    let db = TempDb::new();
    let conversation = pair(&db.open().await).await;
    let server = HttpServer::start(&db.path, &["--max-sessions", "2", "--session-idle", "1s"]);
    let authority = server.authority().to_owned();
    let waiting = json!({
        "conversation_id": conversation.created.id.to_string(),
        "session_id": "b",
        "token": conversation.b.token.reveal(),
        "timeout_seconds": 4,
    });
    tokio::task::spawn_blocking(move || {
        let mut idle_connection = Connection::open(&authority);
        let idle = Session::open(&mut idle_connection);
        let mut busy_connection = Connection::open(&authority);
        let mut busy = Session::open(&mut busy_connection);
        assert_eq!(initialize(&authority).status, 503, "two of two");

        // The busy session waits four times the expiry, the other idles.
        let waiter = std::thread::spawn(move || {
            let result = busy.call(&mut busy_connection, "wait_for_messages", waiting);
            (busy, busy_connection, result)
        });
        let started = Instant::now();
        let replaced = loop {
            let response = initialize(&authority);
            if response.status == 200 {
                break response;
            }
            assert_eq!(response.status, 503);
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the idle session never expired"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(replaced.header("mcp-session-id").is_some());
        // The idle one is gone; the busy one finished its wait and lives.
        let gone = idle_connection.post(
            Some(&idle.id),
            br#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#,
        );
        assert_eq!(gone.status, 404, "{}", gone.text());
        let (mut busy, mut busy_connection, result) = waiter.join().unwrap();
        assert_eq!(result["structuredContent"]["timed_out"], true, "{result}");
        let again = busy.call(
            &mut busy_connection,
            "create_conversation",
            json!({"my_role": "orchestrator", "partner_role": "worker"}),
        );
        assert_eq!(
            again["isError"], false,
            "the waiting session was not expired"
        );
    })
    .await
    .unwrap();
}

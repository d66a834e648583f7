//! `bridge-mcp --http`: many agents through one process, guarded against
//! requests from foreign web pages.

use std::io::{Read, Write};
use std::net::TcpStream;

use bridge_tests::TempDb;
use bridge_tests::bin;
use bridge_tests::mcp::{Agent, HttpServer, caller};
use serde_json::json;

#[tokio::test]
async fn two_agents_over_http_full_flow() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &[]);
    let orchestrator = Agent::http(&server.url, &[]).await.unwrap();
    let worker = Agent::http(&server.url, &[]).await.unwrap();

    let created = orchestrator
        .ok(
            "create_conversation",
            json!({"my_role": "orchestrator", "partner_role": "worker"}),
        )
        .await;
    let id = created["conversation_id"].as_str().unwrap();
    let token_a = created["session_a_token"].as_str().unwrap();
    let token_b = created["session_b_token"].as_str().unwrap();

    // The worker waits over HTTP while the orchestrator sends.
    let waiting = worker.ok(
        "wait_for_messages",
        caller(id, "b", token_b, json!({"timeout_seconds": 30})),
    );
    let sending = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        orchestrator
            .ok(
                "send_to_partner",
                caller(id, "a", token_a, json!({"message": "over http"})),
            )
            .await
    };
    let (waited, sent) = tokio::join!(waiting, sending);
    assert_eq!(waited["timed_out"], false);
    assert_eq!(waited["messages"][0]["id"], sent["message_id"]);
    assert_eq!(waited["messages"][0]["message"], "over http");

    worker
        .ok(
            "update_my_status",
            caller(id, "b", token_b, json!({"status": "complete"})),
        )
        .await;
    let partner = orchestrator
        .ok("check_partner_status", caller(id, "a", token_a, json!({})))
        .await;
    assert_eq!(partner["status"], "complete");
    let text = orchestrator
        .refused("check_messages", caller(id, "a", token_b, json!({})))
        .await;
    assert_eq!(
        text,
        format!("invalid token for session a of conversation {id}")
    );
    orchestrator.stop().await;
    worker.stop().await;
}

#[tokio::test]
async fn a_loopback_origin_is_served_and_a_foreign_origin_refused() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &[]);
    let local_origin = format!("http://{}", server.authority());
    let local = Agent::http(&server.url, &[(http::header::ORIGIN, &local_origin)]).await;
    local.expect("a loopback origin is served").stop().await;

    let error = Agent::http(
        &server.url,
        &[(http::header::ORIGIN, "http://evil.example")],
    )
    .await
    .err()
    .expect("a foreign origin must be refused");
    assert!(error.contains("403"), "{error}");
    assert!(error.contains("Origin"), "{error}");
}

/// A request as a DNS-rebinding page would send it: the right address, but
/// the attacker's host name.
#[test]
fn a_foreign_host_header_is_refused() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &[]);
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    })
    .to_string();
    let status = |host: &str| {
        let mut stream = TcpStream::connect(server.authority()).unwrap();
        write!(
            stream,
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.lines().next().unwrap_or_default().to_owned()
    };
    assert!(status("evil.example").starts_with("HTTP/1.1 403"));
    assert!(
        status(&format!(
            "evil.example:{}",
            server.authority().rsplit(':').next().unwrap()
        ))
        .starts_with("HTTP/1.1 403")
    );
    assert!(status(server.authority()).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_non_loopback_address_is_refused_without_allow_remote() {
    let db = TempDb::new();
    let output = std::process::Command::new(bin::path("bridge-mcp"))
        .args(["--http", "192.0.2.1:8765"])
        .env("BRIDGE_DB", &db.path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "bridge-mcp: refusing to listen on 192.0.2.1:8765: it is not a loopback address"
        ),
        "{stderr}"
    );
    let output = std::process::Command::new(bin::path("bridge-mcp"))
        .args(["--allow-remote"])
        .env("BRIDGE_DB", &db.path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "--allow-remote needs --http");
}

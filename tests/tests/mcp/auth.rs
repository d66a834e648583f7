//! Authentication at the HTTP layer: `Authorization: Bearer` with an
//! operator's access key (made, used, revoked with `bridgectl access`) or a
//! session token that stands for its session; `401` before any MCP
//! processing; failed attempts limited per address; keys never logged.

use bridge_tests::http::{Connection, Session};
use bridge_tests::mcp::{Agent, HttpServer, caller};
use bridge_tests::{TempDb, access, access_key};
use serde_json::json;

/// An `initialize` request's body.
fn initialize() -> Vec<u8> {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}
    })
    .to_string()
    .into_bytes()
}

#[test]
fn with_require_auth_a_request_without_a_good_key_gets_401_before_mcp() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &["--require-auth"]);
    let authority = server.authority().to_owned();

    // No header: told what to send.
    let response = Connection::open(&authority).post(None, &initialize());
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer realm="mcp-bridge""#)
    );
    assert_eq!(
        response.text(),
        "Unauthorized: this server requires Authorization: Bearer <key>, with an access key from \
         `bridgectl access create` or a conversation's session token"
    );

    // Not even a malformed body is looked at before the key.
    let mut connection = Connection::open(&authority);
    connection.authorize(&format!("Bearer mcpb_{}", "0".repeat(64)));
    let response = connection.post(None, b"{not json");
    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer realm="mcp-bridge", error="invalid_token""#)
    );
    assert_eq!(
        response.text(),
        "Unauthorized: not authenticated: the access key is not known (revoked, or never made)"
    );

    for (header, said) in [
        (
            "Basic dXNlcjpwYXNz".to_owned(),
            "the Authorization header must be Bearer and a key",
        ),
        (
            "Bearer short".to_owned(),
            "not authenticated: the key is neither an access key (mcpb_ and 64 hexadecimal \
             characters) nor a session token (64 hexadecimal characters); got 5 characters",
        ),
        (
            format!("Bearer {}", "ab".repeat(32)),
            "not authenticated: the key is not a live session token (mistyped, rotated, or its \
             conversation was removed)",
        ),
    ] {
        let mut connection = Connection::open(&authority);
        connection.authorize(&header);
        let response = connection.post(None, &initialize());
        assert_eq!(response.status, 401, "{header}");
        assert_eq!(response.text(), format!("Unauthorized: {said}"));
    }

    // A key in the URL is refused even with a good header.
    let key = access_key(&db, "orchestrator");
    let mut connection = Connection::open(&authority);
    connection.authorize(&format!("Bearer {key}"));
    connection.send_to(
        &format!("/mcp?key={key}"),
        None,
        "application/json",
        &initialize(),
    );
    let response = connection.read();
    assert_eq!(response.status, 401);
    assert!(response.text().contains("a key in the URL is refused"));
    assert!(!response.text().contains(&key));

    // The good key alone is served.
    let mut connection = Connection::open(&authority);
    connection.authorize(&format!("Bearer {key}"));
    let session = Session::open(&mut connection);
    assert!(!session.id.is_empty());
    drop(server);
}

#[tokio::test]
async fn an_access_key_creates_and_a_session_token_acts_only_as_its_session() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &["--require-auth"]);
    let key = access_key(&db, "orchestrator");
    let orchestrator = Agent::keyed(&server.url, &key, None).await.unwrap();
    let (id, token_a, token_b) = orchestrator
        .create(json!({"my_role": "orchestrator", "partner_role": "worker"}))
        .await;
    orchestrator
        .ok(
            "send_to_partner",
            caller(&id, "a", &token_a, json!({"message": "first task"})),
        )
        .await;

    // The worker's token is its key: no credentials in the arguments, and a
    // tools/list that does not ask for them.
    let worker = Agent::keyed(&server.url, &token_b, None).await.unwrap();
    let send = worker
        .tools()
        .await
        .into_iter()
        .find(|tool| tool.name == "send_to_partner")
        .unwrap();
    assert_eq!(send.input_schema["required"], json!(["message"]));
    let received = worker.ok("check_messages", json!({})).await;
    assert_eq!(received["messages"][0]["message"], "first task");
    worker
        .ok("send_to_partner", json!({"message": "on it"}))
        .await;
    // Naming itself is fine; naming anyone else is refused.
    worker
        .ok(
            "update_my_status",
            json!({"conversation_id": id, "session_id": "b", "status": "working"}),
        )
        .await;
    let refusal = worker
        .refused("check_messages", caller(&id, "a", &token_a, json!({})))
        .await;
    assert_eq!(
        refusal,
        format!(
            "not allowed: this request's key is the token of session b of conversation {id}, \
             and acts only as it"
        )
    );
    let refusal = worker
        .refused(
            "create_conversation",
            json!({"my_role": "orchestrator", "partner_role": "worker"}),
        )
        .await;
    assert_eq!(
        refusal,
        "not allowed: only an access key may create conversations over HTTP; this request's key \
         is a session token"
    );
    // The operator's view of the orchestrator: the message arrived.
    let replies = orchestrator
        .ok("check_messages", caller(&id, "a", &token_a, json!({})))
        .await;
    assert_eq!(replies["messages"][0]["message"], "on it");

    // Listed with its use; revoked, the next request is refused.
    let listed = access(&db, &["list"]);
    assert_eq!(listed[0]["name"], "orchestrator");
    assert!(listed[0]["last_used_at"].is_string(), "{listed}");
    access(&db, &["revoke", "orchestrator"]);
    let Err(error) = orchestrator
        .try_call("check_messages", caller(&id, "a", &token_a, json!({})))
        .await
    else {
        panic!("a revoked key was served");
    };
    assert!(error.contains("Auth required"), "{error}");
    worker.stop().await;
    orchestrator.stop().await;
    drop(server);
}

#[test]
fn failed_keys_are_limited_per_address_and_a_valid_key_still_works() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &["--require-auth"]);
    let authority = server.authority().to_owned();
    let key = access_key(&db, "orchestrator");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for n in 0..25 {
        let mut connection = Connection::open(&authority);
        connection.authorize(&format!("Bearer mcpb_{n:064x}"));
        let response = connection.post(None, &initialize());
        statuses.push(response.status);
        if response.status == 429 {
            retry_after = response.header("retry-after").map(str::to_owned);
            assert!(
                response
                    .text()
                    .starts_with("Too Many Requests: too many failed authentications"),
                "{}",
                response.text()
            );
        }
    }
    assert!(
        statuses[..20].iter().all(|status| *status == 401),
        "{statuses:?}"
    );
    assert!(
        statuses[20..].iter().all(|status| *status == 429),
        "{statuses:?}"
    );
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&seconds), "{seconds}");
    // The address is over its budget, yet the operator's key is served.
    let mut connection = Connection::open(&authority);
    connection.authorize(&format!("Bearer {key}"));
    let session = Session::open(&mut connection);
    assert!(!session.id.is_empty());
    drop(server);
}

#[tokio::test]
async fn on_loopback_without_require_auth_no_key_is_needed_but_a_wrong_one_is_refused() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &[]);
    let open = Agent::http(&server.url, &[]).await.unwrap();
    open.create(json!({"my_role": "orchestrator", "partner_role": "worker"}))
        .await;
    let Err(error) = Agent::keyed(&server.url, &"ab".repeat(32), None).await else {
        panic!("a wrong key was served");
    };
    assert!(error.contains("Auth required"), "{error}");
    open.stop().await;
    drop(server);
}

#[tokio::test]
async fn keys_never_reach_the_log_even_at_trace_level() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &["--require-auth", "-vv"]);
    let key = access_key(&db, "orchestrator");
    let orchestrator = Agent::keyed(&server.url, &key, None).await.unwrap();
    let (id, token_a, token_b) = orchestrator
        .create(json!({"my_role": "orchestrator", "partner_role": "worker"}))
        .await;
    orchestrator
        .ok(
            "send_to_partner",
            caller(&id, "a", &token_a, json!({"message": "hello"})),
        )
        .await;
    let worker = Agent::keyed(&server.url, &token_b, None).await.unwrap();
    worker.ok("check_messages", json!({})).await;
    let wrong = format!("mcpb_{}", "7".repeat(64));
    assert!(Agent::keyed(&server.url, &wrong, None).await.is_err());
    let mut connection = Connection::open(server.authority());
    connection.send_to(
        &format!("/mcp?access_token={key}"),
        None,
        "application/json",
        &initialize(),
    );
    assert_eq!(connection.read().status, 401);
    worker.stop().await;
    orchestrator.stop().await;
    let log = server.stop();
    assert!(log.contains("TRACE"), "the server logged at trace level");
    for secret in [&key, &token_a, &token_b, &wrong] {
        let hex = secret.trim_start_matches("mcpb_");
        assert!(!log.contains(hex), "a key is in the log:\n{log}");
    }
}

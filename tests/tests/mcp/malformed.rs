//! Every input gets an answer: malformed JSON-RPC over stdio and over HTTP,
//! bad parameters, bad tool arguments; and the server keeps serving.

use bridge_tests::http::{Connection, Session};
use bridge_tests::mcp::{Agent, HttpServer, RawStdio, caller};
use bridge_tests::{TempDb, pair};
use serde_json::{Value, json};

/// The bodies that are not JSON, as a client (or a broken one) may write
/// them, with what makes each bad.
fn not_json() -> Vec<(&'static str, Vec<u8>)> {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    vec![
        (
            "truncated",
            br#"{"jsonrpc":"2.0","id":9,"method":"tools/li"#.to_vec(),
        ),
        (
            "NaN",
            br#"{"jsonrpc":"2.0","id":9,"method":"ping","params":{"x":NaN}}"#.to_vec(),
        ),
        (
            "lone surrogate",
            br#"{"jsonrpc":"2.0","id":9,"method":"ping","params":{"x":"\ud83d"}}"#.to_vec(),
        ),
        ("raw bytes", b"\xff\xfe".to_vec()),
        ("nested 10,000 deep", deep.into_bytes()),
        (
            "NUL after the object",
            b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}\0".to_vec(),
        ),
    ]
}

/// `tools/call` requests whose params do not fit, with their ids.
fn bad_params() -> Vec<(&'static str, Value)> {
    vec![
        (
            "no params",
            json!({"jsonrpc": "2.0", "id": 21, "method": "tools/call"}),
        ),
        (
            "name: 5",
            json!({"jsonrpc": "2.0", "id": 22, "method": "tools/call", "params": {"name": 5}}),
        ),
        (
            "arguments: \"x\"",
            json!({"jsonrpc": "2.0", "id": 23, "method": "tools/call",
                   "params": {"name": "check_messages", "arguments": "x"}}),
        ),
    ]
}

fn assert_parse_error(what: &str, answer: &Value) {
    assert_eq!(answer["jsonrpc"], "2.0", "{what}: {answer}");
    assert_eq!(answer["id"], Value::Null, "{what}: {answer}");
    assert_eq!(answer["error"]["code"], -32700, "{what}: {answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("Parse error: "), "{what}: {message}");
    assert!(message.chars().count() <= 200, "{what}: {message}");
}

#[test]
fn over_stdio_every_malformed_line_is_answered_and_serving_goes_on() {
    let db = TempDb::new();
    let mut server = RawStdio::initialized(&db.path, &[]);
    for (what, line) in not_json() {
        server.send(&line);
        assert_parse_error(what, &server.answer());
    }
    // A line over 16 MiB, with no end in sight until its newline.
    let mut huge = br#"{"jsonrpc":"2.0","id":9,"method":"ping","params":{"x":""#.to_vec();
    huge.resize(16 * 1024 * 1024 + 100, b'a');
    huge.extend_from_slice(br#""}}"#);
    server.send(&huge);
    let answer = server.answer();
    assert_parse_error("over 16 MiB", &answer);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 16777216"),
        "{answer}"
    );
    for (what, request) in bad_params() {
        server.send(request.to_string().as_bytes());
        let answer = server.answer();
        assert_eq!(answer["id"], request["id"], "{what}: {answer}");
        assert_eq!(answer["error"]["code"], -32602, "{what}: {answer}");
    }
    server.send(br#"[{"jsonrpc":"2.0","id":30,"method":"ping"}]"#);
    let batch = server.answer();
    assert_eq!(
        (batch["id"].clone(), batch["error"]["code"].clone()),
        (Value::Null, json!(-32600))
    );
    server.send(br#"{"jsonrpc":"2.0","id":31,"method":"ping","extra":[1]}"#);
    assert_eq!(server.answer()["id"], 31, "still serving");
    server.send(br#"{"jsonrpc":"2.0","id":32,"method":"no/such"}"#);
    assert_eq!(server.answer()["error"]["code"], -32601);
    assert!(server.finish().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_malformed_bodies_are_400_with_their_json_rpc_error() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &[]);
    let authority = server.authority().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut connection = Connection::open(&authority);
        let session = Session::open(&mut connection);
        for (what, body) in not_json() {
            let response = connection.post(Some(&session.id), &body);
            assert_eq!(response.status, 400, "{what}: {}", response.text());
            assert_eq!(response.header("content-type"), Some("application/json"));
            assert_parse_error(what, &response.answer());
        }
        for (what, request) in bad_params() {
            let response = connection.post(Some(&session.id), request.to_string().as_bytes());
            assert_eq!(response.status, 400, "{what}");
            let answer = response.answer();
            assert_eq!(answer["id"], request["id"], "{what}: {answer}");
            assert_eq!(answer["error"]["code"], -32602, "{what}: {answer}");
        }
        let mut huge = vec![b' '; 16 * 1024 * 1024 + 1];
        huge[0] = b'{';
        let response = connection.post(Some(&session.id), &huge);
        assert_eq!(response.status, 413, "{}", response.text());
        assert_parse_error("over 16 MiB", &response.answer());
        // A body that is not said to be JSON is rmcp's to refuse (415).
        let mut connection = Connection::open(&authority);
        connection.send(Some(&session.id), "text/plain", b"{}");
        assert_eq!(connection.read().status, 415);
        // And the session still works.
        let mut session = session;
        let mut connection = Connection::open(&authority);
        let created = session.call(
            &mut connection,
            "create_conversation",
            json!({"my_role": "orchestrator", "partner_role": "worker"}),
        );
        assert_eq!(created["isError"], false, "{created}");
    })
    .await
    .unwrap();
}

/// A tool's bad argument is an `isError` result that names the argument
/// in words, and echoes at most 100 characters of what was sent.
#[tokio::test]
async fn bad_arguments_are_named_in_words_with_short_echoes() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let agent = Agent::stdio(&db.path, &[]).await;
    let b = |more: Value| {
        caller(
            &conversation.created.id.to_string(),
            "b",
            &conversation.b.token.reveal(),
            more,
        )
    };
    let megabyte = "x".repeat(1 << 20);
    let cases = [
        (
            "check_messages",
            b(json!({"limit": 18446744073709551616.0_f64})),
            "invalid limit: expected a whole number from 1 to 1000, got the number 1.8446744073709552e+19"
                .to_owned(),
        ),
        (
            "read_history",
            b(json!({"since_id": -1})),
            "invalid since_id: must be a message id, 0 or more, got -1".to_owned(),
        ),
        (
            "create_conversation",
            json!({"my_role": "orchestrator", "partner_role": "worker", "ttl_seconds": 0}),
            "invalid ttl_seconds: must be between 1 second and 365 days, got 0 seconds".to_owned(),
        ),
        (
            "create_conversation",
            json!({"my_role": "orchestrator", "partner_role": "worker", "ttl_seconds": -5}),
            "invalid ttl_seconds: expected a whole number from 1 to 31536000, got the number -5"
                .to_owned(),
        ),
        (
            "update_my_status",
            b(json!({"status": megabyte})),
            format!(
                "invalid status: expected one of working, waiting, blocked, complete, got the text {:?}… (1048576 characters)",
                "x".repeat(100)
            ),
        ),
    ];
    for (tool, arguments, expected) in cases {
        assert_eq!(agent.refused(tool, arguments).await, expected, "{tool}");
    }
    // Every enum argument, given a megabyte: never echoed whole.
    for (tool, field) in [
        ("send_to_partner", "action_type"),
        ("send_to_partner", "session_id"),
        ("update_task", "state"),
        ("list_tasks", "state"),
    ] {
        let mut arguments = b(json!({"message": "m", "task_id": 1, "state": "done"}));
        arguments[field] = json!(megabyte);
        let text = agent.refused(tool, arguments).await;
        assert!(
            text.starts_with(&format!("invalid {field}: expected one of ")),
            "{text}"
        );
        assert!(
            text.chars().count() < 300,
            "{tool} {field}: {} characters",
            text.chars().count()
        );
    }
    agent.stop().await;
    store.close().await;
}

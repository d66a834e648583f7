//! The tool contract: names, schemas, annotations, size, protocol behaviour.

use bridge_tests::TempDb;
use bridge_tests::mcp::Agent;
use serde_json::json;

#[tokio::test]
async fn tools_keep_the_original_names_and_bounds_and_fit_in_12_kb() {
    let db = TempDb::new();
    let agent = Agent::stdio(&db.path, &[]).await;
    let (protocol, server) = agent.server_info();
    assert_eq!(server, "mcp-bridge");
    assert!(!protocol.is_empty());

    let tools = agent.tools().await;
    let mut names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        vec![
            "assign_task",
            "check_messages",
            "check_partner_status",
            "create_conversation",
            "list_tasks",
            "read_history",
            "send_to_partner",
            "update_my_status",
            "update_task",
            "wait_for_messages",
        ]
    );
    let size = serde_json::to_string(&json!({ "tools": tools }))
        .unwrap()
        .len();
    assert!(size < 12 * 1024, "tools/list is {size} bytes");

    let tool = |name: &str| tools.iter().find(|tool| tool.name == name).unwrap();
    for tool in &tools {
        assert!(
            tool.output_schema.is_some(),
            "{} has no output schema",
            tool.name
        );
        assert!(
            tool.annotations.is_some(),
            "{} has no annotations",
            tool.name
        );
        assert!(!tool.input_schema.contains_key("$schema"));
    }
    let schema = |name: &str| serde_json::Value::Object((*tool(name).input_schema).clone());
    let create = schema("create_conversation");
    assert_eq!(create["properties"]["my_role"]["minLength"], 3);
    assert_eq!(create["properties"]["my_role"]["maxLength"], 100);
    assert_eq!(create["required"], json!(["my_role", "partner_role"]));
    let send = schema("send_to_partner");
    assert_eq!(send["properties"]["message"]["maxLength"], 50_000);
    assert_eq!(send["properties"]["token"]["minLength"], 64);
    assert_eq!(send["properties"]["token"]["maxLength"], 64);
    assert_eq!(
        send["properties"]["conversation_id"]["pattern"],
        "^conv_[a-f0-9]{16}$"
    );
    assert_eq!(send["properties"]["files_involved"]["maxItems"], 20);
    assert_eq!(send["properties"]["session_id"]["enum"], json!(["a", "b"]));
    assert_eq!(
        send["required"],
        json!(["conversation_id", "session_id", "token", "message"])
    );
    let wait = schema("wait_for_messages");
    assert_eq!(wait["properties"]["timeout_seconds"]["maximum"], 300);
    let assign = schema("assign_task");
    assert_eq!(assign["properties"]["title"]["maxLength"], 200);
    assert_eq!(assign["properties"]["body"]["maxLength"], 50_000);
    let update = schema("update_task");
    assert_eq!(
        update["properties"]["state"]["enum"],
        json!(["open", "in_progress", "done", "failed", "cancelled"])
    );
    assert_eq!(
        update["required"],
        json!(["conversation_id", "session_id", "token", "task_id", "state"])
    );
    let history = schema("read_history");
    assert_eq!(history["properties"]["limit"]["maximum"], 200);

    let annotations = |name: &str| tool(name).annotations.clone().unwrap();
    assert_eq!(
        annotations("check_partner_status").read_only_hint,
        Some(true)
    );
    assert_eq!(annotations("read_history").read_only_hint, Some(true));
    assert_eq!(annotations("list_tasks").read_only_hint, Some(true));
    assert_eq!(annotations("assign_task").read_only_hint, Some(false));
    assert_eq!(annotations("read_history").idempotent_hint, Some(true));
    assert_eq!(annotations("update_my_status").idempotent_hint, Some(true));
    assert_eq!(annotations("check_messages").read_only_hint, Some(false));
    assert_eq!(annotations("send_to_partner").destructive_hint, Some(false));
    agent.stop().await;
}

#[tokio::test]
async fn bad_arguments_are_tool_errors_and_the_server_keeps_serving() {
    let db = TempDb::new();
    let agent = Agent::stdio(&db.path, &[]).await;
    let text = agent
        .refused(
            "create_conversation",
            json!({"my_role": "ab", "partner_role": "worker"}),
        )
        .await;
    assert_eq!(text, "invalid my_role: must be 3 to 100 characters, got 2");
    let text = agent
        .refused(
            "create_conversation",
            json!({"my_role": 42, "partner_role": "worker"}),
        )
        .await;
    assert!(text.contains("my_role"), "{text}");
    let text = agent
        .refused(
            "check_messages",
            json!({"conversation_id": "conv_zz", "session_id": "a", "token": "0".repeat(64)}),
        )
        .await;
    assert_eq!(
        text,
        "invalid conversation_id: expected conv_ followed by 16 lowercase hex characters"
    );
    let text = agent
        .refused(
            "check_messages",
            json!({"conversation_id": "conv_0123456789abcdef", "session_id": "c", "token": "0".repeat(64)}),
        )
        .await;
    assert!(
        text.contains("session_id") || text.contains("unknown variant"),
        "{text}"
    );
    let secret = "s3cr3t-".repeat(9);
    let text = agent
        .refused(
            "check_messages",
            json!({"conversation_id": "conv_0123456789abcdef", "session_id": "a", "token": secret}),
        )
        .await;
    assert_eq!(
        text,
        "invalid token: a token is 64 hexadecimal characters (got 63 characters)"
    );
    assert!(!text.contains(&secret));
    // Still serving.
    agent
        .ok(
            "create_conversation",
            json!({"my_role": "orchestrator", "partner_role": "worker"}),
        )
        .await;
    agent.stop().await;
}

/// Raw JSON-RPC over stdio, as any client (or a broken one) might write it.
#[test]
fn every_protocol_version_and_malformed_json_rpc_over_raw_stdio() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let db = TempDb::new();
    for version in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
        let mut server = Command::new(bridge_tests::bin::path("bridge-mcp"))
            .env("BRIDGE_DB", &db.path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = server.stdin.take().unwrap();
        let mut stdout = BufReader::new(server.stdout.take().unwrap()).lines();
        let mut send = |line: String| writeln!(stdin, "{line}").unwrap();
        let mut answer = || -> serde_json::Value {
            serde_json::from_str(&stdout.next().unwrap().unwrap()).unwrap()
        };
        send(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
            .to_string(),
        );
        let initialized = answer();
        assert_eq!(
            initialized["result"]["protocolVersion"], version,
            "negotiated {version}"
        );
        send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
        send("{this is not json".to_owned());
        let malformed = answer();
        assert_eq!(malformed["id"], serde_json::Value::Null);
        assert_eq!(malformed["error"]["code"], -32700);
        send(json!({"jsonrpc": "2.0", "id": 2, "method": "no/such/method"}).to_string());
        let unknown = answer();
        assert_eq!(unknown["id"], 2);
        assert_eq!(unknown["error"]["code"], -32601);
        send(
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
                "name": "create_conversation", "arguments": {"my_role": "orchestrator", "partner_role": "worker"}}})
            .to_string(),
        );
        let created = answer();
        assert_eq!(created["id"], 3);
        assert_eq!(created["result"]["isError"], false);
        assert!(created["result"]["structuredContent"]["conversation_id"].is_string());
        send(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "no_such_tool", "arguments": {}}}).to_string());
        let no_tool = answer();
        assert_eq!(no_tool["error"]["code"], -32602);
        // SIGTERM ends it promptly and cleanly.
        let status = Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = server.wait().unwrap();
        assert_eq!(exit.code(), Some(0), "{version}");
    }
}

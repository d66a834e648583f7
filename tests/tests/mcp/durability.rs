//! Acknowledged means durable: with the default durability, `bridge-mcp`
//! answers a send only after the WAL holding it was synced to disk. The
//! order is read from the system calls themselves (`strace`).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use bridge_tests::{TempDb, pair};
use serde_json::json;

/// Whether `strace` can trace here; says so when it cannot. With
/// `BRIDGE_REQUIRE_STRACE=1` (CI sets it, having installed strace) a
/// machine where it cannot is a failure, not a skip.
fn strace_usable() -> bool {
    let usable = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !usable {
        assert!(
            std::env::var_os("BRIDGE_REQUIRE_STRACE").is_none_or(|value| value != "1"),
            "BRIDGE_REQUIRE_STRACE=1 but strace cannot trace here"
        );
        eprintln!("strace is not usable on this machine: the durability test is skipped");
    }
    usable
}

/// Runs `bridge-mcp` under `strace` with `extra` arguments, sends two
/// messages over stdio, and returns the trace's lines from the read of the
/// second request to the write of its answer.
fn trace_one_send(db: &TempDb, conversation: &bridge_tests::Pair, extra: &[&str]) -> Vec<String> {
    let trace = db.dir.path().join(format!("trace{}", extra.len()));
    let mut server = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-s",
            "200",
            "-e",
            "trace=read,write,fsync,fdatasync",
            "-o",
        ])
        .arg(&trace)
        .arg(bridge_tests::bin::path("bridge-mcp"))
        .args(extra)
        .env("BRIDGE_DB", &db.path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bridge-mcp under strace");
    let mut stdin = server.stdin.take().unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut call = |message: serde_json::Value| {
        writeln!(stdin, "{message}").unwrap();
    };
    call(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
    );
    stdout.next().unwrap().unwrap();
    call(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    // The first commit of a process creates the WAL, which SQLite syncs
    // whatever the setting: the second send is the one that tells.
    for id in [2, 3] {
        call(
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "send_to_partner", "arguments": {
                "conversation_id": conversation.created.id.to_string(), "session_id": "a",
                "token": conversation.a.token.reveal(), "message": format!("durable {id}")}}}),
        );
        let answer: serde_json::Value =
            serde_json::from_str(&stdout.next().unwrap().unwrap()).unwrap();
        assert_eq!(answer["result"]["isError"], false, "{answer}");
    }
    drop(stdin);
    assert!(server.wait().unwrap().success());
    between_request_and_answer(&trace)
}

/// The trace's lines after the read of the second `tools/call` request
/// (`"id":3`) and before the write of its answer.
fn between_request_and_answer(trace: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(trace).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let request = lines
        .iter()
        .position(|line| line.contains("read(") && line.contains(r#"\"id\":3"#))
        .unwrap_or_else(|| panic!("no read of the request in:\n{text}"));
    let answer = lines
        .iter()
        .position(|line| line.contains("write(") && line.contains(r#"\"id\":3"#))
        .unwrap_or_else(|| panic!("no write of the answer in:\n{text}"));
    assert!(request < answer);
    lines[request..answer].to_vec()
}

/// The start of a sync of the WAL: `fdatasync(7</…/bridge.db-wal>)` (or
/// `fsync`), whole or `<unfinished ...>`. A sync that the answer waits for
/// starts after the request was read and ends before the answer is written.
fn syncs_wal(line: &str) -> bool {
    (line.contains("fdatasync(") || line.contains("fsync(")) && line.contains("bridge.db-wal>")
}

#[test]
fn the_wal_is_synced_before_a_send_is_answered_unless_durability_is_normal() {
    if !strace_usable() {
        return;
    }
    let db = TempDb::new();
    let conversation = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = db.open().await;
        let conversation = pair(&store).await;
        store.close().await;
        conversation
    });

    let full = trace_one_send(&db, &conversation, &[]);
    assert!(
        full.iter().any(|line| syncs_wal(line)),
        "no sync of the WAL between the request and its answer:\n{}",
        full.join("\n")
    );

    let normal = trace_one_send(&db, &conversation, &["--durability", "normal"]);
    assert!(
        !normal.iter().any(|line| syncs_wal(line)),
        "with --durability normal the answer does not wait for a sync:\n{}",
        normal.join("\n")
    );
}

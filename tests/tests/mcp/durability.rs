//! Acknowledged means durable: with the default durability, `bridge-mcp`
//! answers a send only after the WAL holding it was synced to disk. The
//! order is read from the system calls themselves (`strace`). And a sync
//! that takes its time delays no waiter in another process: the commit is
//! announced once it is published (syncs slowed by `strace`).

use std::path::Path;
use std::process::{Command, Stdio};

use bridge_tests::mcp::RawStdio;
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
    let strace = [
        "strace",
        "-f",
        "-y",
        "-s",
        "200",
        "-e",
        "trace=read,write,fsync,fdatasync",
        "-o",
        trace.to_str().expect("a temporary path in UTF-8"),
    ];
    let mut server = RawStdio::initialized_under(&strace, &db.path, extra);
    // The first commit of a process creates the WAL, which SQLite syncs
    // whatever the setting: the second send is the one that tells.
    for id in [2, 3] {
        send(&mut server, conversation, id, &format!("durable {id}"));
    }
    assert!(server.finish().success());
    between_request_and_answer(&trace)
}

/// Sends `message` from session a (request `id`) and checks the answer.
fn send(server: &mut RawStdio, conversation: &bridge_tests::Pair, id: u64, message: &str) {
    server.call(
        id,
        "send_to_partner",
        json!({"conversation_id": conversation.created.id.to_string(), "session_id": "a",
               "token": conversation.a.token.reveal(), "message": message}),
    );
    let answer = server.answer();
    assert_eq!(answer["result"]["isError"], false, "{answer}");
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

/// A commit is announced once others can read it, not only when its WAL is
/// written: `bridge-mcp` sends with every sync slowed by 300 ms (`strace`
/// delays it), and a waiter in this process, whose slow poll would not look
/// for ten minutes, must see each message before the next is sent. Woken by
/// the WAL's write alone, it would query during the sync, find nothing and
/// sleep on.
#[test]
fn a_waiter_elsewhere_wakes_when_a_slowly_synced_commit_is_published() {
    if !strace_usable() {
        return;
    }
    let db = TempDb::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (waiter_store, conversation) = runtime.block_on(async {
        let store = db.open().await;
        let conversation = pair(&store).await;
        store.close().await;
        let mut options = db.options();
        options.poll_interval = std::time::Duration::from_secs(600);
        let waiter_store = bridge_core::Store::open(options).await.unwrap();
        (waiter_store, conversation)
    });
    let (seen, mut seen_by_waiter) = tokio::sync::mpsc::unbounded_channel();
    let waiter = {
        let store = waiter_store.clone();
        let b = conversation.b.clone();
        runtime.spawn(async move {
            loop {
                let mut changes = store.subscribe();
                let messages = store.check(&b, 10).await.unwrap();
                if messages.is_empty() {
                    changes.changed().await.unwrap();
                }
                for message in messages {
                    if seen.send(message.body).is_err() {
                        return;
                    }
                }
            }
        })
    };

    let slow_syncs = [
        "strace",
        "-f",
        "-o",
        "/dev/null",
        "-e",
        "trace=fsync,fdatasync",
        "-e",
        "inject=fsync,fdatasync:delay_exit=300000",
    ];
    let mut server = RawStdio::initialized_under(&slow_syncs, &db.path, &[]);
    for id in 2..5 {
        send(&mut server, &conversation, id, &format!("slow {id}"));
        // The sender stays idle until the waiter saw it: no later write
        // may wake the waiter in its place.
        let body = runtime
            .block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(60), seen_by_waiter.recv())
                    .await
            })
            .unwrap_or_else(|_| panic!("message {id} not seen without the slow poll"));
        assert_eq!(body.as_deref(), Some(format!("slow {id}").as_str()));
    }
    assert!(server.finish().success());
    waiter.abort();
    runtime.block_on(waiter_store.close());
}

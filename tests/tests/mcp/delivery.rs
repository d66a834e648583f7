//! Delivery over MCP: a message handed to `check_messages` or
//! `wait_for_messages` is never lost, whether the server dies, the client
//! dies or the connection drops; an agent that just calls again sees each
//! message once.

use bridge_core::NewMessage;
use bridge_tests::http::{Connection, Session};
use bridge_tests::mcp::{Agent, HttpServer, RawStdio, caller};
use bridge_tests::{Pair, TempDb, pair};
use serde_json::{Value, json};

/// Sends `count` messages of `chars` characters from a to b.
async fn queue(db: &TempDb, conversation: &Pair, count: usize, chars: usize) -> Vec<i64> {
    let store = db.open().await;
    let mut ids = Vec::new();
    for n in 0..count {
        let body = format!("{n:04} {}", "x".repeat(chars.saturating_sub(5)));
        ids.push(
            store
                .send(&conversation.a, NewMessage::new(body))
                .await
                .unwrap()
                .id,
        );
    }
    store.close().await;
    ids
}

/// The ids of a tool result's messages, and whether each was marked.
fn received(result: &Value) -> Vec<(i64, bool)> {
    result["structuredContent"]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {result}"))
        .iter()
        .map(|message| {
            (
                message["id"].as_i64().unwrap(),
                message["redelivered"] == json!(true),
            )
        })
        .collect()
}

fn b(conversation: &Pair, more: Value) -> Value {
    caller(
        &conversation.created.id.to_string(),
        "b",
        &conversation.b.token.reveal(),
        more,
    )
}

/// The reproduction: 100 messages of 2,000 characters, a consuming
/// call whose answer the client never reads, the server killed: the next
/// server hands out all 100 again, marked.
#[tokio::test]
async fn an_answer_never_read_comes_again_after_the_server_is_killed() {
    for tool in ["check_messages", "wait_for_messages"] {
        let db = TempDb::new();
        let conversation = pair(&db.open().await).await;
        let sent = queue(&db, &conversation, 100, 2_000).await;
        let mut server = RawStdio::initialized(&db.path, &[]);
        let limit = if tool == "check_messages" {
            json!({"limit": 1000})
        } else {
            json!({})
        };
        server.call(1, tool, b(&conversation, limit));
        // The answer (over 200 KB) fills the pipe and waits for a reader.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        server.kill();

        let agent = Agent::stdio(&db.path, &[]).await;
        let again = agent
            .call("check_messages", b(&conversation, json!({"limit": 1000})))
            .await;
        let again = received(&json!({"structuredContent": again.structured()}));
        assert_eq!(
            again.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            sent,
            "{tool}: all 100 again"
        );
        assert!(again.iter().all(|(_, marked)| *marked), "{tool}: marked");
        agent.stop().await;
    }
}

/// An agent of the original bridge: `check_messages` in a loop, no extra
/// argument. Each message once, none marked; each call confirms the one
/// before.
#[tokio::test]
async fn a_polling_agent_sees_each_message_once() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let agent = Agent::stdio(&db.path, &[]).await;
    let mut seen = Vec::new();
    let mut sent = Vec::new();
    for round in 0..5 {
        for n in 0..3 {
            sent.push(
                store
                    .send(&conversation.a, NewMessage::new(format!("{round}.{n}")))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let result = agent
            .ok("check_messages", b(&conversation, json!({})))
            .await;
        seen.extend(received(&json!({"structuredContent": result})));
    }
    let last = agent
        .ok("check_messages", b(&conversation, json!({})))
        .await;
    assert_eq!(last["messages"], json!([]));
    assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), sent);
    assert!(seen.iter().all(|(_, marked)| !marked), "{seen:?}");
    let summary = store.inbox_summary(&conversation.b).await.unwrap();
    assert_eq!(
        summary.acked_id,
        *sent.last().unwrap(),
        "the calls confirmed everything"
    );
    agent.stop().await;
    store.close().await;
}

/// A session that ends right after a consuming call has not confirmed its
/// last answer: the next session gets it again, marked, unless the first
/// acknowledged it.
#[tokio::test]
async fn the_last_answer_of_a_session_is_confirmed_by_ack_or_comes_again() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let first = queue(&db, &conversation, 2, 10).await;

    let agent = Agent::stdio(&db.path, &[]).await;
    agent
        .ok("check_messages", b(&conversation, json!({})))
        .await;
    agent.stop().await;
    let agent = Agent::stdio(&db.path, &[]).await;
    let again = agent
        .ok("check_messages", b(&conversation, json!({})))
        .await;
    assert_eq!(
        received(&json!({"structuredContent": again})),
        vec![(first[0], true), (first[1], true)]
    );
    // This time the agent says it is done with them.
    let done = agent
        .ok("check_messages", b(&conversation, json!({"ack": first[1]})))
        .await;
    assert_eq!(done["messages"], json!([]));
    agent.stop().await;
    let agent = Agent::stdio(&db.path, &[]).await;
    let nothing = agent
        .ok("check_messages", b(&conversation, json!({})))
        .await;
    assert_eq!(nothing["messages"], json!([]));
    let refused = agent
        .refused(
            "check_messages",
            b(&conversation, json!({"ack": first[1] + 100})),
        )
        .await;
    assert_eq!(
        refused,
        format!(
            "invalid ack: message {} was not handed to this session yet (the last one handed out is {})",
            first[1] + 100,
            first[1]
        )
    );
    agent.stop().await;
    store.close().await;
}

/// Over HTTP, an agent whose client keeps its connection sees each message
/// once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_polling_agent_sees_each_message_once() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let server = HttpServer::start(&db.path, &[]);
    let agent = Agent::http(&server.url, &[]).await.unwrap();
    let mut seen = Vec::new();
    let mut sent = Vec::new();
    for round in 0..5 {
        sent.extend(queue(&db, &conversation, 2, 20 + round).await);
        let result = agent
            .ok("check_messages", b(&conversation, json!({})))
            .await;
        seen.extend(received(&json!({"structuredContent": result})));
    }
    let result = agent
        .ok(
            "wait_for_messages",
            b(&conversation, json!({"timeout_seconds": 1})),
        )
        .await;
    assert_eq!(result["messages"], json!([]));
    assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), sent);
    assert!(seen.iter().all(|(_, marked)| !marked), "{seen:?}");
    assert_eq!(
        store.inbox_summary(&conversation.b).await.unwrap().acked_id,
        *sent.last().unwrap()
    );
    agent.stop().await;
    store.close().await;
}

/// Over HTTP, a connection cut while the answer is in flight: the next call
/// in the same MCP session, on a new connection, gets the messages again,
/// marked. Both when the answer was still being written and when it had
/// been written whole into the connection before the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_cut_connection_gets_its_answer_again() {
    let db = TempDb::new();
    let conversation = pair(&db.open().await).await;
    let server = HttpServer::start(&db.path, &[]);
    // A large answer (cut while being written) and a small one (written
    // whole into the connection, then cut unread).
    for (count, chars) in [(200, 20_000), (3, 100)] {
        let sent = queue(&db, &conversation, count, chars).await;
        let last = *sent.last().unwrap();
        let authority = server.authority().to_owned();
        let arguments = b(&conversation, json!({"limit": 1000}));
        let (connection, mut session) = tokio::task::spawn_blocking({
            let (authority, arguments) = (authority.clone(), arguments.clone());
            move || {
                let mut connection = Connection::open(&authority);
                let mut session = Session::open(&mut connection);
                let body = session.call_body("check_messages", arguments);
                connection.send(Some(&session.id), "application/json", &body);
                assert_eq!(connection.read_head_only(), 200);
                (connection, session)
            }
        })
        .await
        .unwrap();
        // Once the server has handed them out, the connection is cut with
        // the answer unread.
        let store = db.open().await;
        for _ in 0..500 {
            if store
                .inbox_summary(&conversation.b)
                .await
                .unwrap()
                .delivered_id
                == last
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            store
                .inbox_summary(&conversation.b)
                .await
                .unwrap()
                .delivered_id,
            last
        );
        store.close().await;
        let again = tokio::task::spawn_blocking(move || {
            connection.cut();
            let mut connection = Connection::open(&authority);
            received(&session.call(&mut connection, "check_messages", arguments))
        })
        .await
        .unwrap();
        assert_eq!(again.iter().map(|(id, _)| *id).collect::<Vec<_>>(), sent);
        assert!(again.iter().all(|(_, marked)| *marked), "{again:?}");
        // Done with them, before the next case.
        let store = db.open().await;
        store
            .ack(&conversation.b, *sent.last().unwrap())
            .await
            .unwrap();
        store.close().await;
    }
}

/// A send retried with its idempotency key, through a new server process,
/// stores one message and answers its id; other content under the key is
/// refused, as is a key out of bounds.
#[tokio::test]
async fn a_retried_send_or_assignment_is_stored_once_across_processes() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let a = |more: Value| {
        caller(
            &conversation.created.id.to_string(),
            "a",
            &conversation.a.token.reveal(),
            more,
        )
    };
    let send = json!({"message": "ship it", "idempotency_key": "send-1"});
    let assign = json!({"title": "Ship", "body": "Ship it.", "idempotency_key": "task-1"});

    let agent = Agent::stdio(&db.path, &[]).await;
    let first = agent.ok("send_to_partner", a(send.clone())).await;
    assert!(first.get("replayed").is_none(), "{first}");
    let task = agent.ok("assign_task", a(assign.clone())).await;
    agent.stop().await;

    let agent = Agent::stdio(&db.path, &[]).await;
    let reply = agent.call("send_to_partner", a(send.clone())).await;
    assert!(!reply.is_error());
    let again = reply.structured();
    assert_eq!(again["message_id"], first["message_id"]);
    assert_eq!(again["replayed"], true);
    assert!(reply.text().contains("already sent"), "{}", reply.text());
    let task_again = agent.ok("assign_task", a(assign)).await;
    assert_eq!(task_again["id"], task["id"]);

    let refused = agent
        .refused(
            "send_to_partner",
            a(json!({"message": "something else", "idempotency_key": "send-1"})),
        )
        .await;
    assert!(
        refused.starts_with("invalid idempotency_key: this session already used the key"),
        "{refused}"
    );
    let refused = agent
        .refused(
            "send_to_partner",
            a(json!({"message": "x", "idempotency_key": "k".repeat(101)})),
        )
        .await;
    assert_eq!(
        refused,
        "invalid idempotency_key: must be 1 to 100 characters, got 101"
    );
    agent.stop().await;

    let history = store.history(&conversation.b, None, 50).await.unwrap();
    assert_eq!(
        history.iter().filter(|m| m.body == "ship it").count(),
        1,
        "one message"
    );
    assert_eq!(
        store.list_tasks(&conversation.a, None).await.unwrap().len(),
        1
    );
    store.close().await;
}

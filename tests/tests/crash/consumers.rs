//! Consumers: a client reading with `check_messages` (no `ack`: its server
//! confirms on its next call) while large messages arrive, its server killed
//! before, during and after answers are written. Nothing is lost, and a
//! message received again is marked.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bridge_core::NewMessage;
use bridge_tests::{TempDb, pair};
use serde_json::{Value, json};

use crate::server::{Lost, Server, Slot};
use crate::{Rng, assert_at_least_once, assert_sound};

/// Messages sent in the scenario.
const MESSAGES: usize = 240;

/// Servers killed in the scenario.
const KILLS: usize = 16;

/// Calls before the test gives up draining.
const MAX_CALLS: usize = 2_000;

/// Message `n`: unique, and 2,500 characters or so, so that an answer of a
/// hundred messages is far larger than a pipe's buffer (64 KiB) and a kill
/// can land while it is being written.
fn body(n: usize) -> String {
    let mut body = format!("message {n}: ");
    while body.len() < 2_500 {
        body.push_str(&format!("{n:05} lorem ipsum dolor sit amet "));
    }
    body
}

/// Records the messages of a `check_messages` result: (id, marked), and
/// checks each body against what was sent.
fn record(
    result: &Value,
    bodies: &HashMap<i64, String>,
    receipts: &mut Vec<(i64, bool)>,
    seed: u64,
) -> usize {
    assert_ne!(
        result["isError"],
        json!(true),
        "check_messages refused (seed {seed}): {result}"
    );
    let messages = result["structuredContent"]["messages"]
        .as_array()
        .expect("a list of messages");
    for message in messages {
        let id = message["id"].as_i64().expect("an id");
        let marked = match message.get("redelivered") {
            None => false,
            Some(Value::Bool(true)) => true,
            Some(other) => panic!("redelivered is present only when true, got {other}"),
        };
        assert_eq!(
            message["message"].as_str(),
            bodies.get(&id).map(String::as_str),
            "message {id} as received (seed {seed})"
        );
        receipts.push((id, marked));
    }
    messages.len()
}

/// The server went away though the test did not kill it.
fn alone(seed: u64) -> ! {
    panic!("bridge-mcp went away by itself (seed {seed})")
}

/// How the client's next call goes.
#[derive(Clone, Copy, Debug)]
enum Call {
    /// Call and read the whole answer.
    Whole,
    /// Call, read the first bytes of the answer, kill the server.
    CutAfter(usize),
    /// Call and kill the server a moment later, answer unread.
    KillAfterMillis(u64),
    /// Call, read the whole answer, kill the server before the next call.
    KillAfterAnswer,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_arrives_and_repeats_are_marked_across_kills() {
    let (mut rng, seed) = Rng::for_scenario("consumers");
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let caller = json!({
        "conversation_id": conversation.created.id.to_string(),
        "session_id": "b",
        "token": conversation.b.token.reveal(),
    });
    bridge_tests::bin::path("bridge-mcp");

    // The partner sends in bursts, from the test's own store.
    let sent_all = Arc::new(AtomicBool::new(false));
    let sender = {
        let (store, from, done) = (store.clone(), conversation.a.clone(), Arc::clone(&sent_all));
        let mut rng = rng.fork();
        tokio::spawn(async move {
            let mut bodies = HashMap::new();
            let mut n = 0;
            while n < MESSAGES {
                for _ in 0..rng.range(1, 40) {
                    if n == MESSAGES {
                        break;
                    }
                    let sent = store.send(&from, NewMessage::new(body(n))).await.unwrap();
                    bodies.insert(sent.id, body(n));
                    n += 1;
                }
                tokio::time::sleep(rng.millis(0, 200)).await;
            }
            done.store(true, Ordering::SeqCst);
            bodies
        })
    };

    // The consumer. Only the test kills its server: one that goes away by
    // itself is a failure.
    let slot = Slot::default();
    let mut server: Option<Server> = None;
    let mut results = Vec::new();
    let (mut kills, mut calls, mut cut) = (0, 0, 0);
    loop {
        calls += 1;
        assert!(
            calls <= MAX_CALLS,
            "still not drained after {MAX_CALLS} calls (seed {seed})"
        );
        let current = match server.as_mut() {
            Some(current) => current,
            None => server.insert(
                Server::start(&db.path, &slot)
                    .await
                    .expect("bridge-mcp starts"),
            ),
        };
        let how = if kills < KILLS {
            // Now and then a pause, so that a backlog builds up and the
            // next answer is large.
            if rng.range(0, 2) == 0 {
                tokio::time::sleep(rng.millis(50, 300)).await;
            }
            match rng.range(0, 10) {
                0..=4 => Call::Whole,
                5 | 6 => Call::CutAfter(rng.range(1, 32_768) as usize),
                7 => Call::KillAfterMillis(rng.range(0, 4)),
                _ => Call::KillAfterAnswer,
            }
        } else {
            Call::Whole
        };
        let limit = [1000, 1000, 200, 10][rng.index(4)];
        let drained_before = sent_all.load(Ordering::SeqCst);
        let mut arguments = caller.clone();
        arguments["limit"] = json!(limit);
        let id = current
            .send_call("check_messages", arguments)
            .await
            .unwrap_or_else(|Lost| alone(seed));
        let got = match how {
            Call::Whole | Call::KillAfterAnswer => {
                Some(current.answer(id).await.unwrap_or_else(|Lost| alone(seed)))
            }
            Call::CutAfter(bytes) => {
                let got = current
                    .read_at_most(bytes)
                    .await
                    .unwrap_or_else(|Lost| alone(seed));
                cut += usize::from(got.is_none());
                got
            }
            Call::KillAfterMillis(millis) => {
                tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
                None
            }
        };
        if !matches!(how, Call::Whole)
            && let Some(killed) = server.take()
        {
            killed.kill();
            kills += 1;
        }
        if let Some(answer) = got {
            assert!(answer["result"].is_object(), "{answer}");
            let count = answer["result"]["structuredContent"]["messages"]
                .as_array()
                .map_or(0, Vec::len);
            results.push(answer["result"].clone());
            // Empty, everything sent before the call, and no more kills:
            // everything was handed out and confirmed.
            if count == 0 && drained_before && kills >= KILLS {
                break;
            }
        }
    }
    if let Some(last) = server.take() {
        last.kill();
    }
    let bodies = sender.await.expect("the sender");

    let mut receipts = Vec::new();
    for result in &results {
        record(result, &bodies, &mut receipts, seed);
    }
    let again = receipts.iter().filter(|(_, marked)| *marked).count();
    eprintln!(
        "consumers: {} messages, {} receipts ({again} marked), {kills} servers killed ({cut} with the answer cut short), {calls} calls",
        bodies.len(),
        receipts.len()
    );
    let mut sent: Vec<i64> = bodies.keys().copied().collect();
    sent.sort_unstable();
    assert_at_least_once("check_messages", &receipts, &sent, seed);

    // The store agrees: everything confirmed, nothing pending.
    let summary = store.inbox_summary(&conversation.b).await.unwrap();
    assert_eq!(
        (summary.unread, summary.acked_id, summary.delivered_id),
        (0, sent[sent.len() - 1], sent[sent.len() - 1]),
        "the session's delivery state (seed {seed})"
    );
    assert_sound(&db, &store, seed).await;
    store.close().await;
}

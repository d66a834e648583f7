//! Writers under load: `bridge-mcp` servers sending keyed messages, killed
//! at random moments; every acknowledged send is stored exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bridge_tests::{TempDb, pair, scalar};
use serde_json::json;

use crate::server::{self, Lost, Server, Slot};
use crate::{Rng, assert_sound};

/// Clients, each with its own server.
const WRITERS: usize = 4;

/// Servers killed at random moments by the killer.
const KILLS: usize = 15;

/// Servers each client kills itself, a moment after sending a request (so
/// that some die between the commit and the answer, and the retry is a
/// replay).
const OWN_KILLS: usize = 5;

/// Attempts at one message before the test gives up (a client that never
/// gets an answer is a failure in itself).
const MAX_ATTEMPTS: usize = 50;

/// What one client got for one logical message.
struct Acknowledged {
    body: String,
    id: i64,
    replayed: bool,
    attempts: usize,
}

/// The body of message `n` of writer `w`: unique, and some 400 characters.
fn body(w: usize, n: usize) -> String {
    format!("writer {w} message {n}: {}", "payload ".repeat(50))
}

/// One client: sends keyed messages until `stop`, each retried with the
/// same key on a new server until acknowledged. Now and then it kills its
/// own server a moment after sending. Returns what was acknowledged and how
/// many servers it killed.
async fn writer(
    w: usize,
    database: std::path::PathBuf,
    slot: Slot,
    caller: serde_json::Value,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
    seed: u64,
) -> (Vec<Acknowledged>, usize) {
    let mut server: Option<Server> = None;
    let mut acknowledged = Vec::new();
    let mut own_kills = 0;
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let body = body(w, n);
        let mut arguments = caller.clone();
        arguments["message"] = json!(body);
        arguments["idempotency_key"] = json!(format!("writer-{w}-{n}"));
        let mut attempts = 0;
        let (id, replayed) = loop {
            attempts += 1;
            assert!(
                attempts <= MAX_ATTEMPTS,
                "writer {w}: message {n} not acknowledged after {MAX_ATTEMPTS} attempts (seed {seed})"
            );
            let current = match server.as_mut() {
                Some(current) => current,
                None => match Server::start(&database, &slot).await {
                    Ok(started) => server.insert(started),
                    Err(Lost) => continue,
                },
            };
            let Ok(request) = current
                .send_call("send_to_partner", arguments.clone())
                .await
            else {
                server = None;
                continue;
            };
            if own_kills < OWN_KILLS && rng.range(0, 8) == 0 {
                tokio::time::sleep(rng.millis(0, 15)).await;
                if let Some(killed) = server.take() {
                    killed.kill();
                    own_kills += 1;
                }
                continue;
            }
            match current.answer(request).await {
                Ok(answer) => {
                    let result = &answer["result"];
                    assert_ne!(
                        result["isError"],
                        json!(true),
                        "writer {w}: message {n} refused (seed {seed}): {result}"
                    );
                    let sent = &result["structuredContent"];
                    break (
                        sent["message_id"].as_i64().expect("a message id"),
                        sent["replayed"] == json!(true),
                    );
                }
                // Killed: a new server, the same request, the same key.
                Err(Lost) => server = None,
            }
        };
        acknowledged.push(Acknowledged {
            body,
            id,
            replayed,
            attempts,
        });
    }
    (acknowledged, own_kills)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_send_is_stored_exactly_once_across_kills() {
    let (mut rng, seed) = Rng::for_scenario("writers");
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let caller = json!({
        "conversation_id": conversation.created.id.to_string(),
        "session_id": "a",
        "token": conversation.a.token.reveal(),
    });
    bridge_tests::bin::path("bridge-mcp");

    let stop = Arc::new(AtomicBool::new(false));
    let slots: Vec<Slot> = (0..WRITERS).map(|_| Slot::default()).collect();
    let writers: Vec<_> = slots
        .iter()
        .enumerate()
        .map(|(w, slot)| {
            tokio::spawn(writer(
                w,
                db.path.clone(),
                Arc::clone(slot),
                caller.clone(),
                Arc::clone(&stop),
                rng.fork(),
                seed,
            ))
        })
        .collect();
    // The killer: a random server at a random moment, until enough died.
    let mut kills = 0;
    while kills < KILLS {
        tokio::time::sleep(rng.millis(50, 400)).await;
        if server::kill(&slots[rng.index(WRITERS)]) {
            kills += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for writer in writers {
        let (acknowledged, own_kills) = writer.await.expect("a writer");
        all.extend(acknowledged);
        kills += own_kills;
    }

    let retried = all.iter().filter(|sent| sent.attempts > 1).count();
    let replayed = all.iter().filter(|sent| sent.replayed).count();
    eprintln!(
        "writers: {} messages acknowledged, {kills} servers killed, {retried} sends retried, {replayed} answered as replays",
        all.len()
    );

    // Each acknowledged body is stored once, under the id its client got,
    // and nothing else is stored.
    let mut raw = db.raw().await;
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, body FROM message")
        .fetch_all(&mut raw)
        .await
        .unwrap();
    let mut stored: HashMap<&str, Vec<i64>> = HashMap::new();
    for (id, body) in &rows {
        stored.entry(body.as_str()).or_default().push(*id);
    }
    for sent in &all {
        assert_eq!(
            stored.get(sent.body.as_str()),
            Some(&vec![sent.id]),
            "acknowledged as message {} (replayed: {}, after {} attempts): stored as (seed {seed})",
            sent.id,
            sent.replayed,
            sent.attempts
        );
    }
    assert_eq!(
        rows.len(),
        all.len(),
        "messages stored that no client was acknowledged for (seed {seed})"
    );
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM audit WHERE action = 'message_sent'"
        )
        .await,
        all.len() as i64,
        "each stored message audited once (seed {seed})"
    );
    drop(raw);
    assert_sound(&db, &store, seed).await;
    store.close().await;
}

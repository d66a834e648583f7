//! Several hubs on one database: two `bridge-mcp --http` processes serving
//! one team (an agent on one, its partner on the other), and two
//! `watchdog-monitor`s at once. On PostgreSQL this is the deployment of a
//! team larger than one host; on SQLite, several processes on one file.

use std::time::{Duration, Instant};

use bridge_core::NewTask;
use bridge_tests::daemon::{Daemon, run};
use bridge_tests::mcp::{Agent, HttpServer, caller};
use bridge_tests::{TempDb, scalar, team};
use serde_json::json;

use crate::SECOND;

/// Messages each sender sends.
const MESSAGES: usize = 40;

/// Sends `MESSAGES` messages `m0`, `m1`, … in `id` from session `a`
/// through `sender`.
async fn send_all(sender: &Agent, id: &str, token_a: &str) {
    for n in 0..MESSAGES {
        sender
            .ok(
                "send_to_partner",
                caller(id, "a", token_a, json!({"message": format!("m{n}")})),
            )
            .await;
    }
}

/// One message as a waiter received it: id, body, and whether it came
/// again (an answer the hub could not be sure reached its client).
type Received = (i64, String, bool);

/// Waits on `receiver` for session `b` of `id` until `MESSAGES` distinct
/// messages came; returns all it received, in order.
async fn receive_all(receiver: &Agent, id: &str, token_b: &str) -> Vec<Received> {
    let mut received: Vec<Received> = Vec::new();
    while first_times(&received).len() < MESSAGES {
        let waited = receiver
            .ok(
                "wait_for_messages",
                caller(id, "b", token_b, json!({"timeout_seconds": 30})),
            )
            .await;
        assert_eq!(waited["timed_out"], false, "{received:?}");
        for message in waited["messages"].as_array().unwrap() {
            received.push((
                message["id"].as_i64().unwrap(),
                message["message"].as_str().unwrap().to_owned(),
                message["redelivered"] == true,
            ));
        }
    }
    received
}

/// The messages received for the first time, in order: what an agent acts
/// on (it skips an id it has seen, which comes marked as redelivered).
fn first_times(received: &[Received]) -> Vec<&Received> {
    let mut seen = std::collections::BTreeSet::new();
    received
        .iter()
        .filter(|(id, _, _)| seen.insert(*id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_serve_one_team_every_message_once_and_in_order() {
    let db = TempDb::new();
    let one = HttpServer::start(&db.path, &[]);
    let two = HttpServer::start(&db.path, &[]);
    let on_one = Agent::http(&one.url, &[]).await.unwrap();
    let on_two = Agent::http(&two.url, &[]).await.unwrap();
    // Two conversations, crosswise: each hub has a sender and a waiter.
    let (x, x_a, x_b) = on_one
        .create(json!({"my_role": "orchestrator", "partner_role": "worker x"}))
        .await;
    let (y, y_a, y_b) = on_two
        .create(json!({"my_role": "orchestrator", "partner_role": "worker y"}))
        .await;
    let senders_on_one = Agent::http(&one.url, &[]).await.unwrap();
    let senders_on_two = Agent::http(&two.url, &[]).await.unwrap();

    let (x_received, y_received, (), ()) = tokio::join!(
        receive_all(&on_two, &x, &x_b),
        receive_all(&on_one, &y, &y_b),
        send_all(&senders_on_one, &x, &x_a),
        send_all(&senders_on_two, &y, &y_a),
    );
    let expected: Vec<String> = (0..MESSAGES).map(|n| format!("m{n}")).collect();
    for received in [&x_received, &y_received] {
        let first = first_times(received);
        let bodies: Vec<&str> = first.iter().map(|(_, body, _)| body.as_str()).collect();
        assert_eq!(bodies, expected, "each message, in order");
        assert!(
            first.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "ids rise in delivery order: {received:?}"
        );
        // A message comes twice only when the hub could not know that its
        // first answer arrived, and then it says so.
        let again = received.len() - first.len();
        let marked = received.iter().filter(|(_, _, again)| *again).count();
        assert_eq!(again, marked, "every repeat is marked: {received:?}");
        assert!(first.iter().all(|(_, _, again)| !again), "{received:?}");
    }
    // Nothing new is waiting on either side: at most the last answer again,
    // marked, when its receipt had not been confirmed yet.
    for (agent, id, token) in [(&on_two, &x, &x_b), (&on_one, &y, &y_b)] {
        let checked = agent
            .ok("check_messages", caller(id, "b", token, json!({})))
            .await;
        let again = checked["messages"].as_array().cloned().unwrap_or_default();
        assert!(
            again.iter().all(|message| message["redelivered"] == true),
            "{checked}"
        );
    }
    for agent in [on_one, on_two, senders_on_one, senders_on_two] {
        agent.stop().await;
    }
    one.stop();
    two.stop();

    // Both hubs wrote at once: the audit trail is still one chain.
    let (code, stdout, stderr) = run("bridgectl", &db.path, &["audit", "verify"], &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let mut raw = db.raw().await;
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM audit WHERE action = 'message_sent'"
        )
        .await,
        2 * MESSAGES as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchdogs_flag_each_silence_once_and_move_each_task_once() {
    const TASKS: usize = 6;
    let db = TempDb::new();
    let store = db.open().await;
    let workers = team(&store, "core", 4).await;
    for n in 0..TASKS {
        store
            .assign_task(&workers[0].a, NewTask::new(format!("t{n}"), "Do it."))
            .await
            .unwrap();
    }
    // Workers 1 to 3 beat; worker 0 never does.
    let beating = {
        let store = store.clone();
        let healthy: Vec<_> = workers[1..].iter().map(|pair| pair.b.clone()).collect();
        tokio::spawn(async move {
            loop {
                for credentials in &healthy {
                    store.heartbeat(credentials).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let args = ["--interval", "100ms", "--threshold", "1s", "--team", "core"];
    let mut watchdogs = [
        Daemon::start("watchdog-monitor", &db.path, &args, &[]),
        Daemon::start("watchdog-monitor", &db.path, &args, &[]),
    ];
    let started = Instant::now();
    while !store
        .list_tasks(&workers[0].a, None)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            started.elapsed() < 30 * SECOND,
            "{}\n{}",
            watchdogs[0].stderr(),
            watchdogs[1].stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few more passes each, with nothing left to do.
    let scans = |daemon: &Daemon| daemon.stderr().matches("scan done").count();
    let seen = [scans(&watchdogs[0]), scans(&watchdogs[1])];
    while scans(&watchdogs[0]) < seen[0] + 3 || scans(&watchdogs[1]) < seen[1] + 3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut logs = String::new();
    for daemon in &mut watchdogs {
        let (status, _) = daemon.signal("TERM", 5 * SECOND).expect("exits on SIGTERM");
        assert_eq!(status.code(), Some(0));
        logs.push_str(&daemon.stderr());
    }
    beating.abort();

    assert_eq!(logs.matches("worker silent").count(), 1, "{logs}");
    assert_eq!(logs.matches("task reassigned").count(), TASKS, "{logs}");
    let mut raw = db.raw().await;
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM task WHERE attempts = 2 AND NOT unassigned"
        )
        .await,
        TASKS as i64,
        "each task moved once"
    );
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM task_assignment").await,
        2 * TASKS as i64
    );
    let mut told = 0;
    for pair in &workers[1..] {
        told += store.check(&pair.b, 100).await.unwrap().len();
    }
    assert_eq!(told, TASKS, "each new worker is told once per task");
    assert!(store.verify_audit().await.unwrap().is_intact());
    store.close().await;
}

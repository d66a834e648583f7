//! A team: one orchestrator and nine workers, each agent with its own
//! `bridge-mcp` process on one database, nine conversations, messages both
//! ways at once. Every message arrives exactly once and in order.

use bridge_tests::TempDb;
use bridge_tests::mcp::{Agent, caller};
use serde_json::{Value, json};

const WORKERS: usize = 9;
const MESSAGES: usize = 20;

/// Reads messages of one conversation with check_messages or
/// wait_for_messages until `count` arrived; returns their bodies.
async fn receive(agent: &Agent, arguments: &Value, count: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut waits = false;
    while bodies.len() < count {
        let tool = if waits {
            "wait_for_messages"
        } else {
            "check_messages"
        };
        let mut call = arguments.clone();
        if waits {
            call["timeout_seconds"] = json!(10);
        }
        let reply = agent.ok(tool, call).await;
        let messages = reply["messages"].as_array().unwrap();
        bodies.extend(
            messages
                .iter()
                .map(|m| m["message"].as_str().unwrap().to_owned()),
        );
        waits = !waits;
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_orchestrator_nine_workers_every_message_once_in_order() {
    let db = TempDb::new();
    let orchestrator = Agent::stdio(&db.path, &[]).await;
    let mut conversations = Vec::new();
    for n in 0..WORKERS {
        let created = orchestrator
            .ok(
                "create_conversation",
                json!({"my_role": "orchestrator", "partner_role": format!("worker {n}"), "team": "t"}),
            )
            .await;
        let field = |key: &str| created[key].as_str().unwrap().to_owned();
        conversations.push((
            field("conversation_id"),
            field("session_a_token"),
            field("session_b_token"),
        ));
    }

    let mut workers = Vec::new();
    for (id, _, token_b) in conversations.clone() {
        let database = db.path.clone();
        workers.push(tokio::spawn(async move {
            let worker = Agent::stdio(&database, &[]).await;
            let me = caller(&id, "b", &token_b, json!({}));
            let sending = async {
                for n in 0..MESSAGES {
                    let mut send = me.clone();
                    send["message"] = json!(format!("{id} from worker {n}"));
                    worker.ok("send_to_partner", send).await;
                }
            };
            let (received, ()) = tokio::join!(receive(&worker, &me, MESSAGES), sending);
            worker.stop().await;
            (id, received)
        }));
    }

    let orchestrating = async {
        let mut received = Vec::new();
        for (id, token_a, _) in &conversations {
            let me = caller(id, "a", token_a, json!({}));
            for n in 0..MESSAGES {
                let mut send = me.clone();
                send["message"] = json!(format!("{id} from orchestrator {n}"));
                orchestrator.ok("send_to_partner", send).await;
            }
        }
        for (id, token_a, _) in &conversations {
            let me = caller(id, "a", token_a, json!({}));
            received.push((id.clone(), receive(&orchestrator, &me, MESSAGES).await));
        }
        received
    };
    let from_workers = orchestrating.await;
    for (id, bodies) in from_workers {
        let expected: Vec<String> = (0..MESSAGES)
            .map(|n| format!("{id} from worker {n}"))
            .collect();
        assert_eq!(bodies, expected, "the orchestrator's messages from {id}");
    }
    for worker in workers {
        let (id, bodies) = worker.await.unwrap();
        let expected: Vec<String> = (0..MESSAGES)
            .map(|n| format!("{id} from orchestrator {n}"))
            .collect();
        assert_eq!(bodies, expected, "the messages to the worker of {id}");
    }
    // Nothing left over anywhere.
    for (id, token_a, _) in &conversations {
        let left = orchestrator
            .ok("check_messages", caller(id, "a", token_a, json!({})))
            .await;
        assert_eq!(left["messages"], json!([]));
    }
    orchestrator.stop().await;
}

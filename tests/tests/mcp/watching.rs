//! What a watcher on another machine needs from the tools: a heartbeat that
//! changes no status and says how many messages wait (`update_my_status`
//! without `status`), and reads after an id of its own that mark nothing
//! read (`after_id` on `check_messages` and `wait_for_messages`).

use std::time::Duration;

use bridge_tests::TempDb;
use bridge_tests::mcp::{Agent, caller};
use serde_json::{Value, json};

fn ids(reply: &Value) -> Vec<i64> {
    reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_heartbeat_keeps_the_status_and_counts_what_waits() {
    let db = TempDb::new();
    let agent = Agent::stdio(&db.path, &[]).await;
    let (id, a, b) = agent
        .create(json!({"my_role": "orchestrator", "partner_role": "worker"}))
        .await;
    let set = agent
        .ok(
            "update_my_status",
            caller(&id, "b", &b, json!({"status": "blocked"})),
        )
        .await;
    assert_eq!(set, json!({"status": "blocked", "unread": 0}));
    for n in 0..3 {
        agent
            .ok(
                "send_to_partner",
                caller(&id, "a", &a, json!({"message": format!("m{n}")})),
            )
            .await;
    }
    let beat = agent
        .call("update_my_status", caller(&id, "b", &b, json!({})))
        .await;
    assert_eq!(beat.structured(), json!({"unread": 3}));
    assert_eq!(beat.text(), "Heartbeat recorded. 3 unread messages.");
    let partner = agent
        .ok("check_partner_status", caller(&id, "a", &a, json!({})))
        .await;
    assert_eq!(
        partner["status"], "blocked",
        "a heartbeat changes no status"
    );
    agent.stop().await;
}

#[tokio::test]
async fn after_id_peeks_from_the_callers_place_and_waits_without_consuming() {
    let db = TempDb::new();
    let agent = Agent::stdio(&db.path, &[]).await;
    let (id, a, b) = agent
        .create(json!({"my_role": "orchestrator", "partner_role": "worker"}))
        .await;
    let send = |text: &'static str| {
        let (agent, id, a) = (&agent, id.clone(), a.clone());
        async move {
            agent
                .ok(
                    "send_to_partner",
                    caller(&id, "a", &a, json!({"message": text})),
                )
                .await["message_id"]
                .as_i64()
                .unwrap()
        }
    };
    let first = send("one").await;
    let second = send("two").await;
    let after = agent
        .ok(
            "check_messages",
            caller(&id, "b", &b, json!({"after_id": first})),
        )
        .await;
    assert_eq!(ids(&after), vec![second]);
    let everything = agent
        .ok(
            "check_messages",
            caller(&id, "b", &b, json!({"after_id": 0})),
        )
        .await;
    assert_eq!(ids(&everything), vec![first, second]);
    let refusal = agent
        .refused(
            "check_messages",
            caller(&id, "b", &b, json!({"after_id": 0, "ack": first})),
        )
        .await;
    assert_eq!(
        refusal,
        "invalid after_id: it peeks, and ack confirms a read that consumes: give one of them"
    );

    // Nothing after the last: the wait times out, and consumes nothing.
    let waited = agent
        .ok(
            "wait_for_messages",
            caller(
                &id,
                "b",
                &b,
                json!({"after_id": second, "timeout_seconds": 1}),
            ),
        )
        .await;
    assert_eq!(waited["timed_out"], true);
    // A send wakes it, and it hands out only what is new.
    let waiter = {
        let (id, b) = (id.clone(), b.clone());
        let watcher = Agent::stdio(&db.path, &[]).await;
        tokio::spawn(async move {
            let reply = watcher
                .ok(
                    "wait_for_messages",
                    caller(
                        &id,
                        "b",
                        &b,
                        json!({"after_id": second, "timeout_seconds": 30}),
                    ),
                )
                .await;
            watcher.stop().await;
            reply
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = send("three").await;
    let reply = waiter.await.unwrap();
    assert_eq!(ids(&reply), vec![third]);
    assert_eq!(reply["timed_out"], false, "woken by the send");

    // The agent still gets all three: nothing was marked read.
    let consumed = agent
        .ok("check_messages", caller(&id, "b", &b, json!({})))
        .await;
    assert_eq!(ids(&consumed), vec![first, second, third]);
    agent.stop().await;
}

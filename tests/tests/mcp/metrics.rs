//! `/metrics` on the hub: the Prometheus text format, counters that move
//! with the calls a client makes, the store's counts, and who may read them
//! (the same authentication as `/mcp`, an access key, unless
//! `--metrics-public`).

use bridge_tests::http::{Connection, Response};
use bridge_tests::mcp::{Agent, HttpServer, caller};
use bridge_tests::{TempDb, access_key};
use serde_json::json;

/// The value of the series `series` (name and labels, as exposed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `GET /metrics` on `server`, with `Authorization: Bearer key` if given.
fn scrape(server: &HttpServer, key: Option<&str>) -> Response {
    let mut connection = Connection::open(server.authority());
    if let Some(key) = key {
        connection.authorize(&format!("Bearer {key}"));
    }
    connection.get("/metrics", &[])
}

#[tokio::test]
async fn the_counters_move_with_the_calls_made() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &[]);
    let agent = Agent::http(&server.url, &[]).await.unwrap();
    let (id, token_a, token_b) = agent
        .create(json!({"my_role": "orchestrator", "partner_role": "worker", "team": "blue"}))
        .await;
    for n in 0..3 {
        agent
            .ok(
                "send_to_partner",
                caller(&id, "a", &token_a, json!({"message": format!("hello {n}")})),
            )
            .await;
    }
    let wrong = "0f".repeat(32);
    agent
        .refused(
            "send_to_partner",
            caller(&id, "a", &wrong, json!({"message": "nope"})),
        )
        .await;
    agent
        .ok(
            "assign_task",
            caller(&id, "a", &token_a, json!({"title": "t", "body": "d"})),
        )
        .await;

    let response = scrape(&server, None);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = response.text();
    let sent_ok = "bridge_tool_calls_total{tool=\"send_to_partner\",outcome=\"ok\"}";
    assert_eq!(value(&text, sent_ok), Some(3.0), "{text}");
    assert_eq!(
        value(
            &text,
            "bridge_tool_calls_total{tool=\"send_to_partner\",outcome=\"refused\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "bridge_tool_duration_seconds_count{tool=\"send_to_partner\"}"
        ),
        Some(4.0)
    );
    assert_eq!(value(&text, "bridge_messages_sent_total"), Some(3.0));
    assert_eq!(
        value(&text, "bridge_conversations{state=\"live\"}"),
        Some(1.0)
    );
    assert_eq!(value(&text, "bridge_tasks{state=\"open\"}"), Some(1.0));
    let workers: f64 = ["healthy", "quiet", "silent"]
        .iter()
        .filter_map(|health| value(&text, &format!("bridge_workers{{health=\"{health}\"}}")))
        .sum();
    assert_eq!(workers, 1.0, "one worker, in one state: {text}");
    assert_eq!(value(&text, "bridge_waiters"), Some(0.0));
    assert!(value(&text, "bridge_audit_rows").is_some_and(|rows| rows >= 5.0));
    assert!(value(&text, "process_resident_memory_bytes").is_some_and(|bytes| bytes > 0.0));
    assert!(value(&text, "process_start_time_seconds").is_some_and(|at| at > 1.7e9));

    // A waiter shows while it waits; two more sends move the counters by two.
    let worker = Agent::http(&server.url, &[]).await.unwrap();
    worker
        .ok("check_messages", caller(&id, "b", &token_b, json!({})))
        .await;
    let waited_on = id.clone();
    let waiting = tokio::spawn(async move {
        worker
            .ok(
                "wait_for_messages",
                caller(&waited_on, "b", &token_b, json!({"timeout_seconds": 30})),
            )
            .await
    });
    let mut waiters = None;
    for _ in 0..100 {
        waiters = value(&scrape(&server, None).text(), "bridge_waiters");
        if waiters == Some(1.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(waiters, Some(1.0), "the waiter is counted while it waits");
    for n in 0..2 {
        agent
            .ok(
                "send_to_partner",
                caller(&id, "a", &token_a, json!({"message": format!("more {n}")})),
            )
            .await;
    }
    let woke = waiting.await.unwrap();
    assert_eq!(woke["timed_out"], false);
    let text = scrape(&server, None).text();
    assert_eq!(value(&text, sent_ok), Some(5.0));
    assert_eq!(value(&text, "bridge_messages_sent_total"), Some(5.0));
    assert_eq!(value(&text, "bridge_waiters"), Some(0.0));
    assert_eq!(
        value(
            &text,
            "bridge_tool_calls_total{tool=\"wait_for_messages\",outcome=\"ok\"}"
        ),
        Some(1.0)
    );
    agent.stop().await;
    server.stop();
}

#[tokio::test]
async fn they_need_an_access_key_unless_public_and_a_name_of_the_server() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &["--require-auth"]);
    let key = access_key(&db, "prometheus");
    let agent = Agent::keyed(&server.url, &key, None).await.unwrap();
    let (_, token_a, _) = agent
        .create(json!({"my_role": "orchestrator", "partner_role": "worker"}))
        .await;

    let refused = scrape(&server, None);
    assert_eq!(refused.status, 401);
    assert!(
        refused
            .text()
            .starts_with("Unauthorized: this server requires Authorization: Bearer <key>"),
        "{}",
        refused.text()
    );
    let wrong = scrape(&server, Some(&format!("mcpb_{}", "0".repeat(64))));
    assert_eq!(wrong.status, 401);
    let session = scrape(&server, Some(&token_a));
    assert_eq!(session.status, 403);
    assert_eq!(
        session.text(),
        "Forbidden: the metrics need an operator's access key (bridgectl access create), not a \
         session token"
    );
    let allowed = scrape(&server, Some(&key));
    assert_eq!(allowed.status, 200);
    let text = allowed.text();
    assert_eq!(
        value(&text, "bridge_auth_failures_total"),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains(&key) && !text.contains(&token_a));

    // A page elsewhere that points its name at this server is refused.
    let mut connection = Connection::open(server.authority());
    connection.authorize(&format!("Bearer {key}"));
    let rebound = connection.get("/metrics", &[("Host", "evil.example:80")]);
    assert_eq!(rebound.status, 403);
    assert!(
        rebound
            .text()
            .contains("the Host header does not name this server")
    );
    agent.stop().await;
    server.stop();

    // --metrics-public: /metrics without a key, /mcp still refused.
    let server = HttpServer::start(&db.path, &["--require-auth", "--metrics-public"]);
    let open = scrape(&server, None);
    assert_eq!(open.status, 200);
    assert_eq!(
        value(&open.text(), "bridge_conversations{state=\"live\"}"),
        Some(1.0)
    );
    assert!(Agent::http(&server.url, &[]).await.is_err());
    server.stop();
}

#[tokio::test]
async fn a_call_refused_by_the_rate_limit_counts_as_rate_limited() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &["--rate-limit", "2"]);
    let agent = Agent::http(&server.url, &[]).await.unwrap();
    let (id, token_a, _) = agent
        .create(json!({"my_role": "orchestrator", "partner_role": "worker"}))
        .await;
    let mut limited = 0;
    for n in 0..5 {
        let reply = agent
            .call(
                "send_to_partner",
                caller(&id, "a", &token_a, json!({"message": format!("m{n}")})),
            )
            .await;
        if reply.is_error() {
            assert!(reply.text().contains("rate limited"), "{}", reply.text());
            limited += 1;
        }
    }
    assert!(
        limited > 0,
        "the limit of 2 a minute refused some of 5 sends"
    );
    let text = scrape(&server, None).text();
    let limited = f64::from(limited);
    assert_eq!(
        value(&text, "bridge_rate_limited_calls_total"),
        Some(limited),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "bridge_tool_calls_total{tool=\"send_to_partner\",outcome=\"rate_limited\"}"
        ),
        Some(limited)
    );
    assert_eq!(
        value(
            &text,
            "bridge_tool_calls_total{tool=\"send_to_partner\",outcome=\"refused\"}"
        ),
        None,
        "a rate limit is not counted as another refusal"
    );
    agent.stop().await;
    server.stop();
}

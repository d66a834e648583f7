//! `watchdog-monitor`.

use std::collections::BTreeMap;
use std::time::Duration;

use bridge_tests::daemon::{Daemon, run};
use bridge_tests::http::Connection;
use bridge_tests::mcp::{Agent, caller};
use bridge_tests::{TempDb, team};
use serde_json::{Value, json};

use crate::SECOND;

/// The silence threshold of the scenario: heartbeats come every 250 ms.
const THRESHOLD: &str = "2s";

/// One worker of the scenario: its conversation, tokens and MCP agent.
struct Worker {
    id: String,
    token_a: String,
    token_b: String,
    agent: Agent,
}

impl Worker {
    fn a(&self, more: Value) -> Value {
        caller(&self.id, "a", &self.token_a, more)
    }

    fn b(&self, more: Value) -> Value {
        caller(&self.id, "b", &self.token_b, more)
    }
}

/// Starts `keepalive-daemon` for `worker`, beating every 250 ms, and waits
/// for its first beat.
fn keepalive(db: &TempDb, worker: &Worker) -> Daemon {
    let daemon = Daemon::start(
        "keepalive-daemon",
        &db.path,
        &[&worker.id, "--interval", "250ms"],
        &[("BRIDGE_TOKEN", &worker.token_b)],
    );
    assert!(
        daemon.wait_for_stderr("beating", 10 * SECOND),
        "{}",
        daemon.stderr()
    );
    daemon
}

/// `watchdog-monitor --once` on team `core`, alerts appended to `alerts`.
fn watchdog_once(db: &TempDb, alerts: &std::path::Path) -> String {
    let command = format!(
        "echo \"$BRIDGE_EVENT $BRIDGE_CONVERSATION_ID $BRIDGE_ROLE $BRIDGE_TEAM $BRIDGE_OPEN_TASKS\" >> '{}'",
        alerts.display()
    );
    let (code, stdout, stderr) = run(
        "watchdog-monitor",
        &db.path,
        &[
            "--once",
            "--threshold",
            THRESHOLD,
            "--team",
            "core",
            "--on-alert",
            &command,
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    stderr
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// The scenario: an orchestrator and three workers, each with its
/// own `bridge-mcp`; the workers' `keepalive-daemon`s; one worker stops
/// beating; the watchdog flags it, once, and its tasks move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_flagged_once_its_tasks_move_and_its_return_is_logged() {
    let db = TempDb::new();
    let orchestrator = Agent::stdio(&db.path, &[]).await;
    let mut workers = Vec::new();
    for n in 0..3 {
        let created = orchestrator
            .ok(
                "create_conversation",
                json!({"my_role": "orchestrator", "partner_role": format!("worker {n}"), "team": "core"}),
            )
            .await;
        let field = |key: &str| created[key].as_str().unwrap().to_owned();
        workers.push(Worker {
            id: field("conversation_id"),
            token_a: field("session_a_token"),
            token_b: field("session_b_token"),
            agent: Agent::stdio(&db.path, &[]).await,
        });
    }
    // Worker 0 gets four tasks, the others one each.
    let mut held = Vec::new();
    for (n, worker) in workers.iter().enumerate() {
        let tasks = if n == 0 { 4 } else { 1 };
        for t in 0..tasks {
            let task = orchestrator
                .ok(
                    "assign_task",
                    worker.a(json!({"title": format!("task {n}.{t}"), "body": "Do it."})),
                )
                .await;
            if n == 0 {
                held.push(task["id"].as_i64().unwrap());
            }
        }
    }
    workers[0]
        .agent
        .ok(
            "update_task",
            workers[0].b(json!({"task_id": held[0], "state": "in_progress"})),
        )
        .await;
    for worker in &workers {
        let told = worker.agent.ok("check_messages", worker.b(json!({}))).await;
        assert!(!told["messages"].as_array().unwrap().is_empty());
        orchestrator.ok("check_messages", worker.a(json!({}))).await;
    }

    let mut beating: Vec<Daemon> = workers.iter().map(|w| keepalive(&db, w)).collect();
    let (status, _) = beating[0]
        .signal("TERM", 5 * SECOND)
        .expect("keepalive stops");
    assert_eq!(status.code(), Some(0));
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let alerts = db.dir.path().join("alerts.txt");
    let stderr = watchdog_once(&db, &alerts);
    assert_eq!(count(&stderr, "worker silent"), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("conversation_id={}", workers[0].id)),
        "{stderr}"
    );
    assert_eq!(count(&stderr, "task reassigned"), 4, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&alerts).unwrap(),
        format!("silent {} worker 0 core 4\n", workers[0].id)
    );

    // The tasks: none left with worker 0, two more for each of the others.
    let listed = orchestrator.ok("list_tasks", workers[0].a(json!({}))).await;
    assert_eq!(listed["tasks"], json!([]));
    let mut landed = BTreeMap::new();
    for worker in &workers[1..] {
        let listed = orchestrator
            .ok("list_tasks", worker.a(json!({"state": "open"})))
            .await;
        let tasks = listed["tasks"].as_array().unwrap().clone();
        assert_eq!(tasks.len(), 3, "balanced: {tasks:?}");
        for task in tasks.iter().filter(|t| t["attempts"] == 2) {
            landed.insert(task["id"].as_i64().unwrap(), worker.id.clone());
        }
        // Each healthy worker is told of its two new tasks.
        let told = worker.agent.ok("check_messages", worker.b(json!({}))).await;
        let told = told["messages"].as_array().unwrap().clone();
        assert_eq!(told.len(), 2, "{told:?}");
        for message in &told {
            assert_eq!(message["from"], "system");
            assert_eq!(message["metadata"]["event"], "reassigned");
            assert!(message["message"].as_str().unwrap().contains("Do it."));
        }
    }
    assert_eq!(landed.keys().copied().collect::<Vec<_>>(), held);
    // The orchestrator is told, in the silent worker's conversation.
    let told = orchestrator
        .ok("check_messages", workers[0].a(json!({})))
        .await;
    let told = told["messages"].as_array().unwrap().clone();
    assert_eq!(told.len(), 4);
    for message in &told {
        let task_id = message["metadata"]["task_id"].as_i64().unwrap();
        let body = message["message"].as_str().unwrap();
        assert!(
            body.contains(&format!("moved to conversation {}", landed[&task_id])),
            "{body}"
        );
    }
    let partner = orchestrator
        .ok("check_partner_status", workers[0].a(json!({})))
        .await;
    assert_eq!(partner["status"], "silent");
    let store = db.open().await;
    let report = store.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");

    // A second pass: the same silence, no new alert, nothing to move.
    let stderr = watchdog_once(&db, &alerts);
    assert_eq!(count(&stderr, "worker silent"), 0, "{stderr}");
    assert_eq!(count(&stderr, "task reassigned"), 0, "{stderr}");
    assert!(stderr.contains("new_silences=0"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&alerts).unwrap().lines().count(), 1);

    // Worker 0 comes back: logged as recovered, marked active.
    beating[0] = keepalive(&db, &workers[0]);
    let stderr = watchdog_once(&db, &alerts);
    assert_eq!(count(&stderr, "worker recovered"), 1, "{stderr}");
    assert_eq!(count(&stderr, "worker silent"), 0, "{stderr}");
    let alerted = std::fs::read_to_string(&alerts).unwrap();
    assert_eq!(
        alerted.lines().nth(1),
        Some(format!("recovered {} worker 0 core 0", workers[0].id).as_str())
    );
    let partner = orchestrator
        .ok("check_partner_status", workers[0].a(json!({})))
        .await;
    assert_eq!(partner["status"], "active");
    assert!(store.verify_audit().await.unwrap().is_intact());

    for mut daemon in beating {
        let (status, _) = daemon.signal("TERM", 5 * SECOND).expect("keepalive stops");
        assert_eq!(status.code(), Some(0));
    }
    for worker in workers {
        worker.agent.stop().await;
    }
    orchestrator.stop().await;
    store.close().await;
}

#[tokio::test]
async fn with_no_reassign_it_alerts_and_leaves_the_tasks() {
    let db = TempDb::new();
    let store = db.open().await;
    let workers = team(&store, "core", 2).await;
    store
        .assign_task(&workers[0].a, bridge_core::NewTask::new("stay", "here"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    store.heartbeat(&workers[1].b).await.unwrap();
    let (code, _, stderr) = run(
        "watchdog-monitor",
        &db.path,
        &["--once", "--threshold", "1s", "--no-reassign"],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(count(&stderr, "worker silent"), 1, "{stderr}");
    assert!(stderr.contains("moved=0"), "{stderr}");
    let tasks = store.list_tasks(&workers[0].a, None).await.unwrap();
    assert_eq!((tasks.len(), tasks[0].attempts), (1, 1));
    store.close().await;
}

/// As a service: READY=1, watchdog pings, scans every interval, a clean
/// stop on SIGTERM. A failing alert command is logged, not fatal.
#[tokio::test]
async fn as_a_service_it_scans_every_interval_and_tells_systemd() {
    use std::os::unix::net::UnixDatagram;

    let db = TempDb::new();
    let store = db.open().await;
    let workers = team(&store, "core", 1).await;
    let socket_path = db.dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(10 * SECOND)).unwrap();
    let mut daemon = Daemon::start(
        "watchdog-monitor",
        &db.path,
        &[
            "--interval",
            "200ms",
            "--threshold",
            "1s",
            "--on-alert",
            "exit 3",
        ],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut received = Vec::new();
    let mut buffer = [0u8; 256];
    while received
        .iter()
        .filter(|m: &&String| *m == "WATCHDOG=1")
        .count()
        < 3
    {
        let length = socket
            .recv(&mut buffer)
            .unwrap_or_else(|_| panic!("sent {received:?}; stderr:\n{}", daemon.stderr()));
        received.push(String::from_utf8_lossy(&buffer[..length]).trim().to_owned());
    }
    assert_eq!(received[0], "READY=1");
    // The worker never connected: silent once its conversation is 1 s old.
    assert!(
        daemon.wait_for_stderr("worker silent", 10 * SECOND),
        "{}",
        daemon.stderr()
    );
    assert!(
        daemon.wait_for_stderr(
            "--on-alert failed: the command ended with exit status: 3",
            5 * SECOND
        ),
        "{}",
        daemon.stderr()
    );
    // More passes, one alert.
    let scans = |text: &str| count(text, "scan done");
    let seen = scans(&daemon.stderr());
    while scans(&daemon.stderr()) < seen + 3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(&daemon.stderr(), "worker silent"), 1);
    let (status, took) = daemon.signal("TERM", 5 * SECOND).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(took < 5 * SECOND);
    let status = store.partner_status(&workers[0].a).await.unwrap();
    assert_eq!(status.status, Some(bridge_core::Status::Silent));
    store.close().await;
}

#[tokio::test]
async fn bad_arguments_and_a_missing_database_are_clear_errors() {
    let db = TempDb::new();
    let (code, _, stderr) = run(
        "watchdog-monitor",
        &db.path,
        &["--once", "--threshold", "0s"],
        &[],
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr.trim(),
        "watchdog-monitor: --threshold must be longer than zero"
    );
    let (code, _, stderr) = run("watchdog-monitor", &db.path, &["--interval", "soon"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(
            "invalid value 'soon' for '--interval <INTERVAL>': \"soon\" is not a duration"
        ),
        "{stderr}"
    );

    // No database yet: --once (cron) says so and fails ...
    let (code, _, stderr) = run("watchdog-monitor", &db.path, &["--once"], &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.starts_with("watchdog-monitor: "), "{stderr}");
    assert!(stderr.contains(&db.missing_error()), "{stderr}");
    // ... the service waits, saying so once, and stops on SIGTERM.
    let mut daemon = Daemon::start("watchdog-monitor", &db.path, &[], &[]);
    assert!(
        daemon.wait_for_stderr("waiting for the database", 10 * SECOND),
        "{}",
        daemon.stderr()
    );
    let (status, _) = daemon.signal("TERM", 5 * SECOND).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(!db.exists(), "the watchdog never creates a database");
}

/// `--metrics ADDR`: scans, the alert and the move are counted at
/// `/metrics`; an address that cannot be bound is a clear error. (Two
/// threads: the healthy worker beats while the test blocks on the daemon.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_metrics_it_counts_scans_alerts_and_moves() {
    let db = TempDb::new();
    let store = db.open().await;
    let workers = team(&store, "core", 2).await;
    store
        .assign_task(&workers[0].a, bridge_core::NewTask::new("t", "b"))
        .await
        .unwrap();
    let beating = {
        let (store, worker) = (store.clone(), workers[1].b.clone());
        tokio::spawn(async move {
            loop {
                store.heartbeat(&worker).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut daemon = Daemon::start(
        "watchdog-monitor",
        &db.path,
        &[
            "--interval",
            "200ms",
            "--threshold",
            "1s",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(
        daemon.wait_for_stderr("task reassigned", 10 * SECOND),
        "{}",
        daemon.stderr()
    );
    let stderr = daemon.stderr();
    let address = stderr
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("the metrics address in:\n{stderr}"))
        .to_owned();
    let response = Connection::open(&address).get("/metrics", &[]);
    assert_eq!(response.status, 200);
    let text = response.text();
    let value = |series: &str| {
        text.lines().find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
    };
    assert!(
        value("bridge_watchdog_scans_total").is_some_and(|scans| scans >= 1.0),
        "{text}"
    );
    assert_eq!(value("bridge_watchdog_failed_scans_total"), Some(0.0));
    assert_eq!(value("bridge_watchdog_alerts_total"), Some(1.0), "{text}");
    assert_eq!(
        value("bridge_watchdog_task_moves_total{outcome=\"moved\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(value("process_open_fds").is_some_and(|fds| fds > 0.0));
    assert_eq!(
        Connection::open(&address).get("/", &[]).status,
        404,
        "only /metrics"
    );

    // The same address again: taken.
    let taken = run(
        "watchdog-monitor",
        &db.path,
        &["--metrics", &address, "--interval", "1s"],
        &[],
    );
    assert_eq!(taken.0, Some(1), "{}", taken.2);
    assert!(
        taken
            .2
            .contains(&format!("cannot listen on {address} for metrics")),
        "{}",
        taken.2
    );
    daemon.signal("TERM", 5 * SECOND).expect("exits on SIGTERM");
    beating.abort();
    store.close().await;
}

//! Several hosts, tested for real: a hub namespace running `bridge-mcp
//! --http` with TLS (a CA made by the test) beside `watchdog-monitor`, and
//! three worker namespaces, each joined to the hub by a veth pair, each
//! running its agent (the `rmcp` client over HTTPS, its session token as the
//! key), `keepalive-daemon --url` and `fs-watcher --url`. The orchestrator
//! (an agent in the hub's namespace, with an access key) hands out tasks;
//! worker 3's link is cut: the watchdog flags it once and moves its tasks to
//! workers 1 and 2, whose watchers print them; the link comes back: the
//! worker is logged as recovered, its daemons reconnect by themselves, and
//! every message of the run reached each watcher and each agent exactly once
//! and in order.
//!
//! Network namespaces need root: the test is ignored in a plain `cargo
//! test`, and `.ci/run` (root) runs it.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bridge_core::{Store, StoreOptions, TaskState};
use bridge_tests::daemon::Daemon;
use bridge_tests::mcp::HttpServer;
use bridge_tests::netns::{HUB_ADDRESS, NamespacedAgent, Network};
use bridge_tests::tls::TestCa;
use bridge_tests::{TempDb, bin};
use serde_json::{Value, json};

const SECOND: Duration = Duration::from_secs(1);

/// Waits up to `limit` for `done`, checking every 100 ms.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One worker host: its conversation, agent and daemons.
struct Worker {
    conversation_id: String,
    agent: NamespacedAgent,
    keepalive: Daemon,
    watcher: Daemon,
    /// The ids the watcher printed, in order.
    printed: Vec<i64>,
}

impl Worker {
    /// Reads the lines the watcher printed since the last call.
    fn read_watcher(&mut self) {
        while let Some(line) = self.watcher.line(Duration::from_millis(10)) {
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("not JSON from fs-watcher: {line}"));
            self.printed.push(value["id"].as_i64().expect("an id"));
        }
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn workers_on_three_hosts_survive_a_cut_link_and_lose_nothing() {
    let network = Network::new(3);
    let db = TempDb::new();
    let ca = TestCa::new();
    let tls_dir = db.dir.path().join("tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    let files = ca.server_files(&[HUB_ADDRESS], &tls_dir);
    let ca_file = tls_dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let ca_file = ca_file.to_str().unwrap();

    // The hub: the server on the hub's address (keys are required off
    // loopback), and the watchdog beside the database.
    let hub = Network::exec(network.hub());
    let server = HttpServer::start_under(
        &hub,
        &format!("{HUB_ADDRESS}:8765"),
        &db.path,
        &[
            "--allow-remote",
            "--tls-cert",
            files.certificate.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
        ],
    );
    let url = server.url.clone();
    assert_eq!(url, format!("https://{HUB_ADDRESS}:8765/mcp"));
    let watchdog = Daemon::start(
        "watchdog-monitor",
        &db.path,
        &["--interval", "1s", "--threshold", "4s", "--team", "T"],
        &[],
    );

    // The orchestrator, on the hub's host, with an access key.
    let made = Command::new(bin::path("bridgectl"))
        .args(["--json", "access", "create", "orchestrator"])
        .env("BRIDGE_DB", &db.path)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let made: Value = serde_json::from_slice(&made.stdout).unwrap();
    let key = made["key"].as_str().unwrap();
    let tls = ca.client_config();
    let orchestrator = NamespacedAgent::connect(network.hub(), &url, key, tls.clone());

    // One conversation per worker; each worker's host runs its agent and
    // daemons with its token.
    let mut orchestrator_tokens = BTreeMap::new();
    let mut workers = Vec::new();
    for n in 1..=3 {
        let created = orchestrator
            .call(
                "create_conversation",
                json!({"my_role": "orchestrator", "partner_role": format!("worker {n}"), "team": "T"}),
            )
            .unwrap();
        let id = created["conversation_id"].as_str().unwrap().to_owned();
        let token_b = created["session_b_token"].as_str().unwrap().to_owned();
        orchestrator_tokens.insert(
            id.clone(),
            created["session_a_token"].as_str().unwrap().to_owned(),
        );
        let host = network.worker(n);
        let agent = NamespacedAgent::connect(host, &url, &token_b, tls.clone());
        agent
            .call("update_my_status", json!({"status": "working"}))
            .unwrap();
        let env = [
            ("BRIDGE_URL", url.as_str()),
            ("BRIDGE_CA_FILE", ca_file),
            ("BRIDGE_TOKEN", token_b.as_str()),
        ];
        let wrapper = Network::exec(host);
        let keepalive = Daemon::start_under(
            &wrapper,
            "keepalive-daemon",
            &db.path,
            &[&id, "--interval", "1s"],
            &env,
        );
        let state = db.dir.path().join(format!("w{n}.state"));
        let watcher = Daemon::start_under(
            &wrapper,
            "fs-watcher",
            &db.path,
            &[
                &id,
                "--heartbeat",
                "1s",
                "--state-file",
                state.to_str().unwrap(),
            ],
            &env,
        );
        workers.push(Worker {
            conversation_id: id,
            agent,
            keepalive,
            watcher,
            printed: Vec::new(),
        });
    }
    for worker in &workers {
        assert!(
            worker.watcher.wait_for_stderr("watching", 30 * SECOND),
            "{}",
            worker.watcher.stderr()
        );
        assert!(
            worker.keepalive.wait_for_stderr("beating", 30 * SECOND),
            "{}",
            worker.keepalive.stderr()
        );
    }

    // The orchestrator hands out two tasks to each worker, and a word.
    for worker in &workers {
        let id = &worker.conversation_id;
        let token = &orchestrator_tokens[id];
        for title in ["build", "test"] {
            orchestrator
                .call(
                    "assign_task",
                    json!({"conversation_id": id, "session_id": "a", "token": token,
                           "title": format!("{title} for {id}"), "body": "please"}),
                )
                .unwrap();
        }
        orchestrator
            .call(
                "send_to_partner",
                json!({"conversation_id": id, "session_id": "a", "token": token,
                       "message": "two tasks for you"}),
            )
            .unwrap();
    }
    for worker in &mut workers {
        wait_until(20 * SECOND, "each watcher prints the first three", || {
            worker.read_watcher();
            worker.printed.len() >= 3
        });
    }

    // Worker 3's link is cut: the watchdog flags it once and moves its two
    // tasks to workers 1 and 2, whose watchers print the news.
    network.set_link(3, false);
    let cut_at = Instant::now();
    let cut = workers[2].conversation_id.clone();
    wait_until(30 * SECOND, "the watchdog flags worker 3", || {
        watchdog.stderr().contains("worker silent")
    });
    wait_until(30 * SECOND, "worker 3's tasks move", || {
        watchdog.stderr().matches("moved").count() >= 2 || moved_away(&db, &cut) == 2
    });
    for worker in &mut workers[..2] {
        wait_until(20 * SECOND, "workers 1 and 2 hear of what they got", || {
            worker.read_watcher();
            worker.printed.len() > 3
        });
    }
    std::thread::sleep(2 * SECOND);
    let log = watchdog.stderr();
    let silent_lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("worker silent"))
        .collect();
    assert_eq!(silent_lines.len(), 1, "flagged once: {silent_lines:?}");
    assert!(silent_lines[0].contains(&cut), "{}", silent_lines[0]);
    assert_eq!(moved_away(&db, &cut), 2, "both of worker 3's tasks moved");

    // The link comes back, after longer than a call may take (10 s beyond
    // what it waits for): the daemons' calls have failed, and they wait for
    // the hub. The worker recovers and its daemons reconnect by themselves,
    // the watcher reporting what it missed.
    std::thread::sleep((25 * SECOND).saturating_sub(cut_at.elapsed()));
    network.set_link(3, true);
    wait_until(60 * SECOND, "worker 3 is logged as recovered", || {
        watchdog.stderr().contains("worker recovered")
    });
    let deadline = Instant::now() + 60 * SECOND;
    while !(workers[2]
        .keepalive
        .stderr()
        .contains("the hub answers again")
        && workers[2]
            .watcher
            .stderr()
            .contains("the hub answers again"))
    {
        assert!(
            Instant::now() < deadline,
            "worker 3's daemons did not reconnect:\nkeepalive:\n{}\nfs-watcher:\n{}",
            workers[2].keepalive.stderr(),
            workers[2].watcher.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every message of the run, per worker, reached its watcher and its
    // agent exactly once and in order.
    let store = open(&db);
    for worker in &mut workers {
        let expected = addressed_to_worker(&store, &worker.conversation_id);
        wait_until(30 * SECOND, "each watcher prints everything", || {
            worker.read_watcher();
            worker.printed.len() >= expected.len()
        });
        std::thread::sleep(Duration::from_millis(500));
        worker.read_watcher();
        assert_eq!(
            worker.printed, expected,
            "{}: the watcher printed each once, in order",
            worker.conversation_id
        );
        let mut received = Vec::new();
        loop {
            let answer = worker.agent.call("check_messages", json!({})).unwrap();
            let batch: Vec<i64> = answer["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|message| message["id"].as_i64().unwrap())
                .collect();
            if batch.is_empty() {
                break;
            }
            received.extend(batch);
        }
        assert_eq!(
            received, expected,
            "{}: the agent received each once, in order",
            worker.conversation_id
        );
    }
    let cut_stderr = workers[2].watcher.stderr();
    assert_eq!(
        cut_stderr.matches("cannot be reached").count(),
        1,
        "worker 3's watcher said it once: {cut_stderr}"
    );

    drop(workers);
    drop(orchestrator);
    drop(watchdog);
    drop(server);
    block_on(store.close());
    drop(network);
}

/// Opens the store of `db`.
fn open(db: &TempDb) -> Store {
    block_on(Store::open(StoreOptions::new(&db.path))).expect("open the store")
}

/// Runs `future` on a runtime of its own.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// How many tasks first assigned to `conversation_id` now belong to
/// another conversation.
fn moved_away(db: &TempDb, conversation_id: &str) -> usize {
    let store = open(db);
    let tasks = block_on(store.all_tasks(Some("T"))).unwrap();
    block_on(store.close());
    tasks
        .iter()
        .filter(|task| task.title.ends_with(conversation_id))
        .filter(|task| task.conversation_id.as_str() != conversation_id)
        .filter(|task| task.state != TaskState::Cancelled)
        .count()
}

/// The ids of every message to session b of `conversation_id`, in order.
fn addressed_to_worker(store: &Store, conversation_id: &str) -> Vec<i64> {
    let detail = block_on(store.conversation_detail(&conversation_id.parse().unwrap(), 1000))
        .expect("the conversation");
    let mut ids: Vec<i64> = detail
        .recent_messages
        .iter()
        .filter(|shown| shown.message.to == bridge_core::SessionId::B)
        .map(|shown| shown.message.id)
        .collect();
    ids.sort_unstable();
    ids
}

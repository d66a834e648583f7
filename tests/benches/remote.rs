//! Benchmarks of workers on other machines, over HTTPS on loopback: the
//! wake-up of a remote `fs-watcher`, and one hub serving 100 agents.
//!
//! Run with `cargo bench -p bridge-tests --bench remote` (it builds the
//! workspace's binaries in the release profile first, if need be). The hub is
//! `bridge-mcp --http --require-auth` with TLS (a CA made for the run), on a
//! database in the system's temporary directory (or `$BENCH_DIR`).
//!
//! * Remote `fs-watcher` (`--url`): one message at a time, sent by this
//!   process through its own store after a pause of 0 to 5 ms, 1000
//!   messages; from `send` returning (committed) to the watcher's line being
//!   read here. The watcher waits in `wait_for_messages` with `after_id` on
//!   the hub; the hub is woken by the store's change notification.
//! * 100 agents (50 conversations, both sides), each the `rmcp` client with
//!   its own connection and its session token as the key, in two rounds.
//!   All at once: each sends 10 messages to its partner, one after the
//!   other, while all the others do (100 requests always in flight: the
//!   hub's saturation). Paced: each sends 10 more, one every 100 ms, the
//!   agents spread over that interval (1000 sends/s offered). Then each reads
//!   its 20. Sends per second, the round trip of each send, the hub's
//!   resident memory (now and peak) and the CPU time it used. The agents run
//!   in this process, on the same two cores as the hub.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_core::{NewConversation, NewMessage, SessionId, Store, StoreOptions};
use bridge_testkit::process::{cpu_time, memory};
use bridge_testkit::report::{machine, report_latency, report_memory, report_rate};
use bridge_tests::daemon::Daemon;
use bridge_tests::mcp::{Agent, HttpServer};
use bridge_tests::tls::TestCa;
use bridge_tests::{TempDb, bin};
use serde_json::json;

const MESSAGES: usize = 1000;
const CONVERSATIONS: usize = 50;
const EACH_WAY: usize = 10;
const SECOND: Duration = Duration::from_secs(1);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let db = TempDb::for_bench();
    println!("mcp-bridge remote worker benchmarks (HTTPS on loopback)");
    println!("database: {}", db.path.display());
    println!("{}", machine());
    println!();
    // Build (or find) the binaries before anything is timed.
    bin::path("fs-watcher");
    bin::path("bridge-mcp");

    let ca = TestCa::new();
    let files = ca.server_files(&["127.0.0.1"], db.dir.path());
    let ca_file = db.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut options = StoreOptions::new(&db.path);
    options.rate_limit_per_minute = 0;
    let store = Store::open(options).await.expect("open the store");
    // More flags for the hub from $BENCH_HUB_ARGS (e.g. --durability normal).
    let extra = std::env::var("BENCH_HUB_ARGS").unwrap_or_default();
    let mut args = vec!["--require-auth"];
    args.extend(extra.split_whitespace());
    let server = HttpServer::start_tls(&db.path, &files, &args);

    watcher_wake_up(&store, &server.url, ca_file.to_str().unwrap()).await;
    println!();
    hundred_agents(&store, &server, &ca).await;
    drop(server);
    store.close().await;
}

/// A remote `fs-watcher`'s latency from a commit to its line.
async fn watcher_wake_up(store: &Store, url: &str, ca_file: &str) {
    let created = store
        .create_conversation(NewConversation::new("orchestrator", "worker"))
        .await
        .expect("create a conversation");
    let a = created.credentials(SessionId::A);
    let token = created.token_b.reveal();
    let id = created.id.to_string();
    let mut watcher = Daemon::start(
        "fs-watcher",
        std::path::Path::new("/nonexistent"),
        &[&id],
        &[
            ("BRIDGE_URL", url),
            ("BRIDGE_CA_FILE", ca_file),
            ("BRIDGE_TOKEN", &token),
        ],
    );
    assert!(
        watcher.wait_for_stderr("watching", 30 * SECOND),
        "{}",
        watcher.stderr()
    );
    let mut after_commit = Vec::with_capacity(MESSAGES);
    for n in 0..MESSAGES {
        // A pause, so that the watcher is really waiting on the hub.
        tokio::time::sleep(Duration::from_micros((n as u64 * 7919) % 5000)).await;
        let sent = store
            .send(&a, NewMessage::new(format!("message {n}")))
            .await
            .expect("send");
        let committed = Instant::now();
        let (read, line) = watcher
            .timed_line(10 * SECOND)
            .expect("fs-watcher printed the line");
        assert!(line.contains(&format!("\"id\":{}", sent.id)), "{line}");
        after_commit.push(read.saturating_duration_since(committed));
    }
    println!("fs-watcher --url, a send from another process (target: p50 <= 5 ms)");
    report_latency("commit to line", &after_commit);
    if let Some(used) = memory(watcher.pid()) {
        report_memory(
            &format!("fs-watcher --url, after {MESSAGES} messages"),
            used,
        );
    }
    watcher
        .signal("TERM", 5 * SECOND)
        .expect("fs-watcher exits");
}

/// 100 agents on one hub, 10 messages each way.
async fn hundred_agents(store: &Store, server: &HttpServer, ca: &TestCa) {
    let tls = ca.client_config();
    let mut sides = Vec::new();
    for n in 0..CONVERSATIONS {
        let created = store
            .create_conversation(NewConversation::new("orchestrator", format!("worker {n}")))
            .await
            .expect("create a conversation");
        sides.push(created.token_a.reveal());
        sides.push(created.token_b.reveal());
    }
    let before = memory(server.pid());
    let mut agents = Vec::new();
    for token in &sides {
        let agent = Agent::keyed(&server.url, token, Some(&tls))
            .await
            .expect("an agent connects");
        agents.push(Arc::new(agent));
    }
    let connected = memory(server.pid());
    let cpu_before = cpu_time(server.pid());
    let started = Instant::now();
    let sends = agents.iter().map(|agent| {
        let agent = Arc::clone(agent);
        tokio::spawn(async move {
            let mut round_trips = Vec::with_capacity(EACH_WAY);
            for n in 0..EACH_WAY {
                let sent = Instant::now();
                agent
                    .ok(
                        "send_to_partner",
                        json!({"message": format!("message {n}")}),
                    )
                    .await;
                round_trips.push(sent.elapsed());
            }
            round_trips
        })
    });
    let mut round_trips = Vec::new();
    for send in sends.collect::<Vec<_>>() {
        round_trips.extend(send.await.expect("an agent's sends"));
    }
    let sending = started.elapsed();
    // Paced: agent `i` sends at `i` ms + n × 100 ms.
    let paced_start = tokio::time::Instant::now();
    let paced = agents.iter().enumerate().map(|(i, agent)| {
        let agent = Arc::clone(agent);
        tokio::spawn(async move {
            let mut round_trips = Vec::with_capacity(EACH_WAY);
            for n in 0..EACH_WAY {
                let at = Duration::from_millis(i as u64 + 100 * n as u64);
                tokio::time::sleep_until(paced_start + at).await;
                let sent = Instant::now();
                agent
                    .ok("send_to_partner", json!({"message": format!("paced {n}")}))
                    .await;
                round_trips.push(sent.elapsed());
            }
            round_trips
        })
    });
    let mut paced_trips = Vec::new();
    for send in paced.collect::<Vec<_>>() {
        paced_trips.extend(send.await.expect("an agent's paced sends"));
    }
    let paced_time = paced_start.elapsed();
    let reads = agents.iter().map(|agent| {
        let agent = Arc::clone(agent);
        tokio::spawn(async move {
            let read = agent.ok("check_messages", json!({"limit": 100})).await;
            read["messages"].as_array().map_or(0, Vec::len)
        })
    });
    let mut received = 0;
    for read in reads.collect::<Vec<_>>() {
        received += read.await.expect("an agent's read");
    }
    let wall = started.elapsed();
    let cpu = cpu_time(server.pid()).saturating_sub(cpu_before);
    assert_eq!(
        received,
        agents.len() * 2 * EACH_WAY,
        "every message arrived"
    );
    println!(
        "100 agents on one HTTPS hub, {EACH_WAY} messages each way (targets: p99 <= 50 ms, hub RSS <= 100 MB)"
    );
    report_rate(
        "send_to_partner, all agents at once",
        round_trips.len(),
        sending,
    );
    report_latency("round trip, all at once", &round_trips);
    report_rate(
        "send_to_partner, paced (1000/s offered)",
        paced_trips.len(),
        paced_time,
    );
    report_latency("round trip, paced", &paced_trips);
    if let Some(used) = before {
        report_memory("hub, before the agents", used);
    }
    if let Some(used) = connected {
        report_memory("hub, 100 agents connected", used);
    }
    if let Some(used) = memory(server.pid()) {
        report_memory("hub, after the run", used);
    }
    println!(
        "{:<44} {} ms of CPU in {:.2} s ({:.0} % of one core)",
        "hub CPU, both rounds and the reads",
        cpu.as_millis(),
        wall.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    for agent in agents {
        if let Ok(agent) = Arc::try_unwrap(agent) {
            agent.stop().await;
        }
    }
}

//! Benchmarks of the worker daemons, printing latency percentiles, memory and
//! CPU use.
//!
//! Run with `cargo bench -p bridge-tests --bench daemons` (it builds the
//! workspace's binaries in the release profile first, if need be). On a
//! database in the system's temporary directory (or `$BENCH_DIR`):
//!
//! * the latency from a message committed by another process (this one,
//!   through its own store) to `fs-watcher` printing its line: one message
//!   at a time, after a pause of 0 to 5 ms, 1000 messages. "Commit to line"
//!   is from `send` returning (committed) to the line being read here; "send
//!   to line" from `send` being called;
//! * the resident memory of `keepalive-daemon` and `fs-watcher` after that
//!   work, and the peak of one `check-messages` run (through `/usr/bin/time`,
//!   if installed);
//! * the CPU time `keepalive-daemon` uses at its default interval (30 s),
//!   over 65 s, from `/proc/<pid>/stat`.

use std::time::{Duration, Instant};

use bridge_core::{NewConversation, NewMessage, SessionId, Store, StoreOptions};
use bridge_testkit::process::{cpu_time, memory};
use bridge_testkit::report::{machine, report_latency, report_memory};
use bridge_tests::bin;
use bridge_tests::daemon::Daemon;

const MESSAGES: usize = 1000;
const SECOND: Duration = Duration::from_secs(1);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("create a temporary directory");
    let path = dir.path().join("bridge.db");
    println!("mcp-bridge worker daemon benchmarks");
    println!("database: {}", path.display());
    println!("{}", machine());
    println!();
    // Build (or find) the binaries before anything is timed.
    bin::path("fs-watcher");

    let mut options = StoreOptions::new(&path);
    options.rate_limit_per_minute = 0;
    let store = Store::open(options).await.expect("open the store");
    let created = store
        .create_conversation(NewConversation::new("orchestrator", "worker"))
        .await
        .expect("create a conversation");
    let (a, b) = (
        created.credentials(SessionId::A),
        created.credentials(SessionId::B),
    );
    let id = created.id.to_string();
    let token = b.token.reveal();
    let env = [("BRIDGE_TOKEN", token.as_str())];

    let mut watcher = Daemon::start("fs-watcher", &path, &[&id], &env);
    let mut keepalive = Daemon::start("keepalive-daemon", &path, &[&id], &env);
    assert!(
        watcher.wait_for_stderr("watching", 30 * SECOND),
        "{}",
        watcher.stderr()
    );
    assert!(
        keepalive.wait_for_stderr("beating", 30 * SECOND),
        "{}",
        keepalive.stderr()
    );

    let mut after_commit = Vec::with_capacity(MESSAGES);
    let mut after_send = Vec::with_capacity(MESSAGES);
    for n in 0..MESSAGES {
        // A pause, so that the watcher is really waiting.
        tokio::time::sleep(Duration::from_micros((n as u64 * 7919) % 5000)).await;
        let started = Instant::now();
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
        after_send.push(read.saturating_duration_since(started));
    }
    println!("fs-watcher, a send from another process (targets: p50 <= 2 ms, p99 <= 10 ms)");
    report_latency("commit to line", &after_commit);
    report_latency("send to line", &after_send);
    println!();

    println!("resident memory (target: each daemon <= 10 MB)");
    for (name, daemon) in [("fs-watcher", &watcher), ("keepalive-daemon", &keepalive)] {
        match memory(daemon.pid()) {
            Some(used) => report_memory(&format!("{name}, after {MESSAGES} messages"), used),
            None => println!("{name}: not running"),
        }
    }
    check_messages_peak(&path, &id, &token);
    watcher
        .signal("TERM", 5 * SECOND)
        .expect("fs-watcher exits");
    println!();

    println!("keepalive-daemon CPU at the default interval (target: < 0.1 %)");
    let before = cpu_time(keepalive.pid());
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(65)).await;
    let used = cpu_time(keepalive.pid()).saturating_sub(before);
    let wall = started.elapsed();
    println!(
        "{:<44} {:.4} % ({} ms of CPU in {:.0} s)",
        "keepalive-daemon, --interval 30s",
        100.0 * used.as_secs_f64() / wall.as_secs_f64(),
        used.as_millis(),
        wall.as_secs_f64()
    );
    if let Some(used) = memory(keepalive.pid()) {
        report_memory("keepalive-daemon, after 65 s more", used);
    }
    keepalive
        .signal("TERM", 5 * SECOND)
        .expect("keepalive-daemon exits");
    drop(b);
    store.close().await;
}

/// The peak resident memory of one `check-messages` run, through GNU time.
fn check_messages_peak(path: &std::path::Path, id: &str, token: &str) {
    let output = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(bin::path("check-messages"))
        .args([id, "--limit", "1000"])
        .env("BRIDGE_DB", path)
        .env("BRIDGE_TOKEN", token)
        .output();
    let peak = output.ok().and_then(|output| {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        stderr
            .lines()
            .last()
            .and_then(|line| line.trim().parse::<u64>().ok())
    });
    match peak {
        Some(kb) => println!(
            "{:<44} peak {:>5.1} MiB ({kb} kB)",
            "check-messages, reading 1000 messages",
            kb as f64 / 1024.0
        ),
        None => println!("check-messages peak memory: n/a (no /usr/bin/time)"),
    }
}

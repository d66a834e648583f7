//! Benchmarks of the orchestrator side: the watchdog's scan and the
//! reassignment of a silent worker's tasks.
//!
//! Run with `cargo bench -p bridge-core --bench tasks`. Measures, on
//! databases in the system's temporary directory (or `$BENCH_DIR`):
//!
//! * one watchdog scan (`Store::scan_workers`) over 10 000 worker sessions
//!   of live conversations, 100 of them silent, as latency percentiles;
//! * the reassignment (`Store::reassign_tasks`) of 1 000 open tasks from 10
//!   silent workers to 100 healthy ones of the same team: the plan alone
//!   (dry run), and the whole move (each task: assignments ended and begun,
//!   two messages, an audit row), on a fresh database each of 3 runs.

use std::path::Path;
use std::time::{Duration, Instant};

use bridge_core::{
    ConversationId, CreatedConversation, NewConversation, NewTask, SessionId, Store, StoreOptions,
};
use bridge_testkit::report::{machine, micros, report_latency};
use futures_util::future::join_all;

/// How old silence is in these benchmarks.
const THRESHOLD: Duration = Duration::from_secs(1);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("create a temporary directory");
    println!("mcp-bridge orchestrator benchmarks");
    println!("database directory: {}", dir.path().display());
    println!("{}", machine());
    println!();

    let samples = scans(&dir.path().join("scan.db"), 10_000, 100, 500).await;
    report_latency("scan of 10 000 workers (100 silent)", &samples);
    println!();

    let mut plans = Vec::new();
    let mut moves = Vec::new();
    for run in 0..3 {
        let path = dir.path().join(format!("reassign-{run}.db"));
        let (plan, moved) = reassignment(&path, 10, 100, 1_000).await;
        println!(
            "reassign 1 000 tasks, 10 -> 100 workers, run {}: plan {:.1} ms, move {:.1} ms",
            run + 1,
            micros(plan) / 1e3,
            micros(moved) / 1e3
        );
        plans.push(plan);
        moves.push(moved);
    }
    plans.sort_unstable();
    moves.sort_unstable();
    println!(
        "reassign 1 000 tasks, median of 3: plan {:.1} ms, move {:.1} ms",
        micros(plans[1]) / 1e3,
        micros(moves[1]) / 1e3
    );
}

fn options(path: &Path) -> StoreOptions {
    let mut options = StoreOptions::new(path);
    options.rate_limit_per_minute = 0;
    options
}

/// `count` conversations of team `team`, created concurrently (so the
/// writer batches them).
async fn conversations(store: &Store, team: &str, count: usize) -> Vec<CreatedConversation> {
    let creations = (0..count).map(|n| {
        let mut new = NewConversation::new("orchestrator", format!("worker {n}"));
        new.team = Some(team.to_owned());
        store.create_conversation(new)
    });
    join_all(creations)
        .await
        .into_iter()
        .map(|created| created.expect("create a conversation"))
        .collect()
}

/// Heartbeats of the workers of `created`, concurrently.
async fn heartbeats(store: &Store, created: &[CreatedConversation]) {
    let beats = created
        .iter()
        .map(|created| created.credentials(SessionId::B))
        .collect::<Vec<_>>();
    for outcome in join_all(beats.iter().map(|credentials| store.heartbeat(credentials))).await {
        outcome.expect("heartbeat");
    }
}

/// `workers` workers, `silent` of them not heard from for over the
/// threshold; returns `samples` scan latencies.
async fn scans(path: &Path, workers: usize, silent: usize, samples: usize) -> Vec<Duration> {
    let store = Store::open(options(path)).await.expect("open the store");
    conversations(&store, "quiet", silent).await;
    tokio::time::sleep(THRESHOLD + Duration::from_millis(100)).await;
    let healthy = conversations(&store, "busy", workers - silent).await;
    heartbeats(&store, &healthy).await;

    let check = store.scan_workers(THRESHOLD, None).await.expect("scan");
    assert_eq!(check.silent.len(), silent);
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let scan = store.scan_workers(THRESHOLD, None).await.expect("scan");
        latencies.push(started.elapsed());
        std::hint::black_box(scan);
    }
    store.close().await;
    latencies
}

/// `tasks` tasks over `silent` silent workers, `healthy` healthy workers in
/// the same team; returns how long the plan and the move took.
async fn reassignment(
    path: &Path,
    silent: usize,
    healthy: usize,
    tasks: usize,
) -> (Duration, Duration) {
    let store = Store::open(options(path)).await.expect("open the store");
    let quiet = conversations(&store, "core", silent).await;
    let store = &store;
    let assignments = (0..tasks).map(|n| {
        let orchestrator = quiet[n % silent].credentials(SessionId::A);
        async move {
            let task = NewTask::new(
                format!("task {n}"),
                format!("Do task {n}: the details an orchestrator would write."),
            );
            store.assign_task(&orchestrator, task).await
        }
    });
    for outcome in join_all(assignments).await {
        outcome.expect("assign a task");
    }
    tokio::time::sleep(THRESHOLD + Duration::from_millis(100)).await;
    let alive = conversations(store, "core", healthy).await;
    heartbeats(store, &alive).await;
    let from: Vec<ConversationId> = quiet.iter().map(|created| created.id.clone()).collect();

    let started = Instant::now();
    let plan = store
        .reassign_tasks(&from, THRESHOLD, true)
        .await
        .expect("plan");
    let planned = started.elapsed();
    assert_eq!(plan.len(), tasks);

    let started = Instant::now();
    let moved = store
        .reassign_tasks(&from, THRESHOLD, false)
        .await
        .expect("reassign");
    let moving = started.elapsed();
    assert_eq!(moved.iter().filter(|m| m.outcome == "moved").count(), tasks);
    store.close().await;
    (planned, moving)
}

//! `watchdog-monitor` and `reassign-tasks` killed at random moments while
//! they move the tasks of silent workers, restarted until nothing is left
//! to move: each task ends on exactly one healthy worker, and its history
//! (assignments, messages, audit rows) agrees with where it is.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bridge_core::{Credentials, NewTask, Store};
use bridge_tests::daemon::run;
use bridge_tests::{TempDb, team};

use crate::{Group, Rng, assert_sound};

/// Teams, each moved in a round of its own.
const TEAMS: usize = 4;

/// Workers of each team; the first [`SILENT`] never heard from.
const WORKERS: usize = 5;
const SILENT: usize = 2;

/// Tasks of each team, on its silent workers.
const TASKS: usize = 150;

/// Not heard from for this long: silent. The healthy workers beat every
/// 200 ms.
const THRESHOLD: &str = "2s";
const SILENCE: Duration = Duration::from_millis(2_300);

/// Start-and-kill cycles of a round at most; then a run that is not killed.
const MAX_CYCLES: usize = 12;

/// One row of `task_assignment`.
#[derive(Debug, sqlx::FromRow)]
struct Assignment {
    task_id: i64,
    attempt: i64,
    conversation_id: String,
    /// 1 while it is the current assignment (a number on either store).
    open: i64,
    ended_by: Option<String>,
}

/// The tasks still held (open or in progress) by the `silent` workers (a
/// list of quoted ids).
async fn left_to_move(db: &TempDb, silent: &str) -> i64 {
    let mut raw = db.raw().await;
    bridge_tests::scalar(
        &mut raw,
        &format!(
            "SELECT count(*) FROM task WHERE conversation_id IN ({silent}) AND state IN ('open', 'in_progress')"
        ),
    )
    .await
}

/// A heartbeat of each of `workers`. A failure is only logged: the check
/// at the end does not depend on which healthy worker takes a task.
async fn beat(store: &Store, workers: &[Credentials]) {
    for worker in workers {
        if let Err(error) = store.heartbeat(worker).await {
            eprintln!("heartbeat failed: {error}");
        }
    }
}

/// The id of the last audit row: it grows with every change.
async fn audit_head(raw: &mut sqlx::AnyConnection) -> i64 {
    bridge_tests::scalar(raw, "SELECT coalesce(max(id), 0) FROM audit").await
}

/// One round: `watchdog-monitor`, `reassign-tasks` or both started on
/// `team` and killed, again and again, until the `silent` workers hold
/// nothing; then a run to the end, and one that finds nothing to move.
/// Returns the cycles and the processes killed.
async fn round(db: &TempDb, team: &str, silent: &str, rng: &mut Rng, seed: u64) -> (usize, usize) {
    let watchdog_args = [
        "--interval",
        "100ms",
        "--threshold",
        THRESHOLD,
        "--team",
        team,
    ];
    let reassign_args = ["--silent", "--threshold", THRESHOLD, "--team", team];
    let (mut cycles, mut kills) = (0, 0);
    let mut left = left_to_move(db, silent).await;
    while left > 0 && cycles < MAX_CYCLES {
        cycles += 1;
        let choice = rng.range(0, 3);
        let mut raw = db.raw().await;
        let head = audit_head(&mut raw).await;
        let mut running = Vec::new();
        if choice != 1 {
            running.push(Group::start(
                "watchdog-monitor",
                &db.path,
                &watchdog_args,
                &[],
            ));
        }
        if choice != 0 {
            running.push(Group::start(
                "reassign-tasks",
                &db.path,
                &reassign_args,
                &[],
            ));
        }
        for mut process in running {
            if rng.range(0, 2) == 0 {
                // At a random moment of its life.
                tokio::time::sleep(rng.millis(0, 250)).await;
            } else {
                // Just after the first change of the cycle shows: between
                // marking a worker silent and moving its tasks, or between
                // batches of moves.
                let deadline = Instant::now() + Duration::from_secs(5);
                while audit_head(&mut raw).await == head
                    && process.exited().is_none()
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                tokio::time::sleep(rng.millis(0, 4)).await;
            }
            let stderr = process.stderr();
            if let Some(status) = process.exited() {
                assert!(
                    status.success(),
                    "a run that was not killed failed (seed {seed}):\n{stderr}"
                );
            }
            let (_, killed) = process.kill9();
            kills += usize::from(killed);
        }
        drop(raw);
        let now = left_to_move(db, silent).await;
        eprintln!(
            "{team}, cycle {cycles}: {} tasks moved, {now} left",
            left - now
        );
        left = now;
    }
    // One run to the end, then one that finds nothing left.
    let (code, _, stderr) = run("reassign-tasks", &db.path, &reassign_args, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = run("reassign-tasks", &db.path, &reassign_args, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout, "No open or in-progress tasks to reassign.\n",
        "{team}: nothing left to move (seed {seed})"
    );
    (cycles, kills)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_ends_on_exactly_one_healthy_worker_across_kills() {
    let (mut rng, seed) = Rng::for_scenario("watchdog-monitor and reassign-tasks");
    let db = TempDb::new();
    let store = db.open().await;
    let created = Instant::now();
    let mut silent = BTreeSet::new();
    let mut healthy = BTreeSet::new();
    let mut beaters = Vec::new();
    let mut first_worker = BTreeMap::new();
    let mut teams = Vec::new();
    for t in 0..TEAMS {
        let name = format!("team-{t}");
        let pairs = team(&store, &name, WORKERS).await;
        for pair in &pairs[..SILENT] {
            silent.insert(pair.created.id.to_string());
        }
        for pair in &pairs[SILENT..] {
            healthy.insert(pair.created.id.to_string());
            beaters.push(pair.b.clone());
        }
        teams.push((name, pairs));
    }
    // The healthy workers beat from now on, the silent ones never.
    let beating = {
        let (store, beaters) = (store.clone(), beaters.clone());
        tokio::spawn(async move {
            loop {
                beat(&store, &beaters).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut rounds = Vec::new();
    for (name, pairs) in &teams {
        for n in 0..TASKS {
            let owner = &pairs[n % SILENT];
            let task = store
                .assign_task(&owner.a, NewTask::new(format!("t{n}"), format!("Do t{n}.")))
                .await
                .unwrap();
            first_worker.insert(task.id, owner.created.id.to_string());
        }
        let quoted = pairs[..SILENT]
            .iter()
            .map(|pair| format!("'{}'", pair.created.id))
            .collect::<Vec<_>>()
            .join(", ");
        rounds.push((name.clone(), quoted));
    }
    bridge_tests::bin::path("reassign-tasks");
    tokio::time::sleep(SILENCE.saturating_sub(created.elapsed())).await;
    beat(&store, &beaters).await;

    let (mut cycles, mut kills) = (0, 0);
    for (team, quoted) in &rounds {
        let (round_cycles, round_kills) = round(&db, team, quoted, &mut rng, seed).await;
        cycles += round_cycles;
        kills += round_kills;
    }
    beating.abort();
    let _ = beating.await;
    eprintln!("reassignment: {cycles} cycles, {kills} processes killed");

    let mut raw = db.raw().await;
    // Where each task is.
    let tasks: Vec<(i64, String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, conversation_id, state, attempts,
                CASE WHEN unassigned THEN 1 ELSE 0 END FROM task",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert_eq!(
        tasks.iter().map(|task| task.0).collect::<BTreeSet<_>>(),
        first_worker.keys().copied().collect(),
        "every task, and no other (seed {seed})"
    );
    // Its assignments, in order.
    let rows: Vec<Assignment> = sqlx::query_as(
        "SELECT task_id, attempt, conversation_id,
                CASE WHEN ended_at IS NULL THEN 1 ELSE 0 END AS open, ended_by
         FROM task_assignment ORDER BY task_id, attempt",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    let mut assignments: BTreeMap<i64, Vec<Assignment>> = BTreeMap::new();
    for row in rows {
        assignments.entry(row.task_id).or_default().push(row);
    }
    // What each move wrote: a message to the new worker, one to the old,
    // one to the orchestrator, and an audit row.
    // The JSON is read here, not in SQL, which each store spells its own way.
    let number = |json: &serde_json::Value, key: &str| json[key].as_i64().unwrap_or_default();
    let text = |json: &serde_json::Value, key: &str| json[key].as_str().unwrap_or("").to_owned();
    let events: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT metadata, conversation_id, recipient FROM message
         WHERE sender = 'system' AND metadata IS NOT NULL",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    let mut told: BTreeMap<(i64, String), Vec<(String, String)>> = BTreeMap::new();
    for (metadata, conversation, recipient) in events {
        let metadata: serde_json::Value = serde_json::from_str(&metadata).unwrap();
        let event = text(&metadata, "event");
        if ["reassigned", "taken_away", "moved"].contains(&event.as_str()) {
            told.entry((number(&metadata, "task_id"), event))
                .or_default()
                .push((conversation, recipient));
        }
    }
    let audited: Vec<String> =
        sqlx::query_scalar("SELECT detail FROM audit WHERE action = 'task_reassigned'")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    let mut audit_rows: BTreeMap<i64, Vec<(String, String, i64)>> = BTreeMap::new();
    for detail in audited {
        let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
        audit_rows
            .entry(number(&detail, "task_id"))
            .or_default()
            .push((
                text(&detail, "from"),
                text(&detail, "to"),
                number(&detail, "attempt"),
            ));
    }
    drop(raw);

    let mut moves_per_task: BTreeMap<i64, usize> = BTreeMap::new();
    for (id, conversation, state, attempts, unassigned) in &tasks {
        let context = format!("task {id} (seed {seed})");
        assert!(
            healthy.contains(conversation),
            "{context}: on {conversation}, not a healthy worker"
        );
        assert_eq!(
            (state.as_str(), *unassigned),
            ("open", 0),
            "{context}: state"
        );
        let history = &assignments[id];
        // Attempts 1, 2, ..., attempts; the last one open and where the
        // task is; every earlier one ended by the move.
        let numbers: Vec<i64> = history.iter().map(|row| row.attempt).collect();
        assert_eq!(
            numbers,
            (1..=*attempts).collect::<Vec<_>>(),
            "{context}: assignment rows against attempts"
        );
        let open: Vec<_> = history.iter().filter(|row| row.open == 1).collect();
        assert_eq!(open.len(), 1, "{context}: open assignments {history:?}");
        let last = &history[history.len() - 1];
        assert!(
            last.open == 1 && &last.conversation_id == conversation,
            "{context}: the open assignment is on {}, the task on {conversation}",
            last.conversation_id
        );
        assert!(
            history[..history.len() - 1]
                .iter()
                .all(|row| row.ended_by.as_deref() == Some("reassigned")),
            "{context}: ended assignments {history:?}"
        );
        assert_eq!(
            history[0].conversation_id, first_worker[id],
            "{context}: the first assignment is where it was assigned"
        );
        assert!(
            silent.contains(&history[0].conversation_id),
            "{context}: first on a silent worker"
        );
        // Each move (from one assignment to the next) told each side once
        // and was audited once.
        let moves: Vec<(String, String, i64)> = history
            .windows(2)
            .map(|pair| {
                (
                    pair[0].conversation_id.clone(),
                    pair[1].conversation_id.clone(),
                    pair[1].attempt,
                )
            })
            .collect();
        moves_per_task.insert(*id, moves.len());
        let mut expected_told: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
        for (from, to, _) in &moves {
            expected_told
                .entry("reassigned")
                .or_default()
                .push((to.clone(), "b".to_owned()));
            expected_told
                .entry("taken_away")
                .or_default()
                .push((from.clone(), "b".to_owned()));
            expected_told
                .entry("moved")
                .or_default()
                .push((from.clone(), "a".to_owned()));
        }
        for event in ["reassigned", "taken_away", "moved"] {
            let mut got = told
                .get(&(*id, event.to_owned()))
                .cloned()
                .unwrap_or_default();
            got.sort();
            let mut expected = expected_told.get(event).cloned().unwrap_or_default();
            expected.sort();
            assert_eq!(got, expected, "{context}: `{event}` messages");
        }
        let mut got_audit = audit_rows.get(id).cloned().unwrap_or_default();
        got_audit.sort_by_key(|row| row.2);
        assert_eq!(got_audit, moves, "{context}: task_reassigned audit rows");
    }
    let mut histogram: BTreeMap<usize, usize> = BTreeMap::new();
    for moves in moves_per_task.values() {
        *histogram.entry(*moves).or_default() += 1;
    }
    eprintln!("reassignment: tasks by number of moves: {histogram:?}");
    assert_sound(&db, &store, seed).await;
    store.close().await;
}

//! `reassign-tasks`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use bridge_core::{NewTask, Store};
use bridge_tests::daemon::run;
use bridge_tests::{Pair, TempDb, bin, scalar, team};
use serde_json::Value;

fn task(title: &str) -> NewTask {
    NewTask::new(title, format!("Do {title}."))
}

/// The silence threshold of these tests: long enough that a healthy worker
/// heard from just before a run stays healthy through it on a loaded
/// machine.
const THRESHOLD: &str = "3s";

/// A team of `workers`; the first `silent` never heard from, the others
/// heartbeating after the silent ones have been quiet for longer than
/// [`THRESHOLD`]. `tasks` tasks are spread over the silent ones.
async fn quiet_team(store: &Store, workers: usize, silent: usize, tasks: usize) -> Vec<Pair> {
    let pairs = team(store, "core", workers).await;
    for n in 0..tasks {
        store
            .assign_task(&pairs[n % silent].a, task(&format!("t{n}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    for pair in &pairs[silent..] {
        store.heartbeat(&pair.b).await.unwrap();
    }
    pairs
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

/// Two copies at once over 200 tasks: each task moves exactly once.
#[tokio::test]
async fn two_concurrent_runs_move_each_of_200_tasks_exactly_once() {
    let db = TempDb::new();
    let store = db.open().await;
    let pairs = quiet_team(&store, 5, 2, 200).await;

    let runs: Vec<_> = (0..2)
        .map(|_| {
            Command::new(bin::path("reassign-tasks"))
                .args(["--silent", "--threshold", THRESHOLD, "--json"])
                .env("BRIDGE_DB", &db.path)
                .env_remove("RUST_LOG")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut moves: BTreeMap<i64, usize> = BTreeMap::new();
    for child in runs {
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let report = json_of(&String::from_utf8_lossy(&output.stdout));
        assert_eq!(report["dry_run"], false);
        for reassignment in report["reassignments"].as_array().unwrap() {
            let outcome = reassignment["outcome"].as_str().unwrap();
            assert!(["moved", "skipped"].contains(&outcome), "{outcome}");
            if outcome == "moved" {
                *moves
                    .entry(reassignment["task_id"].as_i64().unwrap())
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(moves.len(), 200);
    assert!(moves.values().all(|&count| count == 1), "{moves:?}");

    let mut raw = db.raw().await;
    let silent_ids = format!("('{}', '{}')", pairs[0].created.id, pairs[1].created.id);
    assert_eq!(
        scalar(
            &mut raw,
            &format!("SELECT count(*) FROM task WHERE attempts = 2 AND conversation_id NOT IN {silent_ids}")
        )
        .await,
        200
    );
    assert_eq!(
        scalar(
            &mut raw,
            "SELECT count(*) FROM task_assignment WHERE ended_at IS NULL"
        )
        .await,
        200,
        "one current assignment per task"
    );
    let mut told = 0;
    for pair in &pairs[2..] {
        let messages = store.check(&pair.b, 1000).await.unwrap();
        told += messages.len();
    }
    assert_eq!(told, 200, "each task's new worker is told once");
    assert!(store.verify_audit().await.unwrap().is_intact());

    // And a third run finds nothing to do: the silent workers hold no task
    // now (the healthy ones, heard from again, are not silent).
    for pair in &pairs[2..] {
        store.heartbeat(&pair.b).await.unwrap();
    }
    let (code, stdout, stderr) = run(
        "reassign-tasks",
        &db.path,
        &["--silent", "--threshold", THRESHOLD],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "No open or in-progress tasks to reassign.\n");
    store.close().await;
}

#[tokio::test]
async fn a_dry_run_shows_the_plan_and_changes_nothing() {
    let db = TempDb::new();
    let store = db.open().await;
    let pairs = quiet_team(&store, 2, 1, 2).await;
    let mut raw = db.raw().await;
    let audits = scalar(&mut raw, "SELECT count(*) FROM audit").await;
    let from = pairs[0].created.id.to_string();
    let (code, stdout, stderr) = run(
        "reassign-tasks",
        &db.path,
        &["--from", &from, "--dry-run"],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let to = &pairs[1].created.id;
    assert_eq!(
        stdout,
        format!(
            "Plan (dry run, nothing changed): 2 tasks\n  task #1 \"t0\": {from} -> {to}: planned\n  task #2 \"t1\": {from} -> {to}: planned\n"
        )
    );
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM audit").await, audits);
    assert_eq!(
        scalar(&mut raw, "SELECT count(*) FROM task WHERE attempts > 1").await,
        0
    );

    let (code, stdout, stderr) = run("reassign-tasks", &db.path, &["--from", &from], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("2 of 2 tasks moved\n"), "{stdout}");
    assert_eq!(store.list_tasks(&pairs[1].b, None).await.unwrap().len(), 2);
    store.close().await;
}

#[tokio::test]
async fn with_no_healthy_worker_the_tasks_stay_unassigned() {
    let db = TempDb::new();
    let store = db.open().await;
    // Both workers silent: nobody can take the tasks.
    let pairs = quiet_team(&store, 2, 2, 2).await;
    let (code, stdout, stderr) = run(
        "reassign-tasks",
        &db.path,
        &["--silent", "--threshold", THRESHOLD],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("0 of 2 tasks moved\n"), "{stdout}");
    assert_eq!(
        stdout
            .matches("-> nobody (no healthy worker in the team): marked unassigned")
            .count(),
        2,
        "{stdout}"
    );
    for pair in &pairs {
        let tasks = store.list_tasks(&pair.a, None).await.unwrap();
        assert!(tasks.iter().all(|task| task.unassigned));
        let told = store.check(&pair.a, 100).await.unwrap();
        assert_eq!(told.len(), 1);
        assert!(told[0].body.contains("no alive worker in its team"));
    }
    store.close().await;
}

/// The original's `--silent-workers` lines, given as a value or on stdin.
#[tokio::test]
async fn the_original_silent_workers_lines_are_understood() {
    let db = TempDb::new();
    let store = db.open().await;
    let pairs = quiet_team(&store, 3, 1, 2).await;
    let silent = &pairs[0].created.id;
    let alive = &pairs[1].created.id;
    let lines = format!(
        "{silent}|b|2026-11-21 10:00:00|412\n\n{alive}|b|2026-11-21 10:06:40|2\n{silent}|a|2026-11-21 10:00:00|412\n"
    );
    // The healthy workers are heard from just before each run: the runs
    // must not outlast --threshold on a loaded machine.
    let beat = async || {
        for pair in &pairs[1..] {
            store.heartbeat(&pair.b).await.unwrap();
        }
    };
    beat().await;
    let mut child = Command::new(bin::path("reassign-tasks"))
        .args([
            "--silent-workers",
            "-",
            "--threshold",
            THRESHOLD,
            "--dry-run",
        ])
        .env("BRIDGE_DB", &db.path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("Plan (dry run, nothing changed): 2 tasks\n"),
        "{stdout}"
    );
    assert!(
        stderr.contains("names a worker heard from within --threshold; not silent, skipped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("names session a, an orchestrator, which holds no tasks; skipped"),
        "{stderr}"
    );

    beat().await;
    let (code, stdout, stderr) = run(
        "reassign-tasks",
        &db.path,
        &["--silent-workers", &lines, "--threshold", THRESHOLD],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("2 of 2 tasks moved\n"), "{stdout}");
    store.close().await;
}

#[tokio::test]
async fn bad_arguments_are_usage_errors_that_name_the_problem() {
    let db = TempDb::new();
    db.open().await.close().await;
    let cases: [(&[&str], &str); 5] = [
        (
            &[],
            "the following required arguments were not provided:\n  <--from <CONVERSATION_ID>...|--silent|--silent-workers <LINES>>",
        ),
        (
            &["--from", "conv_xyz"],
            "invalid value 'conv_xyz' for '--from <CONVERSATION_ID>...': invalid conversation_id",
        ),
        (
            &["--silent-workers", "conv_0123456789abcdef|b|yesterday"],
            "--silent-workers line 1: 3 fields, not 4 (expected <conversation_id>|<session>|<last_heartbeat>|<seconds>)",
        ),
        (
            &["--silent-workers", "\nconv_0123456789abcdef|c|x|1"],
            "--silent-workers line 2: invalid session_id",
        ),
        (
            &["--team", "core", "--from", "conv_0123456789abcdef"],
            "the following required arguments were not provided:\n  --silent",
        ),
    ];
    for (args, expected) in cases {
        let (code, stdout, stderr) = run("reassign-tasks", &db.path, args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }

    let missing = db.dir.path().join("nowhere.db");
    let (code, _, stderr) = run(
        "reassign-tasks",
        &missing,
        &["--from", "conv_0123456789abcdef"],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.starts_with("reassign-tasks: "), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!missing.exists());
}

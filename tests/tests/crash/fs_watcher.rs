//! `fs-watcher --state-file` killed at random moments while messages
//! arrive, and restarted: no gap, and no repeat unless marked, in its lines
//! and in the commands it runs.

use std::path::Path;
use std::time::{Duration, Instant};

use bridge_core::NewMessage;
use bridge_tests::{TempDb, pair};
use serde_json::Value;

use crate::{Group, Rng, assert_at_least_once, assert_sound};

/// Messages sent in each scenario.
const MESSAGES: usize = 300;

/// Watchers killed in each scenario.
const KILLS: usize = 14;

/// The reports in the watcher's JSON lines: (id, marked). A line cut short
/// by the kill is not a report, and only the last line of a run may be.
fn reports(lines: &[String], seed: u64) -> Vec<(i64, bool)> {
    lines
        .iter()
        .map(|line| {
            let report: Value = serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("not JSON (seed {seed}): {line}"));
            let marked = match report.get("redelivered") {
                None => false,
                Some(Value::Bool(true)) => true,
                Some(other) => panic!("redelivered is present only when true, got {other}"),
            };
            (report["id"].as_i64().expect("an id"), marked)
        })
        .collect()
}

/// The scenario, with `--exec` running `command` if given: messages sent
/// in bursts while the watcher is killed and restarted; then a last run
/// until the last message is reported. Returns the ids sent and the
/// reports of every run, in order.
async fn killed_and_restarted(
    db: &TempDb,
    command: Option<&str>,
    mut rng: Rng,
    seed: u64,
) -> (Vec<i64>, Vec<(i64, bool)>) {
    let store = db.open().await;
    let conversation = pair(&store).await;
    let id = conversation.created.id.to_string();
    let token = conversation.b.token.reveal();
    let state = db.dir.path().join("watcher.state");
    let mut args = vec![
        id.as_str(),
        "--state-file",
        state.to_str().expect("a UTF-8 path"),
    ];
    if let Some(command) = command {
        args.extend(["--exec", command]);
    }
    let env = [("BRIDGE_TOKEN", token.as_str())];

    let sender = {
        let (store, from) = (store.clone(), conversation.a.clone());
        let mut rng = rng.fork();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            while sent.len() < MESSAGES {
                for _ in 0..rng.range(1, 20) {
                    if sent.len() == MESSAGES {
                        break;
                    }
                    let body = format!("message {}", sent.len());
                    sent.push(store.send(&from, NewMessage::new(body)).await.unwrap().id);
                }
                tokio::time::sleep(rng.millis(0, 200)).await;
            }
            sent
        })
    };

    let mut lines = Vec::new();
    let mut kills = 0;
    while kills < KILLS {
        let watcher = Group::start("fs-watcher", &db.path, &args, &env);
        if rng.range(0, 2) == 0 {
            // At a random moment of its life.
            tokio::time::sleep(rng.millis(10, 400)).await;
        } else {
            // Just after it printed a line: in the middle of a batch, or
            // of a command.
            let deadline = Instant::now() + Duration::from_secs(1);
            while watcher.printed() == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(rng.millis(0, 4)).await;
        }
        let stderr = watcher.stderr();
        let (output, killed) = watcher.kill9();
        assert!(
            killed,
            "fs-watcher exited by itself (seed {seed}):\n{stderr}"
        );
        kills += 1;
        lines.extend(output.lines);
    }
    let sent = sender.await.expect("the sender");

    // The last run, until the state file says the last message was
    // reported (and its command ran), then a clean stop.
    let last = sent[sent.len() - 1];
    let watcher = Group::start("fs-watcher", &db.path, &args, &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Started (its signal handler in place), and done.
    while !watcher.stderr().contains("watching")
        || std::fs::read_to_string(&state)
            .ok()
            .as_deref()
            .map(str::trim)
            != Some(&last.to_string())
    {
        assert!(
            Instant::now() < deadline,
            "the last message was never reported (seed {seed}):\n{}",
            watcher.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stderr = watcher.stderr();
    let (output, status) = watcher.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(output.torn.is_none());
    lines.extend(output.lines);
    eprintln!(
        "fs-watcher ({}): {} messages, {} lines, {kills} watchers killed",
        if command.is_some() {
            "--exec"
        } else {
            "JSON lines"
        },
        sent.len(),
        lines.len()
    );
    assert_sound(db, &store, seed).await;
    store.close().await;
    (sent, reports(&lines, seed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_have_no_gap_and_repeat_only_marked() {
    let (rng, seed) = Rng::for_scenario("fs-watcher (JSON lines)");
    let db = TempDb::new();
    let (sent, reports) = killed_and_restarted(&db, None, rng, seed).await;
    assert_at_least_once("fs-watcher's lines", &reports, &sent, seed);
}

/// With `--exec`, each command appends `<message id> <BRIDGE_REDELIVERED or
/// 0>` to a file: every message's command ran, unmarked runs are unique and
/// in order, and a command run again knows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_commands_run_for_every_message_and_again_only_marked() {
    let (rng, seed) = Rng::for_scenario("fs-watcher (--exec)");
    let db = TempDb::new();
    let runs = db.dir.path().join("runs");
    let command = format!(
        "echo \"$BRIDGE_MESSAGE_ID ${{BRIDGE_REDELIVERED:-0}}\" >> '{}'",
        runs.display()
    );
    let (sent, reports) = killed_and_restarted(&db, Some(&command), rng, seed).await;
    assert_at_least_once("fs-watcher's lines", &reports, &sent, seed);
    assert_at_least_once("fs-watcher's commands", &command_runs(&runs), &sent, seed);
}

/// The lines the commands appended: (id, marked).
fn command_runs(runs: &Path) -> Vec<(i64, bool)> {
    std::fs::read_to_string(runs)
        .expect("the commands ran")
        .lines()
        .map(|line| {
            let (id, flag) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("not `<id> <flag>`: {line}"));
            let marked = match flag {
                "0" => false,
                "1" => true,
                other => panic!("BRIDGE_REDELIVERED is 1 or unset, got {other}"),
            };
            (id.parse().expect("a message id"), marked)
        })
        .collect()
}

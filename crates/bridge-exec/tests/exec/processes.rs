//! Process groups: the timeout kills every process the command started, an
//! exit kills what it left in the background, dropping `run` kills it all.

use std::time::Duration;

use bridge_exec::{Limits, Mode, run};

use crate::util::{DEADLINE, alive, eventually, limits, pids, run_ok, validated, workspace};

#[tokio::test]
async fn the_timeout_kills_children_and_grandchildren() {
    let ws = workspace();
    let limits = Limits {
        timeout: Duration::from_secs(3),
        ..limits(ws.path())
    };
    // A child sleeps; another child (a shell) records itself and its own
    // child; the command waits for them all.
    let script = "sleep 1000 & echo $! >> pids; \
                  sh -c 'echo $$ >> pids; sleep 1000 & echo $! >> pids; wait' & \
                  wait";
    let outcome = run_ok(script, Mode::Yolo, &limits).await;
    assert!(outcome.timed_out, "{outcome:?}");
    assert_eq!(outcome.signal, Some(9));
    assert_eq!(outcome.exit_code, None);
    let pids = pids(&ws.path().join("pids"));
    assert_eq!(pids.len(), 3, "{pids:?}");
    for pid in pids {
        assert!(
            eventually(|| !alive(pid)),
            "process {pid} outlived the timeout"
        );
    }
}

#[tokio::test]
async fn a_background_process_is_killed_when_the_command_exits() {
    let ws = workspace();
    // The background sleep holds stdout open: without the group kill, it
    // would outlive the command and hold the pipe.
    let outcome = run_ok(
        "sleep 1000 & echo $! > pid; echo done",
        Mode::Yolo,
        &limits(ws.path()),
    )
    .await;
    assert_eq!(outcome.exit_code, Some(0));
    assert!(!outcome.timed_out);
    assert_eq!(outcome.stdout, "done\n");
    let pid = pids(&ws.path().join("pid"))[0];
    assert!(
        eventually(|| !alive(pid)),
        "process {pid} outlived the command"
    );
}

#[tokio::test]
async fn dropping_run_kills_the_command() {
    let ws = workspace();
    let validated = validated("echo $$ > pid; sleep 1000", Mode::Yolo);
    let limits = Limits {
        timeout: DEADLINE * 10,
        ..limits(ws.path())
    };
    let pid_file = ws.path().join("pid");
    let started = async {
        while !pid_file.exists() || pids(&pid_file).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        outcome = run(&validated, &limits) => panic!("the command ended: {outcome:?}"),
        () = started => {}
        () = tokio::time::sleep(DEADLINE) => panic!("the command did not start"),
    }
    // `run` was dropped by the select.
    let pid = pids(&pid_file)[0];
    assert!(eventually(|| !alive(pid)), "process {pid} outlived run");
}

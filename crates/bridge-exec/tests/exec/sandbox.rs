//! The bwrap sandbox, for real where bwrap works on this machine (the tests
//! say so and pass otherwise), and its absence.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use bridge_exec::{ExecError, Limits, Mode, Sandbox, bwrap_available, run_with_environment};

use crate::util::{alive, entries, eventually, git, limits, run_ok, validated, workspace};

/// Whether bwrap can be used here; says so when it cannot. With
/// `BRIDGE_REQUIRE_BWRAP=1` (CI sets it, having installed bubblewrap) a
/// machine where it cannot is a failure, not a skip.
fn usable() -> bool {
    let usable = bwrap_available();
    if !usable {
        assert!(
            std::env::var_os("BRIDGE_REQUIRE_BWRAP").is_none_or(|value| value != "1"),
            "BRIDGE_REQUIRE_BWRAP=1 but bwrap cannot build its sandbox here"
        );
        eprintln!("bwrap is not usable on this machine: sandbox test skipped");
    }
    usable
}

fn sandboxed(workspace: &Path) -> Limits {
    Limits {
        sandbox: Sandbox::Bwrap,
        ..limits(workspace)
    }
}

#[tokio::test]
async fn without_bwrap_the_sandbox_is_unavailable() {
    let ws = workspace();
    let parent: Vec<(OsString, OsString)> = vec![("PATH".into(), "/nonexistent".into())];
    let error = run_with_environment(&validated("ls", Mode::Safe), &sandboxed(ws.path()), parent)
        .await
        .expect_err("no bwrap on that PATH");
    assert!(
        matches!(&error, ExecError::SandboxUnavailable { reason } if reason == "bwrap is not installed"),
        "{error:?}"
    );
}

#[tokio::test]
async fn writes_inside_the_workspace_only() {
    if !usable() {
        return;
    }
    let ws = workspace();
    let outside = outside_tmp();
    let script = format!(
        "touch inside; touch {}/escaped; echo done",
        outside.path().display()
    );
    let outcome = run_ok(&script, Mode::Yolo, &sandboxed(ws.path())).await;
    assert_eq!(outcome.stdout, "done\n");
    assert!(
        outcome.stderr.contains("Read-only file system"),
        "{}",
        outcome.stderr
    );
    assert_eq!(entries(ws.path()), ["inside"]);
    assert!(entries(outside.path()).is_empty());
}

#[tokio::test]
async fn no_host_sockets_or_capabilities_inside() {
    if !usable() {
        return;
    }
    let ws = workspace();
    let outcome = run_ok(
        "ls -A /run; grep CapEff /proc/self/status",
        Mode::Yolo,
        &sandboxed(ws.path()),
    )
    .await;
    assert_eq!(
        outcome.stdout.trim(),
        "CapEff:\t0000000000000000",
        "/run is empty and no capability is left: {}",
        outcome.stderr
    );
}

#[tokio::test]
async fn no_network_inside() {
    if !usable() {
        return;
    }
    let ws = workspace();
    let outcome = run_ok(
        "readlink /proc/self/ns/net; cat /proc/net/dev",
        Mode::Yolo,
        &sandboxed(ws.path()),
    )
    .await;
    let mut lines = outcome.stdout.lines();
    let inside = lines.next().expect("the namespace");
    let ours = std::fs::read_link("/proc/self/ns/net").expect("our namespace");
    assert_ne!(inside, ours.to_string_lossy(), "same network namespace");
    // Two header lines, then one line per interface: only the loopback.
    let interfaces: Vec<&str> = lines
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"]);
}

#[tokio::test]
async fn host_processes_are_hidden() {
    if !usable() {
        return;
    }
    let ws = workspace();
    let ours = std::process::id();
    let outcome = run_ok(
        &format!("test -e /proc/{ours} && echo visible || echo hidden"),
        Mode::Yolo,
        &sandboxed(ws.path()),
    )
    .await;
    assert_eq!(outcome.stdout, "hidden\n");
}

/// A temporary directory outside `/tmp`, which the sandbox replaces with an
/// empty tmpfs (so a write there would fail for another reason).
fn outside_tmp() -> tempfile::TempDir {
    [
        env!("CARGO_TARGET_TMPDIR"),
        "/var/tmp",
        env!("CARGO_MANIFEST_DIR"),
    ]
    .into_iter()
    .filter(|dir| !Path::new(dir).starts_with("/tmp"))
    .find_map(|dir| tempfile::tempdir_in(dir).ok())
    .expect("a writable directory outside /tmp")
}

/// The processes on this machine whose working directory is `dir`.
fn running_in(dir: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .filter(|&pid| alive(pid))
        .collect()
}

#[tokio::test]
async fn the_timeout_kills_everything_in_the_sandbox_even_a_new_session() {
    if !usable() {
        return;
    }
    let ws = workspace();
    let dir = ws.path().canonicalize().expect("canonical");
    let limits = Limits {
        timeout: Duration::from_secs(3),
        ..sandboxed(&dir)
    };
    // `setsid` leaves the process group: only the pid namespace catches it.
    let outcome = run_ok(
        "sleep 1000 & setsid sleep 1000 & echo started; wait",
        Mode::Yolo,
        &limits,
    )
    .await;
    assert!(outcome.timed_out);
    assert_eq!(outcome.stdout, "started\n");
    assert!(
        eventually(|| running_in(&dir).is_empty()),
        "{:?}",
        running_in(&dir)
    );
}

#[tokio::test]
async fn the_snapshot_is_taken_inside_the_sandbox() {
    if !usable() {
        return;
    }
    let ws = workspace();
    let dir = ws.path();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("a.txt"), "one\n").expect("a.txt");
    git(dir, &["add", "a.txt"]);
    git(dir, &["commit", "-q", "-m", "first"]);
    std::fs::write(dir.join("a.txt"), "two\n").expect("a change");
    let limits = Limits {
        snapshot: true,
        ..sandboxed(dir)
    };
    let outcome = run_ok("cat a.txt", Mode::Safe, &limits).await;
    let branch = outcome.snapshot.expect("a snapshot");
    assert_eq!(git(dir, &["show", &format!("{branch}:a.txt")]), "two");
    assert_eq!(outcome.stdout, "two\n");
}

#[tokio::test]
async fn sandboxed_below_the_top_of_a_repository_the_snapshot_fails_and_the_command_runs() {
    if !usable() {
        return;
    }
    let ws = workspace();
    let dir = ws.path();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("a.txt"), "one\n").expect("a.txt");
    git(dir, &["add", "a.txt"]);
    git(dir, &["commit", "-q", "-m", "first"]);
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).expect("sub");
    let limits = Limits {
        snapshot: true,
        ..sandboxed(&sub)
    };
    let outcome = run_ok("echo ran", Mode::Safe, &limits).await;
    assert_eq!(outcome.snapshot, None);
    let error = outcome.snapshot_error.expect("an error");
    assert!(error.contains("outside the workspace"), "{error}");
    assert_eq!(outcome.stdout, "ran\n");
    assert_eq!(git(dir, &["branch", "--list"]), "* main");
}

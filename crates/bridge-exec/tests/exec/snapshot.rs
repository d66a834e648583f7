//! The git snapshot: a branch of the tracked changes before the command,
//! the user's branch, index and files untouched.

use std::path::Path;

use bridge_exec::{Limits, Mode, SNAPSHOT_BRANCH_PREFIX};

use crate::util::{git, limits, run_ok, workspace};

fn with_snapshot(workspace: &Path) -> Limits {
    Limits {
        snapshot: true,
        ..limits(workspace)
    }
}

/// A repository with one commit, on `main`.
fn repository(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("a.txt"), "one\n").expect("a.txt");
    git(dir, &["add", "a.txt"]);
    git(dir, &["commit", "-q", "-m", "first"]);
}

/// What the user would see of the repository.
fn state(dir: &Path) -> Vec<String> {
    vec![
        git(dir, &["rev-parse", "--abbrev-ref", "HEAD"]),
        git(dir, &["rev-parse", "HEAD"]),
        git(dir, &["status", "--porcelain"]),
        git(dir, &["diff"]),
        git(dir, &["diff", "--cached"]),
        git(dir, &["stash", "list"]),
        std::fs::read_to_string(dir.join("a.txt")).expect("a.txt"),
    ]
}

#[tokio::test]
async fn a_dirty_tree_is_saved_to_a_branch_and_left_as_it_was() {
    let ws = workspace();
    let dir = ws.path();
    repository(dir);
    std::fs::write(dir.join("a.txt"), "two\n").expect("a change");
    std::fs::write(dir.join("b.txt"), "staged\n").expect("a new file");
    git(dir, &["add", "b.txt"]);
    std::fs::write(dir.join("c.txt"), "untracked\n").expect("an untracked file");
    let before = state(dir);

    let outcome = run_ok("ls", Mode::Safe, &with_snapshot(dir)).await;

    assert_eq!(outcome.snapshot_error, None);
    let branch = outcome.snapshot.expect("a snapshot branch");
    assert!(branch.starts_with(SNAPSHOT_BRANCH_PREFIX), "{branch}");
    assert_eq!(git(dir, &["show", &format!("{branch}:a.txt")]), "two");
    assert_eq!(git(dir, &["show", &format!("{branch}:b.txt")]), "staged");
    assert_eq!(state(dir), before);
    assert_eq!(outcome.stdout, "a.txt\nb.txt\nc.txt\n");
}

#[tokio::test]
async fn a_clean_tree_is_saved_at_head() {
    let ws = workspace();
    repository(ws.path());
    let outcome = run_ok("ls", Mode::Safe, &with_snapshot(ws.path())).await;
    let branch = outcome.snapshot.expect("a snapshot branch");
    assert_eq!(
        git(ws.path(), &["rev-parse", &branch]),
        git(ws.path(), &["rev-parse", "HEAD"])
    );
    assert_eq!(git(ws.path(), &["branch", "--show-current"]), "main");
}

#[tokio::test]
async fn a_subdirectory_of_a_repository_is_snapshotted() {
    let ws = workspace();
    repository(ws.path());
    let sub = ws.path().join("sub");
    std::fs::create_dir(&sub).expect("sub");
    let outcome = run_ok("ls", Mode::Safe, &with_snapshot(&sub)).await;
    assert!(outcome.snapshot.is_some(), "{:?}", outcome.snapshot_error);
}

#[tokio::test]
async fn a_repository_without_commits_reports_an_error_and_runs() {
    let ws = workspace();
    git(ws.path(), &["init", "-q", "-b", "main"]);
    let outcome = run_ok("echo ran", Mode::Safe, &with_snapshot(ws.path())).await;
    assert_eq!(outcome.snapshot, None);
    let error = outcome.snapshot_error.expect("an error");
    assert!(error.starts_with("git "), "{error}");
    assert_eq!(outcome.stdout, "ran\n");
}

#[tokio::test]
async fn outside_a_repository_there_is_no_snapshot() {
    let ws = workspace();
    let outcome = run_ok("ls", Mode::Safe, &with_snapshot(ws.path())).await;
    assert_eq!(outcome.snapshot, None);
    assert_eq!(outcome.snapshot_error, None);
}

#[tokio::test]
async fn no_snapshot_unless_asked() {
    let ws = workspace();
    repository(ws.path());
    let outcome = run_ok("ls", Mode::Safe, &limits(ws.path())).await;
    assert_eq!(outcome.snapshot, None);
    assert_eq!(git(ws.path(), &["branch", "--list"]), "* main");
}

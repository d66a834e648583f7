//! The workspace: it must exist and be a directory, and the command runs in
//! it.

use bridge_exec::{ExecError, Mode};

use crate::util::{limits, run_ok, try_run, workspace};

#[tokio::test]
async fn a_missing_workspace_is_an_error() {
    let ws = workspace();
    let missing = ws.path().join("nope");
    let error = try_run("ls", Mode::Safe, &limits(&missing))
        .await
        .expect_err("no workspace");
    assert!(matches!(&error, ExecError::WorkspaceMissing(path) if *path == missing));
    assert!(error.to_string().contains("does not exist"));
}

#[tokio::test]
async fn a_file_is_not_a_workspace() {
    let ws = workspace();
    let file = ws.path().join("file");
    std::fs::write(&file, "x").expect("a file");
    let error = try_run("ls", Mode::Safe, &limits(&file))
        .await
        .expect_err("a file");
    assert!(matches!(&error, ExecError::NotADirectory(path) if *path == file));
}

#[tokio::test]
async fn the_command_runs_in_the_workspace() {
    let ws = workspace();
    let outcome = run_ok("pwd", Mode::Safe, &limits(ws.path())).await;
    let expected = ws.path().canonicalize().expect("canonical");
    assert_eq!(outcome.stdout.trim_end(), expected.to_string_lossy());
}

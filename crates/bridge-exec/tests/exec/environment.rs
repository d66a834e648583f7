//! The environment a command sees: secrets and `BRIDGE_*` gone, `PATH` kept
//! but cleared of entries that could find a planted program.

use std::ffi::OsString;

use bridge_exec::{ExecError, Mode, run_with_environment};

use crate::util::{entries, limits, run_ok, validated, workspace};

fn parent(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs
        .iter()
        .map(|(name, value)| (name.into(), value.into()))
        .collect()
}

fn system_path() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned())
}

#[tokio::test]
async fn secrets_do_not_reach_the_command() {
    let ws = workspace();
    let path = system_path();
    let outcome = run_with_environment(
        &validated("env", Mode::Safe),
        &limits(ws.path()),
        parent(&[
            ("PATH", &path),
            ("KEEP_ME", "1"),
            ("BRIDGE_TOKEN", "bridge-secret"),
            ("MY_API_KEY", "key-secret"),
            ("GITHUB_TOKEN", "github-secret"),
            ("DATABASE_URL", "postgres://app:url-secret@db/app"),
        ]),
    )
    .await
    .expect("env runs");
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert!(lines.contains(&"KEEP_ME=1"), "{lines:?}");
    assert!(
        lines.iter().any(|line| line.starts_with("PATH=/")),
        "{lines:?}"
    );
    assert!(!outcome.stdout.contains("secret"), "{}", outcome.stdout);
}

#[tokio::test]
async fn the_real_environment_is_scrubbed_too() {
    let ws = workspace();
    let outcome = run_ok("env", Mode::Safe, &limits(ws.path())).await;
    assert!(outcome.stdout.lines().any(|line| line.starts_with("PATH=")));
    assert!(
        !outcome
            .stdout
            .lines()
            .any(|line| line.starts_with("BRIDGE_"))
    );
}

#[tokio::test]
async fn a_program_planted_in_the_workspace_is_not_found_through_path() {
    let ws = workspace();
    let bin = ws.path().join("bin");
    std::fs::create_dir(&bin).expect("bin");
    for dir in [ws.path(), bin.as_path()] {
        let fake = dir.join("ls");
        std::fs::write(&fake, "#!/bin/sh\ntouch pwned\n").expect("a fake ls");
        let mut permissions = std::fs::metadata(&fake).expect("metadata").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&fake, permissions).expect("executable");
    }
    let path = format!(".::bin:{}:{}", bin.display(), system_path());
    let outcome = run_with_environment(
        &validated("ls", Mode::Safe),
        &limits(ws.path()),
        parent(&[("PATH", &path)]),
    )
    .await
    .expect("ls runs");
    // The real ls listed the workspace.
    assert_eq!(outcome.stdout, "bin\nls\n");
    assert_eq!(entries(ws.path()), ["bin", "ls"]);
}

#[tokio::test]
async fn a_program_that_cannot_be_found_is_a_spawn_error() {
    let ws = workspace();
    let error = run_with_environment(
        &validated("ls", Mode::Safe),
        &limits(ws.path()),
        parent(&[("PATH", "/nonexistent")]),
    )
    .await
    .expect_err("no ls on that PATH");
    assert!(
        matches!(&error, ExecError::Spawn { program, source }
            if program == "ls" && source.kind() == std::io::ErrorKind::NotFound),
        "{error:?}"
    );
}

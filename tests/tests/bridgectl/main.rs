//! End-to-end tests of `bridgectl`, the operator's command line: the real
//! binary, run to completion on temporary databases, its stdout read as the
//! operator reads it. The store (or raw SQL) only sets the scene and checks
//! the rows behind what was printed; tokens are tried on `check-messages`,
//! which exits 77 when one no longer authenticates.
//!
//! Assertions never rest on log lines: stderr is read only for the one line
//! an error prints, and for the absence of tokens.

mod access;
mod audit;
mod cleanup;
mod copy;
mod create;
mod demo;
mod errors;
mod rotate;
mod views;
mod yolo;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bridge_core::{Credentials, Timestamp};
use bridge_tests::daemon::run;
use serde_json::Value;

/// One finished run of a binary.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts that it succeeded; returns its stdout.
    #[track_caller]
    fn ok(self) -> String {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self.stdout
    }

    /// Asserts that it succeeded; returns its stdout as JSON.
    #[track_caller]
    fn json(self) -> Value {
        let stdout = self.ok();
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
    }

    /// Asserts that it failed with `code`, printing nothing on stdout and
    /// `line` as its last line on stderr; returns stderr.
    #[track_caller]
    fn failed(self, code: i32, line: &str) -> String {
        assert_eq!(
            self.code,
            Some(code),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert_eq!(self.stdout, "", "a failure prints nothing on stdout");
        assert_eq!(
            self.stderr.lines().last(),
            Some(line),
            "stderr:\n{}",
            self.stderr
        );
        self.stderr
    }
}

/// Runs `bridgectl args` on `db`.
fn ctl(db: &Path, args: &[&str]) -> Run {
    ctl_env(db, args, &[])
}

/// Runs `bridgectl args` on `db` with `env` added.
fn ctl_env(db: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let (code, stdout, stderr) = run("bridgectl", db, args, env);
    Run {
        code,
        stdout,
        stderr,
    }
}

/// A conversation made by `bridgectl create --json`, and its tokens.
struct Made {
    id: String,
    token_a: String,
    token_b: String,
}

impl Made {
    /// The credentials of one side, for the store.
    fn credentials(&self, session: &str) -> Credentials {
        let token = if session == "a" {
            &self.token_a
        } else {
            &self.token_b
        };
        Credentials::parse(&self.id, session, token).unwrap()
    }
}

/// `bridgectl create --json --my-role <a> --partner-role <b> <more>`.
fn make(db: &Path, role_a: &str, role_b: &str, more: &[&str]) -> Made {
    let mut args = vec![
        "create",
        "--json",
        "--my-role",
        role_a,
        "--partner-role",
        role_b,
    ];
    args.extend_from_slice(more);
    let json = ctl(db, &args).json();
    let token = |n: usize| json["tokens"][n]["token"].as_str().unwrap().to_owned();
    Made {
        id: json["conversation_id"].as_str().unwrap().to_owned(),
        token_a: token(0),
        token_b: token(1),
    }
}

/// Writes `token` to `<dir>/<name>` (mode 0600); returns the path.
fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The exit code of `check-messages <id> --session <session> --token-file
/// <file>`: 0 if the token authenticates, 77 if not.
fn check_messages(db: &Path, id: &str, session: &str, file: &Path) -> (Option<i32>, String) {
    let file = file.to_str().unwrap();
    let (code, stdout, stderr) = run(
        "check-messages",
        db,
        &[id, "--session", session, "--token-file", file],
        &[],
    );
    match code {
        Some(0) => assert_eq!(stdout, "No new messages\n"),
        _ => assert_eq!(stdout, ""),
    }
    (code, stderr)
}

/// Asserts that `token` (in `file`) authenticates as `session` of `id`.
#[track_caller]
fn assert_authenticates(db: &Path, id: &str, session: &str, file: &Path) {
    let (code, stderr) = check_messages(db, id, session, file);
    assert_eq!(code, Some(0), "{stderr}");
}

/// Asserts that the token in `file` is refused for `session` of `id`.
#[track_caller]
fn assert_refused(db: &Path, id: &str, session: &str, file: &Path) {
    let (code, stderr) = check_messages(db, id, session, file);
    assert_eq!(code, Some(77), "{stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some(
            format!("check-messages: invalid token for session {session} of conversation {id}")
                .as_str()
        ),
        "{stderr}"
    );
}

/// The 64-hex-character words of `text`: what a token looks like.
fn hex_words(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|word| word.len() == 64)
        .collect()
}

/// The rows of a table `bridgectl` printed, each a map from column header
/// to (trimmed) cell. Columns start where their headers do.
fn table(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header = lines.next().expect("a header line");
    let mut starts = Vec::new();
    let mut names = Vec::new();
    let mut rest = header;
    while !rest.is_empty() {
        let start = header.len() - rest.len();
        let end = rest.find("  ").unwrap_or(rest.len());
        names.push(rest[..end].to_owned());
        starts.push(start);
        rest = rest[end..].trim_start();
    }
    lines
        .map(|line| {
            let mut row = BTreeMap::new();
            for (n, name) in names.iter().enumerate() {
                let from = starts[n].min(line.len());
                let to = starts
                    .get(n + 1)
                    .map_or(line.len(), |&to| to.min(line.len()));
                row.insert(name.clone(), line[from..to].trim().to_owned());
            }
            row
        })
        .collect()
}

/// Unix milliseconds `seconds` ago.
fn millis_ago(seconds: i64) -> i64 {
    Timestamp::now().as_millis() - seconds * 1_000
}

/// Every test of this binary again, on PostgreSQL.
#[tokio::test]
async fn every_test_on_postgres() {
    bridge_tests::postgres::rerun_on_postgres(
        "every_test_on_postgres",
        &[
            (
                "errors::a_file_that_is_not_a_database",
                "a text file where the SQLite database should be",
            ),
            (
                "copy::",
                "copies an SQLite store into a PostgreSQL server of its own",
            ),
            ("demo::", "the demo runs on an SQLite store of its own"),
        ],
    )
    .await;
}

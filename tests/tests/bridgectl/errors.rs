//! What goes wrong: a missing database, unknown subcommands; and what never
//! happens: a token on stderr, in a log line, or stored in the database.

use bridge_tests::TempDb;

use crate::{assert_authenticates, assert_refused, ctl, ctl_env, hex_words, make};

#[test]
fn the_store_and_log_flags_go_before_or_after_the_subcommand() {
    let db = TempDb::new();
    let other = TempDb::new();
    make(&other.path, "orchestrator", "worker", &[]);
    let other_db = other.path.to_str().unwrap();
    // `ctl` sets BRIDGE_DB to `db`, which does not exist: --db wins.
    let orders: [&[&str]; 3] = [
        &["--db", other_db, "list", "--json"],
        &["list", "--db", other_db, "--json"],
        &["list", "--json", "-v", "--db", other_db],
    ];
    for args in orders {
        let listed = ctl(&db.path, args).json();
        assert_eq!(listed.as_array().unwrap().len(), 1, "{args:?}");
    }
    assert!(!db.exists());
}

#[test]
fn every_command_but_create_refuses_a_missing_database_and_creates_nothing() {
    let db = TempDb::new();
    let id = "conv_0123456789abcdef";
    let tokens = db.dir.path().join("tokens");
    let tokens = tokens.to_str().unwrap();
    let commands: [&[&str]; 11] = [
        &["list"],
        &["show", id],
        &["rotate-tokens", id],
        &["rotate-tokens", id, "--session", "b", "--out-dir", tokens],
        &["status", "--team", "core"],
        &["tasks"],
        &["audit"],
        &["audit", id, "--limit", "5"],
        &["audit", "verify"],
        &["cleanup"],
        &["cleanup", "--dry-run"],
    ];
    let expected = format!("bridgectl: {}", db.missing_error());
    for args in commands {
        for json in [false, true] {
            let mut args = args.to_vec();
            if json {
                args.push("--json");
            }
            // The same plain line with --json: errors are for people.
            let stderr = ctl(&db.path, &args).failed(1, &expected);
            assert_eq!(
                stderr.matches(&db.missing_error()).count(),
                1,
                "{args:?}: printed once"
            );
        }
    }
    let left: Vec<_> = std::fs::read_dir(db.dir.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing created: {left:?}");

    // create makes it, and its directory.
    let nested = db.dir.path().join("state").join("bridge.db");
    make(&nested, "orchestrator", "worker", &[]);
    assert!(nested.is_file());
    assert_eq!(
        ctl(&nested, &["list", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_file_that_is_not_a_database_is_a_configuration_error() {
    let db = TempDb::new();
    std::fs::write(
        &db.path,
        "not a database, just text that is long enough to be read",
    )
    .unwrap();
    ctl(&db.path, &["list"]).failed(
        78,
        &format!("bridgectl: {} is not an SQLite database", db.path.display()),
    );
}

#[test]
fn unknown_subcommands_and_missing_arguments_are_usage_errors() {
    let db = TempDb::new();
    let cases: [(&[&str], &str); 6] = [
        (&["frob"], "error: unrecognized subcommand 'frob'"),
        (&[], "Usage: bridgectl [OPTIONS] <COMMAND>"),
        (
            &["show"],
            "error: the following required arguments were not provided:",
        ),
        (
            &["create", "--my-role", "orchestrator"],
            "error: the following required arguments were not provided:",
        ),
        (&["audit", "frob"], "error: invalid value 'frob' for '[ID]'"),
        (
            &["list", "--frob"],
            "error: unexpected argument '--frob' found",
        ),
    ];
    for (args, expected) in cases {
        let run = ctl(&db.path, args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
    }
    assert!(!db.exists());
}

/// Asserts that none of `tokens` is in `haystack`, as hex in either case
/// or as raw bytes.
#[track_caller]
fn assert_absent(what: &str, haystack: &[u8], tokens: &[String]) {
    let text = String::from_utf8_lossy(haystack).to_lowercase();
    for token in tokens {
        assert!(
            !text.contains(token.as_str()),
            "{what} holds a token as hex"
        );
        let raw = hex::decode(token).unwrap();
        assert!(
            !haystack.windows(32).any(|window| window == raw.as_slice()),
            "{what} holds a token's raw bytes"
        );
    }
}

#[tokio::test]
async fn no_token_in_stderr_logs_or_the_database() {
    let db = TempDb::new();
    let trace = [("RUST_LOG", "trace")];
    let mut tokens: Vec<String> = Vec::new();
    let mut stderr = String::new();
    let mut outputs = Vec::new();
    let mut ctl = |args: &[&str]| {
        let run = ctl_env(&db.path, args, &trace);
        stderr.push_str(&run.stderr);
        let stdout = run.ok();
        outputs.push(stdout.clone());
        stdout
    };

    let text = ctl(&[
        "create",
        "--my-role",
        "orchestrator",
        "--partner-role",
        "worker",
    ]);
    tokens.extend(hex_words(&text).into_iter().map(str::to_owned));
    let id = text
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    // The logging flags may come before the subcommand as well as after.
    let json = ctl(&[
        "--log-format",
        "json",
        "-vv",
        "create",
        "--json",
        "--my-role",
        "orchestrator",
        "--partner-role",
        "worker",
    ]);
    tokens.extend(hex_words(&json).into_iter().map(str::to_owned));
    let dir = db.dir.path().join("tokens");
    let dir = dir.to_str().unwrap();
    ctl(&[
        "create",
        "--my-role",
        "orchestrator",
        "--partner-role",
        "worker",
        "--out-dir",
        dir,
    ]);
    let rotated = ctl(&["rotate-tokens", &id, "--session", "b"]);
    tokens.extend(hex_words(&rotated).into_iter().map(str::to_owned));
    ctl(&["rotate-tokens", &id, "--out-dir", dir]);
    for entry in std::fs::read_dir(dir).unwrap() {
        let token = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        tokens.push(token.trim().to_owned());
    }
    assert_eq!(tokens.len(), 2 + 2 + 1 + 2 + 2, "every token issued");
    // Used, successfully and not, so that authentication logs too.
    let file = std::path::Path::new(dir).join(format!("{id}.b.token"));
    assert_authenticates(&db.path, &id, "b", &file);
    assert_refused(&db.path, &id, "a", &file);
    ctl(&["list"]);
    ctl(&["show", &id]);
    ctl(&["status"]);
    ctl(&["tasks"]);
    ctl(&["audit", "--json"]);
    ctl(&["audit", "verify"]);
    ctl(&["cleanup", "--dry-run"]);

    assert!(stderr.contains("DEBUG"), "logs were written");
    assert_absent("stderr", stderr.as_bytes(), &tokens);
    let issuing = outputs[..5].concat();
    assert_absent(
        "what is printed after",
        outputs[5..].concat().as_bytes(),
        &tokens,
    );
    assert!(issuing.contains(&tokens[0]));
    for entry in std::fs::read_dir(db.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert_absent(&path.display().to_string(), &bytes, &tokens);
        }
    }
    assert!(db.exists());
    if db.is_postgres() {
        for token in &tokens {
            for case in [token.to_lowercase(), token.to_uppercase()] {
                assert!(!db.stores_text(&case).await, "a token is in the database");
            }
        }
    }
}

/// A listing whose reader goes away (`bridgectl audit | head`) ends quietly;
/// new tokens that cannot be printed are an error that says what to do.
#[test]
fn a_closed_stdout_ends_a_listing_quietly_but_not_a_creation() {
    let db = TempDb::new();
    let made = make(&db.path, "orchestrator", "worker", &[]);
    let closed = |args: &[&str]| {
        let mut child = std::process::Command::new(bridge_tests::bin::path("bridgectl"))
            .args(args)
            .env("BRIDGE_DB", &db.path)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before anything is written.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert_eq!(closed(&["audit"]), (Some(0), String::new()));
    assert_eq!(closed(&["show", &made.id]), (Some(0), String::new()));
    let (code, stderr) = closed(&["create", "--my-role", "lead", "--partner-role", "worker"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("was created, but its tokens could not be printed; replace them with `bridgectl rotate-tokens conv_"),
        "{stderr}"
    );
}

#[test]
fn a_database_of_an_unknown_kind_or_a_postgresql_one_without_a_key_file_is_refused() {
    let db = TempDb::new();
    // BRIDGE_DB (a file, so no key file comes with it) is overridden by --db.
    let file = db.dir.path().join("bridge.db");
    ctl(&file, &["--db", "mysql://db.example/team", "list"]).failed(
        1,
        "bridgectl: invalid database: mysql:// is not a store mcp-bridge knows; \
         give a file path, sqlite:PATH, or postgres://USER@HOST/DATABASE",
    );
    let stderr = ctl(
        &file,
        &["--db", "postgres://bridge:s3cret@127.0.0.1:1/team", "list"],
    )
    .failed(
        1,
        "bridgectl: invalid key file: a PostgreSQL store (postgres://bridge@127.0.0.1:1/team) \
         needs --key-file (or BRIDGE_KEY_FILE): every hub of one database must use the same \
         server key",
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    assert!(!file.exists() && !db.exists(), "nothing was created");
}

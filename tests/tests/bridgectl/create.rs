//! `bridgectl create`: the id and both tokens, printed once or written to
//! files of mode 0600; the tokens it hands out authenticate.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bridge_core::Timestamp;
use bridge_tests::{TempDb, raw_connection};

use crate::{assert_authenticates, assert_refused, ctl, hex_words, token_file};

/// `created_at` and `expires_at` of a conversation, in Unix milliseconds,
/// and its team, read from the file.
async fn stored(db: &Path, id: &str) -> (i64, i64, Option<String>) {
    let mut raw = raw_connection(db).await;
    sqlx::query_as("SELECT created_at, expires_at, team FROM conversation WHERE id = $1")
        .bind(id)
        .fetch_one(&mut raw)
        .await
        .unwrap()
}

/// The id in `conversation <id>: ...`.
fn id_in(line: &str) -> &str {
    line.strip_prefix("conversation ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no id in {line:?}"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn create_prints_the_id_and_both_tokens_once() {
    let db = TempDb::new();
    assert!(!db.exists());
    let run = ctl(
        &db.path,
        &[
            "create",
            "--my-role",
            "orchestrator",
            "--partner-role",
            "backend worker",
            "--team",
            "core",
            "--ttl",
            "10d",
        ],
    );
    let stderr = run.stderr.clone();
    let stdout = run.ok();
    assert!(db.exists(), "create makes the database");

    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let id = id_in(lines[0]);
    let (created_at, expires_at, team) = stored(&db.path, id).await;
    assert_eq!(expires_at - created_at, 10 * 86_400 * 1_000, "--ttl 10d");
    assert_eq!(team.as_deref(), Some("core"));
    assert_eq!(
        lines[0],
        format!(
            "conversation {id}: orchestrator (a) and backend worker (b), team core, expires {}",
            Timestamp::from_millis(expires_at)
        )
    );
    let token_a = lines[1].strip_prefix("token a: ").expect("token a");
    let token_b = lines[2].strip_prefix("token b: ").expect("token b");
    assert_eq!(hex_words(token_a), [token_a]);
    assert_eq!(hex_words(token_b), [token_b]);
    assert_ne!(token_a, token_b);
    assert_eq!(
        lines[3],
        format!(
            "These tokens are shown once: the database keeps only their digests. \
             A lost token is replaced with `bridgectl rotate-tokens {id}`."
        )
    );
    for token in [token_a, token_b] {
        assert_eq!(stdout.matches(token).count(), 1, "printed once");
        assert!(!stderr.contains(token), "never on stderr");
    }

    let dir = db.dir.path();
    let file_a = token_file(dir, "a.token", token_a);
    let file_b = token_file(dir, "b.token", token_b);
    assert_authenticates(&db.path, id, "a", &file_a);
    assert_authenticates(&db.path, id, "b", &file_b);
    assert_refused(&db.path, id, "a", &file_b);
}

#[tokio::test]
async fn create_json_has_every_field_and_the_default_ttl() {
    let db = TempDb::new();
    let json = ctl(
        &db.path,
        &[
            "create",
            "--json",
            "--my-role",
            "orchestrator",
            "--partner-role",
            "worker",
        ],
    )
    .json();
    let keys: BTreeSet<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "conversation_id",
            "role_a",
            "role_b",
            "team",
            "expires_at",
            "tokens"
        ])
    );
    let id = json["conversation_id"].as_str().unwrap();
    assert!(id.parse::<bridge_core::ConversationId>().is_ok(), "{id}");
    assert_eq!(json["role_a"], "orchestrator");
    assert_eq!(json["role_b"], "worker");
    assert!(json["team"].is_null());
    let (created_at, expires_at, team) = stored(&db.path, id).await;
    assert_eq!(team, None);
    assert_eq!(
        expires_at - created_at,
        3 * 3_600 * 1_000,
        "the default is 3 h"
    );
    assert_eq!(
        json["expires_at"],
        Timestamp::from_millis(expires_at).to_string()
    );

    let tokens = json["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    for (token, session) in tokens.iter().zip(["a", "b"]) {
        let keys: BTreeSet<&str> = token
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["session", "token"]));
        assert_eq!(token["session"], session);
        let value = token["token"].as_str().unwrap();
        assert_eq!(hex_words(value), [value]);
        let file = token_file(db.dir.path(), session, value);
        assert_authenticates(&db.path, id, session, &file);
    }
    assert_ne!(tokens[0]["token"], tokens[1]["token"]);
}

#[tokio::test]
async fn create_out_dir_writes_token_files_of_mode_0600_and_prints_no_token() {
    let db = TempDb::new();
    let parent = db.dir.path().join("secrets");
    let dir = parent.join("tokens");
    let dir_text = dir.to_str().unwrap();
    let run = ctl(
        &db.path,
        &[
            "create",
            "--my-role",
            "orchestrator",
            "--partner-role",
            "worker",
            "--out-dir",
            dir_text,
        ],
    );
    let stderr = run.stderr.clone();
    let stdout = run.ok();

    assert_eq!(mode(&dir), 0o700, "the directory is created 0700");
    assert_eq!(mode(&parent), 0o700, "and so are its missing parents");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let id = id_in(lines[0]);
    let file_a = dir.join(format!("{id}.a.token"));
    let file_b = dir.join(format!("{id}.b.token"));
    assert_eq!(
        lines[1],
        format!("token a: written to {}", file_a.display())
    );
    assert_eq!(
        lines[2],
        format!("token b: written to {}", file_b.display())
    );

    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [format!("{id}.a.token"), format!("{id}.b.token")],
        "no temporary file left"
    );
    let mut tokens = Vec::new();
    for file in [&file_a, &file_b] {
        assert_eq!(mode(file), 0o600, "{}", file.display());
        let contents = std::fs::read_to_string(file).unwrap();
        let token = contents.strip_suffix('\n').unwrap().to_owned();
        assert_eq!(hex_words(&token), [token.as_str()]);
        assert!(!stdout.contains(&token) && !stderr.contains(&token));
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1]);
    assert!(hex_words(&stdout).is_empty(), "{stdout}");
    assert!(hex_words(&stderr).is_empty(), "{stderr}");
    assert_authenticates(&db.path, id, "a", &file_a);
    assert_authenticates(&db.path, id, "b", &file_b);
    assert_refused(&db.path, id, "b", &file_a);

    // The JSON says where they went, not what they are.
    let json = ctl(
        &db.path,
        &[
            "create",
            "--json",
            "--my-role",
            "orchestrator",
            "--partner-role",
            "worker",
            "--out-dir",
            dir_text,
        ],
    )
    .json();
    let id = json["conversation_id"].as_str().unwrap();
    assert_eq!(
        json["tokens"],
        serde_json::json!([
            { "session": "a", "file": dir.join(format!("{id}.a.token")) },
            { "session": "b", "file": dir.join(format!("{id}.b.token")) },
        ])
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 4);
}

/// An out-dir that cannot be made is found before the conversation is
/// created: after, it would exist with tokens nobody has.
#[test]
fn an_out_dir_that_cannot_be_made_creates_nothing() {
    let db = TempDb::new();
    let file = db.dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let dir = file.join("tokens");
    let run = ctl(
        &db.path,
        &[
            "create",
            "--my-role",
            "orchestrator",
            "--partner-role",
            "worker",
            "--out-dir",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stdout, "");
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("bridgectl: cannot create {}: ", dir.display())),
        "{}",
        run.stderr
    );
    assert_eq!(ctl(&db.path, &["list"]).ok(), "No conversations.\n");
}

#[test]
fn a_bad_ttl_is_a_usage_error_that_creates_nothing() {
    let db = TempDb::new();
    let cases = [
        (
            "soon",
            "error: invalid value 'soon' for '--ttl <TTL>': \"soon\" is not a duration (try 30s, 5m, 1h30m)",
        ),
        (
            "0",
            "error: invalid value '0' for '--ttl <TTL>': must be between 1 second and 365 days",
        ),
        (
            "500ms",
            "error: invalid value '500ms' for '--ttl <TTL>': must be between 1 second and 365 days",
        ),
        (
            "400d",
            "error: invalid value '400d' for '--ttl <TTL>': must be between 1 second and 365 days",
        ),
    ];
    for (ttl, expected) in cases {
        let run = ctl(
            &db.path,
            &[
                "create",
                "--my-role",
                "orchestrator",
                "--partner-role",
                "worker",
                "--ttl",
                ttl,
            ],
        );
        assert_eq!(run.code, Some(2), "--ttl {ttl}: {}", run.stderr);
        assert_eq!(run.stdout, "");
        assert_eq!(run.stderr.lines().next(), Some(expected), "{}", run.stderr);
        assert!(!db.exists(), "--ttl {ttl} created the database");
    }
}

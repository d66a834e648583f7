//! `bridgectl rotate-tokens`: new tokens work at once, old ones stop, only
//! the chosen session's token changes, and the rotation is audited.

use std::os::unix::fs::PermissionsExt;

use bridge_tests::TempDb;

use crate::{assert_authenticates, assert_refused, ctl, hex_words, make, table, token_file};

#[tokio::test]
async fn rotating_one_session_replaces_only_its_token() {
    let db = TempDb::new();
    let made = make(&db.path, "orchestrator", "worker", &[]);
    let other = make(&db.path, "orchestrator", "worker", &[]);
    let dir = db.dir.path();
    let old_a = token_file(dir, "old_a", &made.token_a);
    let old_b = token_file(dir, "old_b", &made.token_b);
    assert_authenticates(&db.path, &made.id, "b", &old_b);

    let run = ctl(&db.path, &["rotate-tokens", &made.id, "--session", "b"]);
    let stderr = run.stderr.clone();
    let stdout = run.ok();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(
        lines[0],
        format!(
            "conversation {}: a new token for session b; the old one no longer works",
            made.id
        )
    );
    let new_b = lines[1].strip_prefix("token b: ").expect("token b");
    assert_eq!(hex_words(new_b), [new_b]);
    assert_ne!(new_b, made.token_b);
    assert_eq!(
        lines[2],
        format!(
            "These tokens are shown once: the database keeps only their digests. \
             A lost token is replaced with `bridgectl rotate-tokens {}`.",
            made.id
        )
    );
    assert!(!stderr.contains(new_b));

    assert_refused(&db.path, &made.id, "b", &old_b);
    let new_b = token_file(dir, "new_b", new_b);
    assert_authenticates(&db.path, &made.id, "b", &new_b);
    assert_authenticates(&db.path, &made.id, "a", &old_a);
    // Another conversation's tokens are untouched.
    let other_b = token_file(dir, "other_b", &other.token_b);
    assert_authenticates(&db.path, &other.id, "b", &other_b);

    // Both, as JSON.
    let json = ctl(&db.path, &["rotate-tokens", &made.id, "--json"]).json();
    assert_eq!(json["id"], made.id.as_str());
    let tokens = json["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0]["session"], "a");
    assert_eq!(tokens[1]["session"], "b");
    let newest_a = token_file(dir, "newest_a", tokens[0]["token"].as_str().unwrap());
    let newest_b = token_file(dir, "newest_b", tokens[1]["token"].as_str().unwrap());
    assert_refused(&db.path, &made.id, "a", &old_a);
    assert_refused(&db.path, &made.id, "b", &new_b);
    assert_authenticates(&db.path, &made.id, "a", &newest_a);
    assert_authenticates(&db.path, &made.id, "b", &newest_b);

    // Each rotation is one audited row, naming the sessions it replaced.
    let stdout = ctl(&db.path, &["audit", &made.id]).ok();
    let rotations: Vec<(String, String)> = table(&stdout)
        .into_iter()
        .filter(|row| row["ACTION"] == "tokens_rotated")
        .map(|row| (row["CONVERSATION"].clone(), row["DETAIL"].clone()))
        .collect();
    assert_eq!(
        rotations,
        [
            (made.id.clone(), r#"{"sessions":["b"]}"#.to_owned()),
            (made.id.clone(), r#"{"sessions":["a","b"]}"#.to_owned()),
        ],
        "{stdout}"
    );
    let stdout = ctl(&db.path, &["audit", &other.id]).ok();
    assert!(!stdout.contains("tokens_rotated"), "{stdout}");
    ctl(&db.path, &["audit", "verify"]).ok();
}

#[tokio::test]
async fn rotating_into_an_out_dir_writes_files_of_mode_0600() {
    let db = TempDb::new();
    let made = make(&db.path, "orchestrator", "worker", &[]);
    let dir = db.dir.path().join("tokens");
    let dir_text = dir.to_str().unwrap();
    let file_a = dir.join(format!("{}.a.token", made.id));
    let file_b = dir.join(format!("{}.b.token", made.id));
    // An older token file, readable by all, is replaced whole.
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(&file_b, format!("{}\n", made.token_b)).unwrap();
    std::fs::set_permissions(&file_b, std::fs::Permissions::from_mode(0o644)).unwrap();

    let run = ctl(
        &db.path,
        &[
            "rotate-tokens",
            &made.id,
            "--session",
            "b",
            "--out-dir",
            dir_text,
        ],
    );
    let stderr = run.stderr.clone();
    let stdout = run.ok();
    assert_eq!(
        stdout,
        format!(
            "conversation {}: a new token for session b; the old one no longer works\ntoken b: written to {}\n",
            made.id,
            file_b.display()
        )
    );
    assert!(hex_words(&stderr).is_empty(), "{stderr}");
    assert!(!file_a.exists(), "only session b's file is written");
    let mode = std::fs::metadata(&file_b).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    let new_b = std::fs::read_to_string(&file_b).unwrap();
    assert_ne!(new_b.trim(), made.token_b);
    assert!(!stderr.contains(new_b.trim()));
    assert_authenticates(&db.path, &made.id, "b", &file_b);
    let old_b = token_file(db.dir.path(), "old_b", &made.token_b);
    assert_refused(&db.path, &made.id, "b", &old_b);

    let json = ctl(
        &db.path,
        &["rotate-tokens", &made.id, "--json", "--out-dir", dir_text],
    )
    .json();
    assert_eq!(
        json,
        serde_json::json!({
            "id": made.id,
            "tokens": [
                { "session": "a", "file": file_a },
                { "session": "b", "file": file_b },
            ],
        })
    );
    for file in [&file_a, &file_b] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        2,
        "no temporary file left"
    );
    assert_authenticates(&db.path, &made.id, "a", &file_a);
    assert_authenticates(&db.path, &made.id, "b", &file_b);
}

#[tokio::test]
async fn rotating_an_unknown_or_expired_conversation_is_refused() {
    let db = TempDb::new();
    let made = make(&db.path, "orchestrator", "worker", &[]);
    ctl(&db.path, &["rotate-tokens", "conv_0123456789abcdef"])
        .failed(77, "bridgectl: no such conversation: conv_0123456789abcdef");
    let mut raw = db.raw().await;
    sqlx::query("UPDATE conversation SET expires_at = 1000 WHERE id = $1")
        .bind(&made.id)
        .execute(&mut raw)
        .await
        .unwrap();
    ctl(&db.path, &["rotate-tokens", &made.id, "--session", "a"]).failed(
        77,
        &format!(
            "bridgectl: expired conversation: {} expired at 1970-01-01T00:00:01.000Z",
            made.id
        ),
    );
    let run = ctl(&db.path, &["rotate-tokens", &made.id, "--session", "c"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .starts_with("error: invalid value 'c' for '--session <SESSION>'"),
        "{}",
        run.stderr
    );
    let stdout = ctl(&db.path, &["audit", &made.id]).ok();
    assert!(!stdout.contains("tokens_rotated"), "{stdout}");
}

/// An out-dir that cannot be made is found before the tokens are replaced:
/// after, the old tokens would be gone and the new ones lost.
#[tokio::test]
async fn an_out_dir_that_cannot_be_made_leaves_the_tokens_as_they_were() {
    let db = TempDb::new();
    let made = make(&db.path, "orchestrator", "worker", &[]);
    let file = db.dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let dir = file.join("tokens");
    let run = ctl(
        &db.path,
        &[
            "rotate-tokens",
            &made.id,
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
    let old_a = token_file(db.dir.path(), "old_a", &made.token_a);
    let old_b = token_file(db.dir.path(), "old_b", &made.token_b);
    assert_authenticates(&db.path, &made.id, "a", &old_a);
    assert_authenticates(&db.path, &made.id, "b", &old_b);
    let stdout = ctl(&db.path, &["audit", &made.id]).ok();
    assert!(!stdout.contains("tokens_rotated"), "{stdout}");
}

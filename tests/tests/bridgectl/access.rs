//! `bridgectl access`: access keys for the HTTP server, made (shown once, or
//! written to a private file), listed without the key, revoked.

use std::os::unix::fs::PermissionsExt;

use bridge_tests::TempDb;

use crate::{ctl, table};

#[test]
fn keys_are_made_once_listed_without_the_key_and_revoked() {
    let db = TempDb::new();
    // A first key makes the database, as `create` does.
    let out = ctl(&db.path, &["access", "create", "orchestrator"]).ok();
    let key = out
        .split_whitespace()
        .find(|word| word.starts_with("mcpb_"))
        .expect("the key is printed");
    assert_eq!(key.len(), 69);
    assert!(out.starts_with("access key orchestrator: mcpb_"), "{out}");
    assert!(out.contains("It works until it is revoked."), "{out}");

    let file = db.dir.path().join("ci.key");
    let file_arg = file.to_str().unwrap();
    let out = ctl(
        &db.path,
        &[
            "access",
            "create",
            "ci",
            "--expires",
            "30d",
            "--out-file",
            file_arg,
        ],
    )
    .ok();
    assert!(!out.contains("mcpb_"), "written, not printed: {out}");
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.starts_with("mcpb_") && written.trim().len() == 69);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let listing = ctl(&db.path, &["access", "list"]).ok();
    assert!(!listing.contains(&key[5..]) && !listing.contains(&written.trim()[5..]));
    let rows = table(&listing);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["NAME"], "ci");
    assert_ne!(rows[0]["EXPIRES"], "never");
    assert_eq!(rows[1]["NAME"], "orchestrator");
    assert_eq!(rows[1]["LAST USED"], "never");
    assert_eq!(rows[1]["EXPIRES"], "never");

    let json = ctl(&db.path, &["access", "list", "--json"]).json();
    assert_eq!(json[1]["name"], "orchestrator");
    assert!(json[1]["expires_at"].is_null());

    ctl(&db.path, &["access", "revoke", "ci"]).ok();
    ctl(&db.path, &["access", "revoke", "ci"])
        .failed(1, "bridgectl: invalid name: no access key is named ci");
    ctl(&db.path, &["access", "create", "orchestrator"]).failed(
        1,
        "bridgectl: invalid name: an access key named orchestrator already exists; revoke it \
         first, or choose another name",
    );
    let rows = table(&ctl(&db.path, &["access", "list"]).ok());
    assert_eq!(rows.len(), 1);
}

#[test]
fn bad_names_and_expiries_are_refused_before_anything_is_made() {
    let db = TempDb::new();
    ctl(&db.path, &["access", "create", "has space"]).failed(
        1,
        "bridgectl: invalid name: an access key's name is 1 to 64 letters, digits, '-', '_' or \
         '.'",
    );
    let run = ctl(&db.path, &["access", "create", "ci", "--expires", "0s"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .contains("invalid value '0s' for '--expires <EXPIRES>': must be longer than 0 s"),
        "{}",
        run.stderr
    );
    let run = ctl(&db.path, &["access", "create", "ci", "--expires", "soon"]);
    assert_eq!(run.code, Some(2));
    // A key whose file cannot be written is not kept: nobody has it.
    let missing = db.dir.path().join("no-such-dir").join("ci.key");
    let run = ctl(
        &db.path,
        &[
            "access",
            "create",
            "ci",
            "--out-file",
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("access key ci was not kept: its file could not be written"),
        "{}",
        run.stderr
    );
    let rows = ctl(&db.path, &["access", "list"]).ok();
    assert_eq!(rows, "No access keys.\n");
}

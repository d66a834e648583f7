//! Output: both streams read, each capped, the child never blocked, the
//! cut made at a character boundary.

use bridge_exec::{Limits, Mode};

use crate::util::{limits, run_ok, workspace};

#[tokio::test]
async fn each_stream_is_capped_and_drained() {
    let ws = workspace();
    let limits = Limits {
        output_cap: 1000,
        ..limits(ws.path())
    };
    // 200 000 bytes on each stream: more than a pipe holds, so a reader that
    // stopped at the cap would leave the command blocked until the timeout.
    let outcome = run_ok(
        "head -c 200000 /dev/zero | tr '\\0' a; head -c 200000 /dev/zero | tr '\\0' b >&2; echo end >&2",
        Mode::Yolo,
        &limits,
    )
    .await;
    assert!(!outcome.timed_out);
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.stdout, "a".repeat(1000));
    assert_eq!(outcome.stderr, "b".repeat(1000));
    assert!(outcome.stdout_truncated);
    assert!(outcome.stderr_truncated);
}

#[tokio::test]
async fn output_under_the_cap_is_whole() {
    let ws = workspace();
    let outcome = run_ok("echo hello; echo oops >&2", Mode::Yolo, &limits(ws.path())).await;
    assert_eq!(outcome.stdout, "hello\n");
    assert_eq!(outcome.stderr, "oops\n");
    assert!(!outcome.stdout_truncated);
    assert!(!outcome.stderr_truncated);
}

#[tokio::test]
async fn the_cut_falls_on_a_character_boundary() {
    let ws = workspace();
    let limits = Limits {
        output_cap: 5,
        ..limits(ws.path())
    };
    // Three two-byte characters; five bytes would end inside the third.
    let outcome = run_ok("printf 'ééé'", Mode::Yolo, &limits).await;
    assert_eq!(outcome.stdout, "éé");
    assert!(outcome.stdout_truncated);
}

#[tokio::test]
async fn invalid_utf8_is_replaced() {
    let ws = workspace();
    let outcome = run_ok("printf 'a\\377b'", Mode::Yolo, &limits(ws.path())).await;
    assert_eq!(outcome.stdout, "a\u{fffd}b");
}

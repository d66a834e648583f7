//! The no-shell rule: in `safe` and `restricted`, shell syntax is argument
//! text, and no second command runs. Each test checks the workspace after.

use bridge_exec::{Mode, Refusal, validate};

use crate::util::{entries, limits, run_ok, workspace};

#[tokio::test]
async fn a_semicolon_glued_to_the_program_is_a_program_name() {
    let ws = workspace();
    for mode in [Mode::Safe, Mode::Restricted] {
        assert!(matches!(
            validate("ls; touch pwned", mode),
            Err(Refusal::NotAllowed { program, .. }) if program == "ls;"
        ));
    }
    assert!(entries(ws.path()).is_empty());
}

#[tokio::test]
async fn a_semicolon_between_words_is_an_argument() {
    let ws = workspace();
    let outcome = run_ok("ls ; touch pwned", Mode::Safe, &limits(ws.path())).await;
    // ls was given three names that do not exist.
    assert_eq!(outcome.exit_code, Some(2), "{outcome:?}");
    assert!(outcome.stderr.contains("';'"), "{}", outcome.stderr);
    assert!(entries(ws.path()).is_empty());
}

#[tokio::test]
async fn substitutions_are_printed_not_run() {
    let ws = workspace();
    for (command, printed) in [
        ("echo `touch pwned`", "`touch pwned`\n"),
        ("echo $(touch pwned)", "$(touch pwned)\n"),
        ("echo a && touch pwned", "a && touch pwned\n"),
        ("echo a | touch pwned", "a | touch pwned\n"),
        ("echo a > pwned", "a > pwned\n"),
    ] {
        for mode in [Mode::Safe, Mode::Restricted] {
            let outcome = run_ok(command, mode, &limits(ws.path())).await;
            assert_eq!(outcome.stdout, printed, "{command:?}");
            assert!(entries(ws.path()).is_empty(), "{command:?} in {mode}");
        }
    }
}

#[tokio::test]
async fn the_same_text_in_yolo_does_run_the_second_command() {
    // The control for the tests above: the shell would have made the file.
    let ws = workspace();
    let outcome = run_ok("ls ; touch pwned", Mode::Yolo, &limits(ws.path())).await;
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(entries(ws.path()), ["pwned"]);
}

#[tokio::test]
async fn yolo_uses_the_shell() {
    let ws = workspace();
    let outcome = run_ok("echo a && echo b", Mode::Yolo, &limits(ws.path())).await;
    assert_eq!(outcome.stdout, "a\nb\n");
    assert_eq!(outcome.exit_code, Some(0));
}

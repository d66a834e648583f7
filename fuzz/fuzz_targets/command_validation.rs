//! `bridge-exec`'s command validation, in every mode.
//!
//! Input: the text of a command, as an agent sends it. Checked:
//!
//! * accepted in `safe` or `restricted`, it runs without a shell, and its
//!   program is one of the mode's list, named bare; `env` has no argument
//!   and `find` none of the primaries that run a program (both would start
//!   a program outside the list); a program with subcommands has no option
//!   before its subcommand;
//! * the modes nest: what `safe` accepts `restricted` accepts alike, what
//!   `restricted` accepts `yolo` accepts, and what `yolo` refuses every
//!   mode refuses for the same reason;
//! * accepted in `yolo`, the text goes to the shell unchanged.

#![no_main]

use bridge_exec::{Mode, Program, Refusal, Validated, allowed_programs, validate};
use libfuzzer_sys::fuzz_target;

/// `find`'s primaries that run another program.
const FIND_RUNS: [&str; 4] = ["-exec", "-execdir", "-ok", "-okdir"];

/// The programs whose first argument is a subcommand.
const WITH_SUBCOMMANDS: [&str; 4] = ["git", "npm", "pip", "cargo"];

fuzz_target!(|data: &[u8]| {
    let Ok(command) = std::str::from_utf8(data) else {
        return;
    };
    let safe = validate(command, Mode::Safe);
    let restricted = validate(command, Mode::Restricted);
    let yolo = validate(command, Mode::Yolo);

    for (mode, outcome) in [(Mode::Safe, &safe), (Mode::Restricted, &restricted)] {
        if let Ok(validated) = outcome {
            check_without_shell(command, mode, validated);
        }
    }
    if let Ok(validated) = &safe {
        let Ok(also) = &restricted else {
            panic!("{command:?}: accepted in safe, refused in restricted: {restricted:?}");
        };
        assert_eq!(validated.program, also.program, "{command:?}");
    }
    if restricted.is_ok() {
        assert!(
            yolo.is_ok(),
            "{command:?}: accepted in restricted, refused in yolo: {yolo:?}"
        );
    }
    match &yolo {
        Ok(validated) => {
            assert_eq!(validated.mode, Mode::Yolo);
            assert_eq!(
                validated.program,
                Program::Shell(command.to_owned()),
                "{command:?}: yolo changed the text"
            );
        }
        Err(refusal) => {
            // Yolo refuses only what every mode refuses, for the same reason.
            assert!(matches!(
                refusal,
                Refusal::TooLong { .. }
                    | Refusal::Syntax(_)
                    | Refusal::Blocked { .. }
                    | Refusal::Empty
            ));
            assert_eq!(safe.as_ref().err(), Some(refusal), "{command:?}");
            assert_eq!(restricted.as_ref().err(), Some(refusal), "{command:?}");
        }
    }
});

/// `validated`, accepted in `mode` (safe or restricted), starts a program
/// of the mode's list directly.
fn check_without_shell(command: &str, mode: Mode, validated: &Validated) {
    assert_eq!(validated.mode, mode);
    let Program::Argv(words) = &validated.program else {
        panic!("{command:?} in {mode} mode goes through a shell: {validated:?}");
    };
    let Some((program, args)) = words.split_first() else {
        panic!("{command:?} in {mode} mode: accepted with no program");
    };
    assert!(
        allowed_programs(mode).contains(&program.as_str()),
        "{command:?} in {mode} mode runs {program:?}, which is not in the list"
    );
    assert!(!program.contains('/'), "{command:?}: {program:?} is a path");
    assert!(
        words.iter().all(|word| !word.contains('\0')),
        "{command:?}: a NUL in {words:?}"
    );
    assert!(
        validated.describe().ends_with(" (run without a shell)"),
        "{command:?}: {}",
        validated.describe()
    );
    match program.as_str() {
        "env" => assert!(args.is_empty(), "{command:?}: env runs {args:?}"),
        "find" => assert!(
            !args.iter().any(|arg| FIND_RUNS.contains(&arg.as_str())),
            "{command:?}: find runs a program: {args:?}"
        ),
        subcommanded if WITH_SUBCOMMANDS.contains(&subcommanded) => {
            let subcommand = args.first().map_or("", String::as_str);
            assert!(
                !subcommand.is_empty() && !subcommand.starts_with(['-', '+']),
                "{command:?}: {program} without a subcommand first: {args:?}"
            );
        }
        _ => {}
    }
}

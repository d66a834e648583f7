//! `bridge-exec`: validates one command an agent asks for and runs it safely
//! ("YOLO mode"). It knows nothing of the store or of MCP: `bridge-mcp`
//! checks the gates and the approval token, then calls [`validate`] and
//! [`run`].
//!
//! # Brief overview
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use bridge_exec::{Limits, Mode, run, validate};
//!
//! let validated = validate("grep -rn TODO src", Mode::Safe)?;
//! println!("would run: {}", validated.describe());
//! let outcome = run(&validated, &Limits::new("/srv/workspace")).await?;
//! println!("exit {:?}: {}", outcome.exit_code, outcome.stdout);
//! # Ok(()) }
//! ```
//!
//! * [`validate`] turns text and a [`Mode`] into a [`Validated`] program or a
//!   [`Refusal`]. The [`BLOCKED_PATTERNS`] are refused in every mode. `safe`
//!   and `restricted` split the text into words (POSIX quoting, no
//!   expansion) and start the program directly, never through a shell, so
//!   `;`, `&&`, `|`, backticks, `$(…)` and redirections are plain argument
//!   text and no second command can run. Only `yolo` uses `/bin/sh -c`.
//! * [`run`] runs a [`Validated`] program within [`Limits`]: in the
//!   workspace, with a scrubbed environment ([`scrubbed_environment`]), a
//!   timeout that kills the whole process group, capped output, a git
//!   snapshot branch first, optionally inside bubblewrap ([`Sandbox`]); it
//!   returns an [`Outcome`] or an [`ExecError`].
//!
//! # Layout
//!
//! Everything is re-exported at the root; the modules hold the details.
//!
//! * [`validation`]: modes, the program lists and their
//!   argument rules.
//! * [`environment`]: the environment scrub.
//! * [`execution`]: processes, the timeout, the process-group kill,
//!   output.
//! * [`snapshot`]: the git snapshot branch.
//! * [`sandbox`]: the bwrap command line and its availability.
//!
//! # The programs and their holes
//!
//! Programs are named bare: `ls`, never `/bin/ls` or `./ls` (a path could
//! name a script planted in the workspace). They are found through `PATH`,
//! from which [`run`] removes relative entries and entries inside the
//! workspace. Arguments are checked one by one, those after `--` too;
//! long options are also refused abbreviated where the program accepts
//! abbreviations (`date --se`), and short options inside clusters
//! (`date -us`).
//!
//! `safe`, the original's 21 programs:
//!
//! | program | decision |
//! | --- | --- |
//! | `ls`, `cat`, `grep`, `head`, `tail`, `wc`, `echo`, `pwd`, `whoami`, `which`, `ps`, `df`, `du`, `stat` | any arguments: none of their options writes a file or runs a program (`tail -f` stops at the timeout) |
//! | `diff` | any arguments: `--to-file`/`--from-file` only name files to compare, GNU diff has no option that writes or runs a program (`--diff-program` is sdiff's and diff3's) |
//! | `find` | refused: `-exec`, `-execdir`, `-ok`, `-okdir` (run commands), `-delete`, `-fprint`, `-fprint0`, `-fprintf`, `-fls` (write files) |
//! | `env` | no arguments at all: with any it can run another program (`env sh -c …`); alone it prints the (scrubbed) environment |
//! | `date` | refused: `-s`, `--set` (set the system clock) |
//! | `file` | refused: `-C`/`--compile` (writes `magic.mgc`), `-p`/`--preserve-date` (changes access times), `-S`/`--no-sandbox` (turns off file's own seccomp sandbox) |
//! | `tree` | refused: `-o` (writes its output to a file), `-R` (with `-H`, writes `00Tree.html` in each directory) |
//! | `type` | any arguments; it is a shell builtin, so without a shell it runs only where a `type` program exists, and fails to start elsewhere |
//!
//! `restricted` adds, with the subcommand the first word after the program
//! and any option before it refused (`git -c alias.x='!cmd'`, `git -C`,
//! `cargo +nightly`):
//!
//! | program | subcommands | also refused |
//! | --- | --- | --- |
//! | `git` | status log diff show branch add commit push pull checkout | `--upload-pack`, `--receive-pack`, `--exec` (run a program), `--ext-diff` (runs the diff driver), `--output` (writes a file) |
//! | `npm` | install run test build | `--script-shell`, `--node-options` (run a program), `-g`, `--global`, `--location`, `--prefix` (install outside the workspace), `--userconfig`, `--globalconfig` |
//! | `pip` | install list show | `-t`/`--target`, `--prefix`, `--root`, `--src` (install outside the workspace) |
//! | `cargo` | build test run | `--config` (runners, compiler wrappers), `-Z`, `--target-dir`, `--artifact-dir` |
//! | `pytest` | any arguments | |
//!
//! `restricted` limits which programs start, not what code they run: `cargo
//! build` runs build scripts, `cargo run` and `pytest` run the project's
//! code, `npm install` and `pip install` run package scripts, `git commit`
//! runs the repository's hooks. Only the sandbox confines that code.
//!
//! Reading is not confined in any mode: `cat` reads whatever the bridge's
//! user can read, in the sandbox too (it makes the file system read-only,
//! it does not hide it). Unsandboxed, that includes `/proc/<pid>/environ` of
//! the user's other processes; the sandbox's pid namespace hides those.
//!
//! # The environment
//!
//! See [`scrubbed_environment`]: every `BRIDGE_*` variable goes, and every
//! variable whose name contains one of [`SECRET_NAME_PARTS`] (TOKEN, SECRET,
//! PASSWORD, PASSWD, PASS, KEY, CREDENTIAL, AUTH, COOKIE, SESSION, PRIVATE,
//! JWT, SIGNATURE; any case), and every variable whose value is a URL with a
//! password; `PATH` stays.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod environment;
pub mod execution;
pub mod sandbox;
pub mod snapshot;
pub mod validation;

pub use environment::{SECRET_NAME_PARTS, is_secret_name, scrubbed_environment};
pub use execution::{
    DEFAULT_OUTPUT_CAP, DEFAULT_TIMEOUT, DRAIN_GRACE, ExecError, Limits, Outcome, run,
    run_with_environment,
};
pub use sandbox::{Sandbox, bwrap_argv, bwrap_available};
pub use snapshot::{SNAPSHOT_BRANCH_PREFIX, SNAPSHOT_TIMEOUT};
pub use validation::{
    BLOCKED_PATTERNS, MAX_COMMAND_CHARS, Mode, ParseModeError, Program, Refusal, Validated,
    allowed_programs, validate,
};

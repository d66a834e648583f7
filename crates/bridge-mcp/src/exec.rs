//! The command-execution tools ("YOLO mode"), listed only when `bridge-mcp`
//! runs with `YOLO_MODE=1`: `enable_yolo_mode` chooses a conversation's
//! mode, workspace and timeout (once the operator has enabled it), and
//! `execute_command` validates a command and, given an approval token, runs
//! it. Without a usable token it answers what would run and runs nothing.
//!
//! Validation and execution are `bridge-exec`'s; the gates and the record
//! are `bridge-core`'s. Output is capped by `bridge-exec`, then redacted here
//! before it is returned or stored. Nothing is ever written to stdout, which
//! is the protocol channel: the command's output comes through pipes.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use bridge_core::{Finished, Store, Token, YoloSettings, redact};
use bridge_exec::{Limits, Mode, Outcome, Sandbox};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::http_auth::Identity;
use crate::tools::caller_args;

/// The environment variable that lists the tools (gate 1).
pub const YOLO_ENV: &str = "YOLO_MODE";

/// The most characters of each output stream in the partner's message (the
/// caller gets up to `bridge-exec`'s cap).
const REPORTED_CHARS: usize = 4_000;

/// How the server runs commands: gate 1 and the sandbox.
#[derive(Clone, Copy, Debug)]
pub struct Execution {
    /// Whether the tools exist (`YOLO_MODE=1`).
    pub enabled: bool,
    /// Where commands run.
    pub sandbox: Sandbox,
}

impl Execution {
    /// Off: the tools are neither listed nor callable.
    pub const OFF: Execution = Execution {
        enabled: false,
        sandbox: Sandbox::None,
    };

    /// From the environment: enabled only by `YOLO_MODE=1` exactly.
    pub fn from_env(sandbox: Sandbox) -> Execution {
        Execution {
            enabled: std::env::var(YOLO_ENV).is_ok_and(|value| value == "1"),
            sandbox,
        }
    }
}

// A mode of execution.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModeArg {
    Safe,
    Restricted,
    Yolo,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Mode {
        match mode {
            ModeArg::Safe => Mode::Safe,
            ModeArg::Restricted => Mode::Restricted,
            ModeArg::Yolo => Mode::Yolo,
        }
    }
}

caller_args! {
    /// `enable_yolo_mode`'s arguments.
    pub struct EnableArgs {
    /// safe: read-only commands; restricted: plus git/npm/pip/cargo/pytest; yolo: anything not blocked
    pub mode: ModeArg,
    /// Absolute path of the directory commands run in
    pub workspace: String,
    /// Seconds per command (default 30)
    #[schemars(range(min = 1, max = 600))]
    pub timeout: Option<u64>,
    }
}

caller_args! {
    /// `execute_command`'s arguments.
    pub struct ExecuteArgs {
    #[allow(missing_docs)]
    #[schemars(length(min = 1, max = 10_000))]
    pub command: String,
    /// The operator's single-use approval; without it, a dry run
    pub approval_token: Option<String>,
    }
}

// A conversation's execution settings: the result of `enable_yolo_mode`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SettingsOut {
    pub mode: String,
    pub workspace: String,
    pub timeout_seconds: u64,
}

impl SettingsOut {
    /// From the store's settings (configured ones).
    pub fn new(settings: &YoloSettings) -> SettingsOut {
        SettingsOut {
            mode: settings.mode.clone().unwrap_or_default(),
            workspace: settings.workspace.clone().unwrap_or_default(),
            timeout_seconds: settings
                .timeout_ms
                .and_then(|ms| u64::try_from(ms / 1000).ok())
                .unwrap_or_default(),
        }
    }

    /// The text.
    pub fn text(&self) -> String {
        format!(
            "Command execution: mode {}, in {}, {} s per command. execute_command validates a \
             command; it runs only with an approval token from the operator.",
            self.mode, self.workspace, self.timeout_seconds
        )
    }
}

// The result of `execute_command`.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Executed {
    // Whether the command ran (false: a dry run, or it could not start).
    pub ran: bool,
    // What runs (or would): the words, or `/bin/sh -c …` in yolo mode.
    pub would_run: String,
    // The mode it was validated in.
    pub mode: String,
    // Why it did not run, on a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_run_because: Option<String>,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    // Output, capped and redacted.
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    // The git branch made before it ran.
    pub snapshot: Option<String>,
    // Why it could not start (its workspace gone, the sandbox missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    // The partner's message with the result.
    pub message_id: Option<i64>,
}

impl Executed {
    /// The text.
    pub fn text(&self) -> String {
        if let Some(error) = &self.error {
            return format!("Not run (the approval token is spent): {error}");
        }
        if !self.ran {
            return format!(
                "Dry run, nothing ran: {}. In mode {} this would run: {}",
                self.not_run_because
                    .as_deref()
                    .unwrap_or("no approval token"),
                self.mode,
                self.would_run
            );
        }
        report_text(self, usize::MAX)
    }
}

/// The result as text, each stream cut at `chars`.
fn report_text(executed: &Executed, chars: usize) -> String {
    let mut text = format!("$ {}\n", executed.would_run);
    match (executed.timed_out, executed.exit_code) {
        _ if executed.error.is_some() => {
            let error = executed.error.as_deref().unwrap_or_default();
            let _ = write!(text, "could not run: {error}");
        }
        (true, _) => {
            let _ = write!(text, "timed out after {} ms; killed", executed.duration_ms);
        }
        (false, Some(code)) => {
            let _ = write!(text, "exit code {code} after {} ms", executed.duration_ms);
        }
        (false, None) => {
            let _ = write!(text, "killed by a signal after {} ms", executed.duration_ms);
        }
    }
    if let Some(snapshot) = &executed.snapshot {
        let _ = write!(text, "; snapshot branch {snapshot}");
    }
    for (name, output) in [("stdout", &executed.stdout), ("stderr", &executed.stderr)] {
        if output.is_empty() {
            continue;
        }
        let cut = match output.char_indices().nth(chars) {
            Some((at, _)) => format!("{}\n[… cut]", &output[..at]),
            None => output.clone(),
        };
        let _ = write!(text, "\n--- {name} ---\n{cut}");
    }
    if executed.truncated {
        text.push_str("\n[output capped]");
    }
    text
}

/// Why `execute_command` answered with an error: its one sentence.
pub enum NotRun {
    /// The command failed validation (recorded as blocked).
    Blocked(String),
    /// The store refused (authentication, gates, bounds).
    Failed(String),
}

/// `enable_yolo_mode`.
pub async fn enable(
    store: &Store,
    identity: &Identity,
    args: EnableArgs,
) -> bridge_core::Result<SettingsOut> {
    let credentials = args.credentials(identity)?;
    let timeout = args.timeout.map(Duration::from_secs);
    let workspace = PathBuf::from(&args.workspace);
    let mode = Mode::from(args.mode).to_string();
    let settings = store
        .configure_yolo(&credentials, &mode, &workspace, timeout)
        .await?;
    Ok(SettingsOut::new(&settings))
}

/// `execute_command`: validate; without a usable approval, a dry run;
/// with one, run, record, tell the partner.
pub async fn execute(
    store: &Store,
    execution: Execution,
    identity: &Identity,
    args: ExecuteArgs,
) -> Result<Executed, NotRun> {
    let failed = |error: bridge_core::Error| NotRun::Failed(error.to_string());
    let credentials = args.credentials(identity).map_err(failed)?;
    let settings = store.yolo_settings(&credentials).await.map_err(failed)?;
    let (Some(mode), Some(workspace), Some(timeout_ms)) = (
        settings.mode.as_deref(),
        settings.workspace.clone(),
        settings.timeout_ms,
    ) else {
        return Err(failed(bridge_core::Error::NotAllowed {
            reason: "command execution is not configured: call enable_yolo_mode first".into(),
        }));
    };
    let mode: Mode = mode.parse().map_err(|_| {
        failed(bridge_core::Error::NotAllowed {
            reason: format!("the stored mode {mode:?} is not known to this bridge-mcp"),
        })
    })?;
    let validated = match bridge_exec::validate(&args.command, mode) {
        Ok(validated) => validated,
        Err(refusal) => {
            let reason = refusal.to_string();
            store
                .record_blocked(&credentials, &args.command, &reason)
                .await
                .map_err(failed)?;
            return Err(NotRun::Blocked(reason));
        }
    };
    let mut executed = Executed {
        would_run: redact::redact(&validated.describe()).text.into_owned(),
        mode: mode.to_string(),
        ..Executed::default()
    };
    let approval = match args.approval_token.as_deref().map(str::parse::<Token>) {
        None => {
            executed.not_run_because = Some("no approval token".into());
            return Ok(executed);
        }
        Some(Err(_)) => {
            executed.not_run_because = Some("the approval token is malformed".into());
            return Ok(executed);
        }
        Some(Ok(token)) => token,
    };
    let started = match store
        .begin_command(&credentials, &settings, &approval, &args.command)
        .await
    {
        Ok(started) => started,
        Err(bridge_core::Error::NotAllowed { reason }) => {
            executed.not_run_because = Some(reason);
            return Ok(executed);
        }
        Err(error) => return Err(failed(error)),
    };
    let limits = Limits {
        workspace: PathBuf::from(workspace),
        timeout: Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(30_000)),
        output_cap: bridge_exec::DEFAULT_OUTPUT_CAP,
        sandbox: execution.sandbox,
        snapshot: true,
    };
    match bridge_exec::run(&validated, &limits).await {
        Ok(outcome) => {
            executed.ran = true;
            fill(&mut executed, outcome);
        }
        Err(error) => executed.error = Some(redact::redact(&error.to_string()).text.into_owned()),
    }
    let finished = Finished {
        exit_code: executed.exit_code,
        timed_out: executed.timed_out,
        duration_ms: executed.duration_ms,
        stdout_bytes: executed.stdout.len(),
        stderr_bytes: executed.stderr.len(),
        snapshot: executed.snapshot.clone(),
    };
    let report = format!(
        "Command run by session {} (mode {}):\n{}",
        credentials.session,
        executed.mode,
        report_text(&executed, REPORTED_CHARS)
    );
    let message_id = store
        .finish_command(&credentials, &started, &finished, &report)
        .await
        .map_err(failed)?;
    executed.message_id = Some(message_id);
    Ok(executed)
}

/// The outcome into the result, its output redacted.
fn fill(executed: &mut Executed, outcome: Outcome) {
    executed.exit_code = outcome.exit_code;
    executed.timed_out = outcome.timed_out;
    executed.duration_ms = u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX);
    executed.stdout = redact::redact(&outcome.stdout).text.into_owned();
    executed.stderr = redact::redact(&outcome.stderr).text.into_owned();
    executed.truncated = outcome.stdout_truncated || outcome.stderr_truncated;
    executed.snapshot = outcome.snapshot;
}

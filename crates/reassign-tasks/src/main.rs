//! `reassign-tasks`: moves the open and in-progress tasks of silent workers
//! to the healthy workers of their teams.
//!
//! Whose tasks: `--from <conversation_id>…` (the operator's word, whatever
//! the worker's state), `--silent` (the workers not heard from for
//! `--threshold`, found here), or `--silent-workers` with the original
//! watchdog's lines `<conversation_id>|<session>|<last_heartbeat>|<seconds>`
//! (`-` reads them from stdin). A silent worker heard from within
//! `--threshold` by the time its task would move keeps it. Each task goes to the healthy
//! worker of its team with the fewest open tasks; `--dry-run` prints the plan
//! and changes nothing.
//!
//! The moving is `bridge-core`'s (the same the watchdog uses): each task in
//! one change that re-checks it is still where it was, so running this
//! twice, or twice at once, never moves a task twice. Replaces the original
//! `reassign-tasks.py`, which only printed "In production: …".

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bridge_cli::{LogArgs, StoreArgs, exit, parse_duration};
use bridge_core::{ConversationId, Reassignment, SessionId, Store, Timestamp};
use clap::{ArgGroup, CommandFactory, Parser};

/// Moves the open and in-progress tasks of silent workers to the healthy
/// workers (alive, not silent) of the same team, each task to the one with
/// the fewest open tasks.
#[derive(Parser, Debug)]
#[command(name = "reassign-tasks", version)]
#[command(group(
    ArgGroup::new("whose")
        .required(true)
        .multiple(true)
        .args(["from", "silent", "silent_workers"])
))]
struct Args {
    /// Move the tasks of these conversations' workers
    #[arg(long, value_name = "CONVERSATION_ID", num_args = 1.., value_parser = parse_conversation_id)]
    from: Vec<ConversationId>,

    /// Move the tasks of every worker not heard from for --threshold
    #[arg(long)]
    silent: bool,

    /// The original watchdog's list: lines
    /// "<conversation_id>|<session>|<last_heartbeat>|<seconds>", or - to
    /// read them from stdin
    #[arg(long, value_name = "LINES")]
    silent_workers: Option<String>,

    /// Not heard from for this long: silent. Workers heard from within it
    /// (and alive) can take tasks
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    threshold: Duration,

    /// With --silent: only this team's workers
    #[arg(long, value_name = "TEAM", requires = "silent")]
    team: Option<String>,

    /// Print the plan; change nothing
    #[arg(long)]
    dry_run: bool,

    /// Print JSON instead of text
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten)]
    log: LogArgs,
}

fn parse_conversation_id(text: &str) -> Result<ConversationId, String> {
    text.parse()
        .map_err(|error: bridge_core::Error| error.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    if args.threshold.is_zero() {
        Args::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                "--threshold must be longer than zero",
            )
            .exit();
    }
    let listed = match args.silent_workers.as_deref().map(silent_workers) {
        None => Vec::new(),
        Some(Ok(listed)) => listed,
        Some(Err(problem)) => Args::command()
            .error(clap::error::ErrorKind::ValueValidation, problem)
            .exit(),
    };
    exit::block_on("reassign-tasks", run(args, listed))
}

/// The workers named by `--silent-workers` (its text, or stdin for `-`):
/// their conversations, for the lines of session `b`. A line of session `a`
/// (an orchestrator holds no tasks) is skipped with a warning.
fn silent_workers(value: &str) -> Result<Vec<ConversationId>, String> {
    let text = if value == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| format!("cannot read --silent-workers from stdin: {error}"))?;
        text
    } else {
        value.to_owned()
    };
    let mut workers = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let problem = |what: String| {
            format!(
                "--silent-workers line {}: {what} (expected <conversation_id>|<session>|<last_heartbeat>|<seconds>)",
                index + 1
            )
        };
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [conversation_id, session, _last_heartbeat, _seconds] = fields[..] else {
            return Err(problem(format!("{} fields, not 4", fields.len())));
        };
        let conversation_id: ConversationId = conversation_id
            .parse()
            .map_err(|error: bridge_core::Error| problem(error.to_string()))?;
        match session
            .parse::<SessionId>()
            .map_err(|error| problem(error.to_string()))?
        {
            SessionId::B => workers.push(conversation_id),
            SessionId::A => tracing::warn!(
                %conversation_id,
                "--silent-workers names session a, an orchestrator, which holds no tasks; skipped"
            ),
        }
    }
    Ok(workers)
}

async fn run(args: Args, listed: Vec<ConversationId>) -> anyhow::Result<()> {
    let mut options = args.store.options()?;
    options.create = false;
    options.readers = 2;
    let store = Store::open(options).await?;
    let outcome = reassign(&store, &args, listed).await;
    store.close().await;
    let reassignments = outcome?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = serde_json::json!({
            "dry_run": args.dry_run,
            "reassignments": reassignments,
        });
        writeln!(out, "{report}")?;
    } else {
        write_text(&mut out, &reassignments, args.dry_run)?;
    }
    Ok(())
}

/// Whose tasks to move, then the moving (or the plan).
async fn reassign(
    store: &Store,
    args: &Args,
    listed: Vec<ConversationId>,
) -> anyhow::Result<Vec<Reassignment>> {
    let drained: BTreeSet<ConversationId> = args.from.iter().cloned().collect();
    let mut from: BTreeSet<ConversationId> = BTreeSet::new();
    if args.silent {
        let scan = store
            .scan_workers(args.threshold, args.team.as_deref())
            .await
            .context("looking for silent workers")?;
        from.extend(scan.silent.into_iter().map(|worker| worker.conversation_id));
    }
    if !listed.is_empty() {
        let now = Timestamp::now();
        let workers = store.workers(None).await?;
        for conversation_id in listed {
            match workers
                .iter()
                .find(|w| w.conversation_id == conversation_id)
            {
                None => tracing::warn!(
                    %conversation_id,
                    "--silent-workers names a conversation that does not exist or has expired; skipped"
                ),
                Some(worker) if worker.last_heard.age_at(now) < args.threshold => {
                    tracing::warn!(
                        %conversation_id,
                        last_heard = %worker.last_heard,
                        "--silent-workers names a worker heard from within --threshold; not silent, skipped"
                    );
                }
                Some(_) => {
                    from.insert(conversation_id);
                }
            }
        }
    }
    // --from moves a worker's tasks whatever its state; the silent ones'
    // move only while they stay silent.
    let mut moved = Vec::new();
    if !drained.is_empty() {
        let drained: Vec<ConversationId> = drained.into_iter().collect();
        moved = store
            .drain_tasks(&drained, args.threshold, args.dry_run)
            .await
            .context("reassigning tasks")?;
    }
    let silent: Vec<ConversationId> = from
        .into_iter()
        .filter(|id| !args.from.contains(id))
        .collect();
    if !silent.is_empty() {
        let reassigned = store
            .reassign_tasks(&silent, args.threshold, args.dry_run)
            .await
            .context("reassigning tasks")?;
        moved.extend(reassigned);
    }
    Ok(moved)
}

/// The plan or the outcome, a line per task.
fn write_text(
    out: &mut impl Write,
    reassignments: &[Reassignment],
    dry_run: bool,
) -> std::io::Result<()> {
    if reassignments.is_empty() {
        return writeln!(out, "No open or in-progress tasks to reassign.");
    }
    let count = reassignments.len();
    let plural = if count == 1 { "" } else { "s" };
    if dry_run {
        writeln!(out, "Plan (dry run, nothing changed): {count} task{plural}")?;
    } else {
        let moved = reassignments
            .iter()
            .filter(|r| r.outcome == "moved")
            .count();
        writeln!(out, "{moved} of {count} task{plural} moved")?;
    }
    for Reassignment {
        task_id,
        title,
        from,
        to,
        outcome,
    } in reassignments
    {
        let to = to.as_ref().map_or_else(
            || "nobody (no healthy worker in the team)".to_owned(),
            ToString::to_string,
        );
        writeln!(
            out,
            "  task #{task_id} {title:?}: {from} -> {to}: {outcome}"
        )?;
    }
    Ok(())
}

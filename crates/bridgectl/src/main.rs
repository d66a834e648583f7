//! `bridgectl`: the operator's command line.
//!
//! Creates conversations (tokens shown once, or written to files of mode
//! 0600), lists them with their liveness, shows one in detail, rotates
//! tokens (they are stored hashed, so a lost token is replaced, never shown
//! again), shows the workers' health and the tasks, lists and verifies the
//! audit trail, removes expired conversations, and makes and revokes the
//! access keys of the HTTP server. Text for people, `--json`
//! for scripts. Replaces the original `bridge_cli.py`.
//!
//! `main.rs` holds the command line and runs the commands; `show.rs` turns
//! their results into text.

mod access;
mod demo;
mod show;
mod yolo;

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bridge_cli::agent::SessionArg;
use bridge_cli::{LogArgs, StoreArgs, exit, parse_duration};
use bridge_core::{
    ConversationId, Location, NewConversation, SessionId, Store, StoreOptions, TTL_RANGE, Token,
};
use clap::{Parser, Subcommand};
use serde::Serialize;

/// Manage an mcp-bridge database: conversations, tokens, workers, tasks,
/// the audit trail.
#[derive(Parser, Debug)]
#[command(name = "bridgectl", version)]
struct Args {
    #[command(subcommand)]
    command: Command,

    /// Print JSON instead of text
    #[arg(long, global = true)]
    json: bool,

    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a conversation; print its id and both tokens, once
    Create {
        /// The creator's role (session a), e.g. orchestrator
        #[arg(long)]
        my_role: String,
        /// The partner's role (session b), e.g. "backend worker"
        #[arg(long)]
        partner_role: String,
        /// The team whose workers may take over each other's tasks
        #[arg(long)]
        team: Option<String>,
        /// Time to live
        #[arg(long, default_value = "3h", value_parser = ttl)]
        ttl: Duration,
        /// Write the tokens to <DIR>/<id>.a.token and <id>.b.token (mode
        /// 0600) instead of printing them
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// List the conversations with their expiry and liveness
    List,
    /// Show a conversation: sessions, recent messages (read or not), tasks
    Show {
        /// The conversation
        #[arg(value_parser = conversation_id)]
        id: ConversationId,
        /// How many of the latest messages
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        messages: u32,
    },
    /// Replace a conversation's tokens (both, or one session's); print the
    /// new ones once
    RotateTokens {
        /// The conversation
        #[arg(value_parser = conversation_id)]
        id: ConversationId,
        /// Only this session's token
        #[arg(long, value_enum)]
        session: Option<SessionArg>,
        /// Write the tokens to <DIR>/<id>.<session>.token (mode 0600)
        /// instead of printing them
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// The health of every worker of a live conversation
    Status {
        /// Only this team's
        #[arg(long)]
        team: Option<String>,
    },
    /// Every task, where it is and how it stands
    Tasks {
        /// Only this team's
        #[arg(long)]
        team: Option<String>,
    },
    /// The audit trail (`audit verify` checks its hash chain)
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCommand>,
        /// Only this conversation's rows
        #[arg(value_parser = conversation_id)]
        id: Option<ConversationId>,
        /// How many of the latest rows
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
    },
    /// Remove expired conversations with their messages, statuses and tasks
    Cleanup {
        /// Only list what would be removed
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the system at work: an orchestrator and three workers on a
    /// temporary database, one of them going silent and its tasks moving
    Demo {
        /// Also serve the dashboard on a free loopback port, print its URL,
        /// and keep it up after the scenario until Ctrl-C
        #[arg(long)]
        dashboard: bool,
    },
    /// Command execution by agents ("YOLO mode"): enable it, issue approval
    /// tokens
    Yolo {
        #[command(subcommand)]
        command: yolo::YoloCommand,
    },
    /// Access keys for the HTTP server: create (shown once), list, revoke
    Access {
        #[command(subcommand)]
        command: access::AccessCommand,
    },
    /// Copy this store (SQLite) into an empty PostgreSQL database, with the
    /// same server key: tokens keep working, the audit chain verifies
    Copy {
        /// The PostgreSQL database, postgres://USER@HOST/DATABASE (the
        /// password from PGPASSWORD or the URL)
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Recompute the hash chain; exit 1 and name the first bad row if it
    /// is broken
    Verify,
}

fn conversation_id(text: &str) -> Result<ConversationId, String> {
    text.parse()
        .map_err(|error: bridge_core::Error| error.to_string())
}

/// A time to live the store accepts: one out of range is a usage error
/// (exit 2) found before the database is opened, or created.
fn ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text)?;
    if TTL_RANGE.contains(&ttl) {
        Ok(ttl)
    } else {
        Err("must be between 1 second and 365 days".to_owned())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init_quiet();
    exit::block_on("bridgectl", run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Command::Demo { dashboard } = args.command {
        return demo::run(args.json, dashboard).await;
    }
    let mut options = args.store.options()?;
    // Only `create` and `access create` make a database (setting up); the
    // others look at one that exists.
    options.create = matches!(
        args.command,
        Command::Create { .. }
            | Command::Access {
                command: access::AccessCommand::Create { .. }
            }
    );
    // Only a listing may end quietly when its reader goes away (`| head`);
    // new tokens that could not be printed are an error.
    let listing = !matches!(
        args.command,
        Command::Create { .. }
            | Command::RotateTokens { .. }
            | Command::Yolo { .. }
            | Command::Access { .. }
    );
    // The copy is made with this store's key, wherever it is.
    let key_file = options.key_path()?;
    let store = Store::open(options).await?;
    let outcome = command(&store, args.command, args.json, key_file).await;
    store.close().await;
    match outcome {
        Err(error) if listing && stdout_closed(&error) => Ok(()),
        outcome => outcome,
    }
}

/// `bridgectl copy --to URL`: the store into an empty PostgreSQL database.
async fn copy(store: &Store, to: &str, key_file: PathBuf, json: bool) -> anyhow::Result<()> {
    let mut target = StoreOptions::at(Location::parse(to)?);
    target.key_file = Some(key_file);
    let report = store.copy_into(target).await?;
    print(json, &report, || {
        format!(
            "Copied {} into {}:\n{report}",
            store.path().display(),
            Location::parse(to).map_or_else(|_| String::new(), |location| location.to_string())
        )
    })
}

/// Whether `error` is a write to a stdout whose reader has gone.
fn stdout_closed(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Prints `value` as JSON, or `text` for people.
fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(value)?)?;
    } else {
        write!(out, "{}", text())?;
    }
    Ok(())
}

async fn command(
    store: &Store,
    command: Command,
    json: bool,
    key_file: PathBuf,
) -> anyhow::Result<()> {
    match command {
        Command::Create {
            my_role,
            partner_role,
            team,
            ttl,
            out_dir,
        } => {
            prepare_out_dir(out_dir.as_deref())?;
            let mut new = NewConversation::new(my_role, partner_role);
            new.team = team;
            new.ttl = Some(ttl);
            let created = store.create_conversation(new).await?;
            let tokens = [
                (SessionId::A, created.token_a.clone()),
                (SessionId::B, created.token_b.clone()),
            ];
            let handed = hand_out(&created.id, &tokens, out_dir.as_deref())?;
            let report = show::Created::new(&created, handed);
            print(json, &report, || report.text()).with_context(|| {
                format!(
                    "conversation {} was created, but its tokens could not be printed; \
                     replace them with `bridgectl rotate-tokens {}`",
                    created.id, created.id
                )
            })
        }
        Command::List => {
            let conversations = store.conversations().await?;
            print(json, &conversations, || show::conversations(&conversations))
        }
        Command::Show { id, messages } => {
            let detail = store.conversation_detail(&id, messages).await?;
            print(json, &detail, || show::detail(&detail))
        }
        Command::RotateTokens {
            id,
            session,
            out_dir,
        } => {
            let sessions = match session {
                Some(session) => vec![session.into()],
                None => vec![SessionId::A, SessionId::B],
            };
            prepare_out_dir(out_dir.as_deref())?;
            let tokens = store.rotate_tokens(&id, &sessions).await?;
            let handed = hand_out(&id, &tokens, out_dir.as_deref())?;
            let report = show::Rotated { id, tokens: handed };
            print(json, &report, || report.text()).with_context(|| {
                format!(
                    "the new tokens of {} could not be printed; rotate them again",
                    report.id
                )
            })
        }
        Command::Status { team } => {
            let workers = show::workers(store.conversations().await?, team.as_deref());
            print(json, &workers, || show::status(&workers))
        }
        Command::Tasks { team } => {
            let tasks = store.all_tasks(team.as_deref()).await?;
            print(json, &tasks, || show::tasks(&tasks))
        }
        Command::Audit {
            verify: Some(AuditCommand::Verify),
            ..
        } => {
            let report = store.verify_audit().await?;
            print(json, &report, || show::verified(&report))?;
            match &report.first_bad {
                None => Ok(()),
                Some(bad) => Err(anyhow::anyhow!(
                    "the audit trail is broken at row {}: {}",
                    bad.id,
                    bad.problem
                )),
            }
        }
        Command::Audit {
            verify: None,
            id,
            limit,
        } => {
            let entries = store.audit_entries(id.as_ref(), limit).await?;
            print(json, &entries, || show::audit(&entries))
        }
        Command::Cleanup { dry_run } => {
            let removed = store.cleanup_expired(dry_run).await?;
            let report = show::Cleaned { dry_run, removed };
            print(json, &report, || report.text())
        }
        Command::Demo { dashboard } => demo::run(json, dashboard).await,
        Command::Yolo { command } => yolo::run(store, command, json).await,
        Command::Access { command } => access::run(store, command, json).await,
        Command::Copy { to } => copy(store, &to, key_file, json).await,
    }
}

/// Where a new token went: shown (printed once) or written to a file.
#[derive(Debug, Serialize)]
pub struct Handed {
    session: SessionId,
    /// The token, when it is printed rather than written.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// The file it was written to.
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
}

/// Creates the directory for token files (mode 0700) if need be, and checks
/// that files can be created in it. Called before the tokens are made:
/// after, a rotation's old tokens would be gone and the new ones lost, and a
/// new conversation would have tokens nobody has.
fn prepare_out_dir(dir: Option<&Path>) -> anyhow::Result<()> {
    let Some(dir) = dir else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let probe = dir.join(format!(".bridgectl.{}.probe", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .with_context(|| format!("cannot write token files in {}", dir.display()))
}

/// Hands out new tokens: into `<dir>/<id>.<session>.token` files of mode
/// 0600 (in a directory [`prepare_out_dir`] made), or back for printing.
fn hand_out(
    id: &ConversationId,
    tokens: &[(SessionId, Token)],
    dir: Option<&Path>,
) -> anyhow::Result<Vec<Handed>> {
    let Some(dir) = dir else {
        return Ok(tokens
            .iter()
            .map(|(session, token)| Handed {
                session: *session,
                token: Some(token.reveal()),
                file: None,
            })
            .collect());
    };
    tokens
        .iter()
        .map(|(session, token)| {
            let path = dir.join(format!("{id}.{session}.token"));
            write_secret(&path, &format!("{}\n", token.reveal()))?;
            Ok(Handed {
                session: *session,
                token: None,
                file: Some(path),
            })
        })
        .collect()
}

/// Writes `contents` to `path` with mode 0600 from the start: a temporary
/// file beside it, then a rename (replacing an older token file whole).
pub(crate) fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .context("a token file needs a name")?;
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

//! `check-messages`: prints a session's unread messages once.
//!
//! Replaces the original `check-messages.py`, which marked every message
//! read, so the agent never received them. This one peeks: the agent still
//! gets every message from `check_messages`, unless `--mark-read` asks to
//! consume them here instead. Then they are confirmed only once printed: if
//! printing fails (or the process dies first), they stay pending and come
//! again, marked as redelivered, to the next consumer.
//!
//! The hub is the database on this machine (`--db`) or a `bridge-mcp
//! --http` on another one (`--url`, the token as its key; see `bridge-hub`).
//! It never waits: a hub out of reach is an error (exit 1), a refused token
//! exit 77, a certificate that does not verify exit 78.

use std::io::Write;
use std::process::ExitCode;

use bridge_cli::agent::AgentArgs;
use bridge_cli::{LogArgs, exit};
use bridge_hub::{Hub, HubArgs, HubError, Incoming};
use clap::Parser;

/// Prints the unread messages of a session once: "No new messages" if there
/// are none. Peeks (leaves them unread) unless --mark-read.
#[derive(Parser, Debug)]
#[command(name = "check-messages", version)]
struct Args {
    #[command(flatten)]
    agent: AgentArgs,

    /// Mark them read, as the agent's check_messages does
    #[arg(long)]
    mark_read: bool,

    /// Print JSON ({"messages": [...]}) instead of text
    #[arg(long)]
    json: bool,

    /// At most this many
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,

    #[command(flatten)]
    hub: HubArgs,

    #[command(flatten)]
    log: LogArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.log.init();
    exit::block_on("check-messages", run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let credentials = args.agent.credentials()?;
    let mut hub = Hub::connect_once(&args.hub, credentials)
        .await
        .map_err(report)?;
    let outcome = show(&mut hub, &args).await;
    hub.close().await;
    outcome.map_err(report)
}

/// A hub's error as this program reports it (and exits with its code).
fn report(error: HubError) -> anyhow::Error {
    error.report()
}

/// Reads, prints, and with `--mark-read` confirms what was printed.
async fn show(hub: &mut Hub, args: &Args) -> Result<(), HubError> {
    let messages = if args.mark_read {
        hub.deliver(args.limit).await?
    } else {
        hub.peek(args.limit).await?
    };
    let printed = print(&messages, args.json.then_some(&args.agent.conversation_id));
    if let Err(error) = printed {
        // Not confirmed: they come again, marked, to the next reader.
        return Err(HubError::Store(bridge_core::Error::Io {
            action: "write messages to",
            path: "stdout".into(),
            error,
        }));
    }
    if args.mark_read
        && let Some(last) = messages.last()
    {
        hub.ack(last.id).await?;
    }
    Ok(())
}

/// Prints the messages: JSON (with the conversation's id), text, or "No
/// new messages".
fn print(messages: &[Incoming], json: Option<&String>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if let Some(conversation_id) = json {
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|message| as_json(message, conversation_id))
            .collect();
        writeln!(out, "{}", serde_json::json!({ "messages": messages }))?;
    } else if messages.is_empty() {
        writeln!(out, "No new messages")?;
    } else {
        for message in messages {
            write_text(&mut out, message)?;
        }
    }
    out.flush()
}

/// One message as JSON: the fields of the store's messages.
fn as_json(message: &Incoming, conversation_id: &str) -> serde_json::Value {
    let mut json = serde_json::json!({
        "id": message.id,
        "conversation_id": conversation_id,
        "from": message.from,
        "to": message.to,
        "body": message.body,
        "action_type": message.action_type,
        "files_involved": message.files_involved,
        "metadata": message.metadata,
        "created_at": message.timestamp,
    });
    if message.redelivered {
        json["redelivered"] = true.into();
    }
    json
}

/// One message as text: a header line, the body, the files if any.
fn write_text(out: &mut impl Write, message: &Incoming) -> std::io::Result<()> {
    writeln!(
        out,
        "#{} from {} ({}) at {}{}:",
        message.id,
        message.from,
        message.action_type,
        message.timestamp,
        if message.redelivered {
            " (redelivered: it may have been seen before)"
        } else {
            ""
        }
    )?;
    writeln!(out, "{}", message.body)?;
    if !message.files_involved.is_empty() {
        writeln!(out, "Files: {}", message.files_involved.join(", "))?;
    }
    writeln!(out)
}

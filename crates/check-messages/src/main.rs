//! `check-messages`: prints a session's unread messages once.
//!
//! Replaces the original `check-messages.py`, which marked every message
//! read, so the agent never received them. This one peeks: the agent still
//! gets every message from `check_messages`, unless `--mark-read` asks to
//! consume them here instead. Then they are confirmed only once printed: if
//! printing fails (or the process dies first), they stay pending and come
//! again, marked as redelivered, to the next consumer.

use std::io::Write;
use std::process::ExitCode;

use bridge_cli::agent::AgentArgs;
use bridge_cli::{LogArgs, StoreArgs, exit};
use bridge_core::{Message, Store};
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
    store: StoreArgs,

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
    let mut options = args.store.options()?;
    options.create = false;
    options.readers = 1;
    let store = Store::open(options).await?;
    let outcome = show(&store, &args, &credentials).await;
    store.close().await;
    outcome
}

/// Reads, prints, and with `--mark-read` confirms what was printed.
async fn show(
    store: &Store,
    args: &Args,
    credentials: &bridge_core::Credentials,
) -> anyhow::Result<()> {
    let messages = if args.mark_read {
        store.deliver(credentials, None, args.limit).await?
    } else {
        store.peek(credentials, args.limit).await?
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::json!({ "messages": messages }))?;
    } else if messages.is_empty() {
        writeln!(out, "No new messages")?;
    } else {
        for message in &messages {
            write_text(&mut out, message)?;
        }
    }
    out.flush()?;
    drop(out);
    if args.mark_read
        && let Some(last) = messages.last()
    {
        store.ack(credentials, last.id).await?;
    }
    Ok(())
}

/// One message as text: a header line, the body, the files if any.
fn write_text(out: &mut impl Write, message: &Message) -> std::io::Result<()> {
    writeln!(
        out,
        "#{} from {} ({}) at {}{}:",
        message.id,
        message.from,
        message.action_type,
        message.created_at,
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

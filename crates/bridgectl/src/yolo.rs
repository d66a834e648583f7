//! `bridgectl yolo`: the operator's side of command execution.
//!
//! `enable` is gates 2 and 3: it runs only at a terminal, asks for the exact
//! phrase `I UNDERSTAND THE RISKS`, then shows a one-time code that must be
//! typed back; only then is execution enabled for the conversation. `token`
//! issues gate 4's single-use approval tokens (shown once), `tokens` lists
//! the usable ones by preview; both first remove the ones that can no longer
//! be used. Prompts go to stderr, so that stdout stays the answer.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use bridge_cli::parse_duration;
use bridge_core::{ConversationId, Store};
use clap::Subcommand;
use serde::Serialize;

use crate::{conversation_id, print, show};

/// The phrase the operator types to enable execution.
pub const PHRASE: &str = "I UNDERSTAND THE RISKS";

#[derive(Subcommand, Debug)]
pub enum YoloCommand {
    /// Enable command execution for a conversation (at a terminal: a phrase
    /// and a one-time code are typed)
    Enable {
        /// The conversation
        #[arg(value_parser = conversation_id)]
        id: ConversationId,
    },
    /// Disable command execution for a conversation
    Disable {
        /// The conversation
        #[arg(value_parser = conversation_id)]
        id: ConversationId,
    },
    /// Issue a single-use approval token for one command (shown once)
    Token {
        /// How long it stays usable
        #[arg(long, value_parser = parse_duration, default_value = "5m")]
        ttl: Duration,
        /// Only for this conversation (else: any)
        #[arg(long, value_parser = conversation_id)]
        conversation: Option<ConversationId>,
    },
    /// The usable approval tokens, by preview
    Tokens,
}

/// What `yolo token` prints.
#[derive(Debug, Serialize)]
struct Issued {
    token: String,
    #[serde(flatten)]
    approval: bridge_core::Approval,
}

/// Runs a `yolo` subcommand.
pub async fn run(store: &Store, command: YoloCommand, json: bool) -> anyhow::Result<()> {
    match command {
        YoloCommand::Enable { id } => {
            confirm(&id)?;
            let settings = store.enable_yolo(&id).await?;
            print(json, &settings, || {
                format!(
                    "Command execution is enabled for {id}. An agent of it now chooses a mode and a \
                     workspace (enable_yolo_mode); each command runs only with an approval token \
                     from `bridgectl yolo token`.\n"
                )
            })
        }
        YoloCommand::Disable { id } => {
            let disabled = store.disable_yolo(&id).await?;
            print(json, &serde_json::json!({ "disabled": disabled }), || {
                if disabled {
                    format!("Command execution is disabled for {id}.\n")
                } else {
                    format!("Command execution was not enabled for {id}.\n")
                }
            })
        }
        YoloCommand::Token { ttl, conversation } => {
            store.cleanup_approvals().await?;
            let (token, approval) = store.issue_approval(ttl, conversation.as_ref()).await?;
            let issued = Issued {
                token: token.reveal(),
                approval,
            };
            print(json, &issued, || {
                show::issued(&issued.token, &issued.approval)
            })
            .context("the approval token could not be printed; issue another")
        }
        YoloCommand::Tokens => {
            store.cleanup_approvals().await?;
            let approvals = store.approvals().await?;
            print(json, &approvals, || show::approvals(&approvals))
        }
    }
}

/// Gates 2 and 3: a person at a terminal types the phrase, then the code.
fn confirm(id: &ConversationId) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("`bridgectl yolo enable` must be run at a terminal: a person types its confirmation");
    }
    let mut err = std::io::stderr().lock();
    let mut lines = stdin.lock().lines();
    let mut ask = |prompt: &str| -> anyhow::Result<String> {
        write!(err, "{prompt}")?;
        err.flush()?;
        let line = lines.next().transpose()?.unwrap_or_default();
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    };
    let warning = format!(
        "WARNING: this lets the agents of {id} run commands on this machine, with the \
         permissions of the user running bridge-mcp.\n\
         Type {PHRASE} to continue: "
    );
    if ask(&warning)? != PHRASE {
        tracing::warn!(%id, "yolo enable: the phrase was not typed; nothing enabled");
        bail!("the phrase was not typed exactly; nothing was enabled");
    }
    let code = one_time_code()?;
    if ask(&format!("One-time code: {code}\nType it back: "))? != code {
        tracing::warn!(%id, "yolo enable: the code did not match; nothing enabled");
        bail!("the code did not match; nothing was enabled");
    }
    Ok(())
}

/// Six random hexadecimal digits.
fn one_time_code() -> anyhow::Result<String> {
    let mut bytes = [0u8; 3];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

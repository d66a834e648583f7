//! Who a daemon acts as: a conversation, a session, and the session's token.
//!
//! The original scripts took `<conversation_id> <token>` as arguments; that
//! form still works, but a token on the command line is visible to every
//! user in `ps`, so it draws a warning. The token is better given as
//! `--token-file` (`BRIDGE_TOKEN_FILE`), `BRIDGE_TOKEN`, or as a systemd
//! credential named `token` (`LoadCredential=token:PATH`, read from
//! `$CREDENTIALS_DIRECTORY/token`); the first of argument, file,
//! environment, credential wins.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bridge_core::{ConversationId, Credentials, SessionId, Token};
use clap::{Args, ValueEnum};

/// The environment variable a token may come in.
pub const TOKEN_ENV: &str = "BRIDGE_TOKEN";

/// The name of the systemd credential a token may come in.
pub const TOKEN_CREDENTIAL: &str = "token";

/// A session on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SessionArg {
    /// The creator of the conversation (usually the orchestrator).
    A,
    /// The partner (usually a worker).
    B,
}

impl From<SessionArg> for SessionId {
    fn from(session: SessionArg) -> SessionId {
        match session {
            SessionArg::A => SessionId::A,
            SessionArg::B => SessionId::B,
        }
    }
}

/// `<conversation_id> [token]`, `--token-file`, `--session`.
#[derive(Args, Clone, Debug)]
pub struct AgentArgs {
    /// The conversation
    #[arg(env = "BRIDGE_CONVERSATION_ID", value_name = "CONVERSATION_ID")]
    pub conversation_id: String,

    /// The session's token (visible in `ps`: prefer --token-file or BRIDGE_TOKEN)
    #[arg(value_name = "TOKEN")]
    pub token: Option<String>,

    /// A file holding the session's token
    #[arg(long, env = "BRIDGE_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// The session to act as
    #[arg(long, value_enum, default_value_t = SessionArg::B)]
    pub session: SessionArg,
}

impl AgentArgs {
    /// The credentials: checked for shape here, for validity by the store.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        let conversation_id: ConversationId = self.conversation_id.parse()?;
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => {
                tracing::warn!(
                    "the token was given on the command line, where other users can see it (ps); \
                     use --token-file or BRIDGE_TOKEN"
                );
                token.clone()
            }
            (None, Some(file)) => read_token_file(file)?,
            (None, None) => match (std::env::var(TOKEN_ENV), credential()) {
                (Ok(token), _) => token,
                (Err(_), Some(file)) => read_token_file(&file)?,
                (Err(_), None) => bail!(
                    "no token: give it with --token-file PATH, in {TOKEN_ENV}, as the systemd \
                     credential {TOKEN_CREDENTIAL:?} (LoadCredential=), or after the conversation id"
                ),
            },
        };
        let token: Token = token.parse()?;
        Ok(Credentials {
            conversation_id,
            session: self.session.into(),
            token,
        })
    }
}

/// The file of the systemd credential `token`, if systemd passed one.
fn credential() -> Option<PathBuf> {
    let directory = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let file = Path::new(&directory).join(TOKEN_CREDENTIAL);
    file.is_file().then_some(file)
}

/// Reads a token file, warning if others may read it.
fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            token_file = %path.display(),
            "the token file can be read by other users; run chmod 600 on it"
        );
    }
    Ok(token.trim().to_owned())
}

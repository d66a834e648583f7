//! `bridgectl access`: the operator's access keys for the HTTP server.
//!
//! `create NAME` makes a key (shown once, or written to a file of mode 0600
//! with `--out-file`, e.g. for a systemd credential), optionally expiring;
//! `list` shows names, creation, last use and expiry, never a key; `revoke`
//! ends a key at once: the next request with it is refused.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bridge_cli::parse_duration;
use bridge_core::{AccessKeyInfo, Store};
use clap::Subcommand;
use serde::Serialize;

use crate::{print, show, write_secret};

#[derive(Subcommand, Debug)]
pub enum AccessCommand {
    /// Make an access key (shown once); only an access key may create
    /// conversations over HTTP
    Create {
        /// Its name: 1 to 64 letters, digits, '-', '_' or '.'
        name: String,
        /// It stops working after this long (e.g. 30d); else when revoked
        #[arg(long, value_parser = expiry)]
        expires: Option<Duration>,
        /// Write the key to this file (mode 0600) instead of printing it
        #[arg(long, value_name = "FILE")]
        out_file: Option<PathBuf>,
    },
    /// The access keys: names, creation, last use, expiry (never a key)
    List,
    /// End an access key at once
    Revoke {
        /// Its name
        name: String,
    },
}

/// An expiry the store accepts: longer than zero.
fn expiry(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        Err("must be longer than 0 s".to_owned())
    } else {
        Ok(duration)
    }
}

/// What `access create` prints.
#[derive(Debug, Serialize)]
struct Made {
    /// The key, when it is printed rather than written.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// The file it was written to.
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
    #[serde(flatten)]
    info: AccessKeyInfo,
}

/// Runs an `access` subcommand.
pub async fn run(store: &Store, command: AccessCommand, json: bool) -> anyhow::Result<()> {
    match command {
        AccessCommand::Create {
            name,
            expires,
            out_file,
        } => {
            let (key, info) = store.create_access_key(&name, expires).await?;
            let made = match out_file {
                Some(path) => {
                    if let Err(error) = write_secret(&path, &format!("{}\n", key.reveal())) {
                        // Nobody has the key: it must not stay usable.
                        store.revoke_access_key(&name).await?;
                        return Err(error.context(format!(
                            "access key {name} was not kept: its file could not be written"
                        )));
                    }
                    Made {
                        key: None,
                        file: Some(path),
                        info,
                    }
                }
                None => Made {
                    key: Some(key.reveal()),
                    file: None,
                    info,
                },
            };
            print(json, &made, || {
                show::access_made(made.key.as_deref(), made.file.as_deref(), &made.info)
            })
            .with_context(|| {
                format!(
                    "access key {name} was made, but could not be printed; revoke it with \
                     `bridgectl access revoke {name}` and make another"
                )
            })
        }
        AccessCommand::List => {
            let keys = store.access_keys().await?;
            print(json, &keys, || show::access_keys(&keys))
        }
        AccessCommand::Revoke { name } => {
            store.revoke_access_key(&name).await?;
            print(json, &serde_json::json!({ "revoked": name }), || {
                format!("Access key {name} is revoked: the next request with it is refused.\n")
            })
        }
    }
}

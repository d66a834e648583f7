//! Exit codes, the same for every binary, and the one line an error prints.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | runtime failure (I/O, a locked database, ...) |
//! | 2 | usage error (bad flags; clap exits with it) |
//! | 77 | authentication failed: invalid or malformed token, expired or unknown conversation, a key the hub refuses |
//! | 78 | configuration error: wrong or missing key file, not an mcp-bridge database, schema too new, a database server that refuses the connection (wrong password, unknown user or database), a hub whose certificate does not verify ([`Misconfigured`]) |
//!
//! 77 and 78 (sysexits' `EX_NOPERM` and `EX_CONFIG`) do not heal by
//! restarting: systemd units list them in `RestartPreventExitStatus=` so that
//! a bad token does not restart-loop.

use std::process::ExitCode;

use bridge_core::Error;

/// Success.
pub const SUCCESS: u8 = 0;
/// A runtime failure.
pub const FAILURE: u8 = 1;
/// Bad command-line usage.
pub const USAGE: u8 = 2;
/// Authentication failed.
pub const AUTH: u8 = 77;
/// The configuration cannot work.
pub const CONFIG: u8 = 78;

/// A configuration that cannot work, found outside `bridge-core` (a hub
/// whose certificate does not verify, say): exit 78.
#[derive(Debug)]
pub struct Misconfigured(pub String);

impl std::fmt::Display for Misconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Misconfigured {}

/// The exit code for `error`: [`CONFIG`] for a [`Misconfigured`] in its
/// chain, else from the first `bridge_core::Error` in it.
pub fn code_for(error: &anyhow::Error) -> u8 {
    if error
        .chain()
        .any(|cause| cause.downcast_ref::<Misconfigured>().is_some())
    {
        return CONFIG;
    }
    let core = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Error>());
    match core {
        Some(
            Error::InvalidToken { .. }
            | Error::Unauthenticated { .. }
            | Error::Expired { .. }
            | Error::NoSuchConversation { .. }
            | Error::Invalid {
                field: "token" | "conversation_id",
                ..
            },
        ) => AUTH,
        Some(
            Error::KeyFile { .. }
            | Error::NotADatabase { .. }
            | Error::ForeignDatabase { .. }
            | Error::SchemaTooNew { .. }
            | Error::Refused { .. },
        ) => CONFIG,
        _ => FAILURE,
    }
}

/// Runs `future` to its end on a single-threaded runtime (a daemon or a
/// one-shot command needs no more), and returns the exit code: success, or
/// the code for its error, reported as by [`report`].
pub fn block_on(
    program: &str,
    future: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    use anyhow::Context;
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(future));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(program, &error),
    }
}

/// Prints `program: error: cause: ...` on stderr, once, and returns the exit
/// code for it.
pub fn report(program: &str, error: &anyhow::Error) -> ExitCode {
    report_as(program, error, code_for(error))
}

/// Prints `error` as [`report`] does, and returns `code`: for an error
/// this crate does not know (a program's own configuration error, say).
pub fn report_as(program: &str, error: &anyhow::Error, code: u8) -> ExitCode {
    eprintln!("{program}: {error:#}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn authentication_and_configuration_have_their_own_codes() {
        let auth: anyhow::Error = Error::NoSuchConversation {
            conversation_id: "conv_0123456789abcdef".parse().unwrap(),
        }
        .into();
        assert_eq!(code_for(&auth.context("sending")), AUTH);
        let config = anyhow::Error::from(Error::KeyFile {
            path: "/k".into(),
            problem: "is missing".into(),
        });
        assert_eq!(code_for(&config), CONFIG);
        let refused = anyhow::Error::from(Error::Unauthenticated {
            reason: "the key is not known".into(),
        });
        assert_eq!(code_for(&refused), AUTH);
        let certificate =
            anyhow::Error::from(Misconfigured("no trust".into())).context("connecting");
        assert_eq!(code_for(&certificate), CONFIG);
        let other = Err::<(), _>(std::io::Error::other("disk full"))
            .context("writing")
            .unwrap_err();
        assert_eq!(code_for(&other), FAILURE);
    }
}

//! The optional sandbox: bubblewrap (`bwrap`), instead of the original's
//! Docker.
//!
//! Under [`Sandbox::Bwrap`] a command (and the git snapshot before it) runs as
//!
//! ```text
//! bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --tmpfs /run
//!       --bind WS WS --unshare-all --cap-drop ALL --die-with-parent
//!       --new-session --chdir WS -- …
//! ```
//!
//! * the whole file system read-only, the workspace `WS` (canonical)
//!   writable, a fresh `/dev`, `/proc`, an empty `/tmp` and an empty `/run`
//!   (no host sockets: container engines, systemd, D-Bus). The bind of the
//!   workspace comes after the `/tmp` mount so that a workspace under `/tmp`
//!   is not hidden by it;
//! * no network (a new network namespace holding only a loopback that is
//!   down);
//! * a new pid namespace: the command sees none of the host's processes
//!   (nor, through `/proc/<pid>/environ`, their environments), and when
//!   bwrap is killed the kernel kills everything in the namespace, even a
//!   process that left the process group with `setsid`;
//! * `--die-with-parent` so nothing outlives the bridge; `--new-session` so
//!   the command cannot push input into a terminal (`TIOCSTI`).
//!
//! The sandbox stops writes outside the workspace and the network; it does
//! not hide files: what the bridge's user can read, the command can read.
//! Tools that write to caches in the home directory (cargo's registry,
//! npm's and pip's caches) fail there unless pointed into the workspace, and
//! anything that downloads fails.
//!
//! `--die-with-parent` ties bwrap to the thread that started it: [`run`]
//! must be polled on a thread that outlives the command, as tokio's worker
//! threads do (not a short-lived thread of its own).
//!
//! [`run`]: crate::run

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether commands run inside a sandbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sandbox {
    /// Directly, in the workspace.
    #[default]
    None,
    /// Inside bubblewrap; see the [module docs](self).
    Bwrap,
}

/// The sandbox program.
const BWRAP: &str = "bwrap";

/// How long the check that bwrap works may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The mounts and namespaces, up to the workspace's bind.
fn isolation(argv: &mut Vec<OsString>) {
    for arg in [
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
        // Host sockets on disk (container engines, systemd, D-Bus) would
        // let a command ask something outside to run for it.
        "--tmpfs",
        "/run",
    ] {
        argv.push(arg.into());
    }
}

/// The namespaces and process settings.
fn confinement(argv: &mut Vec<OsString>) {
    for arg in [
        // Network, processes, IPC, host name, and the user and cgroup
        // namespaces where the kernel allows them.
        "--unshare-all",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
    ] {
        argv.push(arg.into());
    }
}

/// The command line that runs `command` (a program and its arguments) inside
/// the sandbox, with `workspace` (canonical) writable and the working
/// directory.
pub fn bwrap_argv(workspace: &Path, command: &[OsString]) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![BWRAP.into()];
    isolation(&mut argv);
    argv.extend(["--bind".into(), workspace.into(), workspace.into()]);
    confinement(&mut argv);
    argv.extend(["--chdir".into(), workspace.into(), "--".into()]);
    argv.extend(command.iter().cloned());
    argv
}

/// The command line that checks that bwrap can build the sandbox here.
fn probe_argv() -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![BWRAP.into()];
    isolation(&mut argv);
    confinement(&mut argv);
    argv.extend(["--".into(), "true".into()]);
    argv
}

/// Whether bwrap is installed and can build the sandbox here (it needs
/// unprivileged user namespaces, or root, or a setuid bwrap). Runs bwrap
/// once, with the scrubbed environment of this process.
pub fn bwrap_available() -> bool {
    let env = crate::environment::scrubbed_environment(std::env::vars_os());
    let argv = probe_argv();
    let (program, args) = (&argv[0], &argv[1..]);
    std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Checks that bwrap works with `env`; the reason it does not, if not.
pub(crate) async fn probe(env: &[(OsString, OsString)]) -> Result<(), String> {
    let argv = probe_argv();
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(PROBE_TIMEOUT, command.output()).await {
        Err(_) => return Err("bwrap did not answer in time".to_owned()),
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err("bwrap is not installed".to_owned());
        }
        Ok(Err(error)) => return Err(format!("bwrap could not be started: {error}")),
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reason = stderr.trim();
    Err(if reason.is_empty() {
        format!("bwrap failed ({})", output.status)
    } else {
        reason.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(argv: &[OsString]) -> Vec<String> {
        argv.iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_command_line() {
        let argv = bwrap_argv(
            Path::new("/tmp/ws"),
            &["ls".into(), "-la".into(), ";".into()],
        );
        assert_eq!(
            strings(&argv).join(" "),
            "bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --tmpfs /run \
             --bind /tmp/ws /tmp/ws --unshare-all --cap-drop ALL --die-with-parent --new-session \
             --chdir /tmp/ws -- ls -la ;"
        );
    }

    #[test]
    fn the_workspace_is_bound_after_tmp() {
        let argv = strings(&bwrap_argv(Path::new("/tmp/ws"), &["true".into()]));
        let position = |word: &str| argv.iter().position(|arg| arg == word);
        assert!(position("--tmpfs") < position("--bind"));
        assert!(position("--bind") < position("--"));
    }

    #[test]
    fn the_probe_builds_the_same_sandbox() {
        let probe = strings(&probe_argv());
        let real = strings(&bwrap_argv(Path::new("/w"), &["true".into()]));
        for flag in real
            .iter()
            .filter(|arg| arg.starts_with("--") && !["--bind", "--chdir"].contains(&arg.as_str()))
        {
            assert!(probe.contains(flag), "{flag}");
        }
    }

    #[tokio::test]
    async fn a_missing_bwrap_is_unavailable() {
        let env = vec![("PATH".into(), "/nonexistent".into())];
        assert_eq!(probe(&env).await, Err("bwrap is not installed".to_owned()));
    }
}

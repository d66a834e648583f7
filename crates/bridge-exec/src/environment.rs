//! The environment a command runs with: the parent's, less what could give
//! away a secret.
//!
//! [`scrubbed_environment`] drops
//!
//! * every variable whose name starts with `BRIDGE_` (the bridge's own
//!   token, key file, database), in any case;
//! * every variable whose name, upper-cased, contains one of
//!   [`SECRET_NAME_PARTS`] (`GITHUB_TOKEN`, `MY_API_KEY`, `PGPASSWORD`,
//!   `AWS_SESSION_TOKEN`, `SSH_AUTH_SOCK`, `npm_config__authToken`, …). This
//!   errs on the side of dropping: `GIT_AUTHOR_NAME`, `XAUTHORITY`,
//!   `DBUS_SESSION_BUS_ADDRESS`, `KEYMAP` go too;
//! * every variable whose value is a URL with a password in it
//!   (`https://user:secret@host`, as in `DATABASE_URL` or `HTTPS_PROXY`).
//!
//! `PATH` is always kept. When a command runs, `run` also removes from `PATH`
//! the entries that are not absolute (an empty entry or `.` would find a
//! program planted in the workspace) and those inside the workspace, and
//! uses `/usr/local/bin:/usr/bin:/bin` when there is no `PATH` at all.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// Parts of a variable name that mark it as a secret, matched
/// case-insensitively anywhere in the name. `PASS` covers `PASSWORD`,
/// `PASSWD` and `PASSPHRASE`; the longer ones are listed to be read.
pub const SECRET_NAME_PARTS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "SESSION",
    "PRIVATE",
    "JWT",
    "SIGNATURE",
    "WEBHOOK",
    "DSN",
];

/// The `PATH` used when the parent has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Whether a variable named `name` is dropped by [`scrubbed_environment`]
/// whatever its value.
pub fn is_secret_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy().to_ascii_uppercase();
    if matches!(name.as_str(), "PATH" | "PWD" | "OLDPWD") {
        return false;
    }
    // `MYSQL_PWD` and its kind: a password, not a directory.
    name.starts_with("BRIDGE_")
        || name.ends_with("PWD")
        || SECRET_NAME_PARTS.iter().any(|part| name.contains(part))
}

/// Whether `value` holds a URL with a password: `scheme://user:password@…`.
fn has_url_password(value: &OsStr) -> bool {
    let value = value.to_string_lossy();
    let mut rest: &str = &value;
    while let Some(at) = rest.find("://") {
        rest = &rest[at + 3..];
        let authority = rest
            .split(['/', '?', '#', ' ', '\t', '\n'])
            .next()
            .unwrap_or("");
        if let Some((userinfo, _host)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return true;
        }
    }
    false
}

/// `vars` (a parent environment, such as `std::env::vars_os()`) without the
/// variables that could give away a secret; see the [module
/// docs](self) for the rule. `PATH` is always kept. The order is kept.
pub fn scrubbed_environment(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(name, value)| {
            name.as_os_str() == "PATH" || !(is_secret_name(name) || has_url_password(value))
        })
        .collect()
}

/// The environment of a command run in `workspace` (canonical):
/// [`scrubbed_environment`], with `PATH` cut to its absolute entries outside
/// the workspace.
pub(crate) fn command_environment(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    workspace: &Path,
) -> Vec<(OsString, OsString)> {
    let mut vars = scrubbed_environment(parent);
    match vars.iter_mut().find(|(name, _)| name == "PATH") {
        Some((_, value)) => *value = safe_path(value, workspace),
        None => vars.push(("PATH".into(), DEFAULT_PATH.into())),
    }
    vars
}

/// The entries of `path` that are absolute and not inside `workspace`.
fn safe_path(path: &OsStr, workspace: &Path) -> OsString {
    let kept: Vec<_> = std::env::split_paths(path)
        .filter(|entry| entry.is_absolute())
        .filter(|entry| {
            let entry = entry.canonicalize().unwrap_or_else(|_| entry.clone());
            !entry.starts_with(workspace)
        })
        .collect();
    // Nothing left would make an empty `PATH`, which `execvp` reads as the
    // current directory: the workspace. Joining fails only on an entry
    // holding `:`, which split_paths cannot produce.
    if kept.is_empty() {
        return DEFAULT_PATH.into();
    }
    std::env::join_paths(kept).unwrap_or_else(|_| DEFAULT_PATH.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_by_suffix_webhooks_and_dsns_are_dropped_pwd_is_kept() {
        for name in ["MYSQL_PWD", "PGPWD", "SLACK_WEBHOOK_URL", "SENTRY_DSN"] {
            assert!(is_secret_name(OsStr::new(name)), "{name}");
        }
        for name in ["PWD", "OLDPWD", "PATH", "HOME", "LANG"] {
            assert!(!is_secret_name(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn a_path_entirely_inside_the_workspace_becomes_the_default() {
        let workspace = std::env::temp_dir();
        let inside = workspace.join("bin");
        let path = safe_path(inside.as_os_str(), &workspace);
        assert_eq!(path, OsString::from(DEFAULT_PATH));
        assert_eq!(
            safe_path(OsStr::new("bin:./x"), &workspace),
            OsString::from(DEFAULT_PATH)
        );
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value)))
            .collect()
    }

    fn names(vars: &[(OsString, OsString)]) -> Vec<String> {
        vars.iter()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn secrets_and_bridge_variables_are_dropped() {
        let parent = vars(&[
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/home/a"),
            ("LANG", "C.UTF-8"),
            ("BRIDGE_TOKEN", "t"),
            ("BRIDGE_DB", "/x.db"),
            ("bridge_key_file", "/k"),
            ("MY_API_KEY", "k"),
            ("GITHUB_TOKEN", "ghp_x"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_SESSION_TOKEN", "s"),
            ("PGPASSWORD", "p"),
            ("MYSQL_PWD_PASSWD", "p"),
            ("SSH_AUTH_SOCK", "/run/agent"),
            ("npm_config__authToken", "t"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/c.json"),
            ("SESSION_COOKIE", "c"),
            ("GPG_PRIVATE", "p"),
            ("CI_JOB_JWT", "j"),
            ("DATABASE_URL", "postgres://app:hunter2@db/app"),
            ("HTTPS_PROXY", "http://u:p@proxy:3128"),
            ("NO_PROXY", "localhost"),
            ("REPO_URL", "https://github.com/a/b"),
            ("USER_AT_HOST", "ssh://git@host/repo"),
            ("TERM", "xterm"),
        ]);
        assert_eq!(
            names(&scrubbed_environment(parent)),
            [
                "PATH",
                "HOME",
                "LANG",
                "NO_PROXY",
                "REPO_URL",
                "USER_AT_HOST",
                "TERM"
            ]
        );
    }

    #[test]
    fn path_is_kept_whatever() {
        let kept = scrubbed_environment(vars(&[("PATH", "https://a:b@c/")]));
        assert_eq!(names(&kept), ["PATH"]);
    }

    #[test]
    fn url_passwords() {
        for value in [
            "https://u:p@h",
            "x=1 redis://:pw@cache:6379/0",
            "a://b://u:p@h/x",
        ] {
            assert!(has_url_password(OsStr::new(value)), "{value}");
        }
        for value in [
            "https://u@h/a:b",
            "https://h/?a=b:c@d",
            "user:pass@host",
            "mailto:a@b",
        ] {
            assert!(!has_url_password(OsStr::new(value)), "{value}");
        }
    }

    #[test]
    fn path_loses_relative_entries_and_the_workspace() {
        let workspace = Path::new("/nonexistent-ws");
        let env = command_environment(
            vars(&[(
                "PATH",
                "/usr/bin::.:bin:/nonexistent-ws/node_modules/.bin:/nonexistent-ws:/bin",
            )]),
            workspace,
        );
        assert_eq!(env, vars(&[("PATH", "/usr/bin:/bin")]));
    }

    #[test]
    fn a_missing_path_gets_the_default() {
        let env = command_environment(vars(&[("HOME", "/h")]), Path::new("/w"));
        assert_eq!(env, vars(&[("HOME", "/h"), ("PATH", DEFAULT_PATH)]));
    }
}

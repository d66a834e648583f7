//! `deploy/install.sh`, run for real into temporary prefixes: what it
//! installs, where the units point, the modes, a second run, a dry run,
//! uninstalling, and its errors.
//!
//! A temporary prefix is a staged install: the script creates no user and
//! touches nothing outside it, so these tests are safe as root (CI).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

const BINARIES: [&str; 7] = [
    "bridge-mcp",
    "bridgectl",
    "keepalive-daemon",
    "fs-watcher",
    "check-messages",
    "watchdog-monitor",
    "reassign-tasks",
];

/// Each unit and the binary its ExecStart runs.
const UNITS: [(&str, &str); 4] = [
    ("bridge-keepalive@.service", "keepalive-daemon"),
    ("bridge-fs-watcher@.service", "fs-watcher"),
    ("bridge-watchdog.service", "watchdog-monitor"),
    ("bridge-mcp-http.service", "bridge-mcp"),
];

/// The worker machine's units (`--worker`), and the binary each runs.
const WORKER_UNITS: [(&str, &str); 2] = [
    ("bridge-keepalive-remote@.service", "keepalive-daemon"),
    ("bridge-fs-watcher-remote@.service", "fs-watcher"),
];

const ENV_FILES: [&str; 4] = [
    "example-conversation.env",
    "watchdog.env",
    "mcp-http.env",
    "remote.env",
];

/// Env files created when missing, beside their examples.
const CREATED_ENV_FILES: [&str; 2] = ["watchdog.env", "mcp-http.env"];

/// What a run of the script left: exit code, stdout, stderr.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `deploy/install.sh` with `args`.
fn install_sh(args: &[&str]) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/install.sh");
    // The cargo running the tests, for the runs that would build.
    let cargo_dir = Path::new(env!("CARGO")).parent().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![cargo_dir.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let output = Command::new(script)
        .args(args)
        .env("PATH", std::env::join_paths(paths).unwrap())
        .output()
        .expect("run deploy/install.sh");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The directory of the built binaries, for `--bin-dir`.
fn bin_dir() -> PathBuf {
    bridge_tests::bin::path("bridgectl")
        .parent()
        .expect("target/<profile>")
        .to_path_buf()
}

/// Installs into a new temporary prefix; returns it.
fn installed() -> TempDir {
    let prefix = tempfile::tempdir().unwrap();
    let run = install_sh(&[
        "--prefix",
        prefix.path().to_str().unwrap(),
        "--bin-dir",
        bin_dir().to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    prefix
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// What a second run must not change about a file or directory.
#[derive(Debug, PartialEq)]
struct Entry {
    mode: u32,
    size: u64,
    modified: (i64, i64),
    /// For small files.
    contents: Option<Vec<u8>>,
}

/// Every file and directory under `root`.
fn listing(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut entries = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            let contents = (metadata.is_file() && metadata.len() < 100_000)
                .then(|| std::fs::read(&path).unwrap());
            if metadata.is_dir() {
                pending.push(path.clone());
            }
            entries.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                Entry {
                    mode: metadata.mode(),
                    size: metadata.len(),
                    modified: (metadata.mtime(), metadata.mtime_nsec()),
                    contents,
                },
            );
        }
    }
    entries
}

/// `text` names /usr/local/bin and /etc/mcp-bridge only inside `prefix`.
fn assert_names_only_the_prefix(prefix: &Path, text: &str, what: &str) {
    for path in ["/usr/local/bin", "/etc/mcp-bridge"] {
        let inside = format!("{}{path}", prefix.display());
        let outside = text.replace(&inside, "");
        assert!(!outside.contains(path), "{what} names {path}:\n{text}");
    }
}

#[test]
fn it_installs_the_binaries_units_and_env_files_into_the_prefix() {
    let prefix = installed();
    let root = prefix.path();
    let built = bin_dir();
    for name in BINARIES {
        let path = root.join("bin").join(name);
        assert_eq!(mode(&path), 0o755, "{name}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            std::fs::metadata(built.join(name)).unwrap().len(),
            "{name} is the built binary"
        );
    }

    let config = root.join("etc/mcp-bridge");
    for (unit, binary) in UNITS {
        let path = root.join("lib/systemd/system").join(unit);
        assert_eq!(mode(&path), 0o644, "{unit}");
        let text = std::fs::read_to_string(&path).unwrap();
        let exec_start = format!("\nExecStart={}/bin/{binary}", root.display());
        assert!(text.contains(&exec_start), "{unit}:\n{text}");
        let env_file = format!("\nEnvironmentFile=-{}/", config.display());
        assert!(text.contains(&env_file), "{unit}:\n{text}");
        assert_names_only_the_prefix(root, &text, unit);
        assert!(text.contains("\nType=notify\n"), "{unit}");
        assert!(
            text.contains("\nRestartPreventExitStatus=2 77 78\n"),
            "{unit}"
        );
        assert!(text.contains("\nUser=mcp-bridge\n"), "{unit}");
    }
    let keepalive =
        std::fs::read_to_string(root.join("lib/systemd/system/bridge-keepalive@.service")).unwrap();
    assert!(keepalive.contains(&format!(
        "\nEnvironment=BRIDGE_TOKEN_FILE={}/%i.b.token\n",
        config.display()
    )));

    assert_eq!(mode(&config), 0o750);
    for env in ENV_FILES {
        let example = config.join(format!("{env}.example"));
        assert_eq!(mode(&example), 0o640, "{env}");
        assert_names_only_the_prefix(root, &std::fs::read_to_string(&example).unwrap(), env);
    }
    let conversation =
        std::fs::read_to_string(config.join("example-conversation.env.example")).unwrap();
    assert!(conversation.contains(&format!(
        "\nBRIDGE_TOKEN_FILE={}/conv_0123456789abcdef.b.token\n",
        config.display()
    )));
    for env in CREATED_ENV_FILES {
        let path = config.join(env);
        assert_eq!(mode(&path), 0o600, "{env}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(config.join(format!("{env}.example"))).unwrap()
        );
    }
    assert!(!config.join("example-conversation.env").exists());
}

#[test]
fn a_worker_install_has_only_the_daemons_their_remote_units_and_remote_env() {
    let prefix = tempfile::tempdir().unwrap();
    let root = prefix.path();
    let run = install_sh(&[
        "--worker",
        "--prefix",
        root.to_str().unwrap(),
        "--bin-dir",
        bin_dir().to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut files: Vec<String> = listing(root)
        .into_iter()
        .filter(|(_, entry)| entry.mode & 0o170_000 == 0o100_000)
        .map(|(path, _)| path.display().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec![
            "bin/check-messages",
            "bin/fs-watcher",
            "bin/keepalive-daemon",
            "etc/mcp-bridge/remote.env",
            "etc/mcp-bridge/remote.env.example",
            "lib/systemd/system/bridge-fs-watcher-remote@.service",
            "lib/systemd/system/bridge-keepalive-remote@.service",
        ]
    );
    let config = root.join("etc/mcp-bridge");
    // The units' dynamic users read the CA file named in remote.env.
    assert_eq!(mode(&config), 0o755);
    assert_eq!(mode(&config.join("remote.env")), 0o600);
    for (unit, binary) in WORKER_UNITS {
        let text = std::fs::read_to_string(root.join("lib/systemd/system").join(unit)).unwrap();
        assert!(
            text.contains(&format!("\nExecStart={}/bin/{binary}", root.display())),
            "{unit}:\n{text}"
        );
        assert!(
            text.contains(&format!(
                "\nLoadCredential=token:{}/%i.b.token\n",
                config.display()
            )),
            "the token comes as a credential: {unit}"
        );
        assert!(text.contains(&format!(
            "\nEnvironmentFile={}/remote.env\n",
            config.display()
        )));
        assert!(text.contains("\nDynamicUser=yes\n"), "{unit}");
        assert!(text.contains("\nRestartPreventExitStatus=2 77 78\n"));
        assert!(
            !text.contains("BRIDGE_DB"),
            "no database on a worker: {unit}"
        );
        assert_names_only_the_prefix(root, &text, unit);
    }
    let uninstall = install_sh(&[
        "--worker",
        "--uninstall",
        "--prefix",
        root.to_str().unwrap(),
    ]);
    assert_eq!(uninstall.code, Some(0), "{}", uninstall.stderr);
    assert!(!root.join("bin/fs-watcher").exists());
    assert!(
        config.join("remote.env").exists(),
        "the configuration is kept"
    );
}

#[test]
fn a_staged_install_creates_no_user_and_says_what_it_skipped() {
    let prefix = tempfile::tempdir().unwrap();
    let run = install_sh(&[
        "--prefix",
        prefix.path().to_str().unwrap(),
        "--bin-dir",
        bin_dir().to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "skipped: the user mcp-bridge, /var/lib/mcp-bridge and systemctl daemon-reload \
             (for a system install only: --prefix /usr or /usr/local)"
        ),
        "{}",
        run.stdout
    );
    for action in ["useradd", "systemctl", "/var/lib/mcp-bridge", " /etc/"] {
        assert!(
            !run.stdout
                .lines()
                .any(|l| l.starts_with('+') && l.contains(action)),
            "{action}:\n{}",
            run.stdout
        );
    }
}

#[test]
fn a_second_run_changes_nothing_and_keeps_an_edited_env_file() {
    let prefix = installed();
    let watchdog_env = prefix.path().join("etc/mcp-bridge/watchdog.env");
    let mut edited = std::fs::read_to_string(&watchdog_env).unwrap();
    edited.push_str("WATCHDOG_ARGS=--team core\n");
    std::fs::write(&watchdog_env, &edited).unwrap();
    let before = listing(prefix.path());

    let run = install_sh(&[
        "--prefix",
        prefix.path().to_str().unwrap(),
        "--bin-dir",
        bin_dir().to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        !run.stdout.lines().any(|line| line.starts_with('+')),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("done: 0 actions"), "{}", run.stdout);
    assert_eq!(listing(prefix.path()), before);
    assert_eq!(std::fs::read_to_string(&watchdog_env).unwrap(), edited);
}

#[test]
fn a_dry_run_prints_every_action_and_changes_nothing() {
    let prefix = tempfile::tempdir().unwrap();
    let root = prefix.path().display().to_string();
    let built = bin_dir().display().to_string();
    let run = install_sh(&["--prefix", &root, "--bin-dir", &built, "--dry-run"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(listing(prefix.path()).is_empty(), "{}", run.stdout);
    let actions: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| line.starts_with('+'))
        .collect();
    for name in BINARIES {
        let action = format!("+ install -m 0755 {built}/{name} {root}/bin/{name}");
        assert!(
            actions.contains(&action.as_str()),
            "{action}:\n{}",
            run.stdout
        );
    }
    for (unit, _) in UNITS.iter().chain(&WORKER_UNITS) {
        let action = format!("+ install -m 0644 systemd/{unit} {root}/lib/systemd/system/{unit}");
        assert!(
            actions.contains(&action.as_str()),
            "{action}:\n{}",
            run.stdout
        );
    }
    for env in ENV_FILES {
        let action =
            format!("+ install -m 0640 deploy/env/{env} {root}/etc/mcp-bridge/{env}.example");
        assert!(
            actions.contains(&action.as_str()),
            "{action}:\n{}",
            run.stdout
        );
    }
    for env in CREATED_ENV_FILES {
        let action = format!("+ install -m 0600 deploy/env/{env} {root}/etc/mcp-bridge/{env}");
        assert!(
            actions.contains(&action.as_str()),
            "{action}:\n{}",
            run.stdout
        );
    }
    assert!(actions.contains(&format!("+ install -d -m 0750 {root}/etc/mcp-bridge").as_str()));
    assert_eq!(
        actions.len(),
        3 + BINARIES.len()
            + UNITS.len()
            + WORKER_UNITS.len()
            + ENV_FILES.len()
            + CREATED_ENV_FILES.len()
    );
    assert!(
        run.stdout
            .starts_with("dry run: printing the actions, changing nothing\n")
    );

    // Without --bin-dir it would build first; a dry run does not.
    let run = install_sh(&["--prefix", &root, "--dry-run"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("+ cargo build --release --workspace --bins --manifest-path "),
        "{}",
        run.stdout
    );
    assert!(listing(prefix.path()).is_empty());
}

/// A system prefix maps to /etc/mcp-bridge and the service user; shown, not
/// done (a dry run).
#[test]
fn a_dry_run_of_a_system_install_shows_the_system_paths() {
    let built = bin_dir().display().to_string();
    let run = install_sh(&["--prefix", "/usr/", "--bin-dir", &built, "--dry-run"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for action in [
        format!("+ install -m 0755 {built}/bridge-mcp /usr/bin/bridge-mcp"),
        "+ install -m 0644 systemd/bridge-watchdog.service /usr/lib/systemd/system/bridge-watchdog.service".to_owned(),
        "+ install -m 0640 -g mcp-bridge deploy/env/watchdog.env /etc/mcp-bridge/watchdog.env.example".to_owned(),
    ] {
        assert!(
            run.stdout.lines().any(|line| line == action),
            "{action}:\n{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains("skipped: the user"), "{}", run.stdout);
}

#[test]
fn uninstall_removes_what_it_installed_and_keeps_the_configuration() {
    let prefix = installed();
    let root = prefix.path();
    let config = root.join("etc/mcp-bridge");
    let token = config.join("conv_0123456789abcdef.b.token");
    std::fs::write(&token, "0".repeat(64)).unwrap();
    let prefix_arg = root.to_str().unwrap();

    let run = install_sh(&["--prefix", prefix_arg, "--uninstall"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for name in BINARIES {
        assert!(!root.join("bin").join(name).exists(), "{name}");
    }
    for (unit, _) in UNITS {
        assert!(
            !root.join("lib/systemd/system").join(unit).exists(),
            "{unit}"
        );
    }
    for env in ENV_FILES {
        assert!(!config.join(format!("{env}.example")).exists(), "{env}");
    }
    for env in CREATED_ENV_FILES {
        assert!(config.join(env).exists(), "{env} is kept");
    }
    assert!(token.exists(), "the token is kept");
    assert!(
        run.stdout.contains(&format!(
            "kept: {} (env files and tokens)",
            config.display()
        )),
        "{}",
        run.stdout
    );

    let again = install_sh(&["--prefix", prefix_arg, "--uninstall"]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.stdout.contains("done: 0 actions"), "{}", again.stdout);
}

#[test]
fn a_bad_option_is_a_usage_error() {
    let run = install_sh(&["--frobnicate"]);
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        "install.sh: unknown option: --frobnicate\nTry 'install.sh --help'.\n"
    );
    assert_eq!(run.stdout, "");

    let run = install_sh(&["--prefix"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .starts_with("install.sh: --prefix needs a directory\n"),
        "{}",
        run.stderr
    );

    let run = install_sh(&["--prefix", "/tmp/with space", "--dry-run"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .contains("--prefix /tmp/with space: use only letters, digits"),
        "{}",
        run.stderr
    );

    let run = install_sh(&["--help"]);
    assert_eq!(run.code, Some(0));
    assert!(
        run.stdout.starts_with("Usage: deploy/install.sh"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("--uninstall"));
}

#[test]
fn a_bin_dir_without_a_binary_fails_naming_it_and_changes_nothing() {
    let bin = tempfile::tempdir().unwrap();
    for name in BINARIES {
        if name == "fs-watcher" || name == "check-messages" {
            continue;
        }
        let path = bin.path().join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        let executable = if name == "reassign-tasks" {
            0o644
        } else {
            0o755
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(executable)).unwrap();
    }
    let prefix = tempfile::tempdir().unwrap();
    let run = install_sh(&[
        "--prefix",
        prefix.path().to_str().unwrap(),
        "--bin-dir",
        bin.path().to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        format!(
            "install.sh: --bin-dir {} lacks fs-watcher check-messages reassign-tasks \
             (build them with cargo build --release --workspace --bins)\n",
            bin.path().display()
        )
    );
    assert!(listing(prefix.path()).is_empty());
}

/// The MCP client examples are JSON in the shape Claude Code reads, and name
/// the server and the unit's address.
#[test]
fn the_client_examples_start_or_reach_bridge_mcp() {
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/clients");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(clients.join(name)).unwrap())
            .unwrap_or_else(|error| panic!("{name}: {error}"))
    };
    let stdio = read("stdio.mcp.json");
    assert_eq!(stdio["mcpServers"]["mcp-bridge"]["command"], "bridge-mcp");
    assert!(stdio["mcpServers"]["mcp-bridge"]["env"]["BRIDGE_DB"].is_string());
    let http = read("http.mcp.json");
    assert_eq!(http["mcpServers"]["mcp-bridge"]["type"], "http");
    assert_eq!(
        http["mcpServers"]["mcp-bridge"]["url"],
        "http://127.0.0.1:8765/mcp"
    );
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/bridge-mcp-http.service"),
    )
    .unwrap();
    assert!(unit.contains("\nEnvironment=MCP_HTTP_LISTEN=127.0.0.1:8765\n"));
    // The unit turns authentication on, and the client sends its key.
    assert!(unit.contains("\nEnvironment=BRIDGE_REQUIRE_AUTH=true\n"));
    assert_eq!(
        http["mcpServers"]["mcp-bridge"]["headers"]["Authorization"],
        "Bearer ${MCP_BRIDGE_KEY}"
    );
}

//! `bridgectl yolo`: the terminal gates of `enable` (typed through a real
//! pseudo-terminal, with util-linux's `script`), approval tokens, disable.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_tests::{TempDb, bin, raw_connection, scalar};

use crate::{ctl, hex_words, make};

/// `bridgectl yolo enable <id>` at a terminal: what it printed there, and
/// its output so far.
struct AtTerminal {
    child: Child,
    output: Arc<Mutex<String>>,
    /// Reads the terminal's output until it closes.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl AtTerminal {
    fn start(db: &Path, id: &str) -> AtTerminal {
        let command = format!("{} yolo enable {id}", bin::path("bridgectl").display());
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("BRIDGE_DB", db)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run script (util-linux)");
        let output = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&output);
        let reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 1024];
            while let Ok(read) = stdout.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
        AtTerminal {
            child,
            output,
            reader: Some(reader),
        }
    }

    /// Waits (up to 20 s) until the terminal shows `text`; returns all shown.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let shown = self.output.lock().unwrap().clone();
            if shown.contains(text) {
                return shown;
            }
            assert!(Instant::now() < deadline, "never shown {text:?}: {shown}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// The exit code, and everything the terminal showed.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("bridgectl yolo enable did not end");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Everything shown, to the end: the output closes with the process.
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status.code(), self.output.lock().unwrap().clone())
    }
}

impl Drop for AtTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn enabled_rows(db: &Path) -> i64 {
    let mut raw = raw_connection(db).await;
    scalar(&mut raw, "SELECT count(*) FROM yolo").await
}

#[test]
fn enable_refuses_without_a_terminal() {
    let db = TempDb::new();
    let made = make(&db.path, "orchestrator", "worker", &[]);
    ctl(&db.path, &["yolo", "enable", &made.id]).failed(
        1,
        "bridgectl: `bridgectl yolo enable` must be run at a terminal: a person types its confirmation",
    );
}

#[tokio::test]
async fn enable_needs_the_exact_phrase_then_the_code() {
    let db = TempDb::new();
    let made = make(&db.path, "orchestrator", "worker", &[]);

    // A wrong phrase: nothing enabled.
    let mut terminal = AtTerminal::start(&db.path, &made.id);
    terminal.wait_for("Type I UNDERSTAND THE RISKS to continue: ");
    terminal.type_line("i understand the risks");
    let (code, shown) = terminal.finish();
    assert_eq!(code, Some(1), "{shown}");
    assert!(
        shown.contains("bridgectl: the phrase was not typed exactly; nothing was enabled"),
        "{shown}"
    );
    assert!(!shown.contains("One-time code"), "{shown}");
    assert_eq!(enabled_rows(&db.path).await, 0);

    // The phrase, then a wrong code: nothing enabled.
    let mut terminal = AtTerminal::start(&db.path, &made.id);
    terminal.wait_for("to continue: ");
    terminal.type_line("I UNDERSTAND THE RISKS");
    terminal.wait_for("Type it back: ");
    terminal.type_line("000000x");
    let (code, shown) = terminal.finish();
    assert_eq!(code, Some(1), "{shown}");
    assert!(
        shown.contains("bridgectl: the code did not match; nothing was enabled"),
        "{shown}"
    );
    assert_eq!(enabled_rows(&db.path).await, 0);

    // The phrase and the code shown: enabled, and audited.
    let mut terminal = AtTerminal::start(&db.path, &made.id);
    terminal.wait_for("to continue: ");
    terminal.type_line("I UNDERSTAND THE RISKS");
    let shown = terminal.wait_for("Type it back: ");
    let code_shown = shown
        .split("One-time code: ")
        .nth(1)
        .and_then(|rest| rest.get(..6))
        .expect("a code")
        .to_owned();
    assert!(code_shown.chars().all(|c| c.is_ascii_hexdigit()), "{shown}");
    terminal.type_line(&code_shown);
    let (code, shown) = terminal.finish();
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains(&format!("Command execution is enabled for {}.", made.id)),
        "{shown}"
    );
    assert_eq!(enabled_rows(&db.path).await, 1);
    let audit = ctl(&db.path, &["audit", &made.id, "--json"]).json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["conversation_created", "yolo_enabled"]);

    // Disabling needs no gate.
    assert_eq!(
        ctl(&db.path, &["yolo", "disable", &made.id]).ok(),
        format!("Command execution is disabled for {}.\n", made.id)
    );
    assert_eq!(enabled_rows(&db.path).await, 0);
    assert_eq!(
        ctl(&db.path, &["yolo", "disable", &made.id]).ok(),
        format!("Command execution was not enabled for {}.\n", made.id)
    );
}

#[tokio::test]
async fn tokens_are_shown_once_listed_by_preview_and_stored_hashed() {
    let db = TempDb::new();
    let made = make(&db.path, "orchestrator", "worker", &[]);
    let text = ctl(&db.path, &["yolo", "token", "--conversation", &made.id]).ok();
    let token = hex_words(&text)[0].to_owned();
    assert!(
        text.starts_with(&format!(
            "approval token: {token}\nIt runs one command, in conversation {}, until ",
            made.id
        )),
        "{text}"
    );
    let json = ctl(&db.path, &["yolo", "token", "--ttl", "1s", "--json"]).json();
    let short = json["token"].as_str().unwrap().to_owned();
    assert_eq!(json["preview"], short[..8]);
    assert_eq!(json["conversation_id"], serde_json::Value::Null);

    std::thread::sleep(Duration::from_millis(1_100));
    // The expired one is cleaned away; the other is listed by preview only.
    let listed = ctl(&db.path, &["yolo", "tokens"]).ok();
    assert!(listed.contains(&format!("{}…", &token[..8])), "{listed}");
    assert!(!listed.contains(&token), "{listed}");
    assert!(!listed.contains(&short[..8]), "{listed}");
    let listed = ctl(&db.path, &["yolo", "tokens", "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let mut raw = raw_connection(&db.path).await;
    assert_eq!(scalar(&mut raw, "SELECT count(*) FROM approval").await, 1);
    drop(raw);
    for file in [db.path.clone(), db.path.with_extension("db-wal")] {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes.windows(64).any(|window| window == token.as_bytes()),
            "{} holds the token",
            file.display()
        );
    }

    ctl(&db.path, &["yolo", "token", "--ttl", "2d"])
        .failed(1, "bridgectl: invalid ttl: must be between 1 s and 24 h");
    ctl(
        &db.path,
        &["yolo", "token", "--conversation", "conv_0123456789abcdef"],
    )
    .failed(77, "bridgectl: no such conversation: conv_0123456789abcdef");
}

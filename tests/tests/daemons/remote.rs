//! What only `--url` has: a hub that is not up yet or restarts (waited
//! for, said once, nothing missed or repeated after), and a hub that cannot
//! be trusted or reached the way `--url` says (exit 78 with a sentence).

use std::time::Duration;

use bridge_core::NewMessage;
use bridge_tests::daemon::{Daemon, run};
use bridge_tests::mcp::HttpServer;
use bridge_tests::tls::TestCa;
use bridge_tests::{TempDb, pair};

use crate::tls;
use serde_json::Value;

const SECOND: Duration = Duration::from_secs(1);

/// A loopback address nothing listens on (yet).
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The next line of `daemon` as JSON.
fn next(daemon: &Daemon) -> Value {
    let line = daemon
        .line(20 * SECOND)
        .unwrap_or_else(|| panic!("no line from fs-watcher; stderr:\n{}", daemon.stderr()));
    serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"))
}

#[tokio::test]
async fn a_hub_not_up_yet_is_waited_for_said_once_and_then_beaten_to() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let (files, ca_file) = tls(&db);
    let address = free_address();
    let url = format!("https://{address}/mcp");
    let id = conversation.created.id.to_string();
    let mut daemon = Daemon::start(
        "keepalive-daemon",
        &db.path,
        &[&id, "--interval", "200ms"],
        &[
            ("BRIDGE_URL", &url),
            ("BRIDGE_CA_FILE", &ca_file),
            ("BRIDGE_TOKEN", &conversation.b.token.reveal()),
        ],
    );
    assert!(
        daemon.wait_for_stderr("cannot be reached", 10 * SECOND),
        "{}",
        daemon.stderr()
    );
    std::thread::sleep(2 * SECOND);
    assert_eq!(
        daemon.stderr().matches("cannot be reached").count(),
        1,
        "said once: {}",
        daemon.stderr()
    );
    assert!(!daemon.stderr().contains("beating"));
    let _server = HttpServer::start_tls_on(&address, &db.path, &files, &["--require-auth"]);
    assert!(
        daemon.wait_for_stderr("beating", 40 * SECOND),
        "{}",
        daemon.stderr()
    );
    assert!(daemon.stderr().contains("the hub answers again"));
    let heard = store.partner_status(&conversation.a).await.unwrap();
    assert!(heard.last_heartbeat.is_some() && heard.alive);
    let (status, _) = daemon.signal("TERM", 5 * SECOND).expect("exits");
    assert_eq!(status.code(), Some(0));
    store.close().await;
}

/// The hub restarts while `fs-watcher --exec` runs a command and while
/// messages arrive: the watcher waits (saying so once), comes back by
/// itself, and every message is reported and run exactly once, in order.
#[tokio::test]
async fn across_a_hub_restart_fs_watcher_misses_and_repeats_nothing() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let (files, ca_file) = tls(&db);
    let address = free_address();
    let server = HttpServer::start_tls_on(&address, &db.path, &files, &["--require-auth"]);
    let id = conversation.created.id.to_string();
    let state = db.dir.path().join("watcher.state");
    let runs = db.dir.path().join("runs");
    // Each command takes a moment, long enough for the hub to go down.
    let command = format!("echo $BRIDGE_MESSAGE_ID >> {}; sleep 0.5", runs.display());
    let mut watcher = Daemon::start(
        "fs-watcher",
        &db.path,
        &[
            &id,
            "--exec",
            &command,
            "--state-file",
            state.to_str().unwrap(),
            "--heartbeat",
            "1s",
        ],
        &[
            ("BRIDGE_URL", &server.url),
            ("BRIDGE_CA_FILE", &ca_file),
            ("BRIDGE_TOKEN", &conversation.b.token.reveal()),
        ],
    );
    assert!(
        watcher.wait_for_stderr("watching", 10 * SECOND),
        "{}",
        watcher.stderr()
    );
    let mut sent = Vec::new();
    sent.push(
        store
            .send(&conversation.a, NewMessage::new("before"))
            .await
            .unwrap()
            .id,
    );
    assert_eq!(next(&watcher)["id"], sent[0]);
    // The hub goes away while the command of the first message runs, and
    // messages keep coming (another hub process, or bridgectl, writes).
    drop(server);
    for text in ["while down 1", "while down 2"] {
        sent.push(
            store
                .send(&conversation.a, NewMessage::new(text))
                .await
                .unwrap()
                .id,
        );
    }
    assert!(
        watcher.wait_for_stderr("cannot be reached", 20 * SECOND),
        "{}",
        watcher.stderr()
    );
    std::thread::sleep(2 * SECOND);
    let _server = HttpServer::start_tls_on(&address, &db.path, &files, &["--require-auth"]);
    sent.push(
        store
            .send(&conversation.a, NewMessage::new("after"))
            .await
            .unwrap()
            .id,
    );
    let mut seen = Vec::new();
    for _ in 1..sent.len() {
        let line = next(&watcher);
        assert!(line.get("redelivered").is_none(), "{line}");
        seen.push(line["id"].as_i64().unwrap());
    }
    assert_eq!(seen, sent[1..], "each once, in order");
    let deadline = std::time::Instant::now() + 10 * SECOND;
    while std::fs::read_to_string(&runs)
        .unwrap_or_default()
        .lines()
        .count()
        < sent.len()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the commands never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        watcher.line(Duration::from_millis(500)).is_none(),
        "nothing more"
    );
    let (status, _) = watcher.signal("TERM", 5 * SECOND).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", watcher.stderr());
    let ran: Vec<i64> = std::fs::read_to_string(&runs)
        .unwrap()
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    assert_eq!(ran, sent, "each command once, in order");
    let stderr = watcher.stderr();
    assert_eq!(stderr.matches("cannot be reached").count(), 1, "{stderr}");
    assert!(stderr.contains("the hub answers again"), "{stderr}");
    // Nothing was consumed: the agent still gets them all.
    let received = store.check(&conversation.b, 100).await.unwrap();
    assert_eq!(received.iter().map(|m| m.id).collect::<Vec<_>>(), sent);
    store.close().await;
}

#[tokio::test]
async fn a_hub_that_cannot_be_trusted_or_is_named_wrongly_is_a_configuration_error() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let (files, ca_file) = tls(&db);
    let server = HttpServer::start_tls(&db.path, &files, &["--require-auth"]);
    let id = conversation.created.id.to_string();
    let token = conversation.b.token.reveal();
    let stranger = db.dir.path().join("stranger.pem");
    std::fs::write(&stranger, TestCa::new().pem()).unwrap();
    let not_pem = db.dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let missing = db.dir.path().join("missing.pem");
    let http_url = server.url.replace("https://", "ftp://");
    let cases: [(&str, &str, String); 4] = [
        (
            &server.url,
            stranger.to_str().unwrap(),
            // The reason in rustls' words (a stranger CA of the same name:
            // BadSignature) goes between the two.
            format!(
                "keepalive-daemon: the certificate of the hub at {} does not verify (…); give \
                 --ca-file with the CA that signed it, or check the host name in --url",
                server.url
            ),
        ),
        (
            &server.url,
            not_pem.to_str().unwrap(),
            format!(
                "keepalive-daemon: --ca-file {}: holds no certificate (expected PEM: -----BEGIN \
                 CERTIFICATE-----)",
                not_pem.display()
            ),
        ),
        (
            &server.url,
            missing.to_str().unwrap(),
            format!(
                "keepalive-daemon: --ca-file {}: cannot be read: No such file or directory (os \
                 error 2)",
                missing.display()
            ),
        ),
        (
            &http_url,
            &ca_file,
            format!(
                "keepalive-daemon: --url {http_url:?} has the scheme \"ftp\"; the hub is reached \
                 with https:// (or http:// on loopback), e.g. https://hub.example.org:8765/mcp"
            ),
        ),
    ];
    for (url, ca, said) in cases {
        let (code, _, stderr) = run(
            "keepalive-daemon",
            &db.path,
            &[&id],
            &[
                ("BRIDGE_URL", url),
                ("BRIDGE_CA_FILE", ca),
                ("BRIDGE_TOKEN", &token),
            ],
        );
        assert_eq!(code, Some(78), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        let (before, after) = said.split_once("…").unwrap_or((&said, ""));
        assert!(
            last.starts_with(before) && last.ends_with(after),
            "{last}\nnot: {said}"
        );
        assert!(!stderr.contains(&token));
    }
    // A path where no MCP endpoint is.
    let wrong_path = server.url.replace("/mcp", "/nothing");
    let (code, _, stderr) = run(
        "keepalive-daemon",
        &db.path,
        &[&id],
        &[
            ("BRIDGE_URL", &wrong_path),
            ("BRIDGE_CA_FILE", &ca_file),
            ("BRIDGE_TOKEN", &token),
        ],
    );
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("has no MCP endpoint there (HTTP 404)"),
        "{stderr}"
    );
    // --url and --db at once are a usage error.
    let (code, _, stderr) = run(
        "check-messages",
        &db.path,
        &[&id, "--db", db.path.to_str().unwrap()],
        &[("BRIDGE_URL", &server.url), ("BRIDGE_TOKEN", &token)],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    drop(server);
    store.close().await;
}

#[tokio::test]
async fn check_messages_does_not_wait_for_a_hub_out_of_reach() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let (_, ca_file) = tls(&db);
    let url = format!("https://{}/mcp", free_address());
    let (code, _, stderr) = run(
        "check-messages",
        &db.path,
        &[conversation.created.id.as_str()],
        &[
            ("BRIDGE_URL", &url),
            ("BRIDGE_CA_FILE", &ca_file),
            ("BRIDGE_TOKEN", &conversation.b.token.reveal()),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|line| line.starts_with(&format!(
                "check-messages: the hub at {url} cannot be reached: "
            ))),
        "{stderr}"
    );
    store.close().await;
}

#[tokio::test]
async fn the_token_never_reaches_a_daemons_log_even_at_trace_level() {
    let db = TempDb::new();
    let store = db.open().await;
    let conversation = pair(&store).await;
    let (files, ca_file) = tls(&db);
    let server = HttpServer::start_tls(&db.path, &files, &["--require-auth"]);
    let id = conversation.created.id.to_string();
    let token = conversation.b.token.reveal();
    store
        .send(&conversation.a, NewMessage::new("hello"))
        .await
        .unwrap();
    let mut watcher = Daemon::start(
        "fs-watcher",
        &db.path,
        &[&id, "-vv", "--heartbeat", "200ms"],
        &[
            ("BRIDGE_URL", &server.url),
            ("BRIDGE_CA_FILE", &ca_file),
            ("BRIDGE_TOKEN", &token),
        ],
    );
    assert_eq!(next(&watcher)["message"], "hello");
    // A few heartbeats and waits, all logged at trace level.
    std::thread::sleep(SECOND);
    let (status, _) = watcher.signal("TERM", 5 * SECOND).expect("exits");
    assert_eq!(status.code(), Some(0));
    let log = watcher.stderr();
    assert!(log.contains("TRACE"), "logged at trace level");
    assert!(!log.contains(&token), "the token is in the log");
    drop(server);
    store.close().await;
}

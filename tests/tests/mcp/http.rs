//! `bridge-mcp --http`: many agents through one process, guarded against
//! requests from foreign web pages, and a well-behaved systemd service.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use bridge_tests::TempDb;
use bridge_tests::bin;
use bridge_tests::daemon::{self, Daemon};
use bridge_tests::mcp::{Agent, HttpServer, caller};
use serde_json::json;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn two_agents_over_http_full_flow() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &[]);
    let orchestrator = Agent::http(&server.url, &[]).await.unwrap();
    let worker = Agent::http(&server.url, &[]).await.unwrap();

    let (id, token_a, token_b) = orchestrator
        .create(json!({"my_role": "orchestrator", "partner_role": "worker"}))
        .await;
    let (id, token_a, token_b) = (id.as_str(), token_a.as_str(), token_b.as_str());

    // The worker waits over HTTP while the orchestrator sends.
    let waiting = worker.ok(
        "wait_for_messages",
        caller(id, "b", token_b, json!({"timeout_seconds": 30})),
    );
    let sending = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        orchestrator
            .ok(
                "send_to_partner",
                caller(id, "a", token_a, json!({"message": "over http"})),
            )
            .await
    };
    let (waited, sent) = tokio::join!(waiting, sending);
    assert_eq!(waited["timed_out"], false);
    assert_eq!(waited["messages"][0]["id"], sent["message_id"]);
    assert_eq!(waited["messages"][0]["message"], "over http");

    worker
        .ok(
            "update_my_status",
            caller(id, "b", token_b, json!({"status": "complete"})),
        )
        .await;
    let partner = orchestrator
        .ok("check_partner_status", caller(id, "a", token_a, json!({})))
        .await;
    assert_eq!(partner["status"], "complete");
    let text = orchestrator
        .refused("check_messages", caller(id, "a", token_b, json!({})))
        .await;
    assert_eq!(
        text,
        format!("invalid token for session a of conversation {id}")
    );
    orchestrator.stop().await;
    worker.stop().await;
}

#[tokio::test]
async fn a_loopback_origin_is_served_and_a_foreign_origin_refused() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &[]);
    let local_origin = format!("http://{}", server.authority());
    let local = Agent::http(&server.url, &[(http::header::ORIGIN, &local_origin)]).await;
    local.expect("a loopback origin is served").stop().await;

    let error = Agent::http(
        &server.url,
        &[(http::header::ORIGIN, "http://evil.example")],
    )
    .await
    .err()
    .expect("a foreign origin must be refused");
    assert!(error.contains("403"), "{error}");
    assert!(error.contains("Origin"), "{error}");
}

/// A request as a DNS-rebinding page would send it: the right address, but
/// the attacker's host name.
#[test]
fn a_foreign_host_header_is_refused() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &[]);
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    })
    .to_string();
    let status = |host: &str| {
        let mut stream = TcpStream::connect(server.authority()).unwrap();
        write!(
            stream,
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.lines().next().unwrap_or_default().to_owned()
    };
    assert!(status("evil.example").starts_with("HTTP/1.1 403"));
    assert!(
        status(&format!(
            "evil.example:{}",
            server.authority().rsplit(':').next().unwrap()
        ))
        .starts_with("HTTP/1.1 403")
    );
    assert!(status(server.authority()).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_non_loopback_address_is_refused_without_allow_remote() {
    let db = TempDb::new();
    let output = std::process::Command::new(bin::path("bridge-mcp"))
        .args(["--http", "192.0.2.1:8765"])
        .env("BRIDGE_DB", &db.path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "bridge-mcp: refusing to listen on 192.0.2.1:8765: it is not a loopback address"
        ),
        "{stderr}"
    );
    assert!(!db.exists(), "refused before the database is created");
    let output = std::process::Command::new(bin::path("bridge-mcp"))
        .args(["--allow-remote"])
        .env("BRIDGE_DB", &db.path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "--allow-remote needs --http");
}

/// A datagram socket standing in for systemd's notification socket, in `dir`.
fn notify_socket(dir: &Path) -> (UnixDatagram, String) {
    let path = dir.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(10 * SECOND)).unwrap();
    (socket, path.to_str().unwrap().to_owned())
}

/// The next notification, waiting for it.
fn next_notification(socket: &UnixDatagram, server: &Daemon) -> String {
    let mut buffer = [0u8; 256];
    let length = socket
        .recv(&mut buffer)
        .unwrap_or_else(|error| panic!("no notification ({error}); stderr:\n{}", server.stderr()));
    String::from_utf8_lossy(&buffer[..length]).trim().to_owned()
}

/// The notifications already sent, without waiting (for a process that has
/// exited: everything it sent is queued by then).
fn sent_notifications(socket: &UnixDatagram) -> Vec<String> {
    socket.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 256];
    let mut sent = Vec::new();
    while let Ok(length) = socket.recv(&mut buffer) {
        sent.push(String::from_utf8_lossy(&buffer[..length]).trim().to_owned());
    }
    sent
}

/// The URL the server logged that it listens on.
fn listening_url(server: &Daemon) -> String {
    assert!(
        server.wait_for_stderr("listening on http://", 10 * SECOND),
        "{}",
        server.stderr()
    );
    let stderr = server.stderr();
    let (_, rest) = stderr.split_once("listening on ").unwrap();
    rest.split_whitespace().next().unwrap().to_owned()
}

/// Under systemd (`Type=notify`): READY=1 once the port listens (an agent
/// connected right after it is served), STOPPING=1 on SIGTERM, and no
/// watchdog pings when no watchdog was asked for.
#[tokio::test]
async fn under_systemd_it_is_ready_once_listening_and_says_when_it_stops() {
    let db = TempDb::new();
    let (socket, socket_path) = notify_socket(db.dir.path());
    let mut server = Daemon::start(
        "bridge-mcp",
        &db.path,
        &["--http", "127.0.0.1:0"],
        &[("NOTIFY_SOCKET", &socket_path)],
    );
    assert_eq!(next_notification(&socket, &server), "READY=1");
    let agent = Agent::http(&listening_url(&server), &[])
        .await
        .expect("an agent is served as soon as the server is ready");
    assert!(!agent.tools().await.is_empty());
    agent.stop().await;

    let (status, _) = server.signal("TERM", 10 * SECOND).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert_eq!(sent_notifications(&socket), ["STOPPING=1"]);
}

/// With `WatchdogSec=` (WATCHDOG_USEC), pings at half the interval while it
/// serves, then STOPPING=1 on SIGTERM.
#[test]
fn under_systemd_it_pings_the_watchdog() {
    let db = TempDb::new();
    let (socket, socket_path) = notify_socket(db.dir.path());
    let mut server = Daemon::start(
        "bridge-mcp",
        &db.path,
        &["--http", "127.0.0.1:0"],
        // 400 ms: pings every 200 ms.
        &[("NOTIFY_SOCKET", &socket_path), ("WATCHDOG_USEC", "400000")],
    );
    let mut received = vec![next_notification(&socket, &server)];
    while received.iter().filter(|m| *m == "WATCHDOG=1").count() < 3 {
        received.push(next_notification(&socket, &server));
    }
    assert_eq!(received[0], "READY=1", "{received:?}");
    assert!(
        received[1..].iter().all(|m| m == "WATCHDOG=1"),
        "{received:?}"
    );

    let (status, _) = server.signal("TERM", 10 * SECOND).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    let rest = sent_notifications(&socket);
    assert_eq!(
        rest.iter().filter(|m| *m == "STOPPING=1").count(),
        1,
        "{rest:?}"
    );
    assert!(
        rest.iter().all(|m| m == "WATCHDOG=1" || m == "STOPPING=1"),
        "{rest:?}"
    );
}

/// A server that cannot listen never says it is ready: systemd sees it fail.
#[test]
fn a_server_that_cannot_listen_never_says_it_is_ready() {
    let db = TempDb::new();
    let (socket, socket_path) = notify_socket(db.dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, stderr) = daemon::run(
        "bridge-mcp",
        &db.path,
        &["--http", &addr],
        &[("NOTIFY_SOCKET", &socket_path)],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("bridge-mcp: cannot listen on {addr}")),
        "{stderr}"
    );
    assert_eq!(sent_notifications(&socket), Vec::<String>::new());
}

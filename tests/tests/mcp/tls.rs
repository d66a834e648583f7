//! HTTPS: `bridge-mcp --http --tls-cert --tls-key` serves its certificate,
//! reads it again on `SIGHUP` for new connections without dropping open
//! ones, and refuses to start on a bad file (naming it) or on plain HTTP
//! off loopback.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use bridge_tests::http::{Connection, Session};
use bridge_tests::mcp::{Agent, HttpServer, caller};
use bridge_tests::tls::TestCa;
use bridge_tests::{TempDb, bin};
use serde_json::json;

/// A `ping` on `session` over `connection` gets its answer.
fn pings(session: &Session, connection: &mut Connection) -> bool {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "ping"});
    let response = connection.post(Some(&session.id), body.to_string().as_bytes());
    response.status == 200 && response.answer().get("result").is_some()
}

#[test]
fn https_serves_the_certificate_and_sighup_swaps_it_for_new_connections() {
    let db = TempDb::new();
    let ca = TestCa::new();
    let files = ca.server_files(&["127.0.0.1"], db.dir.path());
    let first = std::fs::read(&files.certificate).unwrap();
    let server = HttpServer::start_tls(&db.path, &files, &[]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let authority = server.authority().to_owned();

    let mut open = Connection::open_tls(&authority, ca.client_config()).expect("a TLS handshake");
    let served_first = open.server_certificate().expect("a certificate");
    let session = Session::open(&mut open);
    assert!(pings(&session, &mut open));

    // A plain-HTTP client gets no HTTP answer from the HTTPS port (a TLS
    // alert, or the end of the connection).
    let mut plain = std::net::TcpStream::connect(&authority).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    plain
        .write_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    // The renewed certificate, then SIGHUP.
    let renewed = ca.server_files(&["127.0.0.1"], db.dir.path());
    assert_ne!(std::fs::read(&renewed.certificate).unwrap(), first);
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let served_now = loop {
        let connection =
            Connection::open_tls(&authority, ca.client_config()).expect("a TLS handshake");
        let served = connection.server_certificate().expect("a certificate");
        if served != served_first || Instant::now() > deadline {
            break served;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(
        served_now, served_first,
        "the renewed certificate is served"
    );
    // The connection opened before keeps its session and its certificate.
    assert!(pings(&session, &mut open));
    assert_eq!(open.server_certificate().unwrap(), served_first);

    // A client that trusts another CA refuses the certificate.
    let stranger = TestCa::new();
    let refused = Connection::open_tls(&authority, stranger.client_config())
        .err()
        .expect("a certificate of another CA is refused");
    assert!(refused.starts_with("invalid peer certificate"), "{refused}");
}

/// Runs `bridge-mcp --http 127.0.0.1:0` with `args` to its end.
fn start_failing(db: &TempDb, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(bin::path("bridge-mcp"))
        .args(["--http", "127.0.0.1:0"])
        .args(args)
        .env("BRIDGE_DB", &db.path)
        .env_remove("BRIDGE_TLS_CERT")
        .env_remove("BRIDGE_TLS_KEY")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_certificate_or_key_stops_the_start_naming_the_file() {
    let db = TempDb::new();
    let ca = TestCa::new();
    let files = ca.server_files(&["127.0.0.1"], db.dir.path());
    let (cert, key) = (
        files.certificate.to_str().unwrap(),
        files.key.to_str().unwrap(),
    );
    let missing = db.dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();

    let (code, stderr) = start_failing(&db, &["--tls-cert", missing, "--tls-key", key]);
    assert_eq!(code, Some(78), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "bridge-mcp: cannot read the TLS certificate {missing}: No such file or directory (os error 2)"
        )
    );
    // The key given twice: PEM, but no certificate in it.
    let (code, stderr) = start_failing(&db, &["--tls-cert", key, "--tls-key", key]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "bridge-mcp: the TLS certificate {key} holds no PEM certificate"
        )),
        "{stderr}"
    );
    let (code, stderr) = start_failing(&db, &["--tls-cert", cert]);
    assert_eq!(code, Some(2), "--tls-cert needs --tls-key: {stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
    assert!(!db.exists(), "refused before the database is created");
}

#[test]
fn plain_http_off_loopback_is_refused_unless_said_explicitly() {
    let db = TempDb::new();
    let output = Command::new(bin::path("bridge-mcp"))
        .args(["--http", "192.0.2.1:8765", "--allow-remote"])
        .env("BRIDGE_DB", &db.path)
        .env_remove("BRIDGE_TLS_CERT")
        .env_remove("BRIDGE_TLS_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim_end(),
        "bridge-mcp: refusing to serve plain HTTP on 192.0.2.1:8765: it is not a loopback \
         address, and tokens would cross the network readable; give --tls-cert and --tls-key, \
         or pass --insecure-plaintext if a proxy in front of the bridge encrypts"
    );
    assert!(!db.exists(), "refused before the database is created");
}

#[test]
fn sighup_without_tls_leaves_the_server_serving() {
    let db = TempDb::new();
    let server = HttpServer::start(&db.path, &[]);
    let mut connection = Connection::open(server.authority());
    let session = Session::open(&mut connection);
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Signals are delivered before the next request is read; a ping after
    // a pause finds the server alive.
    std::thread::sleep(Duration::from_millis(200));
    assert!(bridge_testkit::process::running(server.pid()));
    assert!(pings(&session, &mut connection));
}

#[tokio::test]
async fn an_agent_speaks_mcp_over_https_and_refuses_a_certificate_it_does_not_trust() {
    let db = TempDb::new();
    let ca = TestCa::new();
    let files = ca.server_files(&["127.0.0.1"], db.dir.path());
    let server = HttpServer::start_tls(&db.path, &files, &[]);
    let orchestrator = Agent::https(&server.url, &ca.client_config())
        .await
        .expect("an MCP session over HTTPS");
    let (id, token_a, token_b) = orchestrator
        .create(json!({"my_role": "orchestrator", "partner_role": "worker"}))
        .await;
    let (id, token_a, token_b) = (id.as_str(), token_a.as_str(), token_b.as_str());
    orchestrator
        .ok(
            "send_to_partner",
            caller(id, "a", token_a, json!({"message": "over TLS"})),
        )
        .await;
    let worker = Agent::https(&server.url, &ca.client_config())
        .await
        .expect("a second session over HTTPS");
    let read = worker
        .ok("check_messages", caller(id, "b", token_b, json!({})))
        .await;
    assert_eq!(read["messages"][0]["message"], "over TLS", "{read}");
    orchestrator.stop().await;
    worker.stop().await;

    // rmcp's error names no cause; the raw client's test above shows it is
    // the certificate.
    let stranger = TestCa::new();
    let refused = Agent::https(&server.url, &stranger.client_config())
        .await
        .err()
        .expect("a certificate of another CA is refused");
    assert!(
        refused.contains("error sending request for url"),
        "{refused}"
    );
}

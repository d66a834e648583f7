//! The memory of a `bridge-mcp --http` hub as MCP sessions open, reach the
//! cap, are refused, and expire.
//!
//! Run with `cargo bench -p bridge-tests --bench hub` (it builds the
//! workspace's binaries first, if need be). One hub on a database in the
//! system's temporary directory (or `$BENCH_DIR`), `--max-sessions 256
//! --session-idle 10s`, each session opened by a raw HTTP client as an
//! agent's would be (`initialize`, `notifications/initialized`, one
//! `tools/call`), on a connection of its own that stays open. Prints the
//! hub's resident memory (`VmRSS`, peak `VmHWM`) after start, at the cap,
//! after 1 000 more sessions refused (`503`), and at the cap again after
//! each of six rounds of every session expiring and new ones taking their
//! places; how long opening the sessions took; and the round trip of MCP's
//! `ping` over HTTP on one kept-alive connection (the floor of a call over
//! HTTP: no store).

use std::time::{Duration, Instant};

use bridge_testkit::process::memory;
use bridge_testkit::report::{machine, report_latency, report_memory, report_rate};
use bridge_tests::TempDb;
use bridge_tests::http::{Connection, Session};
use bridge_tests::mcp::HttpServer;
use serde_json::json;

const CAP: usize = 256;
const REFUSED: usize = 1_000;
const PINGS: usize = 2_000;
/// Rounds of filling the hub to its cap.
const ROUNDS: usize = 7;

fn main() {
    let db = TempDb::for_bench();
    println!("mcp-bridge hub memory with bounded sessions");
    println!("database: {}", db.path.display());
    println!("{}", machine());
    println!();

    let cap = CAP.to_string();
    let server = HttpServer::start(&db.path, &["--max-sessions", &cap, "--session-idle", "10s"]);
    let authority = server.authority().to_owned();
    let pid = server.pid();
    let measure = |what: &str| match memory(pid) {
        Some(used) => report_memory(what, used),
        None => println!("{what}: not running"),
    };
    // One session, then the memory of a hub at work.
    let mut connection = Connection::open(&authority);
    let mut session = Session::open(&mut connection);
    ping(&mut session, &mut connection);
    std::thread::sleep(Duration::from_secs(1));
    measure("hub with 1 session");
    let mut round_trips = Vec::with_capacity(PINGS);
    for n in 0..PINGS {
        let body = json!({"jsonrpc": "2.0", "id": n + 1000, "method": "ping"});
        let started = Instant::now();
        let response = connection.post(Some(&session.id), body.to_string().as_bytes());
        round_trips.push(started.elapsed());
        assert!(response.answer().get("result").is_some(), "a ping's answer");
    }
    report_latency("HTTP round trip, ping", &round_trips);

    let started = Instant::now();
    let sessions = fill(&authority, vec![(session, connection)]);
    report_rate(
        "sessions opened (initialize, initialized, 1 call)",
        CAP - 1,
        started.elapsed(),
    );
    std::thread::sleep(Duration::from_secs(1));
    measure(&format!("hub at the cap, {CAP} sessions"));

    let started = Instant::now();
    for _ in 0..REFUSED {
        let mut connection = Connection::open(&authority);
        let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}});
        let response = connection.post(None, body.to_string().as_bytes());
        assert_eq!(response.status, 503, "past the cap");
    }
    report_rate("sessions refused (503)", REFUSED, started.elapsed());
    measure(&format!("hub at the cap, after {REFUSED} refused"));

    // Rounds of sessions that expire and are replaced: the places freed are
    // reused, and the memory levels off (what grows is the allocator's
    // fragmentation, less each round; a leak would grow by the same each
    // round).
    let mut sessions = sessions;
    for round in 2..=ROUNDS {
        drop(sessions);
        std::thread::sleep(Duration::from_secs(15));
        sessions = fill(&authority, Vec::new());
        std::thread::sleep(Duration::from_secs(1));
        measure(&format!("round {round}: every session expired, {CAP} new"));
    }
    drop(sessions);
    drop(server);
}

/// Opens sessions, each on a connection of its own, until there are
/// [`CAP`].
fn fill(authority: &str, mut sessions: Vec<(Session, Connection)>) -> Vec<(Session, Connection)> {
    while sessions.len() < CAP {
        let mut connection = Connection::open(authority);
        let mut session = Session::open(&mut connection);
        ping(&mut session, &mut connection);
        sessions.push((session, connection));
    }
    sessions
}

/// A call that touches the store, as an agent's first would.
fn ping(session: &mut Session, connection: &mut Connection) {
    let result = session.call(
        connection,
        "create_conversation",
        json!({"my_role": "orchestrator", "partner_role": "worker"}),
    );
    assert_eq!(result["isError"], false);
}

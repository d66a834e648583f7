//! What TLS costs a call to `bridge-mcp --http`: the same round trips over
//! HTTPS and over plain HTTP, in one run.
//!
//! Run with `cargo bench -p bridge-tests --bench https` (it builds the
//! workspace's binaries first, if need be). Two hubs on one database in the
//! system's temporary directory (or `$BENCH_DIR`): one serving HTTPS with a
//! certificate of a CA made for the run (an ECDSA P-256 key, rcgen's
//! default), one plain HTTP. On each, one MCP session on one kept-alive
//! connection of the raw HTTP client, as an agent's client holds it: 200
//! warm-up calls, then 2 000 measured round trips of MCP's `ping` (no store)
//! and of `send_to_partner` (durability `full`, the default), the two hubs
//! alternating call by call. Then the cost of a new connection: connect
//! (and handshake), `initialize` and `notifications/initialized`, 200 times
//! each, alternating.

use std::time::Instant;

use bridge_testkit::report::{machine, report_latency};
use bridge_tests::TempDb;
use bridge_tests::http::{Connection, Session};
use bridge_tests::mcp::HttpServer;
use bridge_tests::tls::TestCa;
use serde_json::json;

const WARM_UP: usize = 200;
const MEASURED: usize = 2_000;
const CONNECTIONS: usize = 200;

fn main() {
    let db = TempDb::for_bench();
    println!("mcp-bridge: HTTPS against plain HTTP");
    println!("database: {}", db.path.display());
    println!("{}", machine());
    println!();

    let ca = TestCa::new();
    let files = ca.server_files(&["127.0.0.1"], db.dir.path());
    let https = HttpServer::start_tls(&db.path, &files, &[]);
    let http = HttpServer::start(&db.path, &[]);
    let config = ca.client_config();
    let connect_tls =
        || Connection::open_tls(https.authority(), config.clone()).expect("a TLS handshake");
    let connect_plain = || Connection::open(http.authority());

    let mut clients = [
        Client::open("HTTPS", &connect_tls),
        Client::open("HTTP", &connect_plain),
    ];
    // The two alternate call by call, so that both meet the same state of
    // the database and the machine.
    for call in [Call::Ping, Call::Send] {
        for _ in 0..WARM_UP {
            for client in &mut clients {
                client.call(call);
            }
        }
        let mut times = [Vec::with_capacity(MEASURED), Vec::with_capacity(MEASURED)];
        for _ in 0..MEASURED {
            for (client, times) in clients.iter_mut().zip(&mut times) {
                let started = Instant::now();
                client.call(call);
                times.push(started.elapsed());
            }
        }
        for (client, times) in clients.iter().zip(&times) {
            report_latency(
                &format!("{} round trip, {}", client.name, call.name()),
                times,
            );
        }
    }
    let mut times = [
        Vec::with_capacity(CONNECTIONS),
        Vec::with_capacity(CONNECTIONS),
    ];
    for _ in 0..CONNECTIONS {
        for (connect, times) in [&connect_tls as &dyn Fn() -> Connection, &connect_plain]
            .into_iter()
            .zip(&mut times)
        {
            let started = Instant::now();
            let mut connection = connect();
            let _session = Session::open(&mut connection);
            times.push(started.elapsed());
        }
    }
    for (name, times) in ["HTTPS", "HTTP"].into_iter().zip(&times) {
        report_latency(&format!("{name} new connection and initialize"), times);
    }
}

#[derive(Clone, Copy)]
enum Call {
    Ping,
    Send,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Ping => "ping",
            Call::Send => "send_to_partner",
        }
    }
}

/// One MCP session on one kept-alive connection, with a conversation to
/// send in.
struct Client {
    name: &'static str,
    connection: Connection,
    session: Session,
    send: serde_json::Value,
}

impl Client {
    fn open(name: &'static str, connect: &dyn Fn() -> Connection) -> Client {
        let mut connection = connect();
        let mut session = Session::open(&mut connection);
        let created = session.call(
            &mut connection,
            "create_conversation",
            json!({"my_role": "orchestrator", "partner_role": "worker"}),
        );
        let conversation = &created["structuredContent"];
        let send = json!({
            "conversation_id": conversation["conversation_id"],
            "session_id": "a",
            "token": conversation["session_a_token"],
            "message": "Please review the changes in src/store.rs and run the tests.",
        });
        Client {
            name,
            connection,
            session,
            send,
        }
    }

    fn call(&mut self, call: Call) {
        match call {
            Call::Ping => {
                let body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
                let response = self
                    .connection
                    .post(Some(&self.session.id), body.to_string().as_bytes());
                assert_eq!(response.status, 200);
            }
            Call::Send => {
                let result =
                    self.session
                        .call(&mut self.connection, "send_to_partner", self.send.clone());
                assert_eq!(result["isError"], false, "{result}");
            }
        }
    }
}

//! Benchmarks of the MCP server as an agent sees it, printing latency
//! percentiles, rates and memory.
//!
//! Run with `cargo bench -p bridge-mcp`. Every measurement starts the real
//! `bridge-mcp` binary (`CARGO_BIN_EXE_bridge-mcp`, or `$BENCH_BRIDGE_MCP` to
//! measure another build, e.g. an earlier commit's, with the same client) as
//! a child process and talks to it over stdio through the `rmcp` client, as
//! an agent's MCP client does. All servers share one database in the
//! system's temporary directory (or `$BENCH_DIR`), with rate limiting off
//! (`BRIDGE_RATE_LIMIT=0`) and their log discarded; they inherit the rest of
//! the environment (`BRIDGE_DURABILITY=normal` to measure without a sync per
//! commit). Measures:
//!
//! * the round trip of each tool: one client calling sequentially, 200
//!   warm-up calls and then 2 000 measured per tool; and of MCP's `ping`,
//!   which the server answers without the store (the floor of a call: pipes,
//!   JSON and rmcp on both sides). Two server processes, one per session of
//!   one conversation (as two agents have): session a creates conversations,
//!   sends, sets its status (alternating `working` and `waiting`, so every
//!   call is a change), reads its partner's status and the last 10 messages
//!   of the history (of the 4 400 the conversation has by then); session b
//!   polls an empty inbox, consumes one message that a sent just before
//!   (untimed), and calls `wait_for_messages` with one message already
//!   waiting;
//! * calls per second of 10 clients, each with its own server process and
//!   its own conversation on the one database, all calling in a loop for
//!   5 s: `send_to_partner`, then `check_messages` with `peek` (session a's
//!   inbox, which is empty);
//! * the wake-up latency of `wait_for_messages`: one server process waits
//!   (session b, timeout 30 s, in a loop) while another sends (session a) one
//!   message at a time, after a pseudo-random pause of 0 to 5 ms, and only
//!   once the previous one was delivered. "Wake-up after commit" is from
//!   `send_to_partner` returning to `wait_for_messages` returning (0 if the
//!   wait returned first); "send to delivery" is from the send's start. Both
//!   instants are taken in this process;
//! * start-up: spawning the server until `initialize` completes, 30 times,
//!   on the existing database;
//! * the resident memory (`VmRSS`, and its peak `VmHWM`) of an idle server,
//!   one second after a few calls, and of the session a server after the
//!   round trips.
//!
//! The benchmark's runtime is tokio's current-thread one: one client thread,
//! as an agent's MCP client typically has, which leaves the machine's other
//! cores to the servers. Times include the client's side (JSON encoding,
//! pipes, rmcp's request bookkeeping). The targets are printed beside the
//! numbers, never asserted.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bridge_testkit::process::{Memory, kill, memory, running};
use bridge_testkit::report::{machine, report_latency, report_memory, report_rate};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ClientRequest, Implementation,
    PingRequest,
};
use rmcp::service::{Peer, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

/// Untimed calls before each measured series.
const WARM_UP: usize = 200;
/// Measured calls per tool.
const MEASURED: usize = 2_000;
/// Concurrent clients (server processes) of the rate measurement.
const CLIENTS: usize = 10;
/// How long each rate measurement calls.
const RATE_TIME: Duration = Duration::from_secs(5);
/// Messages of the wake-up measurement (after 20 unrecorded ones).
const WAKE_UPS: usize = 1_000;
/// Start-ups measured.
const STARTS: usize = 30;

/// A message of an ordinary size.
const BODY: &str =
    "Please review the changes in src/store.rs and run the tests; report anything odd.";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("create a temporary directory");
    let database = dir.path().join("bridge.db");
    println!("mcp-bridge MCP server benchmarks (bridge-mcp over stdio, rmcp client)");
    println!("database: {}", database.display());
    if let Some(binary) = std::env::var_os("BENCH_BRIDGE_MCP") {
        println!("server: {}", binary.to_string_lossy());
    }
    if let Some(durability) = std::env::var_os("BRIDGE_DURABILITY") {
        println!("BRIDGE_DURABILITY={}", durability.to_string_lossy());
    }
    println!("{}", machine());
    println!();

    println!("round trip, 1 client, sequential calls (target: p50 <= 300 us)");
    let used = round_trips(&database).await;
    println!();

    println!("{CLIENTS} clients, each its own process and conversation, for {RATE_TIME:?}");
    rates(&database).await;
    println!();

    println!("wait_for_messages wake-up, waiter and sender in 2 processes (target: p99 <= 10 ms)");
    let (after_commit, after_send) = wake_ups(&database).await;
    report_latency("wake-up after commit", &after_commit);
    report_latency("send to delivery", &after_send);
    println!();

    println!("start-up (target: <= 50 ms)");
    let starts = start_ups(&database).await;
    report_latency("spawn to completed initialize", &starts);
    println!();

    println!("resident memory (target: idle VmRSS <= 20 MB)");
    let idle = idle_memory(&database).await;
    report_memory("idle server, after a few calls", idle);
    report_memory(
        &format!("session a server, after {} calls", 8 * (WARM_UP + MEASURED)),
        used,
    );
}

/// One `bridge-mcp` process over stdio and the client connected to it.
struct Server {
    client: Option<RunningService<RoleClient, ClientConfig>>,
    pid: u32,
}

impl Server {
    /// Starts `bridge-mcp` on `database` and completes `initialize`.
    async fn start(database: &Path) -> Server {
        let binary = std::env::var_os("BENCH_BRIDGE_MCP")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_bridge-mcp").into());
        let command = tokio::process::Command::new(binary).configure(|command| {
            command
                .env("BRIDGE_DB", database)
                .env("BRIDGE_RATE_LIMIT", "0")
                .env_remove("RUST_LOG");
        });
        let (transport, _stderr) = TokioChildProcess::builder(command)
            .stderr(Stdio::null())
            .spawn()
            .expect("start bridge-mcp");
        let pid = transport.id().expect("the server's pid");
        let client = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("bridge-mcp-bench", "1"),
        )
        .serve(transport)
        .await
        .expect("MCP handshake over stdio");
        Server {
            client: Some(client),
            pid,
        }
    }

    fn peer(&self) -> &Peer<RoleClient> {
        self.client.as_ref().expect("server stopped").peer()
    }

    /// Ends the session, then makes sure the process is gone.
    async fn stop(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.cancel().await;
        }
        for _ in 0..500 {
            if !running(self.pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        kill(self.pid);
        eprintln!(
            "warning: bridge-mcp {} did not exit when its client went away; killed",
            self.pid
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only if stop() was not reached (a panic): do not leave it behind.
        if self.client.is_some() {
            kill(self.pid);
        }
    }
}

/// A `tools/call` request for `tool` with `arguments` (a JSON object).
fn request(tool: &'static str, arguments: &Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments.clone() else {
        panic!("arguments must be an object");
    };
    CallToolRequestParams::new(tool).with_arguments(arguments)
}

/// Calls `tool`, expects success, and returns the structured content.
async fn call(peer: &Peer<RoleClient>, tool: &'static str, arguments: &Value) -> Value {
    timed(peer, tool, arguments).await.1
}

/// [`call`], timing only the call itself (the request is built before).
async fn timed(
    peer: &Peer<RoleClient>,
    tool: &'static str,
    arguments: &Value,
) -> (Duration, Value) {
    let request = request(tool, arguments);
    let started = Instant::now();
    let result = peer.call_tool(request).await.expect("tools/call answered");
    let elapsed = started.elapsed();
    assert_ne!(
        result.is_error,
        Some(true),
        "{tool} failed: {:?}",
        result.content
    );
    let value = result.structured_content.expect("structured content");
    (elapsed, value)
}

/// The credentials of one session, as the tools take them.
struct Session {
    conversation_id: String,
    session_id: &'static str,
    token: String,
}

impl Session {
    /// The caller's three arguments merged with `more`.
    fn args(&self, more: Value) -> Value {
        let mut arguments = json!({
            "conversation_id": self.conversation_id,
            "session_id": self.session_id,
            "token": self.token,
        });
        if let (Value::Object(arguments), Value::Object(more)) = (&mut arguments, more) {
            arguments.extend(more);
        }
        arguments
    }
}

fn create_args() -> Value {
    json!({"my_role": "orchestrator", "partner_role": "backend worker"})
}

/// Creates a conversation through `peer`; returns sessions a and b.
async fn conversation(peer: &Peer<RoleClient>) -> (Session, Session) {
    let created = call(peer, "create_conversation", &create_args()).await;
    let field = |name: &str| {
        created[name]
            .as_str()
            .expect("a string in the result")
            .to_owned()
    };
    let a = Session {
        conversation_id: field("conversation_id"),
        session_id: "a",
        token: field("session_a_token"),
    };
    let b = Session {
        conversation_id: a.conversation_id.clone(),
        session_id: "b",
        token: field("session_b_token"),
    };
    (a, b)
}

fn message_count(value: &Value) -> usize {
    value["messages"].as_array().expect("messages").len()
}

/// [`WARM_UP`] untimed rounds of `one`, then [`MEASURED`] timed ones; `one`
/// returns the duration of its timed part.
async fn sample(mut one: impl AsyncFnMut() -> Duration) -> Vec<Duration> {
    for _ in 0..WARM_UP {
        one().await;
    }
    let mut samples = Vec::with_capacity(MEASURED);
    for _ in 0..MEASURED {
        samples.push(one().await);
    }
    samples
}

/// The round trip of each tool; returns the memory of session a's server
/// afterwards.
async fn round_trips(database: &Path) -> Memory {
    let a_server = Server::start(database).await;
    let b_server = Server::start(database).await;
    let (a, b) = (a_server.peer(), b_server.peer());
    let (session_a, session_b) = conversation(a).await;

    let samples = sample(async || {
        let ping = ClientRequest::PingRequest(PingRequest::default());
        let started = Instant::now();
        a.send_request(ping).await.expect("ping answered");
        started.elapsed()
    })
    .await;
    report_latency("ping (no store: the floor)", &samples);

    let create = create_args();
    let samples = sample(async || timed(a, "create_conversation", &create).await.0).await;
    report_latency("create_conversation", &samples);

    let send = session_a.args(json!({"message": BODY}));
    let samples = sample(async || timed(a, "send_to_partner", &send).await.0).await;
    report_latency("send_to_partner", &samples);

    // Session b reads everything sent so far, so that its inbox is empty.
    let drain = session_b.args(json!({"limit": 1000}));
    while message_count(&call(b, "check_messages", &drain).await) > 0 {}

    let check = session_b.args(json!({}));
    let samples = sample(async || {
        let (elapsed, value) = timed(b, "check_messages", &check).await;
        assert_eq!(message_count(&value), 0);
        elapsed
    })
    .await;
    report_latency("check_messages finding nothing (poll)", &samples);

    let samples = sample(async || {
        call(a, "send_to_partner", &send).await;
        let (elapsed, value) = timed(b, "check_messages", &check).await;
        assert_eq!(message_count(&value), 1);
        elapsed
    })
    .await;
    report_latency("check_messages consuming 1 message", &samples);

    let statuses = [
        session_a.args(json!({"status": "working"})),
        session_a.args(json!({"status": "waiting"})),
    ];
    let mut next = 0;
    let samples = sample(async || {
        next += 1;
        timed(a, "update_my_status", &statuses[next % 2]).await.0
    })
    .await;
    report_latency("update_my_status (a change each call)", &samples);

    let partner = session_a.args(json!({}));
    let samples = sample(async || timed(a, "check_partner_status", &partner).await.0).await;
    report_latency("check_partner_status", &samples);

    let history = session_a.args(json!({"limit": 10}));
    let samples = sample(async || {
        let (elapsed, value) = timed(a, "read_history", &history).await;
        assert_eq!(message_count(&value), 10);
        elapsed
    })
    .await;
    let sent = 2 * (WARM_UP + MEASURED);
    report_latency(
        &format!("read_history, limit 10, of {sent} messages"),
        &samples,
    );

    let wait = session_b.args(json!({"timeout_seconds": 30}));
    let samples = sample(async || {
        call(a, "send_to_partner", &send).await;
        let (elapsed, value) = timed(b, "wait_for_messages", &wait).await;
        assert_eq!(message_count(&value), 1);
        elapsed
    })
    .await;
    report_latency("wait_for_messages, 1 message waiting", &samples);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = memory(a_server.pid).expect("the session a server is running");
    a_server.stop().await;
    b_server.stop().await;
    used
}

/// Calls per second of [`CLIENTS`] clients, each with its own server and
/// conversation, calling concurrently for [`RATE_TIME`].
async fn rates(database: &Path) {
    let mut servers = Vec::with_capacity(CLIENTS);
    let mut sessions = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let server = Server::start(database).await;
        sessions.push(conversation(server.peer()).await.0);
        servers.push(server);
    }
    let send = |session: &Session| ("send_to_partner", session.args(json!({"message": BODY})));
    let peek = |session: &Session| ("check_messages", session.args(json!({"peek": true})));
    for (what, make) in [
        (
            "send_to_partner",
            &send as &dyn Fn(&Session) -> (&'static str, Value),
        ),
        ("check_messages peek (empty inbox)", &peek),
    ] {
        let calls: Vec<_> = sessions.iter().map(make).collect();
        for (server, (tool, arguments)) in servers.iter().zip(&calls) {
            for _ in 0..20 {
                call(server.peer(), tool, arguments).await;
            }
        }
        let started = Instant::now();
        let deadline = started + RATE_TIME;
        let mut clients = tokio::task::JoinSet::new();
        for (server, (tool, arguments)) in servers.iter().zip(calls) {
            let peer = server.peer().clone();
            clients.spawn(async move {
                let mut count = 0;
                while Instant::now() < deadline {
                    call(&peer, tool, &arguments).await;
                    count += 1;
                }
                count
            });
        }
        let mut total = 0;
        while let Some(count) = clients.join_next().await {
            total += count.expect("a client task");
        }
        report_rate(
            &format!("{what}, {CLIENTS} clients"),
            total,
            started.elapsed(),
        );
    }
    for server in servers {
        server.stop().await;
    }
}

/// A small deterministic pseudo-random sequence (xorshift64).
struct Pauses(u64);

impl Pauses {
    /// The next pause, 0 to 5 ms.
    fn next(&mut self) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_micros(self.0 % 5_001)
    }
}

/// The wake-up latency of `wait_for_messages`: returns "wake-up after
/// commit" and "send to delivery" of each of [`WAKE_UPS`] messages.
async fn wake_ups(database: &Path) -> (Vec<Duration>, Vec<Duration>) {
    const UNRECORDED: usize = 20;
    let total = UNRECORDED + WAKE_UPS;
    let sender = Server::start(database).await;
    let waiter = Server::start(database).await;
    let (session_a, session_b) = conversation(sender.peer()).await;
    let (delivered, mut deliveries) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();

    let wait = session_b.args(json!({"timeout_seconds": 30}));
    let waiting = async {
        let mut received = 0;
        while received < total {
            let value = call(waiter.peer(), "wait_for_messages", &wait).await;
            let returned = Instant::now();
            for message in value["messages"].as_array().expect("messages") {
                let id = message["id"].as_i64().expect("a message id");
                delivered.send((id, returned)).expect("the sender listens");
                received += 1;
            }
        }
    };

    let send = session_a.args(json!({"message": BODY}));
    let sending = async {
        let mut pauses = Pauses(0x9E37_79B9_7F4A_7C15);
        let mut after_commit = Vec::with_capacity(WAKE_UPS);
        let mut after_send = Vec::with_capacity(WAKE_UPS);
        for n in 0..total {
            tokio::time::sleep(pauses.next()).await;
            let send_started = Instant::now();
            let sent = call(sender.peer(), "send_to_partner", &send).await;
            let send_returned = Instant::now();
            let (id, wait_returned) = deliveries.recv().await.expect("a delivery");
            assert_eq!(Some(id), sent["message_id"].as_i64(), "delivered in order");
            if n >= UNRECORDED {
                after_commit.push(wait_returned.saturating_duration_since(send_returned));
                after_send.push(wait_returned.saturating_duration_since(send_started));
            }
        }
        (after_commit, after_send)
    };

    let ((), latencies) = tokio::join!(waiting, sending);
    sender.stop().await;
    waiter.stop().await;
    latencies
}

/// Spawn to completed `initialize`, [`STARTS`] times.
async fn start_ups(database: &Path) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(STARTS);
    for _ in 0..STARTS {
        let started = Instant::now();
        let server = Server::start(database).await;
        samples.push(started.elapsed());
        server.stop().await;
    }
    samples
}

/// The memory of a server that made a few calls and then idled for 1 s.
async fn idle_memory(database: &Path) -> Memory {
    let server = Server::start(database).await;
    let peer = server.peer();
    let (a, _b) = conversation(peer).await;
    call(peer, "send_to_partner", &a.args(json!({"message": BODY}))).await;
    call(peer, "check_messages", &a.args(json!({}))).await;
    call(
        peer,
        "update_my_status",
        &a.args(json!({"status": "working"})),
    )
    .await;
    call(peer, "check_partner_status", &a.args(json!({}))).await;
    call(peer, "read_history", &a.args(json!({"limit": 10}))).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = memory(server.pid).expect("the idle server is running");
    server.stop().await;
    idle
}

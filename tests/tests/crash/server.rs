//! `bridge-mcp` over raw stdio, one JSON-RPC message per line as an agent's
//! client speaks to it, for servers that get killed: any call may find the
//! server gone ([`Lost`]), and an answer may be read in part only.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use bridge_tests::bin;

/// How long an answer may take before the test calls it a hang.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a client keeps its current server process, so that another task
/// can kill it. The process stays in the slot, unreaped, until its
/// [`Server`] is dropped: a kill through the slot never hits a reused pid.
pub type Slot = Arc<Mutex<Option<Child>>>;

/// Sends SIGKILL to the server in `slot`, if there is one. Returns whether
/// there was.
pub fn kill(slot: &Slot) -> bool {
    let mut slot = slot.lock().unwrap();
    slot.as_mut()
        .is_some_and(|child| child.start_kill().is_ok())
}

/// The server went away (killed): its pipes are closed.
#[derive(Debug)]
pub struct Lost;

impl From<std::io::Error> for Lost {
    fn from(_: std::io::Error) -> Lost {
        Lost
    }
}

/// A `bridge-mcp` process over stdio; killed when dropped.
pub struct Server {
    slot: Slot,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Server {
    /// Starts `bridge-mcp` on `database` (rate limit off), keeps it in
    /// `slot`, and completes the MCP handshake.
    pub async fn start(database: &Path, slot: &Slot) -> Result<Server, Lost> {
        let mut child = Command::new(bin::path("bridge-mcp"))
            .env("BRIDGE_DB", database)
            .env("BRIDGE_RATE_LIMIT", "0")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start bridge-mcp");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let previous = slot.lock().unwrap().replace(child);
        assert!(previous.is_none(), "one server per slot");
        let mut server = Server {
            slot: Arc::clone(slot),
            stdin,
            stdout,
            next_id: 0,
        };
        let id = server
            .request(
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "crash", "version": "1"}}),
            )
            .await?;
        let answer = server.answer(id).await?;
        assert!(answer["result"].is_object(), "initialize: {answer}");
        server
            .write(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(server)
    }

    /// Kills the server (SIGKILL) and forgets it.
    pub fn kill(self) {
        kill(&self.slot);
    }

    async fn write(&mut self, message: &Value) -> Result<(), Lost> {
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Sends a request; returns its id.
    async fn request(&mut self, method: &str, params: Value) -> Result<u64, Lost> {
        self.next_id += 1;
        let id = self.next_id;
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        Ok(id)
    }

    /// Sends `tools/call` for `tool` with `arguments`, without reading the
    /// answer; returns the request's id.
    pub async fn send_call(&mut self, tool: &str, arguments: Value) -> Result<u64, Lost> {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await
    }

    /// Reads up to the answer to request `id` (the whole JSON-RPC
    /// response).
    pub async fn answer(&mut self, id: u64) -> Result<Value, Lost> {
        loop {
            let mut line = Vec::new();
            let read =
                tokio::time::timeout(ANSWER_TIMEOUT, self.stdout.read_until(b'\n', &mut line))
                    .await
                    .expect("bridge-mcp answers within 30 s")?;
            if read == 0 || line.last() != Some(&b'\n') {
                return Err(Lost);
            }
            let message: Value = serde_json::from_slice(&line)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&line)));
            if message["id"] == json!(id) {
                return Ok(message);
            }
        }
    }

    /// Reads at most `bytes` bytes of the next line. Returns the line as
    /// JSON if it ended within them, `None` if it was cut there (the rest
    /// is left unread).
    pub async fn read_at_most(&mut self, bytes: usize) -> Result<Option<Value>, Lost> {
        let mut line = Vec::new();
        while line.len() < bytes {
            let available = tokio::time::timeout(ANSWER_TIMEOUT, self.stdout.fill_buf())
                .await
                .expect("bridge-mcp writes within 30 s")?;
            if available.is_empty() {
                return Err(Lost);
            }
            let room = bytes - line.len();
            let newline = available.iter().take(room).position(|byte| *byte == b'\n');
            let take = newline.map_or(available.len().min(room), |at| at + 1);
            line.extend_from_slice(&available[..take]);
            self.stdout.consume(take);
            if newline.is_some() {
                return Ok(Some(
                    serde_json::from_slice(&line).expect("a whole line is JSON"),
                ));
            }
        }
        Ok(None)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropping the child kills it (kill_on_drop) and lets tokio reap it.
        let child = self.slot.lock().map(|mut slot| slot.take());
        if let Ok(Some(mut child)) = child {
            let _ = child.start_kill();
        }
    }
}

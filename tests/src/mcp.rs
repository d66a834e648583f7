//! MCP clients for tests: an agent talking to its own `bridge-mcp` over
//! stdio, or to a shared `bridge-mcp --http`, through the `rmcp` client.
//!
//! Every process started here is stopped by [`Agent::stop`] or
//! [`HttpServer`]'s drop, and killed if a test panics before.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation, Tool,
};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

use bridge_testkit::process::{kill, running};

use crate::bin;

/// One agent's MCP session.
pub struct Agent {
    client: Option<RunningService<RoleClient, ClientConfig>>,
    /// The agent's own server process, for stdio agents.
    server: Option<u32>,
}

fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("bridge-tests", "1"),
    )
}

impl Agent {
    /// Starts `bridge-mcp` on `database` (rate limit off, extra environment
    /// `env`) and connects to it over stdio.
    pub async fn stdio(database: &Path, env: &[(&str, &str)]) -> Agent {
        Agent::stdio_with_stderr(database, env, Stdio::null())
            .await
            .0
    }

    /// Like [`Agent::stdio`], with the server's stderr (its log) readable:
    /// read it to the end after [`Agent::stop`].
    pub async fn stdio_logged(
        database: &Path,
        env: &[(&str, &str)],
    ) -> (Agent, tokio::process::ChildStderr) {
        let (agent, stderr) = Agent::stdio_with_stderr(database, env, Stdio::piped()).await;
        (agent, stderr.expect("a piped stderr"))
    }

    async fn stdio_with_stderr(
        database: &Path,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> (Agent, Option<tokio::process::ChildStderr>) {
        let command = tokio::process::Command::new(bin::path("bridge-mcp")).configure(|command| {
            command
                .env("BRIDGE_DB", database)
                .env("BRIDGE_RATE_LIMIT", "0")
                .env_remove("RUST_LOG");
            for (key, value) in env {
                command.env(key, value);
            }
        });
        let (transport, stderr) = TokioChildProcess::builder(command)
            .stderr(stderr)
            .spawn()
            .expect("start bridge-mcp");
        let server = transport.id();
        let client = client_config()
            .serve(transport)
            .await
            .expect("MCP handshake over stdio");
        let agent = Agent {
            client: Some(client),
            server,
        };
        (agent, stderr)
    }

    /// Connects to a `bridge-mcp --http` serving HTTPS at `url`, trusting
    /// what `tls` trusts, as an agent's MCP client does.
    pub async fn https(url: &str, tls: &rustls::ClientConfig) -> Result<Agent, String> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .build()
            .map_err(|error| error.to_string())?;
        let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
        Agent::over(StreamableHttpClientTransport::with_client(client, config)).await
    }

    /// Connects to a `bridge-mcp --http` at `url` with `key` as its
    /// bearer key, over HTTPS trusting what `tls` trusts if given.
    pub async fn keyed(
        url: &str,
        key: &str,
        tls: Option<&rustls::ClientConfig>,
    ) -> Result<Agent, String> {
        crate::tls::install_provider();
        let mut client = reqwest::Client::builder();
        if let Some(tls) = tls {
            client = client.tls_backend_preconfigured(tls.clone());
        }
        let client = client.build().map_err(|error| error.to_string())?;
        let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(key);
        Agent::over(StreamableHttpClientTransport::with_client(client, config)).await
    }

    /// Connects to a `bridge-mcp --http` at `url`, sending `headers` with
    /// every request.
    pub async fn http(url: &str, headers: &[(http::HeaderName, &str)]) -> Result<Agent, String> {
        crate::tls::install_provider();
        let headers: HashMap<_, _> = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.clone(),
                    http::HeaderValue::from_str(value).expect("header value"),
                )
            })
            .collect();
        let config =
            StreamableHttpClientTransportConfig::with_uri(url.to_owned()).custom_headers(headers);
        Agent::over(StreamableHttpClientTransport::from_config(config)).await
    }

    /// Initializes an MCP session over `transport` (no server process of
    /// its own).
    async fn over<C>(transport: StreamableHttpClientTransport<C>) -> Result<Agent, String>
    where
        C: rmcp::transport::streamable_http_client::StreamableHttpClient + Send + 'static,
    {
        let client = client_config()
            .serve(transport)
            .await
            .map_err(|error| error.to_string())?;
        Ok(Agent {
            client: Some(client),
            server: None,
        })
    }

    /// Creates a conversation with `arguments` (roles, team, ...); returns
    /// its id and the tokens of sessions a and b.
    pub async fn create(&self, arguments: Value) -> (String, String, String) {
        let created = self.ok("create_conversation", arguments).await;
        let text = |key: &str| created[key].as_str().expect(key).to_owned();
        (
            text("conversation_id"),
            text("session_a_token"),
            text("session_b_token"),
        )
    }

    fn client(&self) -> &RunningService<RoleClient, ClientConfig> {
        self.client.as_ref().expect("agent stopped")
    }

    /// `tools/list`.
    pub async fn tools(&self) -> Vec<Tool> {
        self.client().list_all_tools().await.expect("tools/list")
    }

    /// The negotiated protocol version and the server's name.
    pub fn server_info(&self) -> (String, String) {
        let info = self.client().peer_info().expect("initialized");
        let name = info
            .server_info
            .as_ref()
            .map_or_else(String::new, |server| server.name.clone());
        (info.protocol_version.to_string(), name)
    }

    /// Calls `tool` with `arguments` (a JSON object).
    pub async fn call(&self, tool: &str, arguments: Value) -> Reply {
        let Value::Object(arguments) = arguments else {
            panic!("arguments must be an object");
        };
        let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let result = self
            .client()
            .call_tool(request)
            .await
            .expect("tools/call answered");
        Reply(result)
    }

    /// Calls `tool`; the protocol error (an unknown tool, say) as text.
    pub async fn try_call(&self, tool: &str, arguments: Value) -> Result<Reply, String> {
        let Value::Object(arguments) = arguments else {
            panic!("arguments must be an object");
        };
        let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        self.client()
            .call_tool(request)
            .await
            .map(Reply)
            .map_err(|error| error.to_string())
    }

    /// Calls `tool` and expects success; returns the structured content.
    pub async fn ok(&self, tool: &str, arguments: Value) -> Value {
        let reply = self.call(tool, arguments).await;
        assert!(!reply.is_error(), "{tool} failed: {}", reply.text());
        reply.structured()
    }

    /// Calls `tool` and expects a tool error; returns its text.
    pub async fn refused(&self, tool: &str, arguments: Value) -> String {
        let reply = self.call(tool, arguments).await;
        assert!(reply.is_error(), "{tool} succeeded: {}", reply.text());
        assert!(reply.0.structured_content.is_none());
        reply.text()
    }

    /// Ends the session; a stdio agent's server must then exit.
    pub async fn stop(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.cancel().await;
        }
        if let Some(pid) = self.server.take() {
            for _ in 0..100 {
                if !running(pid) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            kill(pid);
            panic!("bridge-mcp {pid} did not exit when its client went away");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(pid) = self.server {
            kill(pid);
        }
    }
}

/// A tool's answer.
pub struct Reply(pub CallToolResult);

impl Reply {
    /// Whether it is a tool error.
    pub fn is_error(&self) -> bool {
        self.0.is_error == Some(true)
    }

    /// The text content, joined.
    pub fn text(&self) -> String {
        self.0
            .content
            .iter()
            .filter_map(|content| content.as_text().map(|text| text.text.clone()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The structured content.
    pub fn structured(&self) -> Value {
        self.0
            .structured_content
            .clone()
            .expect("structured content")
    }
}

/// The arguments every authenticated tool takes, merged with `more`.
pub fn caller(conversation_id: &str, session: &str, token: &str, more: Value) -> Value {
    let mut arguments = serde_json::json!({
        "conversation_id": conversation_id,
        "session_id": session,
        "token": token,
    });
    if let (Value::Object(arguments), Value::Object(more)) = (&mut arguments, more) {
        arguments.extend(more);
    }
    arguments
}

/// A `bridge-mcp --http` process on a loopback port of its choosing.
pub struct HttpServer {
    child: Child,
    /// What it writes to stderr, kept by a thread that drains it.
    log: Arc<Mutex<String>>,
    drain: Option<std::thread::JoinHandle<()>>,
    /// `http://127.0.0.1:<port>/mcp` (`https://` with TLS).
    pub url: String,
}

impl HttpServer {
    /// Starts the server on `database` with `args` after `--http 127.0.0.1:0`,
    /// and waits until it listens.
    pub fn start(database: &Path, args: &[&str]) -> HttpServer {
        HttpServer::start_on("127.0.0.1:0", database, args)
    }

    /// Starts the server as [`HttpServer::start`] does, on `addr`.
    pub fn start_on(addr: &str, database: &Path, args: &[&str]) -> HttpServer {
        HttpServer::start_under(&[], addr, database, args)
    }

    /// Starts the server as [`HttpServer::start_on`] does, under `wrapper`
    /// (e.g. `ip netns exec NAME`, which runs it in a network namespace).
    pub fn start_under(wrapper: &[&str], addr: &str, database: &Path, args: &[&str]) -> HttpServer {
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(bin::path("bridge-mcp"));
                command
            }
            None => Command::new(bin::path("bridge-mcp")),
        };
        let mut child = command
            .args(["--http", addr])
            .args(args)
            .env("BRIDGE_DB", database)
            .env("BRIDGE_RATE_LIMIT", "0")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bridge-mcp --http");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("bridge-mcp --http exited before listening");
            };
            if let Some((_, url)) = line.split_once("listening on ") {
                break url.trim().to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        let log = Arc::new(Mutex::new(String::new()));
        let kept = Arc::clone(&log);
        let drain = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut kept = kept.lock().unwrap_or_else(|poison| poison.into_inner());
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        HttpServer {
            child,
            log,
            drain: Some(drain),
            url,
        }
    }

    /// Starts the server as [`HttpServer::start`] does, serving HTTPS with
    /// `tls`.
    pub fn start_tls(database: &Path, tls: &crate::tls::ServerFiles, args: &[&str]) -> HttpServer {
        HttpServer::start_tls_on("127.0.0.1:0", database, tls, args)
    }

    /// Starts the server as [`HttpServer::start_tls`] does, on `addr`.
    pub fn start_tls_on(
        addr: &str,
        database: &Path,
        tls: &crate::tls::ServerFiles,
        args: &[&str],
    ) -> HttpServer {
        let certificate = tls.certificate.to_str().expect("a UTF-8 path");
        let key = tls.key.to_str().expect("a UTF-8 path");
        let mut all = vec!["--tls-cert", certificate, "--tls-key", key];
        all.extend_from_slice(args);
        HttpServer::start_on(addr, database, &all)
    }

    /// Stops the server and returns everything it wrote to stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        self.log
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `host:port` the server listens on.
    pub fn authority(&self) -> &str {
        self.url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `bridge-mcp` spoken to over raw stdio: one JSON-RPC message per line,
/// written and read by the test itself (malformed lines, answers left
/// unread). Killed when dropped.
pub struct RawStdio {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl RawStdio {
    /// Starts `bridge-mcp` on `database` (rate limit off) with `args`.
    pub fn start(database: &Path, args: &[&str]) -> RawStdio {
        RawStdio::start_under(&[], database, args)
    }

    /// Starts `bridge-mcp` as [`RawStdio::start`] does, run by `wrapper` (a
    /// program and its arguments, `strace …` say; none if empty).
    pub fn start_under(wrapper: &[&str], database: &Path, args: &[&str]) -> RawStdio {
        let binary = bin::path("bridge-mcp");
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(args)
            .env("BRIDGE_DB", database)
            .env("BRIDGE_RATE_LIMIT", "0")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bridge-mcp");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        RawStdio {
            child,
            stdin,
            stdout,
        }
    }

    /// Starts it and completes the MCP handshake.
    pub fn initialized(database: &Path, args: &[&str]) -> RawStdio {
        RawStdio::initialized_under(&[], database, args)
    }

    /// Starts it under `wrapper` (see [`RawStdio::start_under`]) and
    /// completes the MCP handshake.
    pub fn initialized_under(wrapper: &[&str], database: &Path, args: &[&str]) -> RawStdio {
        let mut raw = RawStdio::start_under(wrapper, database, args);
        raw.send(
            serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"}}})
            .to_string()
            .as_bytes(),
        );
        let initialized = raw.answer();
        assert!(initialized["result"].is_object(), "{initialized}");
        raw.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        raw
    }

    /// Writes `line` and a newline.
    pub fn send(&mut self, line: &[u8]) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line).expect("write a line");
        stdin.write_all(b"\n").expect("write a newline");
        stdin.flush().expect("flush");
    }

    /// Calls `tool` with `arguments` (request id `id`) without reading the
    /// answer.
    pub fn call(&mut self, id: u64, tool: &str, arguments: Value) {
        self.send(
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": tool, "arguments": arguments}})
            .to_string()
            .as_bytes(),
        );
    }

    /// The next line the server writes, as JSON.
    pub fn answer(&mut self) -> Value {
        let mut line = String::new();
        let read = self
            .stdout
            .as_mut()
            .expect("stdout open")
            .read_line(&mut line)
            .expect("read a line");
        assert!(read > 0, "bridge-mcp closed its stdout");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"))
    }

    /// `kill -9`, and waits for the process to end.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes stdin (the client is done) and waits for a clean exit.
    pub fn finish(mut self) -> std::process::ExitStatus {
        self.stdin = None;
        self.child.wait().expect("wait for bridge-mcp")
    }
}

impl Drop for RawStdio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A raw HTTP/1.1 client of `bridge-mcp --http`, for what an MCP client
//! library hides: malformed bodies, the session header, the TCP connection
//! a request goes on, a connection cut in the middle of an answer.
//!
//! Requests are sequential on one [`Connection`] (keep-alive), plain or TLS;
//! responses are read whole, with `Content-Length` or chunked bodies (the
//! server's server-sent events). Everything is blocking: tests run it on
//! threads or `spawn_blocking`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use serde_json::{Value, json};

/// One TCP connection to the server.
pub struct Connection {
    stream: BufReader<Stream>,
    authority: String,
    /// Extra header lines sent with every request (`Authorization`, say).
    headers: String,
    /// Server-sent events read but not yet returned.
    events: String,
}

/// A connection's bytes: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.read(buf),
            Stream::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.write(buf),
            Stream::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.flush(),
            Stream::Tls(stream) => stream.flush(),
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The JSON-RPC messages of the body: its `data:` lines if it is a
    /// stream of events, else the body itself.
    pub fn messages(&self) -> Vec<Value> {
        let text = self.text();
        if self
            .header("content-type")
            .is_some_and(|kind| kind.starts_with("text/event-stream"))
        {
            text.lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(str::trim)
                .filter(|data| !data.is_empty())
                .map(|data| serde_json::from_str(data).expect("an event of JSON"))
                .collect()
        } else {
            vec![serde_json::from_str(&text).unwrap_or(Value::Null)]
        }
    }

    /// The one JSON-RPC response among the messages.
    pub fn answer(&self) -> Value {
        self.messages()
            .into_iter()
            .find(|message| message.get("result").is_some() || message.get("error").is_some())
            .unwrap_or_else(|| panic!("no answer in {}: {}", self.status, self.text()))
    }
}

impl Connection {
    /// Connects to `authority` (`host:port`).
    pub fn open(authority: &str) -> Connection {
        Connection {
            stream: BufReader::new(Stream::Plain(tcp(authority))),
            authority: authority.to_owned(),
            headers: String::new(),
            events: String::new(),
        }
    }

    /// Connects to `authority` over TLS with `config`, and completes the
    /// handshake (the server's certificate must name the host of
    /// `authority`); the error if it fails.
    pub fn open_tls(authority: &str, config: Arc<ClientConfig>) -> Result<Connection, String> {
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).map_err(|error| error.to_string())?;
        let client = ClientConnection::new(config, name).map_err(|error| error.to_string())?;
        let mut stream = StreamOwned::new(client, tcp(authority));
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|error| error.to_string())?;
        }
        Ok(Connection {
            stream: BufReader::new(Stream::Tls(Box::new(stream))),
            authority: authority.to_owned(),
            headers: String::new(),
            events: String::new(),
        })
    }

    /// The certificate the server presented, over TLS.
    pub fn server_certificate(&self) -> Option<CertificateDer<'static>> {
        match self.stream.get_ref() {
            Stream::Plain(_) => None,
            Stream::Tls(stream) => stream
                .conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|certificate| certificate.clone().into_owned()),
        }
    }

    /// Sends `Authorization: <value>` with every request from now on.
    pub fn authorize(&mut self, value: &str) {
        self.headers
            .push_str(&format!("Authorization: {value}\r\n"));
    }

    /// Sends `POST /mcp` with `body` (JSON unless `content_type` says
    /// otherwise) and the session header if given, without reading the
    /// response.
    pub fn send(&mut self, session: Option<&str>, content_type: &str, body: &[u8]) {
        self.send_to("/mcp", session, content_type, body);
    }

    /// Sends `POST <target>` as [`Connection::send`] does.
    pub fn send_to(
        &mut self,
        target: &str,
        session: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) {
        let mut request = format!(
            "POST {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            self.authority,
            body.len()
        );
        if let Some(session) = session {
            request.push_str(&format!(
                "Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-06-18\r\n"
            ));
        }
        request.push_str(&self.headers);
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(body);
        self.stream
            .get_mut()
            .write_all(&request)
            .expect("send the request");
    }

    /// `POST /mcp` of a JSON body, and its response.
    pub fn post(&mut self, session: Option<&str>, body: &[u8]) -> Response {
        self.send(session, "application/json", body);
        self.read()
    }

    /// A request of another method (`DELETE`, say) with the session header.
    pub fn request(&mut self, method: &str, session: &str) -> Response {
        let request = format!(
            "{method} /mcp HTTP/1.1\r\nHost: {}\r\nMcp-Session-Id: {session}\r\n\
             MCP-Protocol-Version: 2025-06-18\r\nContent-Length: 0\r\n{}\r\n",
            self.authority, self.headers
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .expect("send the request");
        self.read()
    }

    /// `GET <target>` with the headers set so far and `extra` ones (a
    /// `Host` among them replaces the server's authority), and its
    /// response.
    pub fn get(&mut self, target: &str, extra: &[(&str, &str)]) -> Response {
        self.send_get(target, extra);
        self.read()
    }

    /// Sends `GET <target>` for a stream of server-sent events and reads
    /// its head; [`Connection::next_event`] reads the events.
    pub fn open_events(&mut self, target: &str, extra: &[(&str, &str)]) -> u16 {
        let mut extra = extra.to_vec();
        extra.push(("Accept", "text/event-stream"));
        self.send_get(target, &extra);
        self.read_head().0
    }

    /// Sends `GET <target>` as [`Connection::get`] does, without reading.
    fn send_get(&mut self, target: &str, extra: &[(&str, &str)]) {
        let host = extra
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("host"))
            .map_or(self.authority.as_str(), |(_, value)| value);
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n");
        for (name, value) in extra {
            if !name.eq_ignore_ascii_case("host") {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        request.push_str(&self.headers);
        request.push_str("\r\n");
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .expect("send the request");
    }

    /// The next event of a stream [`Connection::open_events`] opened (its
    /// name and its data, lines joined by newlines; comments skipped), or
    /// `None` when the stream ends or `timeout` passes first.
    pub fn next_event(&mut self, timeout: std::time::Duration) -> Option<(String, String)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(at) = self.events.find("\n\n") {
                let block: String = self.events.drain(..at + 2).collect();
                let mut name = String::from("message");
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim_start().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                    }
                }
                if !data.is_empty() || name != "message" {
                    return Some((name, data.join("\n")));
                }
                continue;
            }
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            self.set_read_timeout(left);
            let mut size = String::new();
            self.stream.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                return None;
            }
            let mut chunk = vec![0; size + 2];
            self.stream.read_exact(&mut chunk).ok()?;
            self.events
                .push_str(&String::from_utf8_lossy(&chunk[..size]).replace("\r\n", "\n"));
        }
    }

    fn set_read_timeout(&mut self, timeout: std::time::Duration) {
        let timeout = Some(timeout.max(std::time::Duration::from_millis(1)));
        let _ = match self.stream.get_ref() {
            Stream::Plain(tcp) => tcp.set_read_timeout(timeout),
            Stream::Tls(tls) => tls.sock.set_read_timeout(timeout),
        };
    }

    /// Reads the status line and headers only, byte by byte: nothing of
    /// the body is read, not even into a buffer.
    pub fn read_head_only(&mut self) -> u16 {
        assert!(self.stream.buffer().is_empty(), "nothing buffered yet");
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.stream
                .get_mut()
                .read_exact(&mut byte)
                .expect("a byte of the head");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        head.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head:?}"))
    }

    /// Reads the status line and headers only.
    pub fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        let mut status = String::new();
        self.stream.read_line(&mut status).expect("a status line");
        let code = status
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).expect("a header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        (code, headers)
    }

    /// Reads one response whole.
    pub fn read(&mut self) -> Response {
        let (status, headers) = self.read_head();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let mut body = Vec::new();
        if header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
            loop {
                let mut size = String::new();
                self.stream.read_line(&mut size).expect("a chunk size");
                let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).expect("a chunk");
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = header("content-length") {
            body = vec![0; length.parse().expect("a length")];
            self.stream.read_exact(&mut body).expect("the body");
        }
        Response {
            status,
            headers,
            body,
        }
    }

    /// Closes the connection at once, whatever it has not read: the kernel
    /// resets it if an answer is waiting unread.
    pub fn cut(self) {
        drop(self.stream);
    }
}

/// A TCP connection to `authority` as an HTTP client library makes it: no
/// request waits for the acknowledgement of the one before (no Nagle), and
/// a read gives up after 30 s.
fn tcp(authority: &str) -> TcpStream {
    let stream = TcpStream::connect(authority).expect("connect to the server");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    stream
}

/// An MCP session opened over a raw connection.
pub struct Session {
    /// The `Mcp-Session-Id`.
    pub id: String,
    next_id: u64,
}

impl Session {
    /// Initializes a session on `connection`.
    pub fn open(connection: &mut Connection) -> Session {
        let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}});
        let response = connection.post(None, initialize.to_string().as_bytes());
        assert_eq!(response.status, 200, "{}", response.text());
        let id = response
            .header("mcp-session-id")
            .expect("a session id")
            .to_owned();
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let accepted = connection.post(Some(&id), initialized.to_string().as_bytes());
        assert_eq!(accepted.status, 202, "{}", accepted.text());
        Session { id, next_id: 1 }
    }

    /// The body of a `tools/call` of `tool` with `arguments`.
    pub fn call_body(&mut self, tool: &str, arguments: Value) -> Vec<u8> {
        self.next_id += 1;
        json!({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
               "params": {"name": tool, "arguments": arguments}})
        .to_string()
        .into_bytes()
    }

    /// Calls `tool` on `connection`; returns the tool result.
    pub fn call(&mut self, connection: &mut Connection, tool: &str, arguments: Value) -> Value {
        let body = self.call_body(tool, arguments);
        let response = connection.post(Some(&self.id), &body);
        assert_eq!(response.status, 200, "{}", response.text());
        response.answer()["result"].clone()
    }
}

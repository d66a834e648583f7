//! The hub as a `bridge-mcp --http` on another machine (`--url`): MCP over
//! Streamable HTTP with `rmcp`'s client on `reqwest`, over HTTPS with
//! rustls (ring, the workspace's one provider), the session token as the
//! bearer key.
//!
//! The hub's certificate must verify against `--ca-file` (a private CA) or
//! the system's trusted CAs; one that does not is a configuration error
//! (exit 78), never a reason to wait. A hub that cannot be reached (down,
//! restarting, the link cut) is waited for: the client is dropped and made
//! anew, with backoff from half a second to 30 seconds, and the wait is
//! logged once when it begins and once when it ends. Every call has a time
//! limit, so a link that goes silent without closing is noticed too.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_cli::exit::Misconfigured;
use bridge_core::Credentials;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, JsonObject,
};
use rmcp::service::{ClientInitializeError, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::{RoleClient, ServiceExt};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::{HubError, Incoming, Start, back_off};

/// How long a TCP connection to the hub may take.
const CONNECT_TIME: Duration = Duration::from_secs(10);

/// How long a call may take beyond what it asks the hub to wait.
const CALL_TIME: Duration = Duration::from_secs(10);

/// The first pause before the hub is tried again, and the longest.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// Where the hub is and whom to trust.
#[derive(Clone)]
pub struct RemoteOptions {
    url: String,
    http: reqwest::Client,
}

impl RemoteOptions {
    /// Checks `url` (`https://`, or `http://` for a hub on loopback or
    /// behind a tunnel) and builds the HTTP client: trusting the CAs of
    /// `ca_file` if given, else the system's.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<RemoteOptions, Misconfigured> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|error| Misconfigured(format!("--url {url:?} is not a URL: {error}")))?;
        match parsed.scheme() {
            "https" => {}
            "http" => {
                let host = parsed.host_str().unwrap_or_default();
                let loopback = host == "localhost"
                    || host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if !loopback {
                    tracing::warn!(
                        url,
                        "--url is plain http: the token crosses the network unencrypted"
                    );
                }
            }
            scheme => {
                return Err(Misconfigured(format!(
                    "--url {url:?} has the scheme {scheme:?}; the hub is reached with https:// \
                     (or http:// on loopback), e.g. https://hub.example.org:8765/mcp"
                )));
            }
        }
        // rmcp and reqwest build nothing of their own with another provider,
        // but a default makes sure of it. An error: ring is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = match ca_file {
            Some(path) => private_roots(path)?,
            None => system_roots(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| Misconfigured(format!("configuring TLS: {error}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIME)
            .tcp_nodelay(true)
            .build()
            .map_err(|error| Misconfigured(format!("configuring the HTTP client: {error}")))?;
        Ok(RemoteOptions {
            url: url.to_owned(),
            http,
        })
    }
}

/// The CAs of a PEM file; a file that cannot be read or holds none is named.
fn private_roots(path: &Path) -> Result<rustls::RootCertStore, Misconfigured> {
    let named = |problem: String| Misconfigured(format!("--ca-file {}: {problem}", path.display()));
    let bytes = std::fs::read(path).map_err(|error| named(format!("cannot be read: {error}")))?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|error| named(format!("is not PEM: {error}")))?;
    if certificates.is_empty() {
        return Err(named(
            "holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| named(format!("holds a certificate that cannot be used: {error}")))?;
    }
    Ok(roots)
}

/// The system's trusted CAs; those that cannot be used are skipped.
fn system_roots() -> rustls::RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(%error, "skipping part of the system's trusted CAs");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("the system trusts no CA; give the hub's with --ca-file");
    }
    roots
}

type Client = RunningService<RoleClient, ClientConfig>;

/// A `bridge-mcp --http` on another machine, and the MCP session with it.
pub struct RemoteHub {
    options: RemoteOptions,
    credentials: Credentials,
    /// `None` once a call found the hub out of reach: the next makes anew.
    client: Option<Client>,
    /// When the hub was last found out of reach, until it answers again.
    down_since: Option<Instant>,
}

impl RemoteHub {
    /// Connects, waiting with backoff while the hub cannot be reached;
    /// `None` if `stop` came first. A refused token, a certificate that
    /// does not verify, or a URL that is no MCP endpoint end it at once.
    pub async fn connect(
        options: RemoteOptions,
        credentials: Credentials,
        stop: impl Future,
    ) -> Result<Option<RemoteHub>, HubError> {
        let mut hub = RemoteHub::new(options, credentials);
        if hub.recover(stop).await? {
            Ok(Some(hub))
        } else {
            Ok(None)
        }
    }

    /// Connects once; a hub out of reach is the error.
    pub async fn connect_once(
        options: RemoteOptions,
        credentials: Credentials,
    ) -> Result<RemoteHub, HubError> {
        let mut hub = RemoteHub::new(options, credentials);
        hub.client = Some(hub.open().await?);
        Ok(hub)
    }

    /// Not connected yet.
    fn new(options: RemoteOptions, credentials: Credentials) -> RemoteHub {
        RemoteHub {
            options,
            credentials,
            client: None,
            down_since: None,
        }
    }

    /// The hub's URL.
    pub fn location(&self) -> String {
        self.options.url.clone()
    }

    /// Initializes an MCP session with the hub.
    async fn open(&self) -> Result<Client, HubError> {
        let config = StreamableHttpClientTransportConfig::with_uri(self.options.url.clone())
            .auth_header(self.credentials.token.reveal());
        let transport =
            StreamableHttpClientTransport::with_client(self.options.http.clone(), config);
        let info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("mcp-bridge-daemon", env!("CARGO_PKG_VERSION")),
        );
        let opened = tokio::time::timeout(CALL_TIME, info.serve(transport)).await;
        match opened {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(self.initialize_failed(&error)),
            Err(_) => Err(self.unavailable(format!(
                "no answer to the MCP handshake within {} s",
                CALL_TIME.as_secs()
            ))),
        }
    }

    /// Waits until the hub answers again, with backoff, saying so once;
    /// `false` if `stop` came first.
    pub(crate) async fn recover(&mut self, stop: impl Future) -> Result<bool, HubError> {
        tokio::pin!(stop);
        let mut wait = FIRST_RETRY;
        loop {
            // A signal during an attempt (up to 10 s to a silent host) ends
            // the wait at once.
            let opened = tokio::select! {
                opened = self.open() => opened,
                _ = &mut stop => return Ok(false),
            };
            match opened {
                Ok(client) => {
                    self.client = Some(client);
                    self.came_back();
                    return Ok(true);
                }
                Err(error) if error.is_transient() => self.went_down(&error),
                Err(error) => return Err(error),
            }
            if !back_off(&mut wait, LAST_RETRY, &mut stop).await {
                return Ok(false);
            }
        }
    }

    /// Notes that the hub is out of reach; logs it the first time.
    fn went_down(&mut self, error: &HubError) {
        self.client = None;
        if self.down_since.is_none() {
            tracing::warn!("{error}; waiting for it");
            self.down_since = Some(Instant::now());
        } else {
            tracing::debug!(%error, "the hub is still out of reach");
        }
    }

    /// Notes that the hub answers; logs it if it was out of reach.
    fn came_back(&mut self) {
        if let Some(since) = self.down_since.take() {
            tracing::info!(
                url = %self.options.url,
                "the hub answers again, after {} s",
                since.elapsed().as_secs()
            );
        }
    }

    /// Calls `tool` with `arguments` (the caller's conversation and
    /// session added; the token is the key), waiting at most `wait` longer
    /// than usual; its structured result.
    async fn call(
        &mut self,
        tool: &'static str,
        mut arguments: JsonObject,
        wait: Duration,
    ) -> Result<Value, HubError> {
        let client = match self.client.take() {
            Some(client) => client,
            None => match self.open().await {
                Ok(client) => client,
                Err(error) => {
                    if error.is_transient() {
                        self.went_down(&error);
                    }
                    return Err(error);
                }
            },
        };
        arguments.insert(
            "conversation_id".into(),
            self.credentials.conversation_id.as_str().into(),
        );
        arguments.insert(
            "session_id".into(),
            self.credentials.session.as_str().into(),
        );
        let request = CallToolRequestParams::new(tool).with_arguments(arguments);
        let answered = tokio::time::timeout(CALL_TIME + wait, client.call_tool(request)).await;
        let result = match answered {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => {
                let error = self.call_failed(&error);
                if error.is_transient() {
                    self.went_down(&error);
                } else {
                    self.client = Some(client);
                }
                return Err(error);
            }
            Err(_) => {
                let error = self.unavailable(format!(
                    "no answer to {tool} within {} s",
                    (CALL_TIME + wait).as_secs()
                ));
                self.went_down(&error);
                return Err(error);
            }
        };
        self.client = Some(client);
        self.came_back();
        let text = || {
            result
                .content
                .iter()
                .filter_map(|block| block.as_text().map(|text| text.text.clone()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if result.is_error == Some(true) {
            return Err(refused(&self.options.url, text()));
        }
        result
            .structured_content
            .clone()
            .ok_or_else(|| HubError::Protocol {
                url: self.options.url.clone(),
                reason: format!("{tool} answered without structured content: {}", text()),
            })
    }

    /// The messages of a `check_messages` or `wait_for_messages` answer.
    fn messages(&self, answer: &Value) -> Result<Vec<Incoming>, HubError> {
        serde_json::from_value(answer["messages"].clone()).map_err(|error| HubError::Protocol {
            url: self.options.url.clone(),
            reason: format!("its messages do not read as messages: {error}"),
        })
    }

    /// An integer field of an answer.
    fn integer(&self, answer: &Value, field: &str) -> Result<i64, HubError> {
        answer[field].as_i64().ok_or_else(|| HubError::Protocol {
            url: self.options.url.clone(),
            reason: format!("its answer has no {field}"),
        })
    }

    pub(crate) async fn heartbeat(&mut self) -> Result<u64, HubError> {
        let answer = self
            .call("update_my_status", JsonObject::new(), Duration::ZERO)
            .await?;
        Ok(u64::try_from(self.integer(&answer, "unread")?).unwrap_or(0))
    }

    pub(crate) async fn start(&mut self, start: Start) -> Result<i64, HubError> {
        if start == Start::Unconfirmed {
            // The first message not confirmed, if any: start just before it.
            let answer = self
                .call(
                    "check_messages",
                    object(json!({"peek": true, "limit": 1})),
                    Duration::ZERO,
                )
                .await?;
            if let Some(first) = self.messages(&answer)?.first() {
                return Ok(first.id - 1);
            }
        }
        // The newest message of the conversation, either direction: none
        // for the session comes after it.
        let answer = self
            .call("read_history", object(json!({"limit": 1})), Duration::ZERO)
            .await?;
        Ok(self.messages(&answer)?.last().map_or(0, |last| last.id))
    }

    pub(crate) async fn peek_after(
        &mut self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Incoming>, HubError> {
        let answer = self
            .call(
                "check_messages",
                object(json!({"after_id": after, "limit": limit})),
                Duration::ZERO,
            )
            .await?;
        self.messages(&answer)
    }

    pub(crate) async fn wait_after(
        &mut self,
        after: i64,
        timeout: Duration,
    ) -> Result<Vec<Incoming>, HubError> {
        let seconds = timeout.as_secs().clamp(1, 300);
        let answer = self
            .call(
                "wait_for_messages",
                object(json!({"after_id": after, "timeout_seconds": seconds})),
                Duration::from_secs(seconds),
            )
            .await?;
        self.messages(&answer)
    }

    pub(crate) async fn peek(&mut self, limit: u32) -> Result<Vec<Incoming>, HubError> {
        let answer = self
            .call(
                "check_messages",
                object(json!({"peek": true, "limit": limit})),
                Duration::ZERO,
            )
            .await?;
        self.messages(&answer)
    }

    pub(crate) async fn deliver(&mut self, limit: u32) -> Result<Vec<Incoming>, HubError> {
        let answer = self
            .call(
                "check_messages",
                object(json!({"limit": limit})),
                Duration::ZERO,
            )
            .await?;
        self.messages(&answer)
    }

    pub(crate) async fn ack(&mut self, up_to: i64) -> Result<(), HubError> {
        self.call(
            "check_messages",
            object(json!({"peek": true, "limit": 1, "ack": up_to})),
            Duration::ZERO,
        )
        .await
        .map(drop)
    }

    pub(crate) async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.cancel().await;
        }
    }

    fn unavailable(&self, reason: String) -> HubError {
        HubError::Unavailable {
            url: self.options.url.clone(),
            reason,
        }
    }

    fn initialize_failed(&self, error: &ClientInitializeError) -> HubError {
        match error {
            ClientInitializeError::TransportError { error, .. } => {
                self.transport_failed(&*error.error, true)
            }
            ClientInitializeError::ConnectionClosed(reason) => self.unavailable(reason.clone()),
            other => HubError::Protocol {
                url: self.options.url.clone(),
                reason: other.to_string(),
            },
        }
    }

    fn call_failed(&self, error: &ServiceError) -> HubError {
        match error {
            ServiceError::TransportSend(error) => self.transport_failed(&*error.error, false),
            ServiceError::TransportClosed | ServiceError::Timeout { .. } => {
                self.unavailable(error.to_string())
            }
            other => HubError::Protocol {
                url: self.options.url.clone(),
                reason: other.to_string(),
            },
        }
    }

    /// What a failure of the HTTP transport means: a refused key, a
    /// certificate that does not verify, no MCP endpoint at the URL (at the
    /// handshake), or the hub out of reach.
    fn transport_failed(
        &self,
        error: &(dyn std::error::Error + 'static),
        handshake: bool,
    ) -> HubError {
        let url = &self.options.url;
        // What the reason says: from the HTTP client's own error, if any.
        let mut described = error;
        let mut cause = Some(error);
        while let Some(current) = cause {
            if let Some(http) = current.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
                match http {
                    StreamableHttpError::AuthRequired(_) => {
                        return HubError::Store(bridge_core::Error::Unauthenticated {
                            reason: format!(
                                "the hub at {url} refused the token (HTTP 401): it is wrong, \
                                 rotated, or its conversation expired or was removed"
                            ),
                        });
                    }
                    StreamableHttpError::UnexpectedServerResponse(text)
                        if handshake && text.contains("404") =>
                    {
                        return HubError::Misconfigured(Misconfigured(format!(
                            "the hub at {url} has no MCP endpoint there (HTTP 404); check the \
                             path, e.g. https://hub.example.org:8765/mcp"
                        )));
                    }
                    // The HTTP client's error is not its `source`.
                    StreamableHttpError::Client(inner) => {
                        described = inner;
                        cause = Some(inner);
                        continue;
                    }
                    _ => {}
                }
            }
            if let Some(reason) = certificate_problem(current) {
                return HubError::Misconfigured(Misconfigured(format!(
                    "the certificate of the hub at {url} does not verify ({reason}); give \
                     --ca-file with the CA that signed it, or check the host name in --url"
                )));
            }
            cause = current.source();
        }
        self.unavailable(chain(described))
    }
}

/// Why a certificate was refused, if `error` is rustls refusing one
/// (itself, or inside an I/O error).
fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    // An I/O error's `source` skips the error it wraps: unwrap by hand, as
    // deep as the HTTP client nests them.
    let mut current = error;
    while let Some(inner) = current
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        current = inner;
    }
    match current.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(reason) => Some(format!("{reason:?}")),
        _ => None,
    }
}

/// An error and its causes, as one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let more = current.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = current.source();
    }
    text
}

/// What a tool's refusal means: the key refused (exit 77), a moment of
/// trouble on the hub (wait), or anything else.
fn refused(url: &str, text: String) -> HubError {
    const AUTH: [&str; 5] = [
        "invalid token",
        "expired conversation",
        "no such conversation",
        "not authenticated",
        "not allowed: this request's key",
    ];
    if AUTH.iter().any(|start| text.starts_with(start)) {
        return HubError::Store(bridge_core::Error::Unauthenticated {
            reason: format!("the hub at {url} refused: {text}"),
        });
    }
    if text.starts_with("rate limited") || text.contains("is locked") {
        return HubError::Unavailable {
            url: url.to_owned(),
            reason: text,
        };
    }
    HubError::Protocol {
        url: url.to_owned(),
        reason: text,
    }
}

/// A JSON object literal as tool arguments.
fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(object) => object,
        _ => JsonObject::new(),
    }
}

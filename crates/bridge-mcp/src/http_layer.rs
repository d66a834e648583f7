//! What the HTTP server adds in front of `rmcp`'s Streamable HTTP service:
//! an answer to every body, receipts for responses, and bounded sessions.
//!
//! * [`guard`], a middleware on `POST /mcp`: reads the body (at most
//!   [`MAX_MESSAGE_BYTES`], else `413`), checks it (`wire`) and answers a
//!   malformed one `400` with its JSON-RPC error, where `rmcp` says `415`;
//!   refuses a new session past the cap with `503`; attaches a [`Receipt`]
//!   to a request and marks it once the response body, with the answer in
//!   it, has been sent whole ([`ReceiptBody`]), which is how `check_messages`
//!   knows its messages reached the client (`delivery`).
//! * [`Sessions`], the session manager: `rmcp`'s in-memory one, with a cap
//!   on live sessions and an idle expiry that never ends a session while a
//!   request of it is in flight (a `wait_for_messages` of five minutes is
//!   not idleness). A session closed by its client (`DELETE`) or expired
//!   frees its place at once.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use http::{HeaderValue, Method, StatusCode, header};
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, JsonRpcMessage, RequestId, ServerJsonRpcMessage,
};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    ServerSseMessage, SessionId, SessionManager,
};

use crate::connection::Peer;
use crate::delivery::Receipt;
use crate::wire::{self, MAX_MESSAGE_BYTES, Rejection};

/// `--max-sessions` unless given.
pub const DEFAULT_MAX_SESSIONS: u32 = 256;

/// The MCP session header.
const SESSION_HEADER: &str = "mcp-session-id";

/// Why a session could not be created or used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The cap is reached.
    #[error("the server already serves its limit of {0} sessions")]
    Full(usize),
    /// `rmcp`'s session manager refused.
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

/// A live session's use.
struct Use {
    /// When a request of it last began or ended.
    last: Instant,
    /// Its requests whose responses are still being sent (and open GET
    /// streams).
    in_flight: usize,
}

/// The live sessions and their use, shared with the guards of their
/// streams.
#[derive(Default)]
struct Live {
    sessions: HashMap<SessionId, Use>,
    /// Sessions being created (counted against the cap).
    reserved: usize,
}

/// `rmcp`'s in-memory session manager, with a cap and an idle expiry.
pub struct Sessions {
    inner: LocalSessionManager,
    live: Arc<Mutex<Live>>,
    limit: usize,
    idle: Duration,
}

impl Sessions {
    /// At most `limit` live sessions, each ended after `idle` without a
    /// request.
    pub fn new(limit: usize, idle: Duration) -> Sessions {
        let mut inner = LocalSessionManager::default();
        // Expiry is ours: rmcp's counts a long request as idleness.
        inner.session_config.keep_alive = None;
        Sessions {
            inner,
            live: Arc::default(),
            limit,
            idle,
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether a new session would be refused.
    pub fn full(&self) -> bool {
        let live = self.live();
        live.sessions.len() + live.reserved >= self.limit
    }

    /// How many sessions are live.
    pub fn count(&self) -> usize {
        self.live().sessions.len()
    }

    /// Marks a request of `id` begun; the guard marks it ended.
    fn begin(&self, id: &SessionId) -> InFlight {
        if let Some(session) = self.live().sessions.get_mut(id) {
            session.in_flight += 1;
            session.last = Instant::now();
        }
        InFlight {
            live: Arc::clone(&self.live),
            id: id.clone(),
        }
    }

    /// Marks activity of `id` that has no response stream.
    fn touch(&self, id: &SessionId) {
        if let Some(session) = self.live().sessions.get_mut(id) {
            session.last = Instant::now();
        }
    }

    /// Closes the sessions idle for longer than the expiry. Returns how
    /// many.
    pub async fn expire(&self) -> usize {
        let idle: Vec<SessionId> = {
            let live = self.live();
            live.sessions
                .iter()
                .filter(|(_, session)| {
                    session.in_flight == 0 && session.last.elapsed() >= self.idle
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in &idle {
            tracing::debug!(session = %id, "closing an idle MCP session");
            if let Err(error) = self.close_session(id).await {
                tracing::warn!(%error, "cannot close an idle MCP session");
            }
        }
        idle.len()
    }

    /// Closes idle sessions until `shutdown` resolves, checking four times
    /// per expiry period (at least once a second).
    pub async fn expire_until(&self, shutdown: impl Future<Output = ()>) {
        let every = (self.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut ticks = tokio::time::interval(every);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {
                    self.expire().await;
                }
            }
        }
    }
}

/// A request in flight: its end counts as activity, and lets the session
/// expire again.
struct InFlight {
    live: Arc<Mutex<Live>>,
    id: SessionId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(session) = live.sessions.get_mut(&self.id) {
            session.in_flight = session.in_flight.saturating_sub(1);
            session.last = Instant::now();
        }
    }
}

/// A response stream that holds its request's [`InFlight`] until it ends.
struct Tracked<S> {
    stream: S,
    _in_flight: InFlight,
}

impl<S: Stream + Unpin> Stream for Tracked<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

impl SessionManager for Sessions {
    type Error = SessionError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), SessionError> {
        {
            let mut live = self.live();
            if live.sessions.len() + live.reserved >= self.limit {
                return Err(SessionError::Full(self.limit));
            }
            live.reserved += 1;
        }
        let created = self.inner.create_session().await;
        let mut live = self.live();
        live.reserved -= 1;
        let (id, transport) = created?;
        live.sessions.insert(
            id.clone(),
            Use {
                last: Instant::now(),
                in_flight: 0,
            },
        );
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, SessionError> {
        self.touch(id);
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, SessionError> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), SessionError> {
        self.live().sessions.remove(id);
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, SessionError> {
        let in_flight = self.begin(id);
        let stream = self.inner.create_stream(id, message).await?;
        Ok(Tracked {
            stream: Box::pin(stream),
            _in_flight: in_flight,
        })
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), SessionError> {
        self.touch(id);
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, SessionError> {
        let in_flight = self.begin(id);
        let stream = self.inner.create_standalone_stream(id).await?;
        Ok(Tracked {
            stream: Box::pin(stream),
            _in_flight: in_flight,
        })
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, SessionError> {
        let in_flight = self.begin(id);
        let stream = self.inner.resume(id, last_event_id).await?;
        Ok(Tracked {
            stream: Box::pin(stream),
            _in_flight: in_flight,
        })
    }
}

/// The middleware in front of `/mcp` (see the module documentation).
pub async fn guard(
    State(sessions): State<Arc<Sessions>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST || !is_json(&request) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let bytes = match read_body(body).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(peer)| peer.clone());
    let message = match wire::decode(&bytes) {
        Ok(message) => message,
        Err(rejection) => {
            if let Some(peer) = &peer {
                tracing::debug!(peer = %peer.addr, code = rejection.code(), "answering a malformed request");
            }
            return rejected(StatusCode::BAD_REQUEST, &rejection);
        }
    };
    let initializing = matches!(
        &message,
        Some(JsonRpcMessage::Request(request))
            if matches!(request.request, ClientRequest::InitializeRequest(_))
    );
    if initializing && !parts.headers.contains_key(SESSION_HEADER) && sessions.full() {
        tracing::warn!(
            sessions = sessions.count(),
            "refusing a new MCP session: the limit is reached"
        );
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Service Unavailable: this server already serves its limit of {} MCP sessions \
                 (--max-sessions); try again once one ends, or close sessions you no longer use",
                sessions.limit
            ),
        )
            .into_response();
        let retry = sessions.idle.as_secs().max(1).to_string();
        if let Ok(value) = HeaderValue::from_str(&retry) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let Some(JsonRpcMessage::Request(request)) = &message else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    let answer = answer_start(&request.id);
    let receipt = Receipt::on(peer.and_then(|peer| peer.connection));
    parts.extensions.insert(receipt.clone());
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    let body = ReceiptBody {
        body,
        answer,
        answered: false,
        receipt: Some(receipt),
    };
    Response::from_parts(parts, Body::new(body))
}

/// How the successful answer to request `id` begins, as `rmcp` writes it
/// (`serde` keeps the fields in order: `jsonrpc`, `id`, `result`).
fn answer_start(id: &RequestId) -> Vec<u8> {
    let id = serde_json::to_string(id).unwrap_or_default();
    format!(r#""id":{id},"result""#).into_bytes()
}

/// Whether the request says its body is JSON (else `rmcp` answers `415`).
fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let essence = value.split(';').next().unwrap_or_default();
            essence.trim().eq_ignore_ascii_case("application/json")
        })
}

/// The body, at most [`MAX_MESSAGE_BYTES`]; the response to send instead if
/// it is larger or cannot be read.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    match axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await {
        Ok(bytes) => Ok(bytes),
        Err(error) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(rejected(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &Rejection::parse_error(format!(
                        "Parse error: the message is over the limit of {MAX_MESSAGE_BYTES} bytes"
                    )),
                ))
            } else {
                Err((
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {error}"),
                )
                    .into_response())
            }
        }
    }
}

/// `status` with the JSON-RPC error of `rejection` as the body.
fn rejected(status: StatusCode, rejection: &Rejection) -> Response {
    let body = serde_json::to_vec(&rejection.response()).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A response body that marks its request's [`Receipt`] once the answer
/// was in it and it has been sent to the end. Dropped before (the
/// connection was cut, the server stopped), or ended without the answer
/// (`rmcp` drops the answer of a request the client cancelled, and ends the
/// stream), the receipt stays unmarked.
struct ReceiptBody {
    body: Body,
    /// How the answer begins: [`answer_start`].
    answer: Vec<u8>,
    /// The answer has gone by.
    answered: bool,
    receipt: Option<Receipt>,
}

/// An event's head: where a frame of the answer shows whose answer it is.
const EVENT_HEAD: usize = 256;

impl HttpBody for ReceiptBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let head = &data[..data.len().min(EVENT_HEAD)];
                    let answer = &self.answer;
                    if head
                        .windows(answer.len())
                        .any(|window| window == answer.as_slice())
                    {
                        self.answered = true;
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(receipt) = self.receipt.take().filter(|_| self.answered) {
                    receipt.written();
                }
            }
            Poll::Ready(Some(Err(_))) => self.receipt = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.body.is_end_stream();
        // A server may stop polling a body that says it has ended.
        if end
            && self.answered
            && let Some(receipt) = &self.receipt
        {
            receipt.written();
        }
        end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends a body of `events` through a [`ReceiptBody`] for request 7;
    /// returns whether the receipt was marked.
    async fn marked(events: &[&str]) -> bool {
        let frames: Vec<Result<Bytes, std::convert::Infallible>> = events
            .iter()
            .map(|event| Ok(Bytes::from(event.to_string())))
            .collect();
        let receipt = Receipt::on(None);
        let body = ReceiptBody {
            body: Body::from_stream(futures_util::stream::iter(frames)),
            answer: answer_start(&RequestId::Number(7)),
            answered: false,
            receipt: Some(receipt.clone()),
        };
        axum::body::to_bytes(Body::new(body), usize::MAX)
            .await
            .unwrap();
        let next = Receipt::on(None);
        let deliveries = crate::delivery::Deliveries::default();
        let key = (
            "conv_0123456789abcdef".parse().unwrap(),
            bridge_core::SessionId::B,
        );
        deliveries.handed(key.clone(), receipt, 1);
        deliveries.confirm(&key, None, &next).is_some()
    }

    #[tokio::test]
    async fn only_a_body_with_the_answer_in_it_marks_the_receipt() {
        let answer = r#"data: {"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#;
        assert!(marked(&["id: 0\nretry: 3000\ndata: \n\n", answer, "\n\n"]).await);
        // rmcp ends the stream of a cancelled request without its answer.
        assert!(!marked(&["id: 0\nretry: 3000\ndata: \n\n"]).await);
        // Another request's answer, or an error, is not this one's.
        assert!(!marked(&[r#"data: {"jsonrpc":"2.0","id":70,"result":{}}"#]).await);
        assert!(!marked(&[r#"data: {"jsonrpc":"2.0","id":7,"error":{}}"#]).await);
    }
}

//! Authentication at the HTTP layer: `Authorization: Bearer <key>` on every
//! request to `/mcp`, checked before any MCP processing ([`authenticate`]),
//! and the [`Identity`] it gives the tools.
//!
//! A key is an operator's access key (`bridgectl access create`), which may
//! do what any client may, or a session token, which may act only as its
//! session: tools take their `conversation_id`, `session_id` and `token` from
//! it, and refuse arguments naming anything else. Only an access key (or an
//! unauthenticated loopback client, where authentication is off) may create
//! conversations.
//!
//! Authentication is required off loopback and with `--require-auth`; on
//! loopback without it, a request without the header is served as before
//! (stdio and the one-machine setup stay as simple as they are), and one
//! with the header is checked all the same.
//!
//! Failed authentications are limited per client address with `governor`:
//! past the budget, a failing request gets `429` with `Retry-After`. A valid
//! key is never refused by it and spends nothing, so nobody sharing an
//! address with a guesser is locked out. The header is removed from the
//! request once checked, so nothing behind this layer can log the key, and
//! a key in the URL is refused without being read back.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bridge_core::{Credentials, Error, KeyHolder, PresentedKey, SessionId, Store};
use bridge_metrics::HubMetrics;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderValue, StatusCode, header};
use rmcp::RoleServer;
use rmcp::service::RequestContext;

use crate::connection::Peer;

/// Failed authentications a client address may make per minute (and at
/// once) before it is answered `429`.
const FAILURES_PER_MINUTE: NonZeroU32 = match NonZeroU32::new(20) {
    Some(rate) => rate,
    None => NonZeroU32::MIN,
};

/// Past this many client addresses, those back to a full budget are
/// forgotten.
const SHRINK_ABOVE: usize = 4096;

/// Query parameters that carry keys in other programs' URLs.
const KEY_PARAMETERS: [&str; 7] = [
    "access_token",
    "token",
    "key",
    "api_key",
    "apikey",
    "bearer",
    "authorization",
];

/// Who a request acts as.
#[derive(Clone, Debug)]
pub enum Identity {
    /// Anyone the transport lets in: stdio's one client, or a loopback HTTP
    /// client without a key where authentication is off. Tools check the
    /// credentials in their arguments, as they always have.
    Anyone,
    /// The holder of an operator's access key.
    Operator {
        /// The key's name.
        name: String,
    },
    /// One session of one conversation: the tools act only as it.
    Session(Credentials),
}

impl Identity {
    /// The identity the HTTP layer gave this request; [`Identity::Anyone`]
    /// over stdio.
    pub(crate) fn of(context: &RequestContext<RoleServer>) -> Identity {
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Identity>())
            .cloned()
            .unwrap_or(Identity::Anyone)
    }

    /// The credentials a call acts with: from the arguments, or from the
    /// key, in which case the arguments, where given, must name the key's
    /// session and nothing else.
    pub(crate) fn credentials(
        &self,
        conversation_id: Option<&str>,
        session: Option<SessionId>,
        token: Option<&str>,
    ) -> bridge_core::Result<Credentials> {
        let Identity::Session(held) = self else {
            let missing = |field: &str| Error::Invalid {
                field: "arguments",
                reason: format!("missing field `{field}`"),
            };
            let conversation_id = conversation_id.ok_or_else(|| missing("conversation_id"))?;
            let session = session.ok_or_else(|| missing("session_id"))?;
            let token = token.ok_or_else(|| missing("token"))?;
            return Ok(Credentials {
                conversation_id: conversation_id.parse()?,
                session,
                token: token.parse()?,
            });
        };
        let claimed = conversation_id
            .map(str::parse::<bridge_core::ConversationId>)
            .transpose()?;
        let other_conversation = claimed.is_some_and(|id| id != held.conversation_id);
        let other_session = session.is_some_and(|session| session != held.session);
        if other_conversation || other_session {
            return Err(Error::NotAllowed {
                reason: format!(
                    "this request's key is the token of session {} of conversation {}, and \
                     acts only as it",
                    held.session, held.conversation_id
                ),
            });
        }
        if let Some(token) = token
            && token.parse::<bridge_core::Token>()? != held.token
        {
            return Err(Error::NotAllowed {
                reason: "the token argument is not the key this request was authenticated with"
                    .into(),
            });
        }
        Ok(held.clone())
    }

    /// Refuses a session token's holder: creating conversations takes an
    /// access key.
    pub(crate) fn may_create(&self) -> bridge_core::Result<()> {
        match self {
            Identity::Anyone | Identity::Operator { .. } => Ok(()),
            Identity::Session(_) => Err(Error::NotAllowed {
                reason: "only an access key may create conversations over HTTP; this request's \
                         key is a session token"
                    .into(),
            }),
        }
    }
}

/// The state of [`authenticate`].
pub struct Authenticator {
    store: Store,
    /// Counts each refused key.
    metrics: HubMetrics,
    /// Whether a request without a key is refused.
    required: bool,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl Authenticator {
    /// Checks keys against `store`; without a key, a request is refused if
    /// `required`, else served as [`Identity::Anyone`]. Refused keys count
    /// in `metrics`.
    pub fn new(store: Store, required: bool, metrics: HubMetrics) -> Authenticator {
        Authenticator {
            store,
            metrics,
            required,
            failures: RateLimiter::keyed(
                Quota::per_minute(FAILURES_PER_MINUTE).allow_burst(FAILURES_PER_MINUTE),
            ),
            clock: DefaultClock::default(),
        }
    }

    /// The answer to a failed authentication from `addr`: `401` with
    /// `reason`, or `429` past the address's budget.
    fn refuse(&self, addr: IpAddr, reason: &str) -> Response {
        self.metrics.auth_failure();
        if self.failures.len() > SHRINK_ABOVE {
            self.failures.retain_recent();
        }
        match self.failures.check_key(&addr) {
            Ok(()) => {
                tracing::info!(client = %addr, reason, "refused an HTTP request: not authenticated");
                unauthorized(reason, true)
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                tracing::debug!(client = %addr, "refused an HTTP request: too many failed authentications");
                too_many(wait)
            }
        }
    }
}

/// The middleware in front of `/mcp` (see the module documentation).
pub async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let addr = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(peer)| peer.addr.ip());
    let Some(addr) = addr else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the client's address is unknown",
        )
            .into_response();
    };
    if key_in_query(request.uri().query()) {
        return auth.refuse(
            addr,
            "a key in the URL is refused (URLs end up in logs and histories); send it as \
             Authorization: Bearer <key>",
        );
    }
    let header = request.headers_mut().remove(header::AUTHORIZATION);
    let Some(header) = header else {
        if auth.required {
            return unauthorized(
                "this server requires Authorization: Bearer <key>, with an access key from \
                 `bridgectl access create` or a conversation's session token",
                false,
            );
        }
        request.extensions_mut().insert(Identity::Anyone);
        return next.run(request).await;
    };
    let key = match bearer(&header) {
        Ok(key) => key,
        Err(reason) => return auth.refuse(addr, &reason),
    };
    let identity = match auth.store.authenticate_key(&key).await {
        Ok(KeyHolder::Operator { name }) => Identity::Operator { name },
        Ok(KeyHolder::Session(credentials)) => Identity::Session(credentials),
        Err(error @ (Error::Unauthenticated { .. } | Error::Expired { .. })) => {
            return auth.refuse(addr, &error.to_string());
        }
        Err(error) => {
            tracing::error!(%error, "cannot check a key");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the server cannot check keys now: {error}"),
            )
                .into_response();
        }
    };
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// The key of a `Bearer` header, or why there is none.
fn bearer(header: &HeaderValue) -> Result<PresentedKey, String> {
    let text = header.to_str().unwrap_or_default();
    let (scheme, key) = text.trim().split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err("the Authorization header must be Bearer and a key".into());
    }
    key.trim().parse().map_err(|error: Error| error.to_string())
}

/// Whether a query string carries what looks like a key.
fn key_in_query(query: Option<&str>) -> bool {
    let Some(query) = query else {
        return false;
    };
    query.split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        KEY_PARAMETERS
            .iter()
            .any(|key| name.eq_ignore_ascii_case(key))
            || value.parse::<PresentedKey>().is_ok()
    })
}

/// `401` with `reason`; `invalid`: a key was presented and refused.
fn unauthorized(reason: &str, invalid: bool) -> Response {
    let challenge = if invalid {
        r#"Bearer realm="mcp-bridge", error="invalid_token""#
    } else {
        r#"Bearer realm="mcp-bridge""#
    };
    let mut response =
        (StatusCode::UNAUTHORIZED, format!("Unauthorized: {reason}")).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// `429` with `Retry-After` in whole seconds (at least 1).
fn too_many(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "Too Many Requests: too many failed authentications from this address; retry in \
             {seconds} s"
        ),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Credentials {
        Credentials::parse("conv_0123456789abcdef", "b", &"ab".repeat(32)).unwrap()
    }

    #[test]
    fn a_session_key_fills_in_and_confines_the_arguments() {
        let identity = Identity::Session(session());
        let taken = identity.credentials(None, None, None).unwrap();
        assert_eq!(taken.conversation_id, session().conversation_id);
        let same = identity
            .credentials(
                Some("conv_0123456789abcdef"),
                Some(SessionId::B),
                Some(&"ab".repeat(32)),
            )
            .unwrap();
        assert_eq!(same.session, SessionId::B);
        let refusal = "not allowed: this request's key is the token of session b of conversation \
                       conv_0123456789abcdef, and acts only as it";
        let other = identity.credentials(Some("conv_fedcba9876543210"), None, None);
        assert_eq!(other.unwrap_err().to_string(), refusal);
        let other = identity.credentials(None, Some(SessionId::A), None);
        assert_eq!(other.unwrap_err().to_string(), refusal);
        let other = identity.credentials(None, None, Some(&"cd".repeat(32)));
        assert_eq!(
            other.unwrap_err().to_string(),
            "not allowed: the token argument is not the key this request was authenticated with"
        );
        assert!(identity.may_create().is_err());
    }

    #[test]
    fn without_a_session_key_the_arguments_are_required() {
        for identity in [
            Identity::Anyone,
            Identity::Operator {
                name: "orchestrator".into(),
            },
        ] {
            let missing = identity.credentials(None, Some(SessionId::A), None);
            assert_eq!(
                missing.unwrap_err().to_string(),
                "invalid arguments: missing field `conversation_id`"
            );
            let missing = identity.credentials(Some("conv_0123456789abcdef"), None, None);
            assert_eq!(
                missing.unwrap_err().to_string(),
                "invalid arguments: missing field `session_id`"
            );
            assert!(identity.may_create().is_ok());
        }
    }

    #[test]
    fn bearer_headers_and_urls_are_read_strictly() {
        let key = format!("mcpb_{}", "0f".repeat(32));
        let header = HeaderValue::from_str(&format!("bearer {key}")).unwrap();
        assert!(matches!(bearer(&header), Ok(PresentedKey::Access(_))));
        let basic = HeaderValue::from_static("Basic dXNlcjpwYXNz");
        assert_eq!(
            bearer(&basic).unwrap_err(),
            "the Authorization header must be Bearer and a key"
        );
        assert!(key_in_query(Some(&format!("x=1&k={key}"))));
        assert!(key_in_query(Some("access_token=whatever")));
        assert!(!key_in_query(Some("page=2")));
        assert!(!key_in_query(None));
    }
}

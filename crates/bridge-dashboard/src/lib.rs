//! The operator's live view: a read-only dashboard served by `bridge-mcp
//! --http` at `/`, on the same listener, TLS and keys as `/mcp`.
//!
//! * Pages (`pages`): **Team** (each worker's conversation, roles, team,
//!   health in one word, status, when heard from, open tasks), **Tasks** (a
//!   board by state, each task's assignments), **Messages** (the latest of
//!   each conversation, as stored: redacted at ingest), **Audit** (the
//!   chain's length, head, and the verification's result). Server-rendered
//!   HTML; every value is escaped.
//! * Live updates (`events`): each page holds one `EventSource` on
//!   `/events`, which sends the page's content again whenever the store's
//!   change feed says something changed (and every few seconds, as time
//!   alone turns a worker quiet), rendered once for all the streams that
//!   show the same page (`shared`). The page replaces its content with it;
//!   it never polls. A stream that breaks (a hub restart) is reopened by the
//!   browser.
//! * Login (`login`): where the hub requires keys, an operator's access key
//!   logs in once at `/login` and gets a cookie (`HttpOnly`,
//!   `SameSite=Strict`, `Secure` on TLS) sealed with the server key: it
//!   names the key and its creation, and expires after twelve hours. Every
//!   request checks the seal and that the key still exists, so revoking the
//!   key ends its sessions, and a hub restart (or another hub of the same
//!   database) keeps them. On loopback without `--require-auth` the
//!   dashboard opens directly, as `/mcp` does.
//! * Every answer forbids framing and any script, style or connection but
//!   the hub's own (`Content-Security-Policy`); the JavaScript and CSS are
//!   compiled into the binary.

mod events;
mod login;
mod pages;
mod shared;

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bridge_core::Store;
use bridge_metrics::HubMetrics;
use http::{HeaderValue, StatusCode, header};
use tokio_util::sync::CancellationToken;

/// How the dashboard is served.
#[derive(Clone)]
pub struct Dashboard {
    /// What it shows.
    pub store: Store,
    /// Where refused logins are counted.
    pub metrics: HubMetrics,
    /// Whether a login is needed (the hub requires keys).
    pub login_required: bool,
    /// Whether the hub serves HTTPS (the cookie is then `Secure`).
    pub tls: bool,
    /// How often an open page is sent again when nothing changed (time
    /// alone turns a worker quiet).
    pub refresh: Duration,
    /// Cancelled when the hub stops: every open event stream ends, so that
    /// the server's graceful shutdown does not wait for browsers.
    pub stop: CancellationToken,
}

/// What every dashboard answer carries.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    // Not `no-referrer`: under it a browser sends `Origin: null` with the
    // login form, which the Origin check must then refuse. `same-origin`
    // keeps the Origin on the hub's own forms and tells other sites nothing.
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
];

const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

/// The dashboard's routes: `/`, the four pages, `/events`, `/login`,
/// `/logout` and the two assets.
pub fn router(dashboard: Dashboard) -> Router {
    let pages = Router::new()
        .route("/", get(pages::home))
        .route("/team", get(pages::team))
        .route("/tasks", get(pages::tasks))
        .route("/messages", get(pages::messages))
        .route("/audit", get(pages::audit))
        .route("/events", get(events::stream))
        // Every open stream renders again at least each `refresh`: an
        // entry not asked for in two is nobody's.
        .layer(Extension(shared::Renderings::new(dashboard.refresh * 2)))
        .route_layer(axum::middleware::from_fn_with_state(
            dashboard.clone(),
            login::require,
        ));
    Router::new()
        .merge(pages)
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", axum::routing::post(login::logout))
        .route("/assets/app.js", get(script))
        .route("/assets/style.css", get(style))
        .with_state(dashboard)
        .layer(axum::middleware::from_fn(secure))
}

/// Adds [`SECURITY_HEADERS`] to every answer.
async fn secure(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    for (name, value) in SECURITY_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, for HTML text and
/// attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_text_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}

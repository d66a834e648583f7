//! The login: an operator's access key, once, for a sealed cookie.
//!
//! The cookie's value is `v1.NAME.CREATED.EXPIRES.TAG`: the access key's
//! name (hex), its creation and the session's end (milliseconds since the
//! epoch), and `TAG`, the server key's seal over the rest
//! (`Store::seal`). Nothing is kept in the hub's memory: a cookie is good
//! on every hub of the database and across restarts, until it expires or
//! its access key is revoked (the key's name and creation must still match
//! a key the store holds).

use std::time::Duration;

use axum::Form;
use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use bridge_core::{Error, KeyHolder, PresentedKey, Timestamp};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

use crate::{Dashboard, escape, pages};

/// The cookie's name.
pub(crate) const COOKIE: &str = "bridge_dashboard";

/// What the seal is for.
const PURPOSE: &str = "dashboard session v1";

/// How long a login lasts.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Why a request has no valid session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No cookie.
    Missing,
    /// A cookie the server did not seal, or not in its form.
    Forged,
    /// A cookie past its end.
    Expired,
    /// A cookie whose access key was revoked.
    Revoked,
}

impl Refusal {
    /// What the login page says about it.
    fn sentence(&self) -> &'static str {
        match self {
            Refusal::Missing => "Log in with an operator's access key (bridgectl access create).",
            Refusal::Forged => "That session is not valid here; log in again.",
            Refusal::Expired => "Your session expired; log in again.",
            Refusal::Revoked => "The access key of that session was revoked; log in with another.",
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Forged => "forged",
            Refusal::Expired => "expired",
            Refusal::Revoked => "revoked",
        }
    }

    fn from_code(code: &str) -> Refusal {
        match code {
            "forged" => Refusal::Forged,
            "expired" => Refusal::Expired,
            "revoked" => Refusal::Revoked,
            _ => Refusal::Missing,
        }
    }
}

/// A cookie for the access key `name` made at `created`, ending at
/// `expires`.
fn seal(dashboard: &Dashboard, name: &str, created: i64, expires: i64) -> String {
    let body = format!("{}.{created}.{expires}", hex::encode(name));
    let tag = dashboard.store.seal(PURPOSE, body.as_bytes());
    format!("v1.{body}.{}", hex::encode(tag))
}

/// The access key's name and creation a cookie's value names, if the
/// server sealed it and it has not expired.
fn unseal(dashboard: &Dashboard, value: &str, now: i64) -> Result<(String, i64), Refusal> {
    let rest = value.strip_prefix("v1.").ok_or(Refusal::Forged)?;
    let (body, tag) = rest.rsplit_once('.').ok_or(Refusal::Forged)?;
    let tag = hex::decode(tag).map_err(|_| Refusal::Forged)?;
    if !dashboard.store.check_seal(PURPOSE, body.as_bytes(), &tag) {
        return Err(Refusal::Forged);
    }
    let mut parts = body.split('.');
    let (Some(name), Some(created), Some(expires), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Forged);
    };
    let name = hex::decode(name)
        .ok()
        .and_then(|name| String::from_utf8(name).ok())
        .ok_or(Refusal::Forged)?;
    let created: i64 = created.parse().map_err(|_| Refusal::Forged)?;
    let expires: i64 = expires.parse().map_err(|_| Refusal::Forged)?;
    if expires <= now {
        return Err(Refusal::Expired);
    }
    Ok((name, created))
}

/// The cookie's value among the request's cookies.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Whether the request carries a valid session: sealed, not expired, its
/// access key still there.
pub(crate) async fn check(dashboard: &Dashboard, headers: &HeaderMap) -> Result<(), Refusal> {
    if !dashboard.login_required {
        return Ok(());
    }
    let value = cookie(headers).ok_or(Refusal::Missing)?;
    let (name, created) = unseal(dashboard, value, Timestamp::now().as_millis())?;
    let keys = dashboard.store.access_keys().await.map_err(|error| {
        tracing::warn!(%error, "cannot read the access keys for a dashboard session");
        Refusal::Revoked
    })?;
    let now = Timestamp::now();
    let standing = keys.iter().any(|key| {
        key.name == name
            && key.created_at.as_millis() == created
            && key.expires_at.is_none_or(|end| end > now)
    });
    if standing {
        Ok(())
    } else {
        Err(Refusal::Revoked)
    }
}

/// In front of the pages and `/events`: a page without a valid session goes
/// to `/login`, `/events` gets `401`.
pub(crate) async fn require(
    State(dashboard): State<Dashboard>,
    request: Request,
    next: Next,
) -> Response {
    match check(&dashboard, request.headers()).await {
        Ok(()) => next.run(request).await,
        Err(refusal) if request.uri().path() == "/events" => (
            StatusCode::UNAUTHORIZED,
            format!("Unauthorized: {}", refusal.sentence()),
        )
            .into_response(),
        Err(refusal) => Redirect::to(&format!("/login?reason={}", refusal.code())).into_response(),
    }
}

#[derive(Deserialize)]
pub(crate) struct Reason {
    reason: Option<String>,
}

/// `GET /login`: the form (or, where no login is needed, the team page).
pub(crate) async fn form(
    State(dashboard): State<Dashboard>,
    Query(reason): Query<Reason>,
) -> Response {
    if !dashboard.login_required {
        return Redirect::to("/team").into_response();
    }
    let refusal = Refusal::from_code(reason.reason.as_deref().unwrap_or_default());
    login_page(StatusCode::OK, refusal.sentence())
}

fn login_page(status: StatusCode, sentence: &str) -> Response {
    let body = format!(
        "<form method=\"post\" action=\"/login\" class=\"login\">\
         <p id=\"login-message\">{}</p>\
         <label>Access key <input type=\"password\" name=\"key\" autocomplete=\"off\" \
         required autofocus></label>\
         <button type=\"submit\">Log in</button></form>",
        escape(sentence)
    );
    (
        status,
        Html(pages::layout("Log in", None, false, &body, None)),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct Login {
    key: String,
}

/// `POST /login`: checks the key; a good one gets the cookie and the team
/// page, a wrong one the form again with why.
pub(crate) async fn submit(
    State(dashboard): State<Dashboard>,
    headers: HeaderMap,
    Form(login): Form<Login>,
) -> Response {
    if let Some(refused) = cross_site(&dashboard, &headers) {
        return refused;
    }
    let refuse = |sentence: String| {
        dashboard.metrics.auth_failure();
        tracing::info!(reason = %sentence, "refused a dashboard login");
        login_page(StatusCode::UNAUTHORIZED, &sentence)
    };
    let key: PresentedKey = match login.key.trim().parse() {
        Ok(key) => key,
        Err(error) => return refuse(format!("Not logged in: {error}")),
    };
    let name = match dashboard.store.authenticate_key(&key).await {
        Ok(KeyHolder::Operator { name }) => name,
        Ok(KeyHolder::Session(_)) => {
            return refuse(
                "Not logged in: the dashboard needs an operator's access key (bridgectl access \
                 create), not a session token"
                    .into(),
            );
        }
        Err(error @ (Error::Unauthenticated { .. } | Error::Expired { .. })) => {
            return refuse(format!("Not logged in: {error}"));
        }
        Err(error) => {
            tracing::error!(%error, "cannot check a dashboard login");
            return login_page(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("The hub cannot check keys now: {error}"),
            );
        }
    };
    let created = match dashboard.store.access_keys().await {
        Ok(keys) => keys
            .into_iter()
            .find(|key| key.name == name)
            .map(|key| key.created_at.as_millis()),
        Err(error) => {
            tracing::error!(%error, "cannot read the access keys for a dashboard login");
            None
        }
    };
    let Some(created) = created else {
        return login_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The hub cannot read the access keys now; try again.",
        );
    };
    let expires =
        Timestamp::now().as_millis() + i64::try_from(LIFETIME.as_millis()).unwrap_or(i64::MAX / 2);
    let value = seal(&dashboard, &name, created, expires);
    tracing::info!(key = %name, "dashboard login");
    let mut response = Redirect::to("/team").into_response();
    set_cookie(&mut response, &dashboard, &value, LIFETIME.as_secs());
    response
}

/// `POST /logout`: forgets the cookie.
pub(crate) async fn logout(State(dashboard): State<Dashboard>, headers: HeaderMap) -> Response {
    if let Some(refused) = cross_site(&dashboard, &headers) {
        return refused;
    }
    let mut response = Redirect::to("/login").into_response();
    set_cookie(&mut response, &dashboard, "", 0);
    response
}

fn set_cookie(response: &mut Response, dashboard: &Dashboard, value: &str, max_age: u64) {
    let secure = if dashboard.tls { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
}

/// `403` for a form sent from another site: its `Origin` must be the hub's
/// own (the scheme it serves and the `Host` asked for).
fn cross_site(dashboard: &Dashboard, headers: &HeaderMap) -> Option<Response> {
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or_default();
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or_default();
    let scheme = if dashboard.tls { "https" } else { "http" };
    if origin.eq_ignore_ascii_case(&format!("{scheme}://{host}")) {
        return None;
    }
    Some(
        (
            StatusCode::FORBIDDEN,
            "Forbidden: a form sent from another site (its Origin is not this hub)",
        )
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::{Store, StoreOptions};

    async fn open(dir: &std::path::Path) -> Dashboard {
        let store = Store::open(StoreOptions::new(dir.join("bridge.db")))
            .await
            .expect("open a store");
        Dashboard {
            store,
            metrics: bridge_metrics::HubMetrics::new(),
            login_required: true,
            tls: false,
            refresh: Duration::from_secs(5),
            stop: tokio_util::sync::CancellationToken::new(),
        }
    }

    #[tokio::test]
    async fn a_cookie_is_good_until_its_end_and_only_as_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let dashboard = open(dir.path()).await;
        let value = seal(&dashboard, "ops.team", 1_000, 5_000);
        assert_eq!(
            unseal(&dashboard, &value, 4_999),
            Ok(("ops.team".to_owned(), 1_000))
        );
        assert_eq!(unseal(&dashboard, &value, 5_000), Err(Refusal::Expired));
        // Moving the end changes what the seal covers.
        let later = value.replacen(".5000.", ".9000.", 1);
        assert_eq!(unseal(&dashboard, &later, 4_999), Err(Refusal::Forged));
        for bad in [
            "",
            "v1.",
            "v2.00.1.2.00",
            "v1.zz.1.2.00",
            &value[..value.len() - 2],
        ] {
            assert_eq!(unseal(&dashboard, bad, 0), Err(Refusal::Forged), "{bad}");
        }
        // Another server key: another seal.
        let other = tempfile::tempdir().unwrap();
        let elsewhere = open(other.path()).await;
        assert_eq!(unseal(&elsewhere, &value, 0), Err(Refusal::Forged));
        dashboard.store.close().await;
        elsewhere.store.close().await;
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; bridge_dashboard=v1.x; b=2"),
        );
        assert_eq!(cookie(&headers), Some("v1.x"));
        assert_eq!(cookie(&HeaderMap::new()), None);
    }
}

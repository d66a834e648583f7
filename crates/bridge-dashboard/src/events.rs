//! `/events?page=NAME[&team=T]`: the page's content as server-sent events.
//!
//! The first event is the content now; then, whenever the store's change
//! feed says something changed, or `Dashboard::refresh` passed, the content
//! is rendered again (once for every stream showing the same page:
//! `shared`) and sent if it differs from the last sent. Each event
//! names a one-second `retry`, so a browser whose stream broke (a hub
//! restart) comes back at once. A session that stopped being valid (expired,
//! key revoked) gets one `login` event, and the stream ends; so does every
//! stream when the hub stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bridge_core::ChangeSubscription;
use futures_util::Stream;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::pages::{Filter, Page};
use crate::shared::{Needed, Renderings};
use crate::{Dashboard, login};

/// How soon a browser reconnects a broken stream.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
pub(crate) struct Wanted {
    page: String,
    team: Option<String>,
}

/// What one stream keeps between events.
struct Follow {
    dashboard: Dashboard,
    renderings: Renderings,
    headers: HeaderMap,
    page: Page,
    filter: Filter,
    changes: ChangeSubscription,
    /// The content last sent; `None` before the first event.
    last: Option<Arc<str>>,
    /// Whether the stream has ended (after a `login` event).
    done: bool,
}

/// `GET /events`.
pub(crate) async fn stream(
    State(dashboard): State<Dashboard>,
    Extension(renderings): Extension<Renderings>,
    headers: HeaderMap,
    Query(wanted): Query<Wanted>,
) -> Response {
    let Some(page) = Page::named(&wanted.page) else {
        return (
            StatusCode::NOT_FOUND,
            "Not Found: no such page (team, tasks, messages or audit)",
        )
            .into_response();
    };
    let follow = Follow {
        changes: dashboard.store.subscribe(),
        dashboard,
        renderings,
        headers,
        page,
        filter: Filter { team: wanted.team },
        last: None,
        done: false,
    };
    Sse::new(events(follow))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn events(follow: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(follow, |mut follow| async move {
        if follow.done {
            return None;
        }
        loop {
            if follow.last.is_some() {
                tokio::select! {
                    () = follow.dashboard.stop.cancelled() => return None,
                    changed = follow.changes.changed() => {
                        // The store closed: the hub is stopping.
                        changed.ok()?;
                    }
                    () = tokio::time::sleep(follow.dashboard.refresh) => {}
                }
            }
            let needed = Needed {
                version: follow.changes.version(),
                at: Instant::now(),
            };
            if login::check(&follow.dashboard, &follow.headers)
                .await
                .is_err()
            {
                follow.done = true;
                return Some((Ok(Event::default().event("login").data("")), follow));
            }
            let content = follow
                .renderings
                .content(&follow.dashboard.store, follow.page, &follow.filter, needed)
                .await;
            if follow.last.as_deref() != Some(&*content) {
                let event = Event::default().event("page").retry(RETRY).data(&*content);
                follow.last = Some(content);
                return Some((Ok(event), follow));
            }
        }
    })
}

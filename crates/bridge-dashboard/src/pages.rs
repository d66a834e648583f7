//! The four pages, rendered on the server. Each is a layout around its
//! content; `/events` sends the content alone again when it changes. Every
//! value from the store goes through [`escape`].

use std::collections::BTreeSet;
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use bridge_core::{
    Assignment, ConversationInfo, Health, Sender, SessionId, Store, Task, TaskState, Timestamp,
};
use serde::Deserialize;

use crate::{Dashboard, escape};

/// Messages shown per conversation.
const MESSAGES_PER_CONVERSATION: u32 = 20;

/// Audit rows shown.
const AUDIT_ROWS: u32 = 20;

/// A page of the dashboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Page {
    Team,
    Tasks,
    Messages,
    Audit,
}

impl Page {
    const ALL: [Page; 4] = [Page::Team, Page::Tasks, Page::Messages, Page::Audit];

    fn path(self) -> &'static str {
        match self {
            Page::Team => "team",
            Page::Tasks => "tasks",
            Page::Messages => "messages",
            Page::Audit => "audit",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Page::Team => "Team",
            Page::Tasks => "Tasks",
            Page::Messages => "Messages",
            Page::Audit => "Audit",
        }
    }

    /// The page `/events?page=NAME` names.
    pub(crate) fn named(name: &str) -> Option<Page> {
        Page::ALL.into_iter().find(|page| page.path() == name)
    }
}

/// What a page shows: one team, or all.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Filter {
    pub(crate) team: Option<String>,
}

impl Filter {
    fn team(&self) -> Option<&str> {
        self.team.as_deref().filter(|team| !team.is_empty())
    }
}

/// The whole document: `body` under the navigation (with a logout button
/// if `logout`), in a `main` that `/events` keeps current when `events` is
/// given.
pub(crate) fn layout(
    title: &str,
    page: Option<Page>,
    logout: bool,
    body: &str,
    events: Option<&str>,
) -> String {
    let mut nav = String::new();
    if page.is_some() {
        for each in Page::ALL {
            let current = if Some(each) == page {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(
                nav,
                "<a href=\"/{}\"{current}>{}</a>",
                each.path(),
                each.title()
            );
        }
    }
    if logout {
        nav.push_str(
            "<form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button>\
             </form>",
        );
    }
    let events = events
        .map(|url| format!(" data-events=\"{}\"", escape(url)))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · mcp-bridge</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
         <script src=\"/assets/app.js\" defer></script></head><body>\
         <header><strong>mcp-bridge</strong><nav>{nav}</nav>\
         <span id=\"live\" hidden>reconnecting…</span></header>\
         <main{events}>{body}</main></body></html>",
        escape(title)
    )
}

/// `GET /`: the team page.
pub(crate) async fn home() -> Redirect {
    Redirect::to("/team")
}

pub(crate) async fn team(
    State(dashboard): State<Dashboard>,
    Query(filter): Query<Filter>,
) -> Response {
    page(&dashboard, Page::Team, &filter).await
}

pub(crate) async fn tasks(
    State(dashboard): State<Dashboard>,
    Query(filter): Query<Filter>,
) -> Response {
    page(&dashboard, Page::Tasks, &filter).await
}

pub(crate) async fn messages(
    State(dashboard): State<Dashboard>,
    Query(filter): Query<Filter>,
) -> Response {
    page(&dashboard, Page::Messages, &filter).await
}

pub(crate) async fn audit(
    State(dashboard): State<Dashboard>,
    Query(filter): Query<Filter>,
) -> Response {
    page(&dashboard, Page::Audit, &filter).await
}

async fn page(dashboard: &Dashboard, page: Page, filter: &Filter) -> Response {
    let body = content(&dashboard.store, page, filter).await;
    let mut events = format!("/events?page={}", page.path());
    if let Some(team) = filter.team() {
        let _ = write!(events, "&team={}", query_escape(team));
    }
    Html(layout(
        page.title(),
        Some(page),
        dashboard.login_required,
        &body,
        Some(&events),
    ))
    .into_response()
}

/// `text` for a query string: letters, digits and `-_.` as they are,
/// anything else percent-encoded.
fn query_escape(text: &str) -> String {
    let mut escaped = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.".contains(&byte) {
            escaped.push(char::from(byte));
        } else {
            let _ = write!(escaped, "%{byte:02X}");
        }
    }
    escaped
}

/// A page's content now; a store that cannot be read is said in it.
pub(crate) async fn content(store: &Store, page: Page, filter: &Filter) -> String {
    let rendered = match page {
        Page::Team => team_content(store, filter).await,
        Page::Tasks => tasks_content(store, filter).await,
        Page::Messages => messages_content(store, filter).await,
        Page::Audit => audit_content(store).await,
    };
    rendered.unwrap_or_else(|error| {
        format!(
            "<p class=\"error\">The store cannot be read now: {}</p>",
            escape(&error.to_string())
        )
    })
}

/// How long ago `at` was, in words.
fn ago(at: Option<Timestamp>, now: Timestamp) -> String {
    let Some(at) = at else {
        return "never".into();
    };
    let seconds = (now.as_millis() - at.as_millis()).max(0) / 1000;
    match seconds {
        0..120 => format!("{seconds} s ago"),
        120..7200 => format!("{} min ago", seconds / 60),
        _ => format!("{} h ago", seconds / 3600),
    }
}

/// The live conversations of the filter's team (all teams if none).
fn live<'a>(
    conversations: &'a [ConversationInfo],
    filter: &'a Filter,
) -> impl Iterator<Item = &'a ConversationInfo> {
    conversations.iter().filter(move |conversation| {
        !conversation.expired
            && filter
                .team()
                .is_none_or(|team| conversation.team.as_deref() == Some(team))
    })
}

/// Links to each team's view of `page`, and to all.
fn team_links(page: Page, conversations: &[ConversationInfo], filter: &Filter) -> String {
    let teams: BTreeSet<&str> = conversations
        .iter()
        .filter_map(|conversation| conversation.team.as_deref())
        .collect();
    let mut links = format!("<p class=\"teams\">Team: <a href=\"/{}\"", page.path());
    if filter.team().is_none() {
        links.push_str(" aria-current=\"page\"");
    }
    links.push_str(">all</a>");
    for team in teams {
        let current = if filter.team() == Some(team) {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(
            links,
            " <a href=\"/{}?team={}\"{current}>{}</a>",
            page.path(),
            query_escape(team),
            escape(team)
        );
    }
    links.push_str("</p>");
    links
}

async fn team_content(store: &Store, filter: &Filter) -> bridge_core::Result<String> {
    let conversations = store.conversations().await?;
    let tasks = store.all_tasks(filter.team()).await?;
    let now = Timestamp::now();
    let mut html = team_links(Page::Team, &conversations, filter);
    html.push_str(
        "<table id=\"team\"><thead><tr><th>Worker</th><th>Orchestrator</th><th>Team</th>\
         <th>Health</th><th>Status</th><th>Heard from</th><th>Open tasks</th></tr></thead><tbody>",
    );
    let mut any = false;
    for conversation in live(&conversations, filter) {
        any = true;
        let [orchestrator, worker] = &conversation.sessions;
        let health = worker.health();
        let heard = [worker.last_heartbeat, worker.last_seen]
            .into_iter()
            .flatten()
            .max();
        let open: Vec<&Task> = tasks
            .iter()
            .filter(|task| task.conversation_id == conversation.id && task.state.is_active())
            .collect();
        let mut titles = String::new();
        for task in &open {
            let _ = write!(
                titles,
                "<li data-task=\"{}\">#{} {}</li>",
                task.id,
                task.id,
                escape(&task.title)
            );
        }
        let _ = write!(
            html,
            "<tr data-worker=\"{worker_role}\" data-health=\"{health}\" data-conversation=\"{id}\">\
             <td>{worker_role}</td><td>{orchestrator_role}</td><td>{team}</td>\
             <td><span class=\"health {health}\">{health}</span></td><td>{status}</td>\
             <td>{heard}</td><td>{count}<ul>{titles}</ul></td></tr>",
            worker_role = escape(&worker.role),
            orchestrator_role = escape(&orchestrator.role),
            health = health.as_str(),
            id = escape(conversation.id.as_str()),
            team = escape(conversation.team.as_deref().unwrap_or("")),
            status = worker.status.map(|status| status.as_str()).unwrap_or("-"),
            heard = ago(heard, now),
            count = open.len(),
        );
    }
    html.push_str("</tbody></table>");
    if !any {
        html.push_str("<p>No live conversation yet.</p>");
    }
    let counts = Health::ALL.map(|health| {
        live(&conversations, filter)
            .filter(|conversation| conversation.sessions[1].health() == health)
            .count()
    });
    let _ = write!(
        html,
        "<p class=\"summary\">{} healthy, {} quiet, {} silent.</p>",
        counts[0], counts[1], counts[2]
    );
    Ok(html)
}

async fn tasks_content(store: &Store, filter: &Filter) -> bridge_core::Result<String> {
    let conversations = store.conversations().await?;
    let tasks = store.all_tasks(filter.team()).await?;
    let history = store.task_history(filter.team()).await?;
    let worker = |id: &bridge_core::ConversationId| {
        conversations
            .iter()
            .find(|conversation| &conversation.id == id)
            .map_or_else(|| id.to_string(), |c| c.sessions[1].role.clone())
    };
    let mut html = team_links(Page::Tasks, &conversations, filter);
    html.push_str("<div class=\"board\">");
    for state in TaskState::ALL {
        let column: Vec<&Task> = tasks.iter().filter(|task| task.state == state).collect();
        let _ = write!(
            html,
            "<section data-state=\"{state}\"><h2>{state} ({})</h2>",
            column.len(),
            state = state.as_str()
        );
        for task in column {
            let steps: Vec<&Assignment> = history
                .iter()
                .filter(|step| step.task_id == task.id)
                .collect();
            let mut lines = String::new();
            for step in steps {
                let ended = match (&step.ended_by, step.ended_at) {
                    (Some(why), Some(at)) => format!(", until {at} ({})", escape(why)),
                    _ => String::new(),
                };
                let _ = write!(
                    lines,
                    "<li>{} from {}{ended}</li>",
                    escape(&worker(&step.conversation_id)),
                    step.assigned_at
                );
            }
            let unassigned = if task.unassigned {
                " <em>waiting for a healthy worker</em>"
            } else {
                ""
            };
            let _ = write!(
                html,
                "<article data-task=\"{id}\"><h3>#{id} {title}</h3>\
                 <p>{worker}{unassigned} · {team} · attempt {attempts}</p><ol>{lines}</ol></article>",
                id = task.id,
                title = escape(&task.title),
                worker = escape(&worker(&task.conversation_id)),
                team = escape(task.team.as_deref().unwrap_or("no team")),
                attempts = task.attempts,
            );
        }
        html.push_str("</section>");
    }
    html.push_str("</div>");
    Ok(html)
}

async fn messages_content(store: &Store, filter: &Filter) -> bridge_core::Result<String> {
    let conversations = store.conversations().await?;
    let mut html = team_links(Page::Messages, &conversations, filter);
    for conversation in live(&conversations, filter) {
        let detail = store
            .conversation_detail(&conversation.id, MESSAGES_PER_CONVERSATION)
            .await?;
        let role = |session: SessionId| {
            escape(&conversation.sessions[usize::from(session == SessionId::B)].role)
        };
        let _ = write!(
            html,
            "<section data-conversation=\"{}\"><h2>{} ↔ {}</h2><ol class=\"messages\">",
            escape(conversation.id.as_str()),
            role(SessionId::A),
            role(SessionId::B)
        );
        for shown in detail.recent_messages.iter().rev() {
            let message = &shown.message;
            let from = match message.from {
                Sender::A => role(SessionId::A),
                Sender::B => role(SessionId::B),
                Sender::System => "system".into(),
            };
            let _ = write!(
                html,
                "<li data-message=\"{}\"><span class=\"meta\">{} · {from} → {} · {}{}</span>\
                 <pre>{}</pre></li>",
                message.id,
                message.created_at,
                role(message.to),
                message.action_type.as_str(),
                if shown.read { "" } else { " · unread" },
                escape(&message.body)
            );
        }
        html.push_str("</ol></section>");
    }
    Ok(html)
}

async fn audit_content(store: &Store) -> bridge_core::Result<String> {
    let report = store.verify_audit().await?;
    let entries = store.audit_entries(None, AUDIT_ROWS).await?;
    let verdict = match &report.first_bad {
        None => "<p class=\"verdict intact\" id=\"verdict\">The chain is intact.</p>".to_owned(),
        Some(bad) => format!(
            "<p class=\"verdict broken\" id=\"verdict\">The chain is BROKEN at row {}: {}</p>",
            bad.id,
            escape(&bad.problem)
        ),
    };
    let mut html = format!(
        "{verdict}<dl><dt>Rows</dt><dd id=\"rows\">{}</dd><dt>Head</dt><dd id=\"head\"><code>{}\
         </code></dd></dl><table><thead><tr><th>Row</th><th>At</th><th>Conversation</th>\
         <th>Session</th><th>Action</th><th>Detail</th></tr></thead><tbody>",
        report.rows,
        escape(report.head.as_deref().unwrap_or("(empty)"))
    );
    for entry in entries.iter().rev() {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            entry.id,
            entry.at,
            escape(entry.conversation_id.as_deref().unwrap_or("")),
            escape(entry.session.as_deref().unwrap_or("")),
            escape(&entry.action),
            escape(&entry.detail)
        );
    }
    html.push_str("</tbody></table>");
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_in_a_url_is_percent_encoded() {
        assert_eq!(query_escape("core-1"), "core-1");
        assert_eq!(query_escape("a&b <c>"), "a%26b%20%3Cc%3E");
    }

    #[test]
    fn times_ago_are_words() {
        let now = Timestamp::from_millis(10_000_000);
        assert_eq!(ago(None, now), "never");
        assert_eq!(ago(Some(Timestamp::from_millis(9_995_000)), now), "5 s ago");
        assert_eq!(
            ago(Some(Timestamp::from_millis(9_700_000)), now),
            "5 min ago"
        );
        assert_eq!(ago(Some(Timestamp::from_millis(0)), now), "2 h ago");
    }
}

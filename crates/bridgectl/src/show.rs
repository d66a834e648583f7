//! What `bridgectl` prints for people: aligned tables and short reports.
//! The `--json` output is the same values, serialized.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use bridge_core::{
    AccessKeyInfo, Approval, AuditEntry, AuditReport, ConversationDetail, ConversationId,
    ConversationInfo, CreatedConversation, Task, Timestamp,
};
use serde::Serialize;

use crate::Handed;

/// "12 s", "5 min", "3 h", "2 d".
fn age(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..120 => format!("{seconds} s"),
        120..7_200 => format!("{} min", seconds / 60),
        7_200..172_800 => format!("{} h", seconds / 3_600),
        _ => format!("{} d", seconds / 86_400),
    }
}

/// How long ago `at` was, or `never`.
fn ago(at: Option<Timestamp>, now: Timestamp) -> String {
    at.map_or_else(
        || "never".to_owned(),
        |at| format!("{} ago", age(at.age_at(now))),
    )
}

/// Rows as left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (cell, width) in cells.zip(&widths) {
            let _ = write!(out, "{cell:<width$}  ");
        }
        let _ = writeln!(text, "{}", out.trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    text
}

/// The tokens' lines: printed, or where they were written.
fn tokens_text(id: &ConversationId, tokens: &[Handed]) -> String {
    let mut text = String::new();
    for handed in tokens {
        match (&handed.token, &handed.file) {
            (Some(token), _) => {
                let _ = writeln!(text, "token {}: {token}", handed.session);
            }
            (None, Some(file)) => {
                let _ = writeln!(
                    text,
                    "token {}: written to {}",
                    handed.session,
                    file.display()
                );
            }
            (None, None) => {}
        }
    }
    if tokens.iter().any(|handed| handed.token.is_some()) {
        let _ = writeln!(
            text,
            "These tokens are shown once: the database keeps only their digests. \
             A lost token is replaced with `bridgectl rotate-tokens {id}`."
        );
    }
    text
}

/// What `create` reports.
#[derive(Debug, Serialize)]
pub struct Created {
    conversation_id: ConversationId,
    role_a: String,
    role_b: String,
    team: Option<String>,
    expires_at: Timestamp,
    tokens: Vec<Handed>,
}

impl Created {
    pub fn new(created: &CreatedConversation, tokens: Vec<Handed>) -> Created {
        Created {
            conversation_id: created.id.clone(),
            role_a: created.role_a.clone(),
            role_b: created.role_b.clone(),
            team: created.team.clone(),
            expires_at: created.expires_at,
            tokens,
        }
    }

    pub fn text(&self) -> String {
        let mut text = format!(
            "conversation {}: {} (a) and {} (b){}, expires {}\n",
            self.conversation_id,
            self.role_a,
            self.role_b,
            self.team
                .as_deref()
                .map_or_else(String::new, |team| format!(", team {team}")),
            self.expires_at
        );
        text.push_str(&tokens_text(&self.conversation_id, &self.tokens));
        text
    }
}

/// What `rotate-tokens` reports.
#[derive(Debug, Serialize)]
pub struct Rotated {
    pub id: ConversationId,
    pub tokens: Vec<Handed>,
}

impl Rotated {
    pub fn text(&self) -> String {
        let mut text = match self.tokens.as_slice() {
            [one] => format!(
                "conversation {}: a new token for session {}; the old one no longer works\n",
                self.id, one.session
            ),
            _ => format!(
                "conversation {}: new tokens; the old ones no longer work\n",
                self.id
            ),
        };
        text.push_str(&tokens_text(&self.id, &self.tokens));
        text
    }
}

/// `list`.
pub fn conversations(conversations: &[ConversationInfo]) -> String {
    if conversations.is_empty() {
        return "No conversations.\n".to_owned();
    }
    let now = Timestamp::now();
    let rows: Vec<Vec<String>> = conversations
        .iter()
        .map(|c| {
            let alive = |n: usize| if c.sessions[n].alive { "alive" } else { "-" };
            vec![
                c.id.to_string(),
                c.team.clone().unwrap_or_default(),
                format!("{} / {}", c.sessions[0].role, c.sessions[1].role),
                if c.expired {
                    "expired".to_owned()
                } else {
                    format!("in {}", age(now.age_at(c.expires_at)))
                },
                format!("{} / {}", alive(0), alive(1)),
                c.messages.to_string(),
                c.open_tasks.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "CONVERSATION",
            "TEAM",
            "ROLES (A / B)",
            "EXPIRES",
            "ALIVE (A / B)",
            "MESSAGES",
            "OPEN TASKS",
        ],
        &rows,
    )
}

/// `show`.
pub fn detail(detail: &ConversationDetail) -> String {
    let info = &detail.info;
    let now = Timestamp::now();
    let mut text = format!(
        "conversation {}{}\ncreated {}, {} {}\n\n",
        info.id,
        info.team
            .as_deref()
            .map_or_else(String::new, |team| format!(" (team {team})")),
        info.created_at,
        if info.expired { "expired" } else { "expires" },
        info.expires_at,
    );
    let sessions: Vec<Vec<String>> = info
        .sessions
        .iter()
        .map(|s| {
            vec![
                s.session.to_string(),
                s.role.clone(),
                s.status.map_or("-", |status| status.as_str()).to_owned(),
                ago(s.last_heartbeat, now),
                ago(s.last_seen, now),
                if s.alive { "yes" } else { "no" }.to_owned(),
                s.unread.to_string(),
            ]
        })
        .collect();
    text.push_str(&table(
        &[
            "SESSION",
            "ROLE",
            "STATUS",
            "HEARTBEAT",
            "LAST CALL",
            "ALIVE",
            "UNREAD",
        ],
        &sessions,
    ));
    let _ = writeln!(
        text,
        "\nmessages ({} in all, the latest {} shown; * = not yet received):",
        info.messages,
        detail.recent_messages.len()
    );
    for shown in &detail.recent_messages {
        let m = &shown.message;
        let first_line = m.body.lines().next().unwrap_or("");
        let _ = writeln!(
            text,
            "{} #{} {} -> {} ({}) {}: {}",
            if shown.read { " " } else { "*" },
            m.id,
            m.from,
            m.to,
            m.action_type,
            m.created_at,
            first_line
        );
    }
    let _ = writeln!(text, "\ntasks:");
    if detail.tasks.is_empty() {
        text.push_str("none\n");
    } else {
        text.push_str(&task_table(&detail.tasks));
    }
    text
}

/// One worker's health, for `status`.
#[derive(Debug, Serialize)]
pub struct WorkerHealth {
    conversation_id: ConversationId,
    team: Option<String>,
    role: String,
    status: Option<String>,
    last_heartbeat: Option<Timestamp>,
    heartbeat_age_seconds: Option<u64>,
    alive: bool,
    open_tasks: u64,
}

/// The workers (sessions `b`) of live conversations, of one team or all.
pub fn workers(conversations: Vec<ConversationInfo>, team: Option<&str>) -> Vec<WorkerHealth> {
    let now = Timestamp::now();
    conversations
        .into_iter()
        .filter(|c| !c.expired && team.is_none_or(|team| c.team.as_deref() == Some(team)))
        .map(|c| {
            let [_, worker] = c.sessions;
            WorkerHealth {
                conversation_id: c.id,
                team: c.team,
                role: worker.role,
                status: worker.status.map(|status| status.to_string()),
                last_heartbeat: worker.last_heartbeat,
                heartbeat_age_seconds: worker.last_heartbeat.map(|at| at.age_at(now).as_secs()),
                alive: worker.alive,
                open_tasks: c.open_tasks,
            }
        })
        .collect()
}

/// `status`.
pub fn status(workers: &[WorkerHealth]) -> String {
    if workers.is_empty() {
        return "No workers in live conversations.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.conversation_id.to_string(),
                w.team.clone().unwrap_or_default(),
                w.role.clone(),
                w.status.clone().unwrap_or_else(|| "-".to_owned()),
                w.heartbeat_age_seconds.map_or_else(
                    || "never".to_owned(),
                    |s| format!("{} ago", age(Duration::from_secs(s))),
                ),
                if w.alive { "yes" } else { "no" }.to_owned(),
                w.open_tasks.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "CONVERSATION",
            "TEAM",
            "WORKER",
            "STATUS",
            "HEARTBEAT",
            "ALIVE",
            "OPEN TASKS",
        ],
        &rows,
    )
}

fn task_table(tasks: &[Task]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                format!("#{}", t.id),
                if t.unassigned {
                    format!("{} (unassigned)", t.state)
                } else {
                    t.state.to_string()
                },
                t.conversation_id.to_string(),
                t.team.clone().unwrap_or_default(),
                t.attempts.to_string(),
                t.title.clone(),
            ]
        })
        .collect();
    table(
        &["TASK", "STATE", "CONVERSATION", "TEAM", "ATTEMPTS", "TITLE"],
        &rows,
    )
}

/// `tasks`.
pub fn tasks(tasks: &[Task]) -> String {
    if tasks.is_empty() {
        return "No tasks.\n".to_owned();
    }
    task_table(tasks)
}

/// `audit`.
pub fn audit(entries: &[AuditEntry]) -> String {
    if entries.is_empty() {
        return "No audit rows.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.at.to_string(),
                e.conversation_id.clone().unwrap_or_default(),
                e.session.clone().unwrap_or_default(),
                e.action.clone(),
                e.detail.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "AT", "CONVERSATION", "SESSION", "ACTION", "DETAIL"],
        &rows,
    )
}

/// `audit verify`.
pub fn verified(report: &AuditReport) -> String {
    match &report.first_bad {
        None => format!(
            "audit trail intact: {} rows, head {}\n",
            report.rows,
            report.head.as_deref().unwrap_or("(empty)")
        ),
        Some(bad) => format!(
            "audit trail BROKEN at row {}: {} ({} rows checked)\n",
            bad.id, bad.problem, report.rows
        ),
    }
}

/// What `cleanup` reports.
#[derive(Debug, Serialize)]
pub struct Cleaned {
    pub dry_run: bool,
    pub removed: Vec<ConversationId>,
}

impl Cleaned {
    pub fn text(&self) -> String {
        let count = self.removed.len();
        let plural = if count == 1 { "" } else { "s" };
        let mut text = if self.dry_run {
            format!("{count} expired conversation{plural} would be removed (dry run)\n")
        } else {
            format!("{count} expired conversation{plural} removed\n")
        };
        for id in &self.removed {
            let _ = writeln!(text, "  {id}");
        }
        text
    }
}

/// `yolo token`.
pub fn issued(token: &str, approval: &Approval) -> String {
    let scope = approval.conversation_id.as_ref().map_or_else(
        || "any conversation".to_owned(),
        |id| format!("conversation {id}"),
    );
    format!(
        "approval token: {token}\n\
         It runs one command, in {scope}, until {}. It is shown once: the database keeps \
         only its digest.\n",
        approval.expires_at
    )
}

/// `yolo tokens`.
pub fn approvals(approvals: &[Approval]) -> String {
    if approvals.is_empty() {
        return "No usable approval tokens.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = approvals
        .iter()
        .map(|a| {
            vec![
                format!("{}…", a.preview),
                a.conversation_id
                    .as_ref()
                    .map_or_else(|| "(any)".to_owned(), ToString::to_string),
                a.created_at.to_string(),
                a.expires_at.to_string(),
            ]
        })
        .collect();
    table(&["TOKEN", "CONVERSATION", "ISSUED", "EXPIRES"], &rows)
}

/// `access create`.
pub fn access_made(key: Option<&str>, file: Option<&Path>, info: &AccessKeyInfo) -> String {
    let expiry = info.expires_at.as_ref().map_or_else(
        || "until it is revoked".to_owned(),
        |at| format!("until {at}"),
    );
    let shown = match (key, file) {
        (Some(key), _) => format!(
            "access key {}: {key}
",
            info.name
        ),
        (None, Some(file)) => format!(
            "access key {} written to {} (mode 0600)
",
            info.name,
            file.display()
        ),
        (None, None) => format!(
            "access key {}
",
            info.name
        ),
    };
    format!(
        "{shown}It works {expiry}. Send it as Authorization: Bearer <key>. It is shown once: the \
         database keeps only its digest.\n"
    )
}

/// `access list`.
pub fn access_keys(keys: &[AccessKeyInfo]) -> String {
    if keys.is_empty() {
        return "No access keys.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|key| {
            vec![
                key.name.clone(),
                key.created_at.to_string(),
                key.last_used_at
                    .as_ref()
                    .map_or_else(|| "never".to_owned(), ToString::to_string),
                key.expires_at
                    .as_ref()
                    .map_or_else(|| "never".to_owned(), ToString::to_string),
            ]
        })
        .collect();
    table(&["NAME", "CREATED", "LAST USED", "EXPIRES"], &rows)
}

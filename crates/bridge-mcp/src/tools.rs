//! The arguments and results of the tools, with the JSON schemas `tools/list`
//! advertises, and the text an agent reads.
//!
//! Argument names and bounds are the original bridge's, so prompts written
//! for it keep working. The bounds in the schemas are advice to the client;
//! `bridge-core` enforces them again, and its error is the one the caller
//! sees. Descriptions are short: every byte of `tools/list` lands in an
//! agent's context. So doc comments (`///`) here are the schema's
//! descriptions, kept to what an agent needs; enum variants have none (with
//! them, an enum becomes a list of described constants) and result fields
//! mostly only a plain comment.

use std::fmt::Write;

use bridge_core::{
    ActionType, CreatedConversation, Message, SentMessage, SessionId, SessionStatus, Status, Task,
    TaskState,
};
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Declares the arguments of a tool that authenticates: the three fields
/// every such tool takes (written out in each struct rather than flattened,
/// so that an error names the argument), then the tool's own. The three are
/// optional in the schema: over HTTP, a session token in the
/// `Authorization` header stands for them (`http_auth`); elsewhere they are
/// required, and their absence is refused in serde's words.
macro_rules! caller_args {
    ($(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize, JsonSchema)]
        pub struct $name {
            #[allow(missing_docs)]
            #[schemars(regex(pattern = r"^conv_[a-f0-9]{16}$"))]
            pub conversation_id: Option<String>,
            /// a (creator) or b (partner)
            pub session_id: Option<$crate::tools::Session>,
            #[allow(missing_docs)]
            #[schemars(length(min = 64, max = 64))]
            pub token: Option<String>,
            $($fields)*
        }

        impl $name {
            /// The caller's credentials, checked for shape (a malformed
            /// token is not echoed): from the arguments, or from the key
            /// the request was authenticated with.
            pub fn credentials(
                &self,
                identity: &$crate::http_auth::Identity,
            ) -> bridge_core::Result<bridge_core::Credentials> {
                identity.credentials(
                    self.conversation_id.as_deref(),
                    self.session_id.map(Into::into),
                    self.token.as_deref(),
                )
            }
        }
    };
}

/// For the command-execution tools' arguments (`exec.rs`).
pub(crate) use caller_args;

caller_args! {
    /// `check_partner_status`.
    pub struct Caller {}
}

// A session of a conversation.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Session {
    A,
    B,
}

impl From<Session> for SessionId {
    fn from(session: Session) -> SessionId {
        match session {
            Session::A => SessionId::A,
            Session::B => SessionId::B,
        }
    }
}

/// `create_conversation`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateArgs {
    /// Your role, e.g. orchestrator
    #[schemars(length(min = 3, max = 100))]
    pub my_role: String,
    /// Partner's role, e.g. backend worker
    #[schemars(length(min = 3, max = 100))]
    pub partner_role: String,
    /// Team of the orchestrator's workers
    #[schemars(length(min = 1, max = 100))]
    pub team: Option<String>,
    /// Lifetime in seconds (default 10800)
    #[schemars(range(min = 1, max = 31_536_000))]
    pub ttl_seconds: Option<u64>,
}

// What a message is for.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Question,
    Info,
    Proposal,
    Blocked,
    Complete,
}

impl From<Action> for ActionType {
    fn from(action: Action) -> ActionType {
        match action {
            Action::Question => ActionType::Question,
            Action::Info => ActionType::Info,
            Action::Proposal => ActionType::Proposal,
            Action::Blocked => ActionType::Blocked,
            Action::Complete => ActionType::Complete,
        }
    }
}

caller_args! {
    /// `send_to_partner`.
    pub struct SendArgs {
    /// The message
    #[schemars(length(min = 1, max = 50_000))]
    pub message: String,
    /// Default info
    pub action_type: Option<Action>,
    /// Paths the message is about
    #[schemars(length(max = 20))]
    pub files_involved: Option<Vec<String>>,
    /// Same key on retry: sent once
    #[schemars(length(min = 1, max = 100))]
    pub idempotency_key: Option<String>,
    }
}

caller_args! {
    /// `check_messages`.
    pub struct CheckArgs {
    /// Look without marking them read
    pub peek: Option<bool>,
    /// At most this many (default 100)
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
    /// Last message id you processed
    #[schemars(range(min = 0))]
    pub ack: Option<i64>,
    /// Peek after this id, read or not
    #[schemars(range(min = 0))]
    pub after_id: Option<i64>,
    }
}

// What an agent may say it is doing.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Working,
    Waiting,
    Blocked,
    Complete,
}

impl From<AgentStatus> for Status {
    fn from(status: AgentStatus) -> Status {
        match status {
            AgentStatus::Working => Status::Working,
            AgentStatus::Waiting => Status::Waiting,
            AgentStatus::Blocked => Status::Blocked,
            AgentStatus::Complete => Status::Complete,
        }
    }
}

caller_args! {
    /// `update_my_status`.
    pub struct StatusArgs {
    #[allow(missing_docs)]
    pub status: Option<AgentStatus>,
    }
}

caller_args! {
    /// `wait_for_messages`.
    pub struct WaitArgs {
    /// Give up after this long (default 60)
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<u64>,
    /// Last message id you processed
    #[schemars(range(min = 0))]
    pub ack: Option<i64>,
    /// Wait for one after this id; mark none read
    #[schemars(range(min = 0))]
    pub after_id: Option<i64>,
    }
}

caller_args! {
    /// `read_history`.
    pub struct HistoryArgs {
    /// Only messages after this id (default: the latest)
    #[schemars(range(min = 0))]
    pub since_id: Option<i64>,
    /// At most this many (default 50)
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<u32>,
    }
}

// The result of `create_conversation`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Created {
    // The new conversation.
    pub conversation_id: String,
    /// Yours: keep it secret
    pub session_a_token: String,
    /// Your partner's: hand it over
    pub session_b_token: String,
    // When the conversation expires (RFC 3339).
    pub expires_at: String,
    // The team, if any.
    pub team: Option<String>,
}

impl Created {
    /// The result, from the store's.
    pub fn new(created: &CreatedConversation) -> Created {
        Created {
            conversation_id: created.id.to_string(),
            session_a_token: created.token_a.reveal(),
            session_b_token: created.token_b.reveal(),
            expires_at: created.expires_at.to_string(),
            team: created.team.clone(),
        }
    }

    /// The text: which token to keep, which to hand over.
    pub fn text(&self) -> String {
        format!(
            "Conversation {id} created; it expires at {expires}.\n\
             You are session a. Keep your token secret: {a}\n\
             Give your partner, through a trusted channel: conversation_id {id}, session_id b, token {b}\n\
             Every call needs conversation_id, session_id and token.",
            id = self.conversation_id,
            expires = self.expires_at,
            a = self.session_a_token,
            b = self.session_b_token,
        )
    }
}

// The result of `send_to_partner`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Sent {
    // The message's id.
    pub message_id: i64,
    // When it was stored (RFC 3339).
    pub timestamp: String,
    // Whether secrets were redacted before storing.
    pub redacted: bool,
    // The kinds of secret redacted.
    pub redactions: Vec<String>,
    // Sent before under this idempotency key: nothing stored this time.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl Sent {
    /// The result, from the store's.
    pub fn new(sent: &SentMessage) -> Sent {
        Sent {
            message_id: sent.id,
            timestamp: sent.created_at.to_string(),
            redacted: sent.redacted(),
            redactions: sent
                .redactions
                .iter()
                .map(|kind| (*kind).to_owned())
                .collect(),
            replayed: sent.replayed,
        }
    }

    /// The text.
    pub fn text(&self, to: SessionId) -> String {
        let mut text = if self.replayed {
            format!(
                "Message {} was already sent to session {to} with this idempotency key; nothing was sent again.",
                self.message_id
            )
        } else {
            format!("Message {} sent to session {to}.", self.message_id)
        };
        if self.redacted {
            let _ = write!(
                text,
                " Secrets were redacted before storing: {}.",
                self.redactions.join(", ")
            );
        }
        text
    }
}

// One message, as the tools show it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MessageOut {
    // The message's id (ids grow in the order messages were stored).
    pub id: i64,
    // The sending session.
    pub from: String,
    // The receiving session.
    pub to: String,
    // The text (secrets redacted).
    pub message: String,
    // question, info, proposal, blocked or complete.
    pub action_type: String,
    // Paths the message is about.
    pub files_involved: Vec<String>,
    // When it was sent (RFC 3339).
    pub timestamp: String,
    // Metadata, e.g. the task a message from system is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
    // Handed out before without confirmation: it may have been seen.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub redelivered: bool,
}

impl MessageOut {
    fn new(message: &Message) -> MessageOut {
        MessageOut {
            id: message.id,
            from: message.from.to_string(),
            to: message.to.to_string(),
            message: message.body.clone(),
            action_type: message.action_type.to_string(),
            files_involved: message.files_involved.clone(),
            timestamp: message.created_at.to_string(),
            metadata: message.metadata.clone(),
            redelivered: message.redelivered,
        }
    }
}

// The result of `check_messages` and `read_history`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Messages {
    // The messages, oldest first.
    pub messages: Vec<MessageOut>,
}

impl Messages {
    /// The result, from the store's messages.
    pub fn new(messages: &[Message]) -> Messages {
        Messages {
            messages: messages.iter().map(MessageOut::new).collect(),
        }
    }

    /// The text: one block per message, or `empty` if there are none.
    pub fn text(&self, empty: &str) -> String {
        if self.messages.is_empty() {
            return empty.to_owned();
        }
        let count = self.messages.len();
        let mut text = format!("{count} message{}:\n", if count == 1 { "" } else { "s" });
        for message in &self.messages {
            let _ = write!(
                text,
                "\n#{} from {} ({}) at {}{}:\n{}\n",
                message.id,
                message.from,
                message.action_type,
                message.timestamp,
                if message.redelivered {
                    " (redelivered: you may have seen it)"
                } else {
                    ""
                },
                message.message
            );
            if !message.files_involved.is_empty() {
                let _ = writeln!(text, "Files: {}", message.files_involved.join(", "));
            }
        }
        text
    }
}

// The result of `wait_for_messages`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Waited {
    // The messages, oldest first (marked read).
    pub messages: Vec<MessageOut>,
    /// No message came in time
    pub timed_out: bool,
}

// The result of `update_my_status`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StatusSet {
    // The status set, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    // Messages not yet confirmed.
    pub unread: u64,
}

// The result of `check_partner_status`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Partner {
    // The partner's session.
    pub session: String,
    // The partner's role.
    pub role: String,
    // Its last status, or unknown.
    pub status: String,
    // Its last heartbeat (RFC 3339), if any.
    pub last_heartbeat: Option<String>,
    // Its last call (RFC 3339), if any.
    pub last_seen: Option<String>,
    // Seconds since it was last heard from.
    pub age_seconds: Option<u64>,
    // Whether it was heard from within the liveness window.
    pub alive: bool,
}

impl Partner {
    /// The result, from the store's.
    pub fn new(status: &SessionStatus) -> Partner {
        Partner {
            session: status.session.to_string(),
            role: status.role.clone(),
            status: status.status.map_or("unknown", Status::as_str).to_owned(),
            last_heartbeat: status.last_heartbeat.map(|at| at.to_string()),
            last_seen: status.last_seen.map(|at| at.to_string()),
            age_seconds: status.age.map(|age| age.as_secs()),
            alive: status.alive,
        }
    }

    /// The text.
    pub fn text(&self) -> String {
        let heard = match self.age_seconds {
            Some(age) => format!("last heard from {age} s ago"),
            None => "never heard from".to_owned(),
        };
        format!(
            "Partner (session {}, {}): {}, {}, {}.",
            self.session,
            self.role,
            self.status,
            heard,
            if self.alive { "alive" } else { "not alive" }
        )
    }
}

caller_args! {
    /// `assign_task`.
    pub struct AssignArgs {
    #[allow(missing_docs)]
    #[schemars(length(min = 1, max = 200))]
    pub title: String,
    /// What to do
    #[schemars(length(min = 1, max = 50_000))]
    pub body: String,
    /// Same key on retry: assigned once
    #[schemars(length(min = 1, max = 100))]
    pub idempotency_key: Option<String>,
    }
}

// Where a task stands.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStateArg {
    Open,
    InProgress,
    Done,
    Failed,
    Cancelled,
}

impl From<TaskStateArg> for TaskState {
    fn from(state: TaskStateArg) -> TaskState {
        match state {
            TaskStateArg::Open => TaskState::Open,
            TaskStateArg::InProgress => TaskState::InProgress,
            TaskStateArg::Done => TaskState::Done,
            TaskStateArg::Failed => TaskState::Failed,
            TaskStateArg::Cancelled => TaskState::Cancelled,
        }
    }
}

caller_args! {
    /// `list_tasks`.
    pub struct ListTasksArgs {
    /// Only tasks in this state
    pub state: Option<TaskStateArg>,
    }
}

caller_args! {
    /// `update_task`.
    pub struct UpdateTaskArgs {
    #[allow(missing_docs)]
    #[schemars(range(min = 1))]
    pub task_id: i64,
    /// Worker: in_progress, done, failed; orchestrator: cancelled
    pub state: TaskStateArg,
    /// What happened
    #[schemars(length(max = 10_000))]
    pub note: Option<String>,
    }
}

// One task, as the tools show it; the result of `assign_task` and
// `update_task`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskOut {
    // The task's id.
    pub id: i64,
    // The title (secrets redacted).
    pub title: String,
    // What to do (secrets redacted).
    pub body: String,
    // open, in_progress, done, failed or cancelled.
    pub state: String,
    // How many workers it has been assigned to.
    pub attempts: i64,
    // Its worker went silent and no other could take it yet.
    pub unassigned: bool,
    // The last note of an update.
    pub note: Option<String>,
    // When it last changed (RFC 3339).
    pub updated_at: String,
}

impl TaskOut {
    /// The task, from the store's.
    pub fn new(task: &Task) -> TaskOut {
        TaskOut {
            id: task.id,
            title: task.title.clone(),
            body: task.body.clone(),
            state: task.state.to_string(),
            attempts: task.attempts,
            unassigned: task.unassigned,
            note: task.note.clone(),
            updated_at: task.updated_at.to_string(),
        }
    }

    /// One line: id, state and title.
    fn line(&self) -> String {
        let mut line = format!("#{} [{}] {}", self.id, self.state, self.title);
        if self.attempts > 1 {
            let _ = write!(line, " (attempt {})", self.attempts);
        }
        if self.unassigned {
            line.push_str(" (unassigned: its worker is silent)");
        }
        line
    }

    /// The text of an assignment.
    pub fn assigned_text(&self) -> String {
        format!(
            "Task #{} assigned to session b, who is told in a message: {}",
            self.id, self.title
        )
    }

    /// The text of an update.
    pub fn updated_text(&self) -> String {
        format!(
            "Task #{} is now {}; your partner is told in a message.",
            self.id, self.state
        )
    }
}

// The result of `list_tasks`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Tasks {
    // The tasks, oldest first.
    pub tasks: Vec<TaskOut>,
}

impl Tasks {
    /// The result, from the store's tasks.
    pub fn new(tasks: &[Task]) -> Tasks {
        Tasks {
            tasks: tasks.iter().map(TaskOut::new).collect(),
        }
    }

    /// The text: a line per task, then its body.
    pub fn text(&self) -> String {
        if self.tasks.is_empty() {
            return "No tasks.".to_owned();
        }
        let count = self.tasks.len();
        let mut text = format!("{count} task{}:\n", if count == 1 { "" } else { "s" });
        for task in &self.tasks {
            let _ = write!(text, "\n{}\n{}\n", task.line(), task.body);
            if let Some(note) = &task.note {
                let _ = writeln!(text, "Note: {note}");
            }
        }
        text
    }
}

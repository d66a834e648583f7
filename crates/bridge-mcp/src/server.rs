//! The MCP server: one [`Bridge`] handler, the same for stdio and HTTP, whose
//! tools call `bridge-core`.
//!
//! Every tool answers readable text and `structuredContent` matching its
//! declared output schema. Whatever goes wrong in a call (bad token, expired
//! conversation, rate limit, arguments out of bounds) is a tool result with
//! `isError: true` and the store's one sentence; the server itself never
//! fails on input.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_core::{Credentials, Message, NewConversation, NewMessage, NewTask, Status, Store};
use bridge_metrics::{HubMetrics, Outcome};
use rmcp::handler::server::common::schema_for_type;
use rmcp::handler::server::tool::{ToolCallContext, ToolRouter, schema_for_output};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Serialize;

use crate::arguments::{ArgumentError, parse};
use crate::delivery::{Deliveries, Receipt};
use crate::exec::{self, EnableArgs, ExecuteArgs, Executed, Execution, NotRun, SettingsOut};
use crate::http_auth::Identity;
use crate::schema;
use crate::tools::{
    AssignArgs, Caller, CheckArgs, CreateArgs, Created, HistoryArgs, ListTasksArgs, Messages,
    Partner, SendArgs, Sent, StatusArgs, StatusSet, TaskOut, Tasks, UpdateTaskArgs, WaitArgs,
    Waited,
};

/// Messages one read returns unless the caller says otherwise.
const DEFAULT_LIMIT: u32 = 100;

/// `read_history` returns this many unless told, and at most `MAX_HISTORY`.
const DEFAULT_HISTORY: u32 = 50;
const MAX_HISTORY: u32 = 200;

/// How long `wait_for_messages` waits unless told, and at most.
const DEFAULT_WAIT: u64 = 60;
const MAX_WAIT: u64 = 300;

/// What the server tells a client at `initialize`.
const INSTRUCTIONS: &str = "Agents talk through conversations of two sessions. \
create_conversation makes you session a; hand conversation_id and the session b token to your \
partner. Then send_to_partner, and check_messages or wait_for_messages (which blocks until a \
message arrives, instead of polling). Tokens are shown once; keep them secret. An orchestrator \
(session a) hands work to its worker with assign_task; the worker reports with update_task; \
list_tasks shows them. Messages from system tell each side of task changes.";

/// The handler: the store and the tools, for one client. Over HTTP each
/// MCP session gets its own ([`Bridge::for_new_client`]).
#[derive(Clone)]
pub struct Bridge {
    store: Store,
    execution: Execution,
    tool_router: Arc<ToolRouter<Bridge>>,
    /// The `tools/list` answer, computed once: with the caller's arguments
    /// required, and for a client whose session token is its key, without.
    tools: Arc<Vec<Tool>>,
    keyed_tools: Arc<Vec<Tool>>,
    /// What this client was handed, for the confirmation of its next
    /// consuming call (see `delivery`).
    deliveries: Deliveries,
    /// The hub's metrics, shared by every client.
    metrics: HubMetrics,
}

tokio::task_local! {
    /// How the tool call running in this task was refused, when a rate
    /// limit refused it (see [`respond`]); read by `call_tool` for the
    /// metrics.
    static RATE_LIMITED: Cell<bool>;
}

impl Bridge {
    /// A handler serving `store`, without command execution.
    pub fn new(store: Store) -> Bridge {
        Bridge::with_execution(store, Execution::OFF)
    }

    /// A handler serving `store`; with `execution.enabled` (gate 1), it
    /// also has the command-execution tools.
    pub fn with_execution(store: Store, execution: Execution) -> Bridge {
        let mut tool_router = Bridge::tool_router();
        if execution.enabled {
            tool_router.merge(Bridge::execution_router());
        }
        let keyed_tools: Vec<Tool> = tool_router
            .list_all()
            .into_iter()
            .map(schema::trimmed_tool)
            .collect();
        let tools = keyed_tools
            .iter()
            .cloned()
            .map(schema::caller_required)
            .collect();
        Bridge {
            store,
            execution,
            tool_router: Arc::new(tool_router),
            tools: Arc::new(tools),
            keyed_tools: Arc::new(keyed_tools),
            deliveries: Deliveries::default(),
            metrics: HubMetrics::new(),
        }
    }

    /// The hub's metrics.
    pub fn metrics(&self) -> &HubMetrics {
        &self.metrics
    }

    /// The store it serves.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The handler for another client: the same store and tools, and
    /// nothing handed out yet.
    pub fn for_new_client(&self) -> Bridge {
        Bridge {
            deliveries: Deliveries::default(),
            ..self.clone()
        }
    }

    /// A consuming read for `credentials`: confirms what this client says
    /// (`ack`) or evidently received, hands out up to `limit` messages, and
    /// remembers them with the answer's `receipt`.
    async fn deliver(
        &self,
        credentials: &Credentials,
        receipt: Receipt,
        ack: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Message>, bridge_core::Error> {
        let key = (credentials.conversation_id.clone(), credentials.session);
        let confirm = self.deliveries.confirm(&key, ack, &receipt);
        let messages = self.store.deliver(credentials, confirm, limit).await?;
        if let Some(last) = messages.last() {
            self.deliveries.handed(key, receipt, last.id);
        }
        Ok(messages)
    }
}

/// A successful result: `text` for people and `value` as structured content.
fn answer<T: Serialize>(text: String, value: &T) -> Result<CallToolResult, ErrorData> {
    let value = serde_json::to_value(value)
        .map_err(|error| ErrorData::internal_error(error.to_string(), None))?;
    let mut result = CallToolResult::structured(value);
    result.content = vec![ContentBlock::text(text)];
    Ok(result)
}

/// Why a call is refused: its arguments, or the store's answer. Either way
/// the caller gets `isError` and the one sentence.
enum Refusal {
    Arguments(ArgumentError),
    Store(bridge_core::Error),
}

impl From<ArgumentError> for Refusal {
    fn from(error: ArgumentError) -> Refusal {
        Refusal::Arguments(error)
    }
}

impl From<bridge_core::Error> for Refusal {
    fn from(error: bridge_core::Error) -> Refusal {
        Refusal::Store(error)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Arguments(error) => error.fmt(f),
            Refusal::Store(error) => error.fmt(f),
        }
    }
}

/// Turns the outcome of a call into its tool result: `ok` builds the answer,
/// a refusal becomes `isError` with its sentence.
fn respond<T>(
    outcome: Result<T, Refusal>,
    ok: impl FnOnce(T) -> Result<CallToolResult, ErrorData>,
) -> Result<CallToolResult, ErrorData> {
    match outcome {
        Ok(value) => ok(value),
        Err(refusal) => {
            tracing::debug!(%refusal, "tool call refused");
            if let Refusal::Store(bridge_core::Error::RateLimited { .. }) = refusal {
                // Outside a call (a test of the tool alone) nothing counts.
                let _ = RATE_LIMITED.try_with(|limited| limited.set(true));
            }
            Ok(CallToolResult::error(vec![ContentBlock::text(
                refusal.to_string(),
            )]))
        }
    }
}

/// Checks an optional count against `1..=max` with the store's wording.
fn bounded(
    field: &'static str,
    value: Option<u64>,
    default: u64,
    max: u64,
) -> Result<u64, Refusal> {
    let value = value.unwrap_or(default);
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Refusal::Store(bridge_core::Error::Invalid {
            field,
            reason: format!("must be 1 to {max}, got {value}"),
        }))
    }
}

/// `after_id`, which peeks (a read that marks nothing, for a watcher that
/// keeps its own place): refused with `ack`, which confirms a consuming
/// read.
fn peek_after(after_id: Option<i64>, ack: Option<i64>) -> Result<Option<i64>, Refusal> {
    match (after_id, ack) {
        (Some(_), Some(_)) => Err(Refusal::Store(bridge_core::Error::Invalid {
            field: "after_id",
            reason: "it peeks, and ack confirms a read that consumes: give one of them".into(),
        })),
        (Some(after), None) if after < 0 => Err(Refusal::Store(bridge_core::Error::Invalid {
            field: "after_id",
            reason: format!("must be 0 or more, got {after}"),
        })),
        (after, _) => Ok(after),
    }
}

/// A read limit, bounded like [`bounded`].
fn limit(value: Option<u32>, default: u32, max: u32) -> Result<u32, Refusal> {
    let value = bounded(
        "limit",
        value.map(u64::from),
        u64::from(default),
        u64::from(max),
    )?;
    Ok(u32::try_from(value).unwrap_or(max))
}

#[tool_router]
impl Bridge {
    #[tool(
        input_schema = schema_for_type::<CreateArgs>(),
        description = "Create a conversation with a partner. Returns the id and both tokens, once.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<Created>()
    )]
    async fn create_conversation(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let identity = Identity::of(&context);
        let outcome = async {
            identity.may_create()?;
            let args: CreateArgs = parse(arguments)?;
            let mut new = NewConversation::new(args.my_role, args.partner_role);
            new.team = args.team;
            new.ttl = args.ttl_seconds.map(Duration::from_secs);
            if let Identity::Operator { name } = &identity {
                new.created_by = Some(name.clone());
            }
            Ok(self.store.create_conversation(new).await?)
        };
        respond(outcome.await, |created| {
            let created = Created::new(&created);
            answer(created.text(), &created)
        })
    }

    #[tool(
        input_schema = schema_for_type::<SendArgs>(),
        description = "Send a message to your partner. Secrets are redacted.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<Sent>()
    )]
    async fn send_to_partner(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let identity = Identity::of(&context);
        let outcome = async {
            let args: SendArgs = parse(arguments)?;
            let credentials = args.credentials(&identity)?;
            let mut message = NewMessage::new(args.message);
            message.action_type = args.action_type.map(Into::into).unwrap_or_default();
            message.files_involved = args.files_involved.unwrap_or_default();
            message.idempotency_key = args
                .idempotency_key
                .as_deref()
                .map(str::parse)
                .transpose()?;
            let sent = self.store.send(&credentials, message).await?;
            self.metrics.message_sent();
            Ok((sent, credentials.session.partner()))
        };
        respond(outcome.await, |(sent, to)| {
            let sent = Sent::new(&sent);
            answer(sent.text(to), &sent)
        })
    }

    #[tool(
        input_schema = schema_for_type::<CheckArgs>(),
        description = "Get your new messages; peek leaves them unread.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<Messages>()
    )]
    async fn check_messages(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let identity = Identity::of(&context);
        let outcome = async {
            let args: CheckArgs = parse(arguments)?;
            let credentials = args.credentials(&identity)?;
            let limit = limit(args.limit, DEFAULT_LIMIT, bridge_core::MAX_READ_LIMIT)?;
            let after = peek_after(args.after_id, args.ack)?;
            let messages = if let Some(after) = after {
                self.store.peek_after(&credentials, after, limit).await?
            } else if args.peek.unwrap_or(false) {
                // A peek hands nothing out; its ack confirms what an
                // earlier consuming read did (check-messages --mark-read
                // over HTTP confirms this way, once it printed them).
                if let Some(ack) = args.ack {
                    self.store.ack(&credentials, ack).await?;
                }
                self.store.peek(&credentials, limit).await?
            } else {
                let receipt = Receipt::of(&context);
                self.deliver(&credentials, receipt, args.ack, limit).await?
            };
            Ok(messages)
        };
        respond(outcome.await, |messages| {
            let messages = Messages::new(&messages);
            answer(messages.text("No new messages."), &messages)
        })
    }

    #[tool(
        input_schema = schema_for_type::<WaitArgs>(),
        description = "Wait until a message arrives (or timeout_seconds pass), then get it.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<Waited>()
    )]
    async fn wait_for_messages(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let cancelled = context.ct.clone();
        let receipt = Receipt::of(&context);
        let identity = Identity::of(&context);
        let _waiting = self.metrics.waiting();
        let outcome = async {
            let args: WaitArgs = parse(arguments)?;
            let timeout = bounded(
                "timeout_seconds",
                args.timeout_seconds,
                DEFAULT_WAIT,
                MAX_WAIT,
            )?;
            let credentials = args.credentials(&identity)?;
            let after = peek_after(args.after_id, args.ack)?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            // Subscribe before looking, so that a commit in between wakes us.
            let mut changes = self.store.subscribe();
            loop {
                let messages = match after {
                    Some(after) => {
                        self.store
                            .peek_after(&credentials, after, DEFAULT_LIMIT)
                            .await?
                    }
                    None => {
                        self.deliver(&credentials, receipt.clone(), args.ack, DEFAULT_LIMIT)
                            .await?
                    }
                };
                if !messages.is_empty() {
                    return Ok((messages, timeout, false));
                }
                tokio::select! {
                    changed = changes.changed() => changed?,
                    () = tokio::time::sleep_until(deadline) => return Ok((Vec::new(), timeout, true)),
                    () = cancelled.cancelled() => return Ok((Vec::new(), timeout, true)),
                }
            }
        };
        respond(outcome.await, |(messages, timeout, timed_out)| {
            let shown = Messages::new(&messages);
            let text = shown.text(&format!("No message within {timeout} s."));
            let waited = Waited {
                messages: shown.messages,
                timed_out,
            };
            answer(text, &waited)
        })
    }

    #[tool(
        input_schema = schema_for_type::<HistoryArgs>(),
        description = "Re-read messages of the conversation, both directions, read or not.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<Messages>()
    )]
    async fn read_history(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let identity = Identity::of(&context);
        let outcome = async {
            let args: HistoryArgs = parse(arguments)?;
            let credentials = args.credentials(&identity)?;
            let limit = limit(args.limit, DEFAULT_HISTORY, MAX_HISTORY)?;
            Ok(self
                .store
                .history(&credentials, args.since_id, limit)
                .await?)
        };
        respond(outcome.await, |messages| {
            let messages = Messages::new(&messages);
            answer(messages.text("No messages."), &messages)
        })
    }

    #[tool(
        input_schema = schema_for_type::<StatusArgs>(),
        description = "Set your status (working, waiting, blocked, complete) or omit it: a heartbeat.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<StatusSet>()
    )]
    async fn update_my_status(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let identity = Identity::of(&context);
        let outcome = async {
            let args: StatusArgs = parse(arguments)?;
            let credentials = args.credentials(&identity)?;
            let status = args.status.map(Status::from);
            match status {
                Some(status) => self.store.set_status(&credentials, status).await?,
                None => self.store.heartbeat(&credentials).await?,
            }
            let unread = self.store.inbox_summary(&credentials).await?.unread;
            Ok((status, unread))
        };
        respond(outcome.await, |(status, unread): (Option<Status>, u64)| {
            let set = StatusSet {
                status: status.map(|status| status.to_string()),
                unread,
            };
            let done = match status {
                Some(status) => format!("Status set to {status}."),
                None => "Heartbeat recorded.".to_owned(),
            };
            let plural = if unread == 1 { "" } else { "s" };
            answer(format!("{done} {unread} unread message{plural}."), &set)
        })
    }

    #[tool(
        input_schema = schema_for_type::<Caller>(),
        description = "Your partner's status and whether it is alive.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<Partner>()
    )]
    async fn check_partner_status(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let identity = Identity::of(&context);
        let outcome = async {
            let caller: Caller = parse(arguments)?;
            let credentials = caller.credentials(&identity)?;
            Ok(self.store.partner_status(&credentials).await?)
        };
        respond(outcome.await, |status| {
            let partner = Partner::new(&status);
            answer(partner.text(), &partner)
        })
    }

    #[tool(
        input_schema = schema_for_type::<AssignArgs>(),
        description = "Orchestrator (session a): give your worker a task. Secrets are redacted.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<TaskOut>()
    )]
    async fn assign_task(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let identity = Identity::of(&context);
        let outcome = async {
            let args: AssignArgs = parse(arguments)?;
            let credentials = args.credentials(&identity)?;
            let mut task = NewTask::new(args.title, args.body);
            task.idempotency_key = args
                .idempotency_key
                .as_deref()
                .map(str::parse)
                .transpose()?;
            Ok(self.store.assign_task(&credentials, task).await?)
        };
        respond(outcome.await, |task| {
            let task = TaskOut::new(&task);
            answer(task.assigned_text(), &task)
        })
    }

    #[tool(
        input_schema = schema_for_type::<ListTasksArgs>(),
        description = "The tasks of this conversation, oldest first.",
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<Tasks>()
    )]
    async fn list_tasks(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let identity = Identity::of(&context);
        let outcome = async {
            let args: ListTasksArgs = parse(arguments)?;
            let credentials = args.credentials(&identity)?;
            let state = args.state.map(Into::into);
            Ok(self.store.list_tasks(&credentials, state).await?)
        };
        respond(outcome.await, |tasks| {
            let tasks = Tasks::new(&tasks);
            answer(tasks.text(), &tasks)
        })
    }

    #[tool(
        input_schema = schema_for_type::<UpdateTaskArgs>(),
        description = "Move a task on: worker open→in_progress→done|failed; orchestrator cancels.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false),
        output_schema = schema_for_output::<TaskOut>()
    )]
    async fn update_task(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let identity = Identity::of(&context);
        let outcome = async {
            let args: UpdateTaskArgs = parse(arguments)?;
            let credentials = args.credentials(&identity)?;
            Ok(self
                .store
                .update_task(&credentials, args.task_id, args.state.into(), args.note)
                .await?)
        };
        respond(outcome.await, |task| {
            let task = TaskOut::new(&task);
            answer(task.updated_text(), &task)
        })
    }
}

/// The command-execution tools, merged into the router only with
/// `YOLO_MODE=1`: otherwise they are neither listed nor callable.
#[tool_router(router = execution_router)]
impl Bridge {
    #[tool(
        input_schema = schema_for_type::<EnableArgs>(),
        description = "Choose how commands run in this conversation, once the operator enabled execution.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false),
        output_schema = schema_for_output::<SettingsOut>()
    )]
    async fn enable_yolo_mode(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let identity = Identity::of(&context);
        let outcome = async {
            let args: EnableArgs = parse(arguments)?;
            Ok(exec::enable(&self.store, &identity, args).await?)
        };
        respond(outcome.await, |settings| answer(settings.text(), &settings))
    }

    #[tool(
        input_schema = schema_for_type::<ExecuteArgs>(),
        description = "Validate a command; with the operator's approval token, run it in the workspace. Without one: a dry run.",
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = false, open_world_hint = true),
        output_schema = schema_for_output::<Executed>()
    )]
    async fn execute_command(
        &self,
        Parameters(arguments): Parameters<JsonObject>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let args: ExecuteArgs = match parse(arguments) {
            Ok(args) => args,
            Err(error) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(
                    error.to_string(),
                )]));
            }
        };
        let identity = Identity::of(&context);
        match exec::execute(&self.store, self.execution, &identity, args).await {
            Ok(executed) => answer(executed.text(), &executed),
            Err(NotRun::Blocked(reason)) => Ok(CallToolResult::error(vec![ContentBlock::text(
                format!("blocked: {reason}"),
            )])),
            Err(NotRun::Failed(sentence)) => {
                Ok(CallToolResult::error(vec![ContentBlock::text(sentence)]))
            }
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Bridge {
    /// Runs the tool, and counts the call by tool and outcome, with its
    /// latency. A name that is no tool counts as `unknown`, so a client
    /// cannot grow the metrics without bound.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let tool = if self.tool_router.has_route(&request.name) {
            request.name.to_string()
        } else {
            "unknown".to_owned()
        };
        let call = ToolCallContext::new(self, request, context);
        let (result, rate_limited) = RATE_LIMITED
            .scope(Cell::new(false), async {
                let result = self.tool_router.call(call).await;
                (result, RATE_LIMITED.with(Cell::get))
            })
            .await;
        let outcome = match &result {
            Err(_) => Outcome::Failed,
            Ok(_) if rate_limited => Outcome::RateLimited,
            Ok(CallToolResponse::Complete(done)) if done.is_error == Some(true) => Outcome::Refused,
            Ok(_) => Outcome::Ok,
        };
        self.metrics.tool_call(&tool, outcome, started.elapsed());
        result
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = match Identity::of(&context) {
            Identity::Session(_) => &self.keyed_tools,
            Identity::Anyone | Identity::Operator { .. } => &self.tools,
        };
        Ok(ListToolsResult::with_all_items(tools.as_ref().clone()))
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcp-bridge", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

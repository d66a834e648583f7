//! Entry points for the fuzz targets in `fuzz/`, outside the documented API:
//! the decoding of every tool's arguments, and the check of every incoming
//! message.

use rmcp::model::JsonObject;

use crate::arguments::{ArgumentError, parse};
use crate::exec::{EnableArgs, ExecuteArgs};
use crate::http_auth::Identity;
use crate::tools::{
    AssignArgs, Caller, CheckArgs, CreateArgs, HistoryArgs, ListTasksArgs, SendArgs, StatusArgs,
    UpdateTaskArgs, WaitArgs,
};

/// Every tool, by name.
pub const TOOLS: [&str; 12] = [
    "create_conversation",
    "send_to_partner",
    "check_messages",
    "wait_for_messages",
    "read_history",
    "update_my_status",
    "check_partner_status",
    "assign_task",
    "list_tasks",
    "update_task",
    "enable_yolo_mode",
    "execute_command",
];

/// Decodes `arguments` as tool `tool`'s, as its handler does before it
/// calls the store: the types, then the credentials and keys checked for
/// shape. Returns the sentence a caller would get, if any; `None` for an
/// unknown tool.
pub fn decode_arguments(tool: &str, arguments: JsonObject) -> Option<Result<(), String>> {
    fn words<T>(outcome: Result<T, ArgumentError>) -> Result<T, String> {
        outcome.map_err(|error| error.to_string())
    }
    fn checked<T>(outcome: bridge_core::Result<T>) -> Result<(), String> {
        outcome.map(|_| ()).map_err(|error| error.to_string())
    }
    fn key(key: Option<&str>) -> Result<(), String> {
        checked(
            key.map(str::parse::<bridge_core::IdempotencyKey>)
                .transpose(),
        )
    }
    Some(match tool {
        "create_conversation" => words(parse::<CreateArgs>(arguments)).map(|_| ()),
        "send_to_partner" => words(parse::<SendArgs>(arguments)).and_then(|args| {
            checked(args.credentials(&Identity::Anyone))?;
            key(args.idempotency_key.as_deref())
        }),
        "check_messages" => words(parse::<CheckArgs>(arguments))
            .and_then(|args| checked(args.credentials(&Identity::Anyone))),
        "wait_for_messages" => words(parse::<WaitArgs>(arguments))
            .and_then(|args| checked(args.credentials(&Identity::Anyone))),
        "read_history" => words(parse::<HistoryArgs>(arguments))
            .and_then(|args| checked(args.credentials(&Identity::Anyone))),
        "update_my_status" => words(parse::<StatusArgs>(arguments))
            .and_then(|args| checked(args.credentials(&Identity::Anyone))),
        "check_partner_status" => words(parse::<Caller>(arguments))
            .and_then(|args| checked(args.credentials(&Identity::Anyone))),
        "assign_task" => words(parse::<AssignArgs>(arguments)).and_then(|args| {
            checked(args.credentials(&Identity::Anyone))?;
            key(args.idempotency_key.as_deref())
        }),
        "list_tasks" => words(parse::<ListTasksArgs>(arguments))
            .and_then(|args| checked(args.credentials(&Identity::Anyone))),
        "update_task" => words(parse::<UpdateTaskArgs>(arguments))
            .and_then(|args| checked(args.credentials(&Identity::Anyone))),
        "enable_yolo_mode" => words(parse::<EnableArgs>(arguments))
            .and_then(|args| checked(args.credentials(&Identity::Anyone))),
        "execute_command" => words(parse::<ExecuteArgs>(arguments))
            .and_then(|args| checked(args.credentials(&Identity::Anyone))),
        _ => return None,
    })
}

/// Checks one incoming message as both transports do: `Ok(true)` if it
/// goes on to the MCP layer, `Ok(false)` if it is dropped (a notification
/// that does not fit), `Err((code, message))` for the JSON-RPC error the
/// client gets.
pub fn decode_message(bytes: &[u8]) -> Result<bool, (i32, String)> {
    crate::wire::decode(bytes)
        .map(|message| message.is_some())
        .map_err(|rejection| (rejection.code(), rejection.message().to_owned()))
}

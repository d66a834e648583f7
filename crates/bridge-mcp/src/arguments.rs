//! Decoding a tool's arguments, with errors in the words of the tool's
//! schema rather than of Rust.
//!
//! `serde` says `expected u32`, `floating point 1.8446744073709552e19`, and
//! echoes whatever it was given, a megabyte of it if need be. An agent needs
//! the argument's name, what the tool expects there, and a glimpse of what
//! it sent: `invalid limit: expected a whole number from 1 to 1000, got the
//! number 1.8446744073709552e19`. What is expected comes from the tool's
//! JSON schema (the one `tools/list` advertises), what was sent from the
//! arguments themselves, cut to 100 characters.

use rmcp::handler::server::common::schema_for_type;
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use crate::wire::{ECHO_CHARS, cut};

/// Arguments that do not fit the tool's types, in one sentence naming the
/// argument, e.g. `invalid my_role: expected text, got the number 42`.
#[derive(Debug)]
pub struct ArgumentError(String);

impl std::fmt::Display for ArgumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The arguments as the client sent them, as `T`.
pub fn parse<T: DeserializeOwned + JsonSchema + 'static>(
    arguments: JsonObject,
) -> Result<T, ArgumentError> {
    let arguments = Value::Object(arguments);
    serde_path_to_error::deserialize(&arguments).map_err(|error| {
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        if segments.is_empty() || path == "." {
            // A missing argument, or not an object at all: serde names the
            // field, and echoes nothing.
            return ArgumentError(format!("invalid arguments: {}", cut(&inner)));
        }
        let schema = Value::Object((*schema_for_type::<T>()).clone());
        let expected = expected(&schema, &segments).unwrap_or_else(|| rust_words(&inner));
        let got = at(&arguments, &segments)
            .map_or_else(String::new, |value| format!(", got {}", described(value)));
        ArgumentError(format!("invalid {path}: expected {expected}{got}"))
    })
}

/// The value at `segments` in the arguments.
fn at<'a>(value: &'a Value, segments: &[Segment]) -> Option<&'a Value> {
    segments
        .iter()
        .try_fold(value, |value, segment| match segment {
            Segment::Map { key } => value.get(key),
            Segment::Seq { index } => value.get(index),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
}

/// A value as a person would name it, with at most 100 characters of it.
fn described(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(value) => value.to_string(),
        Value::Number(number) => format!("the number {}", cut(&number.to_string())),
        Value::String(text) => format!("the text {}", quoted(text)),
        Value::Array(items) => format!("a list of {}", items.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// `text` in quotes, escaped as Rust escapes text for debugging, with at
/// most 100 characters between the quotes, escapes counted at their length:
/// 100 control characters escaped are 600 (`\u{7f}` each).
fn quoted(text: &str) -> String {
    let mut quoted = String::from("\"");
    let mut shown = 0;
    for c in text.chars() {
        let escaped: String = match c {
            '\'' => "'".to_owned(),
            c => c.escape_debug().collect(),
        };
        shown += escaped.chars().count();
        if shown > ECHO_CHARS {
            return format!("{quoted}\"… ({} characters)", text.chars().count());
        }
        quoted.push_str(&escaped);
    }
    quoted.push('"');
    quoted
}

/// What the schema expects at `segments`, if it says.
fn expected(schema: &Value, segments: &[Segment]) -> Option<String> {
    let mut node = resolved(schema, schema)?;
    for segment in segments {
        node = match segment {
            Segment::Map { key } => node.get("properties")?.get(key)?,
            Segment::Seq { .. } => node.get("items")?,
            Segment::Enum { .. } | Segment::Unknown => return None,
        };
        node = resolved(schema, node)?;
    }
    describe_schema(node)
}

/// `node`, through a `$ref` into `$defs` and past an `anyOf` with `null`
/// (an optional argument).
fn resolved<'a>(schema: &'a Value, node: &'a Value) -> Option<&'a Value> {
    if let Some(Value::Array(any_of)) = node.get("anyOf") {
        let kinds: Vec<&Value> = any_of
            .iter()
            .filter(|kind| kind.get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        return match kinds.as_slice() {
            [only] => resolved(schema, only),
            _ => None,
        };
    }
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.strip_prefix("#/$defs/")?;
            resolved(schema, schema.get("$defs")?.get(name)?)
        }
        None => Some(node),
    }
}

/// A schema node in words: `one of a, b`, `a whole number from 1 to 1000`,
/// `text of 1 to 100 characters`.
fn describe_schema(node: &Value) -> Option<String> {
    if let Some(Value::Array(choices)) = node.get("enum") {
        let choices: Vec<&str> = choices.iter().filter_map(Value::as_str).collect();
        return Some(format!("one of {}", choices.join(", ")));
    }
    let kind = match node.get("type")? {
        Value::String(kind) => kind.as_str(),
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| *kind != "null")?,
        _ => return None,
    };
    let bound = |name: &str| node.get(name).and_then(Value::as_u64);
    Some(match kind {
        "integer" => match (
            node.get("minimum").and_then(Value::as_i64),
            bound("maximum"),
        ) {
            (Some(min), Some(max)) => format!("a whole number from {min} to {max}"),
            (Some(min), None) => format!("a whole number, {min} or more"),
            _ => "a whole number".to_owned(),
        },
        "number" => "a number".to_owned(),
        "string" => match (bound("minLength"), bound("maxLength")) {
            (Some(min), Some(max)) if min == max => format!("text of {min} characters"),
            (Some(min), Some(max)) => format!("text of {min} to {max} characters"),
            (None, Some(max)) => format!("text of at most {max} characters"),
            _ => "text".to_owned(),
        },
        "boolean" => "true or false".to_owned(),
        "array" => match bound("maxItems") {
            Some(max) => format!("a list of at most {max}"),
            None => "a list".to_owned(),
        },
        "object" => "an object".to_owned(),
        _ => return None,
    })
}

/// What serde expected, where the schema does not say, without Rust's
/// names for types.
fn rust_words(message: &str) -> String {
    let expected = message
        .rsplit_once(", expected ")
        .map_or(message, |(_, expected)| expected);
    let words = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a sequence" => "a list",
        "a map" => "an object",
        "a boolean" => "true or false",
        "a string" => "text",
        other if other.starts_with("struct ") => "an object",
        other => return cut(&other.replace('`', "")),
    };
    words.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{CheckArgs, CreateArgs, SendArgs};

    fn refused<T: DeserializeOwned + JsonSchema + 'static + std::fmt::Debug>(
        arguments: Value,
    ) -> String {
        let Value::Object(arguments) = arguments else {
            panic!("an object");
        };
        parse::<T>(arguments).unwrap_err().to_string()
    }

    fn caller(more: Value) -> Value {
        let mut arguments = serde_json::json!({
            "conversation_id": "conv_0123456789abcdef",
            "session_id": "a",
            "token": "0".repeat(64),
        });
        if let (Value::Object(arguments), Value::Object(more)) = (&mut arguments, more) {
            arguments.extend(more);
        }
        arguments
    }

    #[test]
    fn numbers_are_described_by_the_schema_not_by_rust() {
        assert_eq!(
            refused::<CheckArgs>(caller(
                serde_json::json!({"limit": 18446744073709551616.0_f64})
            )),
            "invalid limit: expected a whole number from 1 to 1000, got the number 1.8446744073709552e+19"
        );
        assert_eq!(
            refused::<CheckArgs>(caller(serde_json::json!({"limit": -1}))),
            "invalid limit: expected a whole number from 1 to 1000, got the number -1"
        );
        assert_eq!(
            refused::<CreateArgs>(serde_json::json!({"my_role": 42, "partner_role": "worker"})),
            "invalid my_role: expected text of 3 to 100 characters, got the number 42"
        );
        assert_eq!(
            refused::<CreateArgs>(serde_json::json!({
                "my_role": "orchestrator", "partner_role": "worker", "ttl_seconds": "soon"
            })),
            "invalid ttl_seconds: expected a whole number from 1 to 31536000, got the text \"soon\""
        );
    }

    #[test]
    fn an_enum_given_a_megabyte_names_its_choices_and_echoes_100_characters() {
        let text = refused::<SendArgs>(caller(serde_json::json!({
            "message": "hi", "action_type": "x".repeat(1 << 20)
        })));
        assert!(
            text.starts_with(
                "invalid action_type: expected one of question, info, proposal, blocked, complete, got the text \"xxxx"
            ),
            "{text}"
        );
        assert!(text.ends_with("\"… (1048576 characters)"), "{text}");
        assert!(text.chars().count() < 250, "{text}");
        let text = refused::<SendArgs>(caller(
            serde_json::json!({"message": "hi", "session_id": 5}),
        ));
        assert_eq!(
            text,
            "invalid session_id: expected one of a, b, got the number 5"
        );
    }

    /// Found by the `tool_arguments` fuzz target (`crash-6d1a29a4`; its
    /// corpus keeps the input, minimized, as `fuzz-6d1a29a4`): under 100
    /// characters, but 79 of them control characters, the echo was escaped
    /// after it was cut, to a sentence of 600 characters.
    #[test]
    fn fuzz_6d1a29a4_escaped_echo_is_cut_to_100_characters() {
        let text = refused::<SendArgs>(serde_json::json!({
            "action_type": format!("es{}y-0", "\u{7f}".repeat(79))
        }));
        assert!(
            text.starts_with(
                "invalid action_type: expected one of question, info, proposal, blocked, complete, got the text \"es\\u{7f}\\u{7f}"
            ),
            "{text}"
        );
        assert!(text.ends_with("\"… (84 characters)"), "{text}");
        assert!(text.chars().count() < 250, "{text}");
        // Escapes within 100 characters are shown whole, as `{:?}` shows them.
        assert_eq!(
            refused::<SendArgs>(serde_json::json!({"action_type": "it's \"é\"\n\u{7f}"})),
            "invalid action_type: expected one of question, info, proposal, blocked, complete, got the text \"it's \\\"é\\\"\\n\\u{7f}\""
        );
    }

    #[test]
    fn list_items_and_missing_arguments_are_named() {
        assert_eq!(
            refused::<SendArgs>(caller(serde_json::json!({
                "message": "hi", "files_involved": ["a", 7]
            }))),
            "invalid files_involved[1]: expected text, got the number 7"
        );
        assert_eq!(
            refused::<SendArgs>(serde_json::json!({"files_involved": []})),
            "invalid arguments: missing field `message`"
        );
    }
}

//! The schemas `tools/list` advertises, trimmed to what a client uses:
//! every byte of `tools/list` lands in every agent's context.

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool};
use serde_json::Value;

/// `tool` with both schemas trimmed, and its optional arguments shown as
/// their type alone.
pub(crate) fn trimmed_tool(mut tool: Tool) -> Tool {
    tool.input_schema = Arc::new(optional_not_null(trimmed(&tool.input_schema)));
    tool.output_schema = tool
        .output_schema
        .as_ref()
        .map(|schema| Arc::new(trimmed(schema)));
    tool
}

/// A schema without `$schema` (the dialect, MCP's default 2020-12), the
/// `title` and `description` of the whole (the Rust type's name and doc; the
/// tool's description says it), integer `format`s (`int64`, `uint32`:
/// Rust's widths, not JSON Schema's vocabulary; the bounds say what
/// matters), and definitions used once written where they are used.
fn trimmed(schema: &JsonObject) -> JsonObject {
    let mut schema = without_formats(schema);
    for key in ["$schema", "title", "description"] {
        schema.remove(key);
    }
    inline_single_uses(schema)
}

/// The prefix of a reference to one of the schema's own definitions.
const DEFINITION: &str = "#/$defs/";

/// `schema` with each definition referred to once put in place of its
/// reference (keeping the reference's own keys, a `description` say), and
/// dropped from `$defs`: `{"$ref": "#/$defs/Session"}` and its definition
/// cost more bytes than the enum itself. Definitions used twice or more, or
/// that refer to others, stay.
fn inline_single_uses(mut schema: JsonObject) -> JsonObject {
    let Some(Value::Object(mut definitions)) = schema.remove("$defs") else {
        return schema;
    };
    let mut uses = std::collections::HashMap::new();
    count_references(&Value::Object(schema.clone()), &mut uses);
    for definition in definitions.values() {
        count_references(definition, &mut uses);
    }
    let inlined: JsonObject = definitions
        .iter()
        .filter(|(name, definition)| {
            let mut inner = std::collections::HashMap::new();
            count_references(definition, &mut inner);
            uses.get(name.as_str()) == Some(&1) && inner.is_empty()
        })
        .map(|(name, definition)| (name.clone(), definition.clone()))
        .collect();
    definitions.retain(|name, _| !inlined.contains_key(name));
    let mut schema = Value::Object(schema);
    replace_references(&mut schema, &inlined);
    let Value::Object(mut schema) = schema else {
        unreachable!("an object stays an object")
    };
    if !definitions.is_empty() {
        schema.insert("$defs".to_owned(), Value::Object(definitions));
    }
    schema
}

/// Counts the references to each definition in `value`.
fn count_references(value: &Value, uses: &mut std::collections::HashMap<String, usize>) {
    match value {
        Value::Object(object) => {
            if let Some(name) = object
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|reference| reference.strip_prefix(DEFINITION))
            {
                *uses.entry(name.to_owned()).or_default() += 1;
            }
            object
                .values()
                .for_each(|inner| count_references(inner, uses));
        }
        Value::Array(items) => items.iter().for_each(|inner| count_references(inner, uses)),
        _ => {}
    }
}

/// Puts each of `inlined` in place of its reference in `value`.
fn replace_references(value: &mut Value, inlined: &JsonObject) {
    match value {
        Value::Object(object) => {
            let target = object
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|reference| reference.strip_prefix(DEFINITION))
                .and_then(|name| inlined.get(name));
            if let Some(Value::Object(definition)) = target {
                let definition = definition.clone();
                object.remove("$ref");
                for (key, inner) in definition {
                    object.entry(key).or_insert(inner);
                }
            }
            object
                .values_mut()
                .for_each(|inner| replace_references(inner, inlined));
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|inner| replace_references(inner, inlined)),
        _ => {}
    }
}

fn without_formats(schema: &JsonObject) -> JsonObject {
    schema
        .iter()
        .filter(|(key, value)| {
            let integer = value
                .as_str()
                .is_some_and(|format| format.starts_with("int") || format.starts_with("uint"));
            !(key.as_str() == "format" && integer)
        })
        .map(|(key, value)| {
            let value = match value {
                Value::Object(inner) => Value::Object(without_formats(inner)),
                other => other.clone(),
            };
            (key.clone(), value)
        })
        .collect()
}

/// An arguments schema whose optional properties say only their type:
/// `"integer"` rather than `["integer", "null"]`, the enum rather than
/// `anyOf` it and `null`. An optional argument is one a client leaves out;
/// `null` is still accepted for it.
fn optional_not_null(mut schema: JsonObject) -> JsonObject {
    let required: Vec<Value> = schema
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(Value::Object(properties)) = schema.get_mut("properties") else {
        return schema;
    };
    for (name, property) in properties.iter_mut() {
        if required
            .iter()
            .any(|field| field.as_str() == Some(name.as_str()))
        {
            continue;
        }
        let Value::Object(property) = property else {
            continue;
        };
        if let Some(Value::Array(types)) = property.get("type") {
            let types: Vec<&Value> = types
                .iter()
                .filter(|kind| kind.as_str() != Some("null"))
                .collect();
            if let [only] = types.as_slice() {
                let only = (*only).clone();
                property.insert("type".to_owned(), only);
            }
        }
        if let Some(Value::Array(any_of)) = property.get("anyOf") {
            let kinds: Vec<&Value> = any_of
                .iter()
                .filter(|kind| **kind != serde_json::json!({"type": "null"}))
                .collect();
            if let [Value::Object(only)] = kinds.as_slice() {
                let only = only.clone();
                property.remove("anyOf");
                property.extend(only);
            }
        }
    }
    schema
}

/// The arguments by which a caller names its session: optional in the
/// argument types, since a session token in the `Authorization` header can
/// stand for them (`http_auth`).
const CALLER_ARGUMENTS: [&str; 3] = ["conversation_id", "session_id", "token"];

/// `tool` as a client that is not authenticated by a session token sees
/// it: the caller's arguments, where it takes them, required first, as in
/// the original bridge.
pub(crate) fn caller_required(mut tool: Tool) -> Tool {
    let mut schema = (*tool.input_schema).clone();
    let takes_caller = schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|properties| properties.contains_key(CALLER_ARGUMENTS[0]));
    if !takes_caller {
        return tool;
    }
    let own = schema
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let required: Vec<Value> = CALLER_ARGUMENTS
        .iter()
        .map(|name| Value::from(*name))
        .chain(own)
        .collect();
    schema.insert("required".to_owned(), Value::Array(required));
    tool.input_schema = Arc::new(schema);
    tool
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_used_once_are_written_in_place() {
        let schema = serde_json::json!({
            "properties": {
                "session_id": {"$ref": "#/$defs/Session", "description": "a or b"},
                "one": {"$ref": "#/$defs/Twice"},
                "two": {"items": {"$ref": "#/$defs/Twice"}, "type": "array"}
            },
            "$defs": {
                "Session": {"enum": ["a", "b"], "type": "string"},
                "Twice": {"type": "integer"}
            }
        });
        let Value::Object(schema) = schema else {
            unreachable!()
        };
        let inlined = Value::Object(inline_single_uses(schema));
        assert_eq!(
            inlined["properties"]["session_id"],
            serde_json::json!({"enum": ["a", "b"], "type": "string", "description": "a or b"})
        );
        assert_eq!(inlined["properties"]["one"]["$ref"], "#/$defs/Twice");
        assert_eq!(
            inlined["$defs"],
            serde_json::json!({"Twice": {"type": "integer"}})
        );
    }

    #[test]
    fn the_caller_arguments_are_required_first_where_taken() {
        let schema = serde_json::json!({
            "properties": {"conversation_id": {}, "session_id": {}, "token": {}, "message": {}},
            "required": ["message"]
        });
        let Value::Object(schema) = schema else {
            unreachable!()
        };
        let tool = caller_required(Tool::new("send", "d", Arc::new(schema)));
        assert_eq!(
            tool.input_schema["required"],
            serde_json::json!(["conversation_id", "session_id", "token", "message"])
        );
        let open = serde_json::json!({"properties": {"my_role": {}}, "required": ["my_role"]});
        let Value::Object(open) = open else {
            unreachable!()
        };
        let tool = caller_required(Tool::new("create", "d", Arc::new(open)));
        assert_eq!(
            tool.input_schema["required"],
            serde_json::json!(["my_role"])
        );
    }

    #[test]
    fn optional_arguments_say_only_their_type() {
        let schema = serde_json::json!({
            "properties": {
                "limit": {"type": ["integer", "null"], "maximum": 9},
                "kind": {"anyOf": [{"$ref": "#/$defs/Kind"}, {"type": "null"}], "description": "d"},
                "must": {"type": ["integer", "null"]}
            },
            "required": ["must"]
        });
        let Value::Object(schema) = schema else {
            unreachable!()
        };
        let trimmed = Value::Object(optional_not_null(schema));
        assert_eq!(
            trimmed["properties"]["limit"],
            serde_json::json!({"type": "integer", "maximum": 9})
        );
        assert_eq!(
            trimmed["properties"]["kind"],
            serde_json::json!({"$ref": "#/$defs/Kind", "description": "d"})
        );
        assert_eq!(
            trimmed["properties"]["must"]["type"],
            serde_json::json!(["integer", "null"])
        );
    }
}

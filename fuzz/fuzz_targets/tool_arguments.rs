//! The decoding of every tool's arguments, as `tools/call` does it before the
//! store is called.
//!
//! Input: a tool's name, a newline, then the JSON text of its arguments
//! (`send_to_partner\n{"message":"hi",...}`). A name that is no tool must be
//! refused as unknown; an object of arguments must decode or be refused
//! with one bounded sentence that starts with `invalid `.

#![no_main]

use bridge_mcp::fuzzing::{TOOLS, decode_arguments};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Longer than any refusal may be: the input they echo is cut to 100
/// characters, the rest is the tool's own words.
const MAX_SENTENCE_CHARS: usize = 600;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (tool, json) = text.split_once('\n').unwrap_or((text, "{}"));
    let Ok(Value::Object(arguments)) = serde_json::from_str::<Value>(json) else {
        return;
    };
    let outcome = decode_arguments(tool, arguments);
    if !TOOLS.contains(&tool) {
        assert!(outcome.is_none(), "{tool:?} is no tool, but it was decoded");
        return;
    }
    match outcome {
        None => panic!("{tool:?} is a tool, but it was refused as unknown"),
        Some(Ok(())) => {}
        Some(Err(sentence)) => {
            assert!(
                sentence.starts_with("invalid "),
                "{tool}: a refusal that does not start with `invalid `: {sentence:?}"
            );
            assert!(
                sentence.chars().count() < MAX_SENTENCE_CHARS,
                "{tool}: a refusal of {} characters: {sentence:?}",
                sentence.chars().count()
            );
        }
    }
});

//! The check every incoming message goes through (each stdio line, each
//! HTTP body) before `rmcp` sees it.
//!
//! Input: the raw bytes of one message. It must never panic; a refusal is
//! one of JSON-RPC's three codes for it, with a message that echoes at most
//! 100 characters of the input.

#![no_main]

use bridge_mcp::fuzzing::decode_message;
use libfuzzer_sys::fuzz_target;

/// Longer than any refusal may be: the input it echoes is cut to 100
/// characters, and so is the message as a whole.
const MAX_MESSAGE_CHARS: usize = 400;

/// Parse error, invalid request, invalid params.
const CODES: [i32; 3] = [-32700, -32600, -32602];

fuzz_target!(|data: &[u8]| {
    if let Err((code, message)) = decode_message(data) {
        assert!(CODES.contains(&code), "code {code}: {message:?}");
        assert!(
            message.chars().count() < MAX_MESSAGE_CHARS,
            "a message of {} characters: {message:?}",
            message.chars().count()
        );
    }
});

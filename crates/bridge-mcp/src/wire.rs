//! What arrives on the wire, checked before `rmcp` sees it, so that every
//! message gets an answer.
//!
//! `rmcp` skips input it cannot parse (truncated JSON, `NaN`, a lone UTF-16
//! surrogate, bytes that are not UTF-8, nesting too deep, a NUL after the
//! object, a line over its limit) without a word, so the client waits
//! forever; and it takes a standard request whose `params` do not fit (a
//! `tools/call` without `params`, with `name: 5` or `arguments: "x"`) for an
//! unknown method. JSON-RPC 2.0 answers them: `-32700` (parse error, `id:
//! null`), `-32600` (invalid request), `-32602` (invalid params, with the
//! request's id). [`decode`] is that check, shared by the stdio transport
//! (`stdio`) and the HTTP one (`http_layer`); messages that pass go on to `rmcp`
//! unchanged. Notifications that do not fit are dropped, as JSON-RPC wants
//! (a notification is never answered).

use rmcp::model::{
    CallToolRequestParams, ClientJsonRpcMessage, ClientRequest, ErrorCode, ErrorData,
    InitializeRequestParams, JsonRpcMessage, RequestId, ServerJsonRpcMessage,
};
use serde::Deserialize;
use serde_json::Value;

/// The largest message accepted, in bytes (`rmcp`'s own limit for a stdio
/// line).
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// At most this much of a client's input is echoed in an error.
pub(crate) const ECHO_CHARS: usize = 100;

/// The requests a client may send in MCP: one of them that `rmcp` could not
/// parse has parameters that do not fit.
const CLIENT_REQUESTS: [&str; 21] = [
    "initialize",
    "ping",
    "server/discover",
    "completion/complete",
    "logging/setLevel",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/directory/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "tools/call",
    "tools/list",
    "tasks/get",
    "tasks/update",
    "tasks/cancel",
    "skills/list",
    "skills/get",
];

/// A message refused before the MCP layer, with its JSON-RPC error.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rejection {
    code: ErrorCode,
    message: String,
    id: Option<RequestId>,
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<String>, id: Option<RequestId>) -> Rejection {
        Rejection {
            code,
            message: cut(&message.into()),
            id,
        }
    }

    /// `-32700`: not JSON (or not UTF-8, or too large).
    pub(crate) fn parse_error(message: impl Into<String>) -> Rejection {
        Rejection::new(ErrorCode::PARSE_ERROR, message, None)
    }

    /// `-32600`: JSON, but not a JSON-RPC 2.0 message.
    fn invalid_request(message: impl Into<String>, id: Option<RequestId>) -> Rejection {
        Rejection::new(ErrorCode::INVALID_REQUEST, message, id)
    }

    /// The JSON-RPC error code.
    pub(crate) fn code(&self) -> i32 {
        self.code.0
    }

    /// The error's message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The error response.
    pub(crate) fn response(&self) -> ServerJsonRpcMessage {
        JsonRpcMessage::error(
            ErrorData::new(self.code, self.message.clone(), None),
            self.id.clone(),
        )
    }

    /// The error response as one line of JSON (with its newline).
    pub(crate) fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(&self.response()).unwrap_or_else(|_| {
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"Internal error"}}"#
                .to_vec()
        });
        line.push(b'\n');
        line
    }
}

/// `text` cut to [`ECHO_CHARS`] characters, saying so if it was.
pub(crate) fn cut(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}… ({} characters)", &text[..end], text.chars().count()),
    }
}

/// Checks one message from a client: `Ok(Some)` to pass on to `rmcp`,
/// `Ok(None)` for a notification to drop, `Err` for the error to answer.
///
/// A message that parses is parsed once, as `rmcp` would; only one that
/// does not is parsed again as plain JSON, to say what is wrong with it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Option<ClientJsonRpcMessage>, Rejection> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(too_large(bytes.len()));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match serde_json::from_slice::<ClientJsonRpcMessage>(bytes) {
        Ok(JsonRpcMessage::Request(request)) => match &request.request {
            ClientRequest::CustomRequest(custom)
                if CLIENT_REQUESTS.contains(&custom.method.as_str()) =>
            {
                Err(invalid_params(
                    &custom.method,
                    custom.params.clone(),
                    Some(request.id.clone()),
                ))
            }
            _ => Ok(Some(JsonRpcMessage::Request(request))),
        },
        Ok(message) => Ok(Some(message)),
        Err(error) => diagnose(bytes, &error),
    }
}

/// Why `bytes`, which `rmcp` could not parse (`error`), is no message: the
/// error to answer, or `Ok(None)` for a notification or reply to drop.
fn diagnose(
    bytes: &[u8],
    error: &serde_json::Error,
) -> Result<Option<ClientJsonRpcMessage>, Rejection> {
    let text = std::str::from_utf8(bytes).map_err(|error| {
        Rejection::parse_error(format!(
            "Parse error: the message is not UTF-8 (invalid byte at offset {})",
            error.valid_up_to()
        ))
    })?;
    let value: Value = serde_json::from_str(text)
        .map_err(|error| Rejection::parse_error(format!("Parse error: {error}")))?;
    let object = match &value {
        Value::Object(object) => object,
        Value::Array(_) => {
            return Err(Rejection::invalid_request(
                "Invalid request: batches are not supported; send one JSON-RPC message at a time",
                None,
            ));
        }
        _ => {
            return Err(Rejection::invalid_request(
                "Invalid request: a JSON-RPC message is an object",
                None,
            ));
        }
    };
    let id = object
        .get("id")
        .and_then(|id| RequestId::deserialize(id).ok());
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Rejection::invalid_request(
            r#"Invalid request: "jsonrpc" must be "2.0""#,
            id,
        ));
    }
    match object.get("method") {
        Some(Value::String(_)) if object.contains_key("id") => match id {
            None => Err(Rejection::invalid_request(
                r#"Invalid request: "id" must be a string or an integer"#,
                None,
            )),
            Some(id) => Err(Rejection::invalid_request(
                format!("Invalid request: {error}"),
                Some(id),
            )),
        },
        Some(Value::String(_)) => {
            // A notification that does not fit: no answer is due.
            tracing::debug!(%error, "dropping a malformed notification");
            Ok(None)
        }
        Some(_) => Err(Rejection::invalid_request(
            r#"Invalid request: "method" must be a string"#,
            id,
        )),
        None if object.contains_key("result") || object.contains_key("error") => {
            // A reply to the server that does not fit: answering it could
            // start an echo.
            tracing::debug!(%error, "dropping a malformed reply");
            Ok(None)
        }
        None => Err(Rejection::invalid_request(
            r#"Invalid request: a JSON-RPC message has a "method" (a request or notification) or a "result" or "error" (a reply)"#,
            id,
        )),
    }
}

/// The `-32700` answer to a message over [`MAX_MESSAGE_BYTES`].
pub(crate) fn too_large(bytes: usize) -> Rejection {
    Rejection::parse_error(format!(
        "Parse error: the message is {bytes} bytes, over the limit of {MAX_MESSAGE_BYTES}"
    ))
}

/// `-32602` for a standard `method` whose `params` do not fit, saying how.
fn invalid_params(method: &str, params: Option<Value>, id: Option<RequestId>) -> Rejection {
    let why = match params {
        None => format!("{method} needs params"),
        Some(params) => match method {
            "tools/call" => fit::<CallToolRequestParams>(params),
            "initialize" => fit::<InitializeRequestParams>(params),
            _ => None,
        }
        .map_or_else(
            || format!("the params of {method} do not fit"),
            |why| format!("{method}: {why}"),
        ),
    };
    Rejection::new(
        ErrorCode::INVALID_PARAMS,
        format!("Invalid params: {}", cut(&why)),
        id,
    )
}

/// Why `params` is not a `T`, naming the field, if it is not.
fn fit<T: serde::de::DeserializeOwned>(params: Value) -> Option<String> {
    serde_path_to_error::deserialize::<_, T>(params)
        .err()
        .map(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(bytes: &[u8]) -> Rejection {
        decode(bytes).expect_err("rejected")
    }

    #[test]
    fn what_is_not_json_is_a_parse_error_without_id() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let cases: [&[u8]; 7] = [
            br#"{"jsonrpc":"2.0","id":1,"method":"ping""#,
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":NaN}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\ud83d"}}"#,
            b"\xff\xfe{}",
            deep.as_bytes(),
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\0",
            b"",
        ];
        for case in cases {
            let rejection = rejected(case);
            assert_eq!(rejection.code(), -32700, "{rejection:?}");
            assert_eq!(rejection.id, None);
            assert!(rejection.message.starts_with("Parse error: "));
            assert!(rejection.message.chars().count() < 200);
        }
    }

    #[test]
    fn a_standard_request_with_params_that_do_not_fit_is_invalid_params() {
        let cases = [
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#,
                "tools/call needs params",
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":5}}"#,
                "tools/call: name: invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":"x"}}"#,
                "tools/call: arguments: invalid type: string \"x\", expected a map",
            ),
        ];
        for (case, why) in cases {
            let rejection = rejected(case.as_bytes());
            assert_eq!(rejection.code(), -32602, "{case}");
            assert_eq!(rejection.id, Some(RequestId::Number(7)));
            assert_eq!(rejection.message, format!("Invalid params: {why}"));
        }
    }

    #[test]
    fn json_that_is_no_message_is_an_invalid_request() {
        for case in [
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            "42",
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            r#"{"jsonrpc":"2.0"}"#,
        ] {
            assert_eq!(rejected(case.as_bytes()).code(), -32600, "{case}");
        }
    }

    #[test]
    fn good_messages_pass_and_bad_notifications_are_dropped() {
        let ping = decode(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        assert!(matches!(ping, Some(JsonRpcMessage::Request(_))));
        let custom = decode(br#"{"jsonrpc":"2.0","id":1,"method":"no/such"}"#).unwrap();
        assert!(custom.is_some(), "rmcp answers an unknown method itself");
        let initialized =
            decode(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(initialized, Some(JsonRpcMessage::Notification(_))));
        assert!(
            decode(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":5}"#).is_ok(),
            "a notification is never answered"
        );
    }

    #[test]
    fn echoed_input_is_cut() {
        let long = "x".repeat(1_000_000);
        let case = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{long}","arguments":[{long:?}]}}}}"#
        );
        let rejection = rejected(case.as_bytes());
        assert!(
            rejection.message.chars().count() < 200,
            "{}",
            rejection.message
        );
        assert_eq!(cut("short"), "short");
        assert!(cut(&long).ends_with("… (1000000 characters)"));
    }
}

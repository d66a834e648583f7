//! Secret redaction, applied to message bodies and metadata before anything is
//! stored.
//!
//! The patterns cover the eight of the original bridge (AWS access keys, PEM
//! private key blocks, `Bearer` tokens, `password`, `api_key`/`api-key` and
//! `secret` assignments, GitHub `ghp_` tokens, OpenAI `sk-` keys) and the common
//! modern ones (GitHub fine-grained and app tokens, OpenAI project keys,
//! Anthropic keys, Slack, Stripe and Google API keys, JSON Web Tokens).
//!
//! A secret is replaced by `[REDACTED:<kind>]`; for `key = value` patterns the
//! key stays readable and only the value is replaced. Text without secrets
//! costs one scan by a [`RegexSet`] and is returned borrowed.
//!
//! Every pattern is matched against the text as given, and everything any of
//! them matched is replaced: one secret cannot hide another, neither by being
//! replaced first (`Bearer password hunter2`: the bearer token `password` is
//! also the key of `hunter2`) nor by swallowing its key as a value
//! (`password: secret hunter2`, `api_key api_key hunter2`). Where matches
//! overlap they are replaced as one, named by the one that starts first.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::LazyLock;

use regex::{Regex, RegexSet};

/// One kind of secret: a name and how to find it.
struct Pattern {
    kind: &'static str,
    shape: Shape,
}

/// How a pattern finds its secrets.
enum Shape {
    /// Each match of the regex is a secret.
    Whole(&'static str),
    /// Each match of the regex is a key, which stays readable; its value,
    /// the secret, is the run of characters right after it that `value`
    /// accepts (at least `min` of them), then any `=` padding if `padded`.
    /// Every key is found, also one inside the value of another.
    Keyed {
        key: &'static str,
        value: fn(char) -> bool,
        min: usize,
        padded: bool,
    },
}

impl Shape {
    fn regex(&self) -> &'static str {
        match self {
            Shape::Whole(regex) | Shape::Keyed { key: regex, .. } => regex,
        }
    }
}

/// The value of a `key = value` assignment: up to a blank or a quote.
fn assigned(c: char) -> bool {
    !c.is_whitespace() && c != '"'
}

/// A `Bearer` token (RFC 6750's b64token, before its `=` padding).
fn token68(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/')
}

/// An assignment of a value to a key that matches `key`.
const fn assignment(kind: &'static str, key: &'static str) -> Pattern {
    Pattern {
        kind,
        shape: Shape::Keyed {
            key,
            value: assigned,
            min: 1,
            padded: false,
        },
    }
}

/// A secret that is each match of `regex` as a whole.
const fn whole(kind: &'static str, regex: &'static str) -> Pattern {
    Pattern {
        kind,
        shape: Shape::Whole(regex),
    }
}

/// Every pattern, the original eight first. Where matches overlap, the
/// earlier pattern names the kind when both start at the same place.
const PATTERNS: &[Pattern] = &[
    whole(
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----|[\s\S]*)",
    ),
    whole("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    whole(
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    ),
    Pattern {
        kind: "bearer_token",
        shape: Shape::Keyed {
            key: r"(?i:\bbearer)\s+",
            value: token68,
            min: 8,
            padded: true,
        },
    },
    whole(
        "github_token",
        r"\b(?:github_pat_[A-Za-z0-9_]{22,}|gh[pousr]_[A-Za-z0-9]{36,})\b",
    ),
    whole("anthropic_key", r"\bsk-ant-[A-Za-z0-9]+-[A-Za-z0-9_-]{20,}"),
    whole(
        "openai_key",
        r"\bsk-(?:proj-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{48}\b)",
    ),
    whole("stripe_key", r"\b(?:sk|rk)_live_[A-Za-z0-9]{16,}\b"),
    whole("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    whole("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    whole("mcp_bridge_access_key", r"\bmcpb_[0-9a-f]{64}\b"),
    assignment("password", r#"(?i:password)["\s:=]+"#),
    assignment("api_key", r#"(?i:api[_-]?key)["\s:=]+"#),
    assignment("secret", r#"(?i:secret)["\s:=]+"#),
];

/// The compiled patterns: a set for the one-scan check, and each regex alone
/// for the matches.
struct Compiled {
    set: RegexSet,
    each: Vec<Regex>,
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| {
    // The patterns are constants covered by the tests below, so compiling them
    // cannot fail at run time.
    let sources = PATTERNS.iter().map(|pattern| pattern.shape.regex());
    Compiled {
        set: RegexSet::new(sources.clone()).unwrap_or_else(|error| unreachable!("{error}")),
        each: sources
            .map(|source| Regex::new(source).unwrap_or_else(|error| unreachable!("{error}")))
            .collect(),
    }
});

/// Text after redaction, and which kinds of secret were found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction<'a> {
    /// The text with every secret replaced.
    pub text: Cow<'a, str>,
    /// The kinds of secret that were replaced, in pattern order, each once.
    pub kinds: Vec<&'static str>,
}

impl Redaction<'_> {
    /// Whether anything was replaced.
    pub fn redacted(&self) -> bool {
        !self.kinds.is_empty()
    }
}

/// Replaces every secret in `text`.
pub fn redact(text: &str) -> Redaction<'_> {
    let compiled = &*COMPILED;
    let matched = compiled.set.matches(text);
    if !matched.matched_any() {
        return Redaction {
            text: Cow::Borrowed(text),
            kinds: Vec::new(),
        };
    }
    // Every secret of every pattern, in the text as given: (where, pattern).
    let mut secrets: Vec<(Range<usize>, usize)> = Vec::new();
    for index in matched.iter() {
        let regex = &compiled.each[index];
        match PATTERNS[index].shape {
            Shape::Whole(_) => {
                secrets.extend(regex.find_iter(text).map(|found| (found.range(), index)));
            }
            Shape::Keyed {
                value, min, padded, ..
            } => {
                let mut covered = 0;
                for key in regex.find_iter(text) {
                    // A key inside the value just found has the same value
                    // (the run of the same characters), or what is left of
                    // it: replaced already.
                    if key.end() < covered {
                        continue;
                    }
                    if let Some(end) = value_end(text, key.end(), value, min, padded) {
                        secrets.push((key.end()..end, index));
                        covered = end;
                    }
                }
            }
        }
    }
    if secrets.is_empty() {
        return Redaction {
            text: Cow::Borrowed(text),
            kinds: Vec::new(),
        };
    }
    let mut found: Vec<usize> = secrets.iter().map(|&(_, index)| index).collect();
    found.sort_unstable();
    found.dedup();
    let kinds = found
        .into_iter()
        .map(|index| PATTERNS[index].kind)
        .collect();

    secrets.sort_unstable_by_key(|(range, index)| (range.start, *index));
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut secrets = secrets.into_iter().peekable();
    while let Some((range, index)) = secrets.next() {
        // Overlapping secrets are replaced as one.
        let mut end = range.end;
        while let Some((next, _)) = secrets.next_if(|(next, _)| next.start < end) {
            end = end.max(next.end);
        }
        out.push_str(&text[copied..range.start]);
        out.push_str("[REDACTED:");
        out.push_str(PATTERNS[index].kind);
        out.push(']');
        copied = end;
    }
    out.push_str(&text[copied..]);
    Redaction {
        kinds,
        text: if out == text {
            Cow::Borrowed(text)
        } else {
            Cow::Owned(out)
        },
    }
}

/// Where the value that starts at `start` ends: the run of characters
/// `value` accepts, if it has at least `min` of them, then any `=` padding
/// if `padded`.
fn value_end(
    text: &str,
    start: usize,
    value: fn(char) -> bool,
    min: usize,
    padded: bool,
) -> Option<usize> {
    let rest = &text[start..];
    let run = rest.find(|c| !value(c)).unwrap_or(rest.len());
    if rest[..run].chars().count() < min {
        return None;
    }
    let mut end = start + run;
    if padded {
        end += text[end..].bytes().take_while(|&byte| byte == b'=').count();
    }
    Some(end)
}

/// Redacts every string inside a JSON value, in place, adding the kinds found
/// to `kinds` (each once).
pub(crate) fn redact_json(value: &mut serde_json::Value, kinds: &mut Vec<&'static str>) {
    match value {
        serde_json::Value::String(text) => {
            let redaction = redact(text);
            merge_kinds(kinds, &redaction.kinds);
            if let Cow::Owned(replaced) = redaction.text {
                *text = replaced;
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                redact_json(item, kinds);
            }
        }
        serde_json::Value::Object(map) => {
            for item in map.values_mut() {
                redact_json(item, kinds);
            }
        }
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {}
    }
}

/// Adds the kinds in `more` that `kinds` does not hold yet.
fn merge_kinds(kinds: &mut Vec<&'static str>, more: &[&'static str]) {
    for kind in more {
        if !kinds.contains(kind) {
            kinds.push(kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `secret` inside a sentence is replaced by `kind`, and
    /// nothing of the secret survives.
    fn assert_redacted(kind: &str, secret: &str) {
        let text = format!("before {secret} after");
        let result = redact(&text);
        assert!(
            result.kinds.contains(&kind),
            "{kind} not found in {text:?}: {result:?}"
        );
        assert!(result.text.contains(&format!("[REDACTED:{kind}]")));
        assert!(result.text.starts_with("before ") && result.text.ends_with(" after"));
        assert!(result.redacted());
    }

    /// Asserts that `text` passes unchanged.
    fn assert_untouched(text: &str) {
        let result = redact(text);
        assert_eq!(result.text, text, "{text:?} was changed");
        assert!(!result.redacted(), "{text:?}: {:?}", result.kinds);
        assert!(matches!(result.text, Cow::Borrowed(_)));
    }

    #[test]
    fn mcp_bridge_access_key() {
        let key = format!("mcpb_{}", "0f".repeat(32));
        assert_redacted("mcp_bridge_access_key", &key);
    }

    #[test]
    fn aws_access_key() {
        assert_redacted("aws_access_key", "AKIAIOSFODNN7EXAMPLE");
        assert_redacted("aws_access_key", "ASIAIOSFODNN7EXAMPLE");
        // One character short, and lower case: not a key.
        assert_untouched("AKIAIOSFODNN7EXAMPL is short");
        assert_untouched("akiaiosfodnn7example");
    }

    #[test]
    fn private_key_block() {
        let block =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAKC\n-----END RSA PRIVATE KEY-----";
        assert_redacted("private_key", block);
        let text = format!("x\n{block}\ny");
        let result = redact(&text);
        assert_eq!(result.text, "x\n[REDACTED:private_key]\ny");
        // A truncated block is redacted to the end rather than leaked.
        let result = redact("key: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNza");
        assert_eq!(result.text, "key: [REDACTED:private_key]");
        // Public keys and certificates are not secrets.
        assert_untouched("-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----");
    }

    #[test]
    fn bearer_token() {
        assert_redacted("bearer_token", "Bearer eyJhbGciOiJIUzI1NiJ9abc");
        let result = redact("Authorization: Bearer abcdef0123456789==");
        assert_eq!(result.text, "Authorization: Bearer [REDACTED:bearer_token]");
        assert_untouched("the bearer of bad news");
    }

    #[test]
    fn password_assignment() {
        assert_redacted("password", "password=hunter2");
        let result = redact(r#"{"password": "hunter2"}"#);
        assert_eq!(result.text, r#"{"password": "[REDACTED:password]"}"#);
        assert_eq!(
            redact("PASSWORD: s3cr3t").text,
            "PASSWORD: [REDACTED:password]"
        );
        assert_untouched("passwordless login works");
    }

    #[test]
    fn api_key_assignment() {
        assert_redacted("api_key", "api_key=abc123");
        assert_redacted("api_key", "API-KEY: abc123");
        assert_redacted("api_key", "apikey=abc123");
        assert_untouched("the api keyboard shortcut");
    }

    #[test]
    fn secret_assignment() {
        assert_redacted("secret", "secret=abc123");
        assert_eq!(
            redact("client secret: xyz").text,
            "client secret: [REDACTED:secret]"
        );
        assert_untouched("the secrets manager holds them");
    }

    #[test]
    fn github_tokens() {
        assert_redacted("github_token", &format!("ghp_{}", "a".repeat(36)));
        for prefix in ["gho_", "ghu_", "ghs_", "ghr_"] {
            assert_redacted("github_token", &format!("{prefix}{}", "B1".repeat(18)));
        }
        assert_redacted(
            "github_token",
            &format!("github_pat_{}_{}", "A".repeat(22), "b".repeat(59)),
        );
        assert_untouched(&format!("ghp_{} is too short", "a".repeat(35)));
        assert_untouched("ghx_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    }

    #[test]
    fn openai_keys() {
        assert_redacted("openai_key", &format!("sk-{}", "a1".repeat(24)));
        assert_redacted("openai_key", &format!("sk-proj-{}", "Ab_-".repeat(10)));
        assert_untouched(&format!("sk-{} is 47", "a".repeat(47)));
        assert_untouched("sk-learn is a library");
    }

    #[test]
    fn anthropic_key() {
        assert_redacted(
            "anthropic_key",
            &format!("sk-ant-api03-{}", "x_Y-".repeat(20)),
        );
        assert_untouched("sk-ant-colony is a game");
    }

    #[test]
    fn slack_token() {
        assert_redacted("slack_token", "xoxb-1234567890-abcdefghij");
        assert_redacted("slack_token", "xoxp-1234567890-abcdefghij");
        assert_untouched("xoxo-1234567890-abcdefghij hugs");
    }

    #[test]
    fn stripe_keys() {
        assert_redacted(
            "stripe_key",
            &format!("sk_live_{}", "4eC39HqLyjWDarjtT1zdp7dc"),
        );
        assert_redacted(
            "stripe_key",
            &format!("rk_live_{}", "4eC39HqLyjWDarjtT1zdp7dc"),
        );
        assert_untouched("sk_test_4eC39HqLyjWDarjtT1zdp7dc is a test key");
    }

    #[test]
    fn google_api_key() {
        assert_redacted("google_api_key", &format!("AIza{}", "Sy".repeat(17) + "A"));
        assert_untouched(&format!("AIza{} is short", "S".repeat(30)));
    }

    #[test]
    fn json_web_token() {
        assert_redacted(
            "jwt",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        );
        assert_untouched("eyJhbGciOiJIUzI1NiJ9 alone is only a header");
    }

    #[test]
    fn several_kinds_in_one_text() {
        let text = format!("ghp_{} and AKIAIOSFODNN7EXAMPLE", "a".repeat(36));
        let result = redact(&text);
        assert_eq!(
            result.text,
            "[REDACTED:github_token] and [REDACTED:aws_access_key]"
        );
        assert_eq!(result.kinds, vec!["aws_access_key", "github_token"]);
    }

    #[test]
    fn json_strings_are_redacted_in_place() {
        let mut value = serde_json::json!({
            "note": "password=hunter2",
            "nested": ["AKIAIOSFODNN7EXAMPLE", 3, null],
            "plain": "hello",
        });
        let mut kinds = Vec::new();
        redact_json(&mut value, &mut kinds);
        assert_eq!(
            value,
            serde_json::json!({
                "note": "password=[REDACTED:password]",
                "nested": ["[REDACTED:aws_access_key]", 3, null],
                "plain": "hello",
            })
        );
        assert_eq!(kinds.len(), 2);
    }

    /// Found by the `redaction` fuzz target (`crash-4d7c4bb8`, kept in its
    /// corpus as `fuzz-4d7c4bb8`): a key followed by the same key and its
    /// value. The first match took the second key for its value, and the
    /// search went on after it: the secret stayed.
    #[test]
    fn fuzz_4d7c4bb8_a_key_as_the_value_of_the_same_key() {
        assert_eq!(
            redact("api-key\" apIkeY AAAAAAAAAAXQ").text,
            "api-key\" [REDACTED:api_key] [REDACTED:api_key]"
        );
        assert_eq!(
            redact("PASSWORD\npassword\thunter2hunter2").text,
            "PASSWORD\n[REDACTED:password]\t[REDACTED:password]"
        );
        // Inside a value, a key shares its value: replaced once.
        assert_eq!(
            redact("password=password=hunter2").text,
            "password=[REDACTED:password]"
        );
    }

    /// Found by the `redaction` fuzz target (`crash-d1fa436c`, kept as
    /// `fuzz-d1fa436c`): a key as the value of another kind's key. The
    /// earlier pattern replaced the later one's key, so the later one no
    /// longer matched.
    #[test]
    fn fuzz_d1fa436c_a_key_as_the_value_of_another_key() {
        let result = redact("password SeCrET A'tXZW.t{gIX");
        assert_eq!(
            result.text,
            "password [REDACTED:password] [REDACTED:secret]"
        );
        assert_eq!(result.kinds, vec!["password", "secret"]);
        assert_eq!(
            redact("api_key: secret hunter2hunter2").text,
            "api_key: [REDACTED:api_key] [REDACTED:secret]"
        );
    }

    /// Found by the `redaction` fuzz target (`crash-ee74b4aa`, kept as
    /// `fuzz-ee74b4aa`): the bearer token `password` is also the key of a
    /// password, and replacing the token first hid the key.
    #[test]
    fn fuzz_ee74b4aa_a_bearer_token_that_is_a_key() {
        assert_eq!(
            redact("Bearer password   4AAAAI..IIhz").text,
            "Bearer [REDACTED:bearer_token]   [REDACTED:password]"
        );
        assert_eq!(
            redact("Bearer PASSWORD=hunter2hunter2").text,
            "Bearer [REDACTED:bearer_token][REDACTED:password]"
        );
    }

    #[test]
    fn overlapping_secrets_are_replaced_as_one() {
        // An AWS key inside a Slack token: the token goes whole.
        let result = redact("xoxb-AKIAIOSFODNN7EXAMPLE-abcdef0123 after");
        assert_eq!(result.text, "[REDACTED:slack_token] after");
        assert_eq!(result.kinds, vec!["aws_access_key", "slack_token"]);
        // A key's value that is a secret of its own: the earlier pattern
        // names it.
        let result = redact("secret: AKIAIOSFODNN7EXAMPLE");
        assert_eq!(result.text, "secret: [REDACTED:aws_access_key]");
        assert_eq!(result.kinds, vec!["aws_access_key", "secret"]);
        // A key without a value is no secret.
        assert_untouched("the password: ");
        assert_untouched("Bearer short");
    }

    #[test]
    fn clean_text_is_borrowed() {
        assert_untouched("Please review src/lib.rs and run the tests.");
    }
}

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

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex, RegexSet};

/// One kind of secret: a name and a pattern. Where the pattern has a group
/// named `keep`, that part of the match is kept and the rest replaced.
struct Pattern {
    kind: &'static str,
    regex: &'static str,
}

/// Every pattern, the original eight first. Order matters where matches could
/// overlap: earlier patterns run first, and what they replace no longer
/// matches the later ones.
const PATTERNS: &[Pattern] = &[
    Pattern {
        kind: "private_key",
        regex: r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----|[\s\S]*)",
    },
    Pattern {
        kind: "aws_access_key",
        regex: r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    },
    Pattern {
        kind: "jwt",
        regex: r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    },
    Pattern {
        kind: "bearer_token",
        regex: r"(?P<keep>(?i:\bbearer)\s+)[A-Za-z0-9\-._~+/]{8,}=*",
    },
    Pattern {
        kind: "github_token",
        regex: r"\b(?:github_pat_[A-Za-z0-9_]{22,}|gh[pousr]_[A-Za-z0-9]{36,})\b",
    },
    Pattern {
        kind: "anthropic_key",
        regex: r"\bsk-ant-[A-Za-z0-9]+-[A-Za-z0-9_-]{20,}",
    },
    Pattern {
        kind: "openai_key",
        regex: r"\bsk-(?:proj-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{48}\b)",
    },
    Pattern {
        kind: "stripe_key",
        regex: r"\b(?:sk|rk)_live_[A-Za-z0-9]{16,}\b",
    },
    Pattern {
        kind: "slack_token",
        regex: r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    },
    Pattern {
        kind: "google_api_key",
        regex: r"\bAIza[0-9A-Za-z_-]{35}\b",
    },
    Pattern {
        kind: "password",
        regex: r#"(?P<keep>(?i:password)["\s:=]+)[^\s"]+"#,
    },
    Pattern {
        kind: "api_key",
        regex: r#"(?P<keep>(?i:api[_-]?key)["\s:=]+)[^\s"]+"#,
    },
    Pattern {
        kind: "secret",
        regex: r#"(?P<keep>(?i:secret)["\s:=]+)[^\s"]+"#,
    },
];

/// The compiled patterns: a set for the one-scan check, and each regex alone
/// for the replacement.
struct Compiled {
    set: RegexSet,
    each: Vec<Regex>,
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| {
    // The patterns are constants covered by the tests below, so compiling them
    // cannot fail at run time.
    let sources = PATTERNS.iter().map(|pattern| pattern.regex);
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
    let mut out = text.to_owned();
    let mut kinds = Vec::new();
    for index in matched.iter() {
        let pattern = &PATTERNS[index];
        let replaced = compiled.each[index].replace_all(&out, |caps: &Captures<'_>| {
            let keep = caps.name("keep").map_or("", |keep| keep.as_str());
            format!("{keep}[REDACTED:{}]", pattern.kind)
        });
        if let Cow::Owned(replaced) = replaced {
            out = replaced;
            kinds.push(pattern.kind);
        }
    }
    Redaction {
        kinds,
        text: if out == text {
            Cow::Borrowed(text)
        } else {
            Cow::Owned(out)
        },
    }
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

    #[test]
    fn clean_text_is_borrowed() {
        assert_untouched("Please review src/lib.rs and run the tests.");
    }
}

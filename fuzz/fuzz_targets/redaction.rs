//! The redaction engine: it never panics, and a secret planted in any text
//! never survives it.
//!
//! Input: text before, a secret of one of the kinds the engine is specified
//! to catch (`ghp_` and 36 letters or digits, `AKIA` and 16, a PEM private
//! key block, `password=...`, ...), text after. The secret is set apart from
//! the text around it by blanks, so that it is a secret on its own (the
//! patterns' word boundaries hold). After redaction the secret's value
//! must be gone, unless the text around it holds the same value.

#![no_main]

use std::fmt;

use bridge_core::redact::redact;
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM_UNDERSCORE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_";
const ALNUM_DASH: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-";
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// What a `Bearer` token is made of (RFC 6750's b64token, without its `=`
/// padding, which the engine replaces too).
const TOKEN68: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/";
/// The value of a `password=...` assignment: printable, no blank, no `"`,
/// no brackets (which a `[REDACTED:...]` marker holds), no `:` or `=`
/// (which would join the assignment's separator).
const VALUE: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'()*+,-./;<>?@^_`{|}~\\";
/// Blanks around the secret.
const BLANKS: &[u8] = b" \t\n";
/// Between a key and its value: `password=x`, `"password": "x`, `secret x`.
const ASSIGN: &[u8] = b" \t:=\"";

/// One fuzz case.
struct Case {
    before: String,
    secret: Option<Secret>,
    after: String,
}

/// A secret as planted: its whole text, and the part that must not survive.
struct Secret {
    kind: &'static str,
    text: String,
    value: String,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("text", &self.text())
            .field("kind", &self.secret.as_ref().map(|secret| secret.kind))
            .field("value", &self.secret.as_ref().map(|secret| &secret.value))
            .finish()
    }
}

impl Case {
    fn text(&self) -> String {
        match &self.secret {
            Some(secret) => format!("{}{}{}", self.before, secret.text, self.after),
            None => format!("{}{}", self.before, self.after),
        }
    }
}

impl<'a> Arbitrary<'a> for Case {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Case> {
        let Some(secret) = secret(u)? else {
            return Ok(Case {
                before: <&str>::arbitrary(u)?.to_owned(),
                secret: None,
                after: rest(u)?,
            });
        };
        let (open, close) = (chars(u, BLANKS, 1, 3)?, chars(u, BLANKS, 1, 3)?);
        let before = <&str>::arbitrary(u)?;
        Ok(Case {
            before: format!("{before}{open}"),
            secret: Some(secret),
            after: format!("{close}{}", rest(u)?),
        })
    }
}

/// The rest of the input, up to its first byte that is not UTF-8.
fn rest(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let bytes = u.bytes(u.len())?;
    let valid = std::str::from_utf8(bytes)
        .map_or_else(|error| &bytes[..error.valid_up_to()], str::as_bytes);
    Ok(String::from_utf8_lossy(valid).into_owned())
}

/// `min..=max` characters picked from `alphabet`.
fn chars(
    u: &mut Unstructured<'_>,
    alphabet: &[u8],
    min: usize,
    max: usize,
) -> arbitrary::Result<String> {
    let len = u.int_in_range(min..=max)?;
    (0..len)
        .map(|_| Ok(char::from(*u.choose(alphabet)?)))
        .collect()
}

/// `word` in a case picked letter by letter.
fn any_case(u: &mut Unstructured<'_>, word: &str) -> arbitrary::Result<String> {
    word.chars()
        .map(|letter| {
            Ok(if bool::arbitrary(u)? {
                letter.to_ascii_uppercase()
            } else {
                letter
            })
        })
        .collect()
}

/// A secret of a kind picked from the input, or none.
fn secret(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<Secret>> {
    let whole = |kind, text: String| Secret {
        kind,
        value: text.clone(),
        text,
    };
    Ok(Some(match u.int_in_range(0..=16)? {
        0 => return Ok(None),
        1 => whole(
            "aws_access_key",
            format!(
                "{}{}",
                u.choose(&["AKIA", "ASIA"])?,
                chars(u, UPPER_DIGITS, 16, 16)?
            ),
        ),
        2 => whole(
            "github_token",
            format!(
                "gh{}_{}",
                char::from(*u.choose(b"pousr")?),
                chars(u, ALNUM, 36, 80)?
            ),
        ),
        3 => whole(
            "github_token",
            format!("github_pat_{}", chars(u, ALNUM_UNDERSCORE, 22, 96)?),
        ),
        4 => whole(
            "anthropic_key",
            format!(
                "sk-ant-{}-{}",
                chars(u, ALNUM, 1, 8)?,
                chars(u, URL_SAFE, 20, 120)?
            ),
        ),
        5 => whole(
            "openai_key",
            format!("sk-proj-{}", chars(u, URL_SAFE, 20, 160)?),
        ),
        6 => whole("openai_key", format!("sk-{}", chars(u, ALNUM, 48, 48)?)),
        7 => whole(
            "stripe_key",
            format!(
                "{}_live_{}",
                u.choose(&["sk", "rk"])?,
                chars(u, ALNUM, 16, 99)?
            ),
        ),
        8 => whole(
            "slack_token",
            format!(
                "xox{}-{}",
                char::from(*u.choose(b"abprs")?),
                chars(u, ALNUM_DASH, 10, 80)?
            ),
        ),
        9 => whole(
            "google_api_key",
            // The last character is a letter or digit, so that the
            // pattern's closing word boundary holds before a blank.
            format!(
                "AIza{}{}",
                chars(u, URL_SAFE, 34, 34)?,
                chars(u, ALNUM, 1, 1)?
            ),
        ),
        10 => whole(
            "jwt",
            format!(
                "eyJ{}.eyJ{}.{}",
                chars(u, URL_SAFE, 8, 80)?,
                chars(u, URL_SAFE, 8, 160)?,
                chars(u, URL_SAFE, 8, 80)?
            ),
        ),
        11 => {
            let token = chars(u, TOKEN68, 8, 120)?;
            Secret {
                kind: "bearer_token",
                text: format!(
                    "{}{}{token}{}",
                    any_case(u, "bearer")?,
                    chars(u, BLANKS, 1, 2)?,
                    "=".repeat(u.int_in_range(0..=2)?)
                ),
                value: token,
            }
        }
        12..=14 => {
            let (kind, key) = match u.int_in_range(0..=2)? {
                0 => ("password", any_case(u, "password")?),
                1 => (
                    "api_key",
                    format!(
                        "{}{}{}",
                        any_case(u, "api")?,
                        u.choose(&["", "_", "-"])?,
                        any_case(u, "key")?
                    ),
                ),
                _ => ("secret", any_case(u, "secret")?),
            };
            let value = chars(u, VALUE, 12, 80)?;
            Secret {
                kind,
                text: format!("{key}{}{value}", chars(u, ASSIGN, 1, 3)?),
                value,
            }
        }
        _ => {
            let label = *u.choose(&["", "RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED "])?;
            let body = chars(u, BASE64, 16, 200)?;
            let end = if bool::arbitrary(u)? {
                format!("\n-----END {label}PRIVATE KEY-----")
            } else {
                // Cut short: redacted to the end of the text.
                String::new()
            };
            Secret {
                kind: "private_key",
                text: format!("-----BEGIN {label}PRIVATE KEY-----\n{body}{end}"),
                value: body,
            }
        }
    }))
}

/// `text` with each `[REDACTED:<kind>]` marker replaced by a NUL, so that no
/// value can be found across or inside one.
fn without_markers(text: &str) -> String {
    const OPEN: &str = "[REDACTED:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        match after.find(|c: char| !(c.is_ascii_lowercase() || c == '_')) {
            Some(end) if after[end..].starts_with(']') => {
                out.push('\0');
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(OPEN);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fuzz_target!(|case: Case| {
    let text = case.text();
    let redaction = redact(&text);
    let Some(secret) = &case.secret else {
        return;
    };
    assert!(
        redaction.redacted(),
        "a {} was not found in {text:?}",
        secret.kind
    );
    if case.before.contains(&secret.value) || case.after.contains(&secret.value) {
        // The same value outside the secret may stay: it is no secret there.
        return;
    }
    assert!(
        !without_markers(&redaction.text).contains(&secret.value),
        "a {} survived redaction: {:?} became {:?}",
        secret.kind,
        text,
        redaction.text
    );
});

//! Identities and secrets: conversation ids, sessions, tokens and the server key.
//!
//! A token is 32 bytes from the operating system's random source, shown once as
//! 64 lowercase hex characters. The store keeps only
//! `HMAC-SHA256(server_key, token)`; [`ServerKey::verify`] compares in constant
//! time. The server key is 32 random bytes in a key file beside the database
//! (mode 0600), created on first use and shared by every process that opens
//! the same database.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Serialize, Serializer};
use sha2::Sha256;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Fills `buf` from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|error| Error::Io {
        action: "read random bytes from",
        path: "the operating system".into(),
        error: io::Error::other(error.to_string()),
    })?;
    Ok(buf)
}

/// A conversation id: `conv_` followed by 16 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(String);

impl ConversationId {
    /// A fresh random id.
    pub fn generate() -> Result<ConversationId> {
        Ok(ConversationId(format!(
            "conv_{}",
            hex::encode(random_bytes::<8>()?)
        )))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ConversationId {
    type Err = Error;

    fn from_str(s: &str) -> Result<ConversationId> {
        let valid = s.len() == 21
            && s.starts_with("conv_")
            && s[5..]
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(ConversationId(s.to_owned()))
        } else {
            Err(Error::invalid(
                "conversation_id",
                "expected conv_ followed by 16 lowercase hex characters",
            ))
        }
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ConversationId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// One of the two sides of a conversation: `a` (the creator, usually the
/// orchestrator) or `b` (the partner, usually a worker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionId {
    /// The side that created the conversation.
    A,
    /// The other side.
    B,
}

impl SessionId {
    /// The other side of the conversation.
    pub fn partner(self) -> SessionId {
        match self {
            SessionId::A => SessionId::B,
            SessionId::B => SessionId::A,
        }
    }

    /// `"a"` or `"b"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionId::A => "a",
            SessionId::B => "b",
        }
    }
}

impl FromStr for SessionId {
    type Err = Error;

    fn from_str(s: &str) -> Result<SessionId> {
        match s {
            "a" => Ok(SessionId::A),
            "b" => Ok(SessionId::B),
            _ => Err(Error::invalid("session_id", "expected a or b")),
        }
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session token. Its `Debug` output hides the value; the only way to see
/// it is [`Token::reveal`], which the caller uses once, to hand it out.
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; 32]);

impl Token {
    /// A fresh token from the operating system's random source.
    pub fn generate() -> Result<Token> {
        Ok(Token(random_bytes()?))
    }

    /// The token as 64 lowercase hex characters, to be shown exactly once.
    pub fn reveal(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Token {
    type Err = Error;

    /// Parses 64 hex characters. The error never repeats the input.
    fn from_str(s: &str) -> Result<Token> {
        let s = s.trim();
        let mut bytes = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut bytes).is_err() {
            return Err(Error::invalid(
                "token",
                format!(
                    "a token is 64 hexadecimal characters (got {} characters{})",
                    s.chars().count(),
                    if s.len() == 64 {
                        ", not all hexadecimal"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(Token(bytes))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

/// What a caller presents to act as one session of one conversation.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The side of it the caller claims to be.
    pub session: SessionId,
    /// The token that proves it.
    pub token: Token,
}

impl Credentials {
    /// Parses the three textual arguments every authenticated call takes.
    pub fn parse(conversation_id: &str, session: &str, token: &str) -> Result<Credentials> {
        Ok(Credentials {
            conversation_id: conversation_id.parse()?,
            session: session.parse()?,
            token: token.parse()?,
        })
    }
}

/// The message the key's fingerprint is the MAC of.
const FINGERPRINT_LABEL: &[u8] = b"mcp-bridge server key fingerprint v1";

/// What seals begin with, so that no seal is ever a token digest or the
/// fingerprint.
const SEAL_LABEL: &[u8] = b"mcp-bridge seal v1\0";

/// The secret that token digests are keyed with.
#[derive(Clone)]
pub(crate) struct ServerKey([u8; 32]);

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(<hidden>)")
    }
}

impl ServerKey {
    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        <HmacSha256 as KeyInit>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    /// `HMAC-SHA256(key, token)`, the only form in which a token is stored.
    pub(crate) fn digest(&self, token: &Token) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(&token.0);
        mac.finalize().into_bytes().into()
    }

    /// Whether `token` is the one whose digest is `stored`, in constant time.
    pub(crate) fn verify(&self, token: &Token, stored: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(&token.0);
        mac.verify_slice(stored).is_ok()
    }

    /// `HMAC-SHA256(key, label, purpose, data)`: a tag that only a holder of
    /// the key can make, for `purpose` alone.
    pub(crate) fn seal(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        self.seal_mac(purpose, data).finalize().into_bytes().into()
    }

    /// Whether `tag` is [`ServerKey::seal`]'s for `purpose` and `data`, in
    /// constant time.
    pub(crate) fn check_seal(&self, purpose: &str, data: &[u8], tag: &[u8]) -> bool {
        self.seal_mac(purpose, data).verify_slice(tag).is_ok()
    }

    fn seal_mac(&self, purpose: &str, data: &[u8]) -> HmacSha256 {
        let mut mac = self.mac();
        mac.update(SEAL_LABEL);
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac
    }

    /// A public value that identifies the key without revealing it; the store
    /// records it so that a database opened with the wrong key file is caught.
    pub(crate) fn fingerprint(&self) -> String {
        let mut mac = self.mac();
        mac.update(FINGERPRINT_LABEL);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Reads the key file; `Ok(None)` if it does not exist.
    pub(crate) fn load(path: &Path) -> Result<Option<ServerKey>> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(Error::io("read key file", path, error)),
        };
        let mut key = [0u8; 32];
        let text = text.trim();
        if text.len() != 64 || hex::decode_to_slice(text, &mut key).is_err() {
            return Err(Error::KeyFile {
                path: path.to_path_buf(),
                problem: "is not an mcp-bridge key (expected 64 hexadecimal characters)".into(),
            });
        }
        if let Ok(metadata) = fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                key_file = %path.display(),
                "the key file can be read by other users; run chmod 600 on it"
            );
        }
        Ok(Some(ServerKey(key)))
    }

    /// Creates a new key file with mode 0600, or, if another process created
    /// one first, loads that one. The file appears whole or not at all.
    pub(crate) fn create(path: &Path) -> Result<ServerKey> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let key = ServerKey(random_bytes()?);
        let mut file = tempfile::Builder::new()
            .prefix(".bridge-key-")
            .tempfile_in(dir)
            .map_err(|error| Error::io("create key file in", dir, error))?;
        writeln!(file, "{}", hex::encode(key.0))
            .and_then(|()| file.as_file().sync_all())
            .map_err(|error| Error::io("write key file", path, error))?;
        match file.persist_noclobber(path) {
            Ok(_) => {
                tracing::info!(key_file = %path.display(), "created a new server key");
                Ok(key)
            }
            Err(error) if error.error.kind() == io::ErrorKind::AlreadyExists => {
                ServerKey::load(path)?.ok_or_else(|| Error::KeyFile {
                    path: path.to_path_buf(),
                    problem: "disappeared while it was being created".into(),
                })
            }
            Err(error) => Err(Error::io("create key file", path, error.error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_have_the_documented_shape() {
        let id = ConversationId::generate().unwrap();
        assert_eq!(id.as_str().len(), 21);
        assert_eq!(id.as_str().parse::<ConversationId>().unwrap(), id);
        for bad in [
            "conv_123",
            "conv_0123456789ABCDEF",
            "xonv_0123456789abcdef",
            "",
        ] {
            let error = bad.parse::<ConversationId>().unwrap_err();
            assert_eq!(
                error.to_string(),
                "invalid conversation_id: expected conv_ followed by 16 lowercase hex characters"
            );
        }
    }

    #[test]
    fn tokens_are_64_hex_and_never_debug_printed() {
        let token = Token::generate().unwrap();
        let shown = token.reveal();
        assert_eq!(shown.len(), 64);
        assert!(
            shown
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(shown.parse::<Token>().unwrap(), token);
        assert!(!format!("{token:?}").contains(&shown));
        assert_ne!(Token::generate().unwrap(), token);
    }

    #[test]
    fn malformed_tokens_are_refused_without_echo() {
        let short = "ab".repeat(31);
        let error = short.parse::<Token>().unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid token: a token is 64 hexadecimal characters (got 62 characters)"
        );
        let not_hex = "zz".repeat(32);
        let error = not_hex.parse::<Token>().unwrap_err().to_string();
        assert!(!error.contains(&not_hex));
        assert!(error.ends_with("(got 64 characters, not all hexadecimal)"));
    }

    #[test]
    fn digests_verify_only_their_own_token() {
        let key = ServerKey([7; 32]);
        let other_key = ServerKey([8; 32]);
        let token = Token::generate().unwrap();
        let digest = key.digest(&token);
        assert!(key.verify(&token, &digest));
        assert!(!key.verify(&Token::generate().unwrap(), &digest));
        assert!(!other_key.verify(&token, &digest));
        assert!(!key.verify(&token, &digest[..31]));
        assert_ne!(key.fingerprint(), other_key.fingerprint());
    }

    #[test]
    fn key_files_are_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.db.key");
        assert!(ServerKey::load(&path).unwrap().is_none());
        let created = ServerKey::create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = ServerKey::load(&path).unwrap().unwrap();
        assert_eq!(loaded.0, created.0);
        // A second creator loses the race and gets the first key.
        assert_eq!(ServerKey::create(&path).unwrap().0, created.0);
    }

    #[test]
    fn a_malformed_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.db.key");
        fs::write(&path, "not a key\n").unwrap();
        let error = ServerKey::load(&path).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "key file {}: is not an mcp-bridge key (expected 64 hexadecimal characters)",
                path.display()
            )
        );
    }
}

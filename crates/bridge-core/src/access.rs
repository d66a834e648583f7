//! Keys presented at the HTTP layer (`Authorization: Bearer <key>`): the
//! operator's access keys, and session tokens presented without their
//! conversation.
//!
//! An access key is `mcpb_` and 64 lowercase hex characters (32 random
//! bytes), made by the operator with a name (`bridgectl access create`),
//! shown once and kept as its HMAC digest under the server key, like every
//! token. It may expire; revoking deletes it, so the next request with it is
//! refused. Its last use is recorded at most once a minute, so that a busy
//! client does not queue a write per request.
//!
//! A session token (64 hex characters) as a key stands for its session: its
//! conversation is found by the token's digest.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::auth::{Credentials, SessionId, Token};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::time::Timestamp;
use crate::writer::{AccessRow, Batch, Lookups, Operation};

/// What an access key starts with.
pub const ACCESS_KEY_PREFIX: &str = "mcpb_";

/// The longest name of an access key.
pub const MAX_ACCESS_NAME_CHARS: usize = 64;

/// A key's last use is written again only once it is older than this.
const LAST_USE_RESOLUTION: Duration = Duration::from_secs(60);

/// An operator's access key. Its `Debug` output hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey(Token);

impl AccessKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<AccessKey> {
        Token::generate().map(AccessKey)
    }

    /// The key as text, to be shown exactly once.
    pub fn reveal(&self) -> String {
        format!("{ACCESS_KEY_PREFIX}{}", self.0.reveal())
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessKey(<hidden>)")
    }
}

/// A key as presented in an `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PresentedKey {
    /// An operator's access key.
    Access(AccessKey),
    /// A session token, standing for its session.
    Session(Token),
}

impl FromStr for PresentedKey {
    type Err = Error;

    /// Parses either kind. The error never repeats the input.
    fn from_str(text: &str) -> Result<PresentedKey> {
        let malformed = || Error::Unauthenticated {
            reason: format!(
                "the key is neither an access key ({ACCESS_KEY_PREFIX} and 64 hexadecimal \
                 characters) nor a session token (64 hexadecimal characters); got {} characters",
                text.chars().count()
            ),
        };
        match text.strip_prefix(ACCESS_KEY_PREFIX) {
            Some(rest) => rest
                .parse()
                .map(|token| PresentedKey::Access(AccessKey(token)))
                .map_err(|_| malformed()),
            None => text
                .parse()
                .map(PresentedKey::Session)
                .map_err(|_| malformed()),
        }
    }
}

/// Who a valid key stands for.
#[derive(Clone, Debug)]
pub enum KeyHolder {
    /// The holder of the access key of this name.
    Operator {
        /// The key's name.
        name: String,
    },
    /// One session of one conversation.
    Session(Credentials),
}

/// An access key as listings show it: never the key itself.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AccessKeyInfo {
    /// The name the operator gave it.
    pub name: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working; `None`: never.
    pub expires_at: Option<Timestamp>,
    /// When it was last used (to the minute); `None`: never.
    pub last_used_at: Option<Timestamp>,
}

impl AccessKeyInfo {
    fn from_row(row: &AccessRow) -> AccessKeyInfo {
        AccessKeyInfo {
            name: row.name.clone(),
            created_at: Timestamp::from_millis(row.created_at),
            expires_at: row.expires_at.map(Timestamp::from_millis),
            last_used_at: row.last_used_at.map(Timestamp::from_millis),
        }
    }
}

/// Checks an access key's name: 1 to 64 letters, digits, `-`, `_`, `.`.
fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_ACCESS_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!(
                "an access key's name is 1 to {MAX_ACCESS_NAME_CHARS} letters, digits, '-', '_' \
                 or '.'"
            ),
        ))
    }
}

impl Store {
    /// A tag that seals `data` for `purpose` with the server key (which
    /// every hub of the database holds): whoever holds the tag cannot make
    /// one for other data without the key. The dashboard's login cookie is
    /// sealed so.
    pub fn seal(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        self.shared().key.seal(purpose, data)
    }

    /// Whether `tag` is [`Store::seal`]'s for `purpose` and `data` (in
    /// constant time).
    pub fn check_seal(&self, purpose: &str, data: &[u8], tag: &[u8]) -> bool {
        self.shared().key.check_seal(purpose, data, tag)
    }

    /// Makes an access key named `name`, living `ttl` (`None`: until
    /// revoked). The key is returned once; the store keeps its digest.
    pub async fn create_access_key(
        &self,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<(AccessKey, AccessKeyInfo)> {
        check_name(name)?;
        if ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(Error::invalid("expires", "must be longer than 0 s"));
        }
        let key = AccessKey::generate()?;
        let digest = hex::encode(self.shared().key.digest(&key.0));
        let info = self
            .submit(CreateAccessOp {
                name: name.to_owned(),
                digest,
                ttl,
            })
            .await?;
        tracing::info!(name, "access key created");
        Ok((key, info))
    }

    /// Revokes the access key named `name` at once.
    pub async fn revoke_access_key(&self, name: &str) -> Result<()> {
        self.submit(RevokeAccessOp {
            name: name.to_owned(),
        })
        .await?;
        tracing::info!(name, "access key revoked");
        Ok(())
    }

    /// Every access key, expired ones included, by name.
    pub async fn access_keys(&self) -> Result<Vec<AccessKeyInfo>> {
        let rows: Vec<(String, i64, Option<i64>, Option<i64>)> = read!(
            self,
            fetch_all,
            query_as(
                "SELECT name, created_at, expires_at, last_used_at FROM access_key ORDER BY name"
            )
        )?;
        Ok(rows
            .into_iter()
            .map(
                |(name, created_at, expires_at, last_used_at)| AccessKeyInfo {
                    name,
                    created_at: Timestamp::from_millis(created_at),
                    expires_at: expires_at.map(Timestamp::from_millis),
                    last_used_at: last_used_at.map(Timestamp::from_millis),
                },
            )
            .collect())
    }

    /// Who `key` stands for, or why it stands for no one: an access key
    /// that is unknown (never made, or revoked) or expired; a session token
    /// of no live conversation. Records an access key's use.
    pub async fn authenticate_key(&self, key: &PresentedKey) -> Result<KeyHolder> {
        match key {
            PresentedKey::Access(key) => self.authenticate_access(key).await,
            PresentedKey::Session(token) => self.authenticate_session_token(token).await,
        }
    }

    async fn authenticate_access(&self, key: &AccessKey) -> Result<KeyHolder> {
        let digest = self.shared().key.digest(&key.0);
        let row: Option<(String, Option<i64>, Option<i64>)> = read!(
            self,
            fetch_optional,
            query_as("SELECT name, expires_at, last_used_at FROM access_key WHERE digest = $1"),
            &digest[..]
        )?;
        let Some((name, expires_at, last_used_at)) = row else {
            return Err(Error::Unauthenticated {
                reason: "the access key is not known (revoked, or never made)".into(),
            });
        };
        let now = Timestamp::now();
        if let Some(expires_at) = expires_at.filter(|at| *at <= now.as_millis()) {
            return Err(Error::Unauthenticated {
                reason: format!(
                    "the access key {name} expired at {}",
                    Timestamp::from_millis(expires_at)
                ),
            });
        }
        let resolution = i64::try_from(LAST_USE_RESOLUTION.as_millis()).unwrap_or(i64::MAX);
        if last_used_at.is_none_or(|at| now.as_millis().saturating_sub(at) >= resolution) {
            self.submit(UseAccessOp {
                name: name.clone(),
                digest: hex::encode(digest),
            })
            .await?;
        }
        Ok(KeyHolder::Operator { name })
    }

    async fn authenticate_session_token(&self, token: &Token) -> Result<KeyHolder> {
        let digest = self.shared().key.digest(token);
        let row: Option<(String, String, i64)> = read!(
            self,
            fetch_optional,
            query_as(
                "SELECT id, 'a', expires_at FROM conversation WHERE token_digest_a = $1
             UNION ALL
             SELECT id, 'b', expires_at FROM conversation WHERE token_digest_b = $1
             LIMIT 1"
            ),
            &digest[..]
        )?;
        let Some((conversation_id, session, expires_at)) = row else {
            return Err(Error::Unauthenticated {
                reason: "the key is not a live session token (mistyped, rotated, or its \
                         conversation was removed)"
                    .into(),
            });
        };
        let conversation_id = conversation_id.parse()?;
        if expires_at <= Timestamp::now().as_millis() {
            return Err(Error::Expired {
                conversation_id,
                expired_at: Timestamp::from_millis(expires_at),
            });
        }
        Ok(KeyHolder::Session(Credentials {
            conversation_id,
            session: session.parse::<SessionId>()?,
            token: token.clone(),
        }))
    }
}

struct CreateAccessOp {
    name: String,
    digest: String,
    ttl: Option<Duration>,
}

impl Operation for CreateAccessOp {
    type Output = AccessKeyInfo;

    fn lookups(&self, out: &mut Lookups) {
        out.access(&self.name);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<AccessKeyInfo> {
        if batch.access(&self.name).is_some() {
            return Err(Error::invalid(
                "name",
                format!(
                    "an access key named {} already exists; revoke it first, or choose another \
                     name",
                    self.name
                ),
            ));
        }
        let created_at = batch.now.as_millis();
        let expires_at = self.ttl.map(|ttl| {
            created_at.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
        });
        let row = AccessRow {
            name: self.name.clone(),
            digest: self.digest.clone(),
            created_at,
            expires_at,
            last_used_at: None,
        };
        let info = AccessKeyInfo::from_row(&row);
        batch.put_access(row);
        batch.audit(
            None,
            None,
            "access_key_created",
            serde_json::json!({ "name": self.name, "expires_at": expires_at }),
        );
        Ok(info)
    }
}

struct RevokeAccessOp {
    name: String,
}

impl Operation for RevokeAccessOp {
    type Output = ();

    fn lookups(&self, out: &mut Lookups) {
        out.access(&self.name);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<()> {
        if batch.access(&self.name).is_none() {
            return Err(Error::invalid(
                "name",
                format!("no access key is named {}", self.name),
            ));
        }
        batch.delete_access(&self.name);
        batch.audit(
            None,
            None,
            "access_key_revoked",
            serde_json::json!({ "name": self.name }),
        );
        Ok(())
    }
}

/// Records a use of a key, unless it was revoked (or made again under its
/// name) since it was checked.
struct UseAccessOp {
    name: String,
    /// Lower-case hex, as every digest in a batch.
    digest: String,
}

impl Operation for UseAccessOp {
    type Output = ();

    fn lookups(&self, out: &mut Lookups) {
        out.access(&self.name);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<()> {
        let Some(row) = batch
            .access(&self.name)
            .filter(|row| row.digest == self.digest)
        else {
            return Ok(());
        };
        let mut row = row.clone();
        row.last_used_at = Some(batch.now.as_millis());
        batch.put_access(row);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_told_apart_and_never_echoed() {
        let key = AccessKey::generate().unwrap();
        let shown = key.reveal();
        assert!(shown.starts_with("mcpb_") && shown.len() == 69);
        assert_eq!(
            shown.parse::<PresentedKey>().unwrap(),
            PresentedKey::Access(key.clone())
        );
        assert!(!format!("{key:?}").contains(&shown[5..]));
        let token = Token::generate().unwrap();
        assert_eq!(
            token.reveal().parse::<PresentedKey>().unwrap(),
            PresentedKey::Session(token)
        );
        let secret = "mcpb_not-a-key-at-all";
        let error = secret.parse::<PresentedKey>().unwrap_err().to_string();
        assert_eq!(
            error,
            "not authenticated: the key is neither an access key (mcpb_ and 64 hexadecimal \
             characters) nor a session token (64 hexadecimal characters); got 21 characters"
        );
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(check_name("orchestrator-1.main_2").is_ok());
        for bad in ["", "has space", "ü", &"n".repeat(65)] {
            assert_eq!(
                check_name(bad).unwrap_err().to_string(),
                "invalid name: an access key's name is 1 to 64 letters, digits, '-', '_' or '.'"
            );
        }
    }
}

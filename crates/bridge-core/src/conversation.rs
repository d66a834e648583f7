//! Conversations: creating them, with their two tokens, and cleaning up the
//! expired ones.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Serialize;

use crate::auth::{ConversationId, Credentials, SessionId, Token};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::time::Timestamp;
use crate::writer::{Batch, ConversationRow, Lookups, Operation};

/// Characters allowed in a role.
pub const ROLE_CHARS: RangeInclusive<usize> = 3..=100;

/// Characters allowed in a team name.
pub const TEAM_CHARS: RangeInclusive<usize> = 1..=100;

/// The shortest and longest time to live of a conversation.
pub const TTL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(365 * 24 * 60 * 60);

/// What [`Store::create_conversation`] needs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NewConversation {
    /// The creator's role, e.g. `orchestrator`.
    pub role_a: String,
    /// The partner's role, e.g. `backend worker`.
    pub role_b: String,
    /// The team whose workers may take over each other's tasks.
    pub team: Option<String>,
    /// Time to live; `None` means the store's default (3 hours).
    pub ttl: Option<Duration>,
    /// The name of the access key that asked for it, if one did (for the
    /// audit trail).
    pub created_by: Option<String>,
}

impl NewConversation {
    /// A conversation between `role_a` and `role_b`, no team, default TTL.
    pub fn new(role_a: impl Into<String>, role_b: impl Into<String>) -> NewConversation {
        NewConversation {
            role_a: role_a.into(),
            role_b: role_b.into(),
            team: None,
            ttl: None,
            created_by: None,
        }
    }
}

/// A new conversation and its two tokens. The tokens exist only here: the
/// store keeps their digests, so this is the one chance to hand them out.
#[derive(Clone, Debug, Serialize)]
pub struct CreatedConversation {
    /// The conversation id.
    pub id: ConversationId,
    /// The creator's role.
    pub role_a: String,
    /// The partner's role.
    pub role_b: String,
    /// The team, if any.
    pub team: Option<String>,
    /// The creator's token (session `a`): keep it.
    #[serde(skip)]
    pub token_a: Token,
    /// The partner's token (session `b`): hand it to the partner.
    #[serde(skip)]
    pub token_b: Token,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
}

impl CreatedConversation {
    /// The credentials of one side, to act as it or to hand them over.
    pub fn credentials(&self, session: SessionId) -> Credentials {
        Credentials {
            conversation_id: self.id.clone(),
            session,
            token: match session {
                SessionId::A => self.token_a.clone(),
                SessionId::B => self.token_b.clone(),
            },
        }
    }
}

/// Checks a name against its length bounds, after trimming; rejects control
/// characters. Returns the trimmed name.
pub(crate) fn bounded_name(
    field: &'static str,
    value: &str,
    chars: RangeInclusive<usize>,
) -> Result<String> {
    let value = value.trim();
    let count = value.chars().count();
    if !chars.contains(&count) {
        return Err(Error::invalid(
            field,
            format!(
                "must be {} to {} characters, got {count}",
                chars.start(),
                chars.end()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

impl Store {
    /// Creates a conversation. The result carries both tokens, once.
    pub async fn create_conversation(&self, new: NewConversation) -> Result<CreatedConversation> {
        let role_a = bounded_name("my_role", &new.role_a, ROLE_CHARS)?;
        let role_b = bounded_name("partner_role", &new.role_b, ROLE_CHARS)?;
        let team = new
            .team
            .as_deref()
            .map(|team| bounded_name("team", team, TEAM_CHARS))
            .transpose()?;
        let ttl = new.ttl.unwrap_or(self.options().default_ttl);
        if !TTL_RANGE.contains(&ttl) {
            return Err(Error::invalid(
                "ttl_seconds",
                format!(
                    "must be between 1 second and 365 days, got {} seconds",
                    ttl.as_secs_f64()
                ),
            ));
        }
        let id = ConversationId::generate()?;
        let (token_a, token_b) = (Token::generate()?, Token::generate()?);
        let key = &self.shared().key;
        let operation = CreateOp {
            row: ConversationRow {
                id: id.clone(),
                role_a: role_a.clone(),
                role_b: role_b.clone(),
                team: team.clone(),
                created_at: 0,
                expires_at: 0,
                digest_a: hex::encode(key.digest(&token_a)),
                digest_b: hex::encode(key.digest(&token_b)),
            },
            ttl,
            created_by: new.created_by,
        };
        let (created_at, expires_at) = self.submit(operation).await?;
        tracing::info!(conversation_id = %id, %role_a, %role_b, team = ?team, %expires_at, "conversation created");
        Ok(CreatedConversation {
            id,
            role_a,
            role_b,
            team,
            token_a,
            token_b,
            created_at,
            expires_at,
        })
    }

    /// Deletes every expired conversation with its sessions and messages,
    /// auditing each; with `dry_run`, only lists them. Returns their ids.
    pub async fn cleanup_expired(&self, dry_run: bool) -> Result<Vec<ConversationId>> {
        let ids: Vec<String> = read!(
            self,
            fetch_all,
            query_scalar(
                "SELECT id FROM conversation WHERE expires_at <= $1 ORDER BY expires_at, id"
            ),
            Timestamp::now().as_millis()
        )?;
        let ids = ids
            .iter()
            .map(|id| id.parse())
            .collect::<Result<Vec<ConversationId>>>()?;
        if dry_run || ids.is_empty() {
            return Ok(ids);
        }
        let expired = self.submit(ExpireOp { ids }).await?;
        if !expired.is_empty() {
            tracing::info!(count = expired.len(), "expired conversations cleaned up");
        }
        Ok(expired)
    }
}

struct CreateOp {
    row: ConversationRow,
    ttl: Duration,
    created_by: Option<String>,
}

impl Operation for CreateOp {
    type Output = (Timestamp, Timestamp);

    fn lookups(&self, _: &mut Lookups) {}

    fn apply(&self, batch: &mut Batch<'_>) -> Result<(Timestamp, Timestamp)> {
        let created_at = batch.now;
        let expires_at = created_at.after(self.ttl);
        let row = ConversationRow {
            created_at: created_at.as_millis(),
            expires_at: expires_at.as_millis(),
            ..self.row.clone()
        };
        let mut detail = serde_json::json!({
            "role_a": row.role_a,
            "role_b": row.role_b,
            "team": row.team,
            "expires_at": row.expires_at,
        });
        if let (Some(name), serde_json::Value::Object(fields)) = (&self.created_by, &mut detail) {
            fields.insert("access_key".into(), name.clone().into());
        }
        batch.audit(Some(&row.id), None, "conversation_created", detail);
        batch.insert_conversation(row);
        Ok((created_at, expires_at))
    }
}

/// Deletes the conversations of `ids` that are (still) expired once the
/// write lock is held.
struct ExpireOp {
    ids: Vec<ConversationId>,
}

impl Operation for ExpireOp {
    type Output = Vec<ConversationId>;

    fn lookups(&self, out: &mut Lookups) {
        for id in &self.ids {
            out.session(id, SessionId::A);
        }
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<Vec<ConversationId>> {
        let mut expired = Vec::new();
        for id in &self.ids {
            let Some(expires_at) = batch.session(id, SessionId::A).map(|row| row.expires_at) else {
                continue;
            };
            if expires_at > batch.now {
                continue;
            }
            batch.delete_conversation(id);
            batch.audit(
                Some(id),
                None,
                "conversation_expired",
                serde_json::json!({ "expired_at": expires_at.as_millis() }),
            );
            expired.push(id.clone());
        }
        Ok(expired)
    }
}

//! The audit trail: one row per state change, written in the same transaction
//! as the change, chained by hashes so that an edited, deleted or reordered
//! row is found.
//!
//! Row `n` carries `prev_hash` (the `hash` of row `n - 1`, or 64 zeros for the
//! first row) and `hash = SHA-256(prev_hash ‖ canonical(row))`, hex-encoded,
//! where `canonical(row)` is the JSON array
//! `[id, at, conversation_id, session, action, detail]` with `detail` as the
//! exact stored text. Ids start at 1 and have no gaps; the database's
//! AUTOINCREMENT sequence remembers the last id ever used, so removing the
//! newest rows is found too. (Removing the newest rows *and* rewinding the
//! sequence is not: keep the head hash that `verify` reports somewhere else
//! if that matters to you.)
//!
//! The actions written: `conversation_created`, `message_sent`,
//! `messages_read`, `status_changed`, `auth_failed`, `conversation_expired`,
//! `tokens_rotated`, `task_assigned`, `task_updated`, `task_reassigned`,
//! `task_unassigned`, `worker_silent`, `worker_recovered`.

use futures_util::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::store::{Readers, Store};

/// The `prev_hash` of the first row.
pub(crate) const GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// `SHA-256(prev_hash ‖ [id, at, conversation_id, session, action, detail])`, hex.
pub(crate) fn chain_hash(
    prev_hash: &str,
    id: i64,
    at: i64,
    conversation_id: Option<&str>,
    session: Option<&str>,
    action: &str,
    detail: &str,
) -> String {
    let canonical = serde_json::json!([id, at, conversation_id, session, action, detail]);
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

/// The outcome of [`Store::verify_audit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Rows checked.
    pub rows: u64,
    /// The hash of the last row: record it elsewhere to detect, later, the
    /// removal of rows from the end.
    pub head: Option<String>,
    /// The first row that does not fit the chain, if any.
    pub first_bad: Option<BadRow>,
}

impl AuditReport {
    /// Whether the whole chain verified.
    pub fn is_intact(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// A row that breaks the chain, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadRow {
    /// The row's id.
    pub id: i64,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit row {}: {}", self.id, self.problem)
    }
}

/// An audit row as stored.
#[derive(sqlx::FromRow)]
struct StoredRow {
    id: i64,
    at: i64,
    conversation_id: Option<String>,
    session: Option<String>,
    action: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl StoredRow {
    /// The hash this row's contents and `prev_hash` call for.
    fn recomputed_hash(&self) -> String {
        chain_hash(
            &self.prev_hash,
            self.id,
            self.at,
            self.conversation_id.as_deref(),
            self.session.as_deref(),
            &self.action,
            &self.detail,
        )
    }
}

impl Store {
    /// Walks the whole audit chain and names the first row that breaks it.
    pub async fn verify_audit(&self) -> Result<AuditReport> {
        let walked = match self.readers() {
            Readers::Sqlite(pool) => walk(sqlx::query_as(AUDIT_ROWS_SQL).fetch(pool)).await,
            Readers::Postgres(pool) => walk(sqlx::query_as(AUDIT_ROWS_SQL).fetch(pool)).await,
        };
        let Walk {
            checked,
            expected_id,
            prev_hash,
            mut first_bad,
        } = walked.map_err(|error| self.shared().sqlx_error(error))?;
        if first_bad.is_none() {
            // The last id ever given: SQLite's sequence, PostgreSQL's head.
            let sequence: Option<i64> = match self.readers() {
                Readers::Sqlite(_) => read!(
                    self,
                    fetch_optional,
                    query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'audit'")
                )?,
                Readers::Postgres(_) => read!(
                    self,
                    fetch_optional,
                    query_scalar("SELECT last_id FROM head WHERE name = 'audit'")
                )?,
            };
            if let Some(last) = sequence.filter(|last| *last >= expected_id) {
                first_bad = Some(BadRow {
                    id: expected_id,
                    problem: format!(
                        "rows {expected_id} to {last} are missing; rows were removed from the end"
                    ),
                });
            }
        }
        Ok(AuditReport {
            rows: checked,
            head: (checked > 0 && first_bad.is_none()).then_some(prev_hash),
            first_bad,
        })
    }
}

/// Every audit row, in id order.
const AUDIT_ROWS_SQL: &str = "
SELECT id, at, conversation_id, session, action, detail, prev_hash, hash
FROM audit ORDER BY id";

/// How far a walk along the chain got.
struct Walk {
    checked: u64,
    /// The id the next row would have.
    expected_id: i64,
    /// The hash of the last good row.
    prev_hash: String,
    first_bad: Option<BadRow>,
}

/// Walks `rows` (in id order) until the first one that breaks the chain.
async fn walk(
    mut rows: impl futures_util::Stream<Item = Result<StoredRow, sqlx::Error>> + Unpin,
) -> Result<Walk, sqlx::Error> {
    let mut walk = Walk {
        checked: 0,
        expected_id: 1,
        prev_hash: GENESIS_HASH.to_owned(),
        first_bad: None,
    };
    while let Some(row) = rows.try_next().await? {
        walk.checked += 1;
        let expected_id = walk.expected_id;
        let problem = if row.id != expected_id {
            Some(format!(
                "expected row {expected_id} here; rows were removed or reordered"
            ))
        } else if row.prev_hash != walk.prev_hash {
            Some(
                "its prev_hash is not the hash of the row before it; rows were removed or reordered"
                    .to_owned(),
            )
        } else if row.hash != row.recomputed_hash() {
            Some("its contents do not match its hash; the row was edited".to_owned())
        } else {
            None
        };
        if let Some(problem) = problem {
            walk.first_bad = Some(BadRow {
                id: row.id,
                problem,
            });
            break;
        }
        walk.expected_id = row.id + 1;
        walk.prev_hash = row.hash;
    }
    Ok(walk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_every_field_and_the_previous_hash() {
        let base = chain_hash(
            GENESIS_HASH,
            1,
            10,
            Some("conv_0123456789abcdef"),
            Some("a"),
            "x",
            "{}",
        );
        assert_eq!(base.len(), 64);
        let variants = [
            chain_hash(
                &"1".repeat(64),
                1,
                10,
                Some("conv_0123456789abcdef"),
                Some("a"),
                "x",
                "{}",
            ),
            chain_hash(
                GENESIS_HASH,
                2,
                10,
                Some("conv_0123456789abcdef"),
                Some("a"),
                "x",
                "{}",
            ),
            chain_hash(
                GENESIS_HASH,
                1,
                11,
                Some("conv_0123456789abcdef"),
                Some("a"),
                "x",
                "{}",
            ),
            chain_hash(GENESIS_HASH, 1, 10, None, Some("a"), "x", "{}"),
            chain_hash(
                GENESIS_HASH,
                1,
                10,
                Some("conv_0123456789abcdef"),
                Some("b"),
                "x",
                "{}",
            ),
            chain_hash(
                GENESIS_HASH,
                1,
                10,
                Some("conv_0123456789abcdef"),
                Some("a"),
                "y",
                "{}",
            ),
            chain_hash(
                GENESIS_HASH,
                1,
                10,
                Some("conv_0123456789abcdef"),
                Some("a"),
                "x",
                "{\"n\":1}",
            ),
        ];
        for variant in variants {
            assert_ne!(variant, base);
        }
    }
}

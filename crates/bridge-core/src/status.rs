//! Status and liveness of sessions.
//!
//! A session reports a status (`working`, `waiting`, `blocked`, `complete`;
//! the daemons set `active` and `silent`) and heartbeats. Setting a status is
//! a heartbeat too, as in the original bridge. Every authenticated call also
//! refreshes the session's `last_seen`. A session is **alive** while the
//! younger of its last heartbeat and its last call is within the liveness
//! window (default 120 s): an agent busy calling tools is alive even if its
//! keep-alive daemon is not running.
//!
//! A status change is audited; a heartbeat that changes nothing is not (it
//! would fill the trail with one row per worker per 30 s).

use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::auth::{Credentials, SessionId};
use crate::error::Result;
use crate::kinds::Status;
use crate::store::{CallerRow, Store};
use crate::time::Timestamp;
use crate::writer::{Batch, Lookups, Operation};

/// What is known about one session's liveness.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionStatus {
    /// Which session.
    pub session: SessionId,
    /// Its role in the conversation.
    pub role: String,
    /// The last status it reported; `None` if it never did.
    pub status: Option<Status>,
    /// When that status was set.
    pub status_at: Option<Timestamp>,
    /// Its last heartbeat.
    pub last_heartbeat: Option<Timestamp>,
    /// Its last authenticated call.
    pub last_seen: Option<Timestamp>,
    /// Time since the younger of `last_heartbeat` and `last_seen`.
    #[serde(rename = "age_seconds", serialize_with = "whole_seconds")]
    pub age: Option<Duration>,
    /// Whether `age` is within the liveness window.
    pub alive: bool,
}

fn whole_seconds<S: Serializer>(age: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match age {
        Some(age) => serializer.serialize_u64(age.as_secs()),
        None => serializer.serialize_none(),
    }
}

impl Store {
    /// Records a heartbeat for the caller's session.
    pub async fn heartbeat(&self, credentials: &Credentials) -> Result<()> {
        self.submit(StatusOp {
            credentials: credentials.clone(),
            status: None,
        })
        .await
    }

    /// Sets the caller's status (and records a heartbeat).
    pub async fn set_status(&self, credentials: &Credentials, status: Status) -> Result<()> {
        self.submit(StatusOp {
            credentials: credentials.clone(),
            status: Some(status),
        })
        .await
    }

    /// The status and liveness of the caller's partner.
    pub async fn partner_status(&self, credentials: &Credentials) -> Result<SessionStatus> {
        let now = Timestamp::now();
        let row: Option<PartnerRow> = read!(
            self,
            fetch_optional,
            query_as(PARTNER_SQL),
            credentials.conversation_id.as_str(),
            credentials.session.as_str()
        )?;
        let row = self.admit(credentials, row, now).await?;
        let at = |millis: Option<i64>| millis.map(Timestamp::from_millis);
        let last_heard = row
            .last_heartbeat
            .max(row.last_seen)
            .map(Timestamp::from_millis);
        let age = last_heard.map(|heard| heard.age_at(now));
        Ok(SessionStatus {
            session: credentials.session.partner(),
            role: row.role,
            status: row.status.as_deref().map(str::parse).transpose()?,
            status_at: at(row.status_at),
            last_heartbeat: at(row.last_heartbeat),
            last_seen: at(row.last_seen),
            alive: age.is_some_and(|age| age < self.options().liveness_window),
            age,
        })
    }
}

/// The caller's credentials row and the partner's session ($1 conversation,
/// $2 the caller's session).
const PARTNER_SQL: &str = "
SELECT c.expires_at,
       CASE $2 WHEN 'a' THEN c.token_digest_a ELSE c.token_digest_b END AS digest,
       me.last_seen AS my_last_seen,
       CASE $2 WHEN 'a' THEN c.role_b ELSE c.role_a END AS role,
       p.status, p.status_at, p.last_heartbeat, p.last_seen
FROM conversation AS c
JOIN session AS me ON me.conversation_id = c.id AND me.session = $2
JOIN session AS p ON p.conversation_id = c.id AND p.session <> $2
WHERE c.id = $1";

#[derive(sqlx::FromRow)]
struct PartnerRow {
    expires_at: i64,
    digest: Vec<u8>,
    my_last_seen: Option<i64>,
    role: String,
    status: Option<String>,
    status_at: Option<i64>,
    last_heartbeat: Option<i64>,
    last_seen: Option<i64>,
}

impl CallerRow for PartnerRow {
    fn digest(&self) -> &[u8] {
        &self.digest
    }

    fn expires_at(&self) -> i64 {
        self.expires_at
    }

    fn caller_last_seen(&self) -> Option<i64> {
        self.my_last_seen
    }
}

/// A heartbeat, with or without a new status.
struct StatusOp {
    credentials: Credentials,
    status: Option<Status>,
}

impl Operation for StatusOp {
    type Output = ();

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.credentials.conversation_id, self.credentials.session);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<()> {
        batch.authenticate(&self.credentials)?;
        batch.check_write(&self.credentials)?;
        let now = batch.now.as_millis();
        let (conversation_id, session) =
            (&self.credentials.conversation_id, self.credentials.session);
        let Some(row) = batch.session_mut(conversation_id, session) else {
            return Ok(());
        };
        row.last_heartbeat = Some(now);
        let Some(status) = self.status.filter(|status| row.status != Some(*status)) else {
            return Ok(());
        };
        let previous = row.status.replace(status);
        row.status_at = Some(now);
        batch.audit(
            Some(conversation_id),
            Some(session),
            "status_changed",
            serde_json::json!({ "from": previous, "to": status }),
        );
        Ok(())
    }
}

//! The rows a batch reads and writes, as the operations see them: decoded
//! by an engine from its state query, changed in memory, serialized into the
//! write set.

use serde::Serialize;

use crate::auth::{ConversationId, SessionId};
use crate::kinds::{Sender, Status, TaskState};
use crate::time::Timestamp;

/// A (conversation, session) pair whose rows an operation reads.
pub(crate) type Key = (ConversationId, SessionId);

/// An idempotency key of a session: its conversation, the session, and the
/// SHA-256 of the key the client chose.
pub(crate) type IdempotencySlot = (ConversationId, SessionId, [u8; 32]);

/// A write recorded under an idempotency key.
#[derive(Clone, Debug)]
pub(crate) struct IdempotencyRow {
    /// The tool that wrote it: `send_to_partner` or `assign_task`.
    pub(crate) tool: String,
    /// The SHA-256 of the request it came with.
    pub(crate) request_digest: [u8; 32],
    /// The message or task id it returned.
    pub(crate) result_id: i64,
    pub(crate) created_at: i64,
    /// Recorded by this batch.
    pub(super) new: bool,
}

impl IdempotencyRow {
    /// A write recorded before this batch.
    pub(super) fn read(
        tool: String,
        request_digest: [u8; 32],
        result_id: i64,
        created_at: i64,
    ) -> IdempotencyRow {
        IdempotencyRow {
            tool,
            request_digest,
            result_id,
            created_at,
            new: false,
        }
    }
}

/// A conversation to insert (its two sessions are inserted with it).
#[derive(Clone, Serialize)]
pub(crate) struct ConversationRow {
    pub(crate) id: ConversationId,
    pub(crate) role_a: String,
    pub(crate) role_b: String,
    pub(crate) team: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
    /// Hex of the 32-byte token digests.
    pub(crate) digest_a: String,
    pub(crate) digest_b: String,
}

/// A message to insert; its id and time are assigned by
/// [`Batch::insert_message`].
#[derive(Clone)]
pub(crate) struct MessageRow {
    pub(super) id: i64,
    pub(crate) conversation_id: ConversationId,
    pub(crate) sender: Sender,
    pub(crate) recipient: SessionId,
    pub(crate) body: String,
    pub(crate) action_type: &'static str,
    /// A JSON array, as text.
    pub(crate) files_involved: String,
    /// A JSON object, as text.
    pub(crate) metadata: Option<String>,
    pub(crate) redacted: bool,
    pub(super) created_at: i64,
}

impl MessageRow {
    /// A row whose id and time the batch fills in.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        conversation_id: ConversationId,
        sender: Sender,
        recipient: SessionId,
        body: String,
        action_type: &'static str,
        files_involved: String,
        metadata: Option<String>,
        redacted: bool,
    ) -> MessageRow {
        MessageRow {
            id: 0,
            conversation_id,
            sender,
            recipient,
            body,
            action_type,
            files_involved,
            metadata,
            redacted,
            created_at: 0,
        }
    }
}

impl MessageRow {
    /// A message from mcp-bridge itself to `recipient`, of action type
    /// `info`, with `metadata` (naming the task it is about).
    pub(crate) fn system(
        conversation_id: &ConversationId,
        recipient: SessionId,
        body: String,
        metadata: serde_json::Value,
        redacted: bool,
    ) -> MessageRow {
        MessageRow::new(
            conversation_id.clone(),
            Sender::System,
            recipient,
            body,
            "info",
            "[]".to_owned(),
            Some(metadata.to_string()),
            redacted,
        )
    }
}

/// The state of one session as the writer sees it: read by a state query,
/// changed by operations, written back in full when changed.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SessionRow {
    #[serde(skip)]
    pub(crate) expires_at: Timestamp,
    #[serde(skip)]
    pub(super) digest: Vec<u8>,
    #[serde(skip)]
    pub(super) dirty: bool,
    /// Its token was replaced in this batch: `digest` is to be written.
    #[serde(skip)]
    pub(super) rekeyed: bool,
    /// The conversation's team.
    #[serde(skip)]
    pub(crate) team: Option<String>,
    pub(crate) conversation_id: ConversationId,
    pub(crate) session: SessionId,
    pub(crate) status: Option<Status>,
    pub(crate) status_at: Option<i64>,
    pub(crate) last_heartbeat: Option<i64>,
    pub(crate) last_seen: Option<i64>,
    /// The highest message id ever handed to this session.
    pub(crate) delivered_id: i64,
    /// The last message confirmed as received.
    pub(crate) acked_id: i64,
}

impl SessionRow {
    /// A session as read from the database.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn read(
        key: Key,
        expires_at: Timestamp,
        digest: Vec<u8>,
        team: Option<String>,
        status: Option<Status>,
        status_at: Option<i64>,
        last_heartbeat: Option<i64>,
        last_seen: Option<i64>,
        delivered_id: i64,
        acked_id: i64,
    ) -> SessionRow {
        SessionRow {
            expires_at,
            digest,
            dirty: false,
            rekeyed: false,
            team,
            conversation_id: key.0,
            session: key.1,
            status,
            status_at,
            last_heartbeat,
            last_seen,
            delivered_id,
            acked_id,
        }
    }
}

/// A task as the writer sees it: read by a state query (or inserted by the
/// batch), changed by operations, written back in full when changed.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TaskRow {
    pub(crate) id: i64,
    pub(crate) team: Option<String>,
    pub(crate) conversation_id: ConversationId,
    pub(crate) title: String,
    pub(crate) body: String,
    pub(crate) state: TaskState,
    pub(crate) attempts: i64,
    pub(crate) unassigned: bool,
    pub(crate) note: Option<String>,
    pub(crate) redacted: bool,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// Inserted by this batch (else: updated, if `dirty`).
    #[serde(skip)]
    pub(super) new: bool,
    #[serde(skip)]
    pub(super) dirty: bool,
}

impl TaskRow {
    /// A task as read from the database.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read(
        id: i64,
        team: Option<String>,
        conversation_id: ConversationId,
        title: String,
        body: String,
        state: TaskState,
        attempts: i64,
        unassigned: bool,
        note: Option<String>,
        redacted: bool,
        created_at: i64,
        updated_at: i64,
    ) -> TaskRow {
        TaskRow {
            id,
            team,
            conversation_id,
            title,
            body,
            state,
            attempts,
            unassigned,
            note,
            redacted,
            created_at,
            updated_at,
            new: false,
            dirty: false,
        }
    }
}

/// A conversation's command-execution settings: enabled by the operator,
/// configured (mode, workspace, timeout) by an agent.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct YoloRow {
    pub(crate) conversation_id: ConversationId,
    pub(crate) enabled_at: i64,
    pub(crate) mode: Option<String>,
    pub(crate) workspace: Option<String>,
    pub(crate) timeout_ms: Option<i64>,
    pub(crate) configured_at: Option<i64>,
    pub(crate) configured_by: Option<SessionId>,
}

/// An approval token, by its digest: read by a state query or issued by
/// the batch.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ApprovalRow {
    /// The HMAC digest of the token, hex.
    pub(crate) digest: String,
    pub(crate) preview: String,
    pub(crate) conversation_id: Option<ConversationId>,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
    #[serde(skip)]
    pub(crate) used_at: Option<i64>,
    /// Issued by this batch.
    #[serde(skip)]
    pub(super) new: bool,
}

impl ApprovalRow {
    /// A token as read from the database.
    pub(super) fn read(
        digest: String,
        preview: String,
        conversation_id: Option<ConversationId>,
        created_at: i64,
        expires_at: i64,
        used_at: Option<i64>,
    ) -> ApprovalRow {
        ApprovalRow {
            digest,
            preview,
            conversation_id,
            created_at,
            expires_at,
            used_at,
            new: false,
        }
    }

    /// A token issued now.
    pub(crate) fn issued(
        digest: String,
        preview: String,
        conversation_id: Option<ConversationId>,
        created_at: i64,
        expires_at: i64,
    ) -> ApprovalRow {
        ApprovalRow {
            digest,
            preview,
            conversation_id,
            created_at,
            expires_at,
            used_at: None,
            new: true,
        }
    }
}

/// An operator's access key, by name: read by a state query or made by the
/// batch.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct AccessRow {
    pub(crate) name: String,
    /// The HMAC digest of the key, hex.
    pub(crate) digest: String,
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
}

/// An audit row, chained to the one before.
pub(super) struct AuditRow {
    pub(super) id: i64,
    pub(super) at: i64,
    pub(super) conversation_id: Option<ConversationId>,
    pub(super) session: Option<SessionId>,
    pub(super) action: &'static str,
    pub(super) detail: String,
    pub(super) prev_hash: String,
    pub(super) hash: String,
}

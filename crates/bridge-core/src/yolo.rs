//! Command execution ("YOLO mode") in the store: the operator's switch per
//! conversation, the settings an agent chooses, the single-use approval
//! tokens, and the record of each command (audit rows and the partner's
//! message). The commands themselves are validated and run elsewhere
//! (`bridge-exec`, driven by `bridge-mcp`); this module only keeps what must
//! be shared and checked under the write lock.
//!
//! The gates, in order:
//! 1. `bridge-mcp` lists the tools only with `YOLO_MODE=1` (not here).
//! 2. and 3. The operator enables a conversation at a terminal (phrase and
//!    one-time code: `bridgectl yolo enable`), which ends in
//!    [`Store::enable_yolo`].
//! 4. Each command that really runs consumes an approval token from
//!    [`Store::issue_approval`], checked and marked used in one transaction
//!    ([`Store::begin_command`]): a token works once, before it expires, and
//!    only in its own conversation if it was bound to one.
//!
//! Approval tokens are 64 hex characters like session tokens, stored as
//! HMAC digests under the server key; listings show a preview of their first
//! 8 characters. The audit trail records each command (redacted, at most 200
//! characters), never a token.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::auth::{ConversationId, Credentials, SessionId, Token};
use crate::error::{Error, Result};
use crate::redact;
use crate::store::{CallerRow, Store};
use crate::time::Timestamp;
use crate::writer::{ApprovalRow, Batch, Lookups, MessageRow, Operation, YoloRow};

/// The modes an agent may choose: `safe` (read-only commands), `restricted`
/// (plus the build and version-control lists), `yolo` (anything not blocked).
pub const MODES: [&str; 3] = ["safe", "restricted", "yolo"];

/// How long an approval token lives unless said otherwise.
pub const DEFAULT_APPROVAL_TTL: Duration = Duration::from_secs(300);

/// The longest life of an approval token.
pub const MAX_APPROVAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// A command's timeout unless the agent chooses one.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest timeout an agent may choose.
pub const MAX_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// The most characters of a command the audit trail keeps.
const AUDITED_COMMAND_CHARS: usize = 200;

/// The characters of an approval token shown in listings.
const PREVIEW_CHARS: usize = 8;

/// A conversation's command-execution settings.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct YoloSettings {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// When the operator enabled execution.
    pub enabled_at: Timestamp,
    /// The mode an agent chose, once it has.
    pub mode: Option<String>,
    /// The directory commands run in, once chosen.
    pub workspace: Option<String>,
    /// The timeout of each command, in milliseconds, once chosen.
    pub timeout_ms: Option<i64>,
    /// The session that chose them.
    pub configured_by: Option<SessionId>,
}

impl YoloSettings {
    fn from_row(row: &YoloRow) -> YoloSettings {
        YoloSettings {
            conversation_id: row.conversation_id.clone(),
            enabled_at: Timestamp::from_millis(row.enabled_at),
            mode: row.mode.clone(),
            workspace: row.workspace.clone(),
            timeout_ms: row.timeout_ms,
            configured_by: row.configured_by,
        }
    }
}

/// An approval token as listings show it: never the token itself.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Approval {
    /// The token's first characters.
    pub preview: String,
    /// The conversation it is bound to; `None`: any.
    pub conversation_id: Option<ConversationId>,
    /// When it was issued.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// A command that consumed its approval and may run: what
/// [`Store::finish_command`] needs to record its end.
#[derive(Clone, Debug)]
pub struct Started {
    /// The mode it was validated in.
    pub mode: String,
    /// The command as audited (redacted, shortened).
    pub audited: String,
    /// When it started.
    pub at: Timestamp,
}

/// How a command ended, for the record.
#[derive(Clone, Debug, Serialize)]
pub struct Finished {
    /// The exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
    /// Bytes of output kept, after the cap.
    pub stdout_bytes: usize,
    /// Likewise for stderr.
    pub stderr_bytes: usize,
    /// The git branch made before it ran, if any.
    pub snapshot: Option<String>,
}

/// The command's text for the audit trail: redacted, at most 200 characters.
fn audited(command: &str) -> String {
    let redacted = redact::redact(command).text.into_owned();
    match redacted.char_indices().nth(AUDITED_COMMAND_CHARS) {
        Some((cut, _)) => format!("{}…", &redacted[..cut]),
        None => redacted,
    }
}

impl Store {
    /// Enables command execution for a conversation (the operator's gates
    /// have been passed). Enabling it again keeps the agent's settings.
    pub async fn enable_yolo(&self, conversation_id: &ConversationId) -> Result<YoloSettings> {
        let settings = self
            .submit(EnableOp {
                conversation_id: conversation_id.clone(),
            })
            .await?;
        tracing::warn!(%conversation_id, "command execution enabled");
        Ok(settings)
    }

    /// Disables command execution for a conversation; `false` if it was not
    /// enabled.
    pub async fn disable_yolo(&self, conversation_id: &ConversationId) -> Result<bool> {
        let disabled = self
            .submit(DisableOp {
                conversation_id: conversation_id.clone(),
            })
            .await?;
        if disabled {
            tracing::info!(%conversation_id, "command execution disabled");
        }
        Ok(disabled)
    }

    /// Issues a single-use approval token living `ttl`, bound to
    /// `conversation_id` if given. The token is returned once; the store
    /// keeps its digest.
    pub async fn issue_approval(
        &self,
        ttl: Duration,
        conversation_id: Option<&ConversationId>,
    ) -> Result<(Token, Approval)> {
        if ttl.is_zero() || ttl > MAX_APPROVAL_TTL {
            return Err(Error::Invalid {
                field: "ttl",
                reason: format!(
                    "must be between 1 s and {} h",
                    MAX_APPROVAL_TTL.as_secs() / 3600
                ),
            });
        }
        let token = Token::generate()?;
        let digest = hex::encode(self.shared().key.digest(&token));
        let revealed = token.reveal();
        let preview = revealed[..PREVIEW_CHARS].to_owned();
        let approval = self
            .submit(IssueOp {
                digest,
                preview,
                conversation_id: conversation_id.cloned(),
                ttl,
            })
            .await?;
        tracing::info!(preview = %approval.preview, "approval token issued");
        Ok((token, approval))
    }

    /// The approval tokens still usable (neither used nor expired), oldest
    /// first.
    pub async fn approvals(&self) -> Result<Vec<Approval>> {
        let rows: Vec<(String, Option<String>, i64, i64)> = read!(
            self,
            fetch_all,
            query_as(
                "SELECT preview, conversation_id, created_at, expires_at FROM approval
             WHERE used_at IS NULL AND expires_at > $1 ORDER BY id"
            ),
            Timestamp::now().as_millis()
        )?;
        rows.into_iter()
            .map(|(preview, conversation_id, created_at, expires_at)| {
                Ok(Approval {
                    preview,
                    conversation_id: conversation_id.map(|id| id.parse()).transpose()?,
                    created_at: Timestamp::from_millis(created_at),
                    expires_at: Timestamp::from_millis(expires_at),
                })
            })
            .collect()
    }

    /// Removes the approval tokens that can no longer be used (expired or
    /// used); returns how many.
    pub async fn cleanup_approvals(&self) -> Result<u64> {
        let ids: Vec<i64> = read!(
            self,
            fetch_all,
            query_scalar("SELECT id FROM approval WHERE used_at IS NOT NULL OR expires_at <= $1"),
            Timestamp::now().as_millis()
        )?;
        if ids.is_empty() {
            return Ok(0);
        }
        let count = ids.len() as u64;
        self.submit(CleanupOp { ids }).await?;
        Ok(count)
    }

    /// The caller's conversation's settings; refused if execution is not
    /// enabled for it. A read: it writes only what every authenticated read
    /// may (a stale `last_seen`, the audit row of a wrong token).
    pub async fn yolo_settings(&self, credentials: &Credentials) -> Result<YoloSettings> {
        let now = Timestamp::now();
        let row: Option<SettingsRow> = read!(
            self,
            fetch_optional,
            query_as(SETTINGS_SQL),
            credentials.conversation_id.as_str(),
            credentials.session.as_str()
        )?;
        let row = self.admit(credentials, row, now).await?;
        let conversation_id = &credentials.conversation_id;
        let Some(enabled_at) = row.enabled_at else {
            return Err(not_enabled(conversation_id));
        };
        Ok(YoloSettings {
            conversation_id: conversation_id.clone(),
            enabled_at: Timestamp::from_millis(enabled_at),
            mode: row.mode,
            workspace: row.workspace,
            timeout_ms: row.timeout_ms,
            configured_by: row.configured_by.as_deref().map(str::parse).transpose()?,
        })
    }

    /// Chooses the mode, workspace (an existing directory, given as an
    /// absolute path) and timeout of the caller's conversation; refused if
    /// the operator has not enabled execution for it.
    pub async fn configure_yolo(
        &self,
        credentials: &Credentials,
        mode: &str,
        workspace: &Path,
        timeout: Option<Duration>,
    ) -> Result<YoloSettings> {
        if !MODES.contains(&mode) {
            return Err(Error::Invalid {
                field: "mode",
                reason: format!("must be one of {}, got {mode:?}", MODES.join(", ")),
            });
        }
        let timeout = timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT);
        if timeout.is_zero() || timeout > MAX_COMMAND_TIMEOUT {
            return Err(Error::Invalid {
                field: "timeout",
                reason: format!(
                    "must be between 1 and {} seconds",
                    MAX_COMMAND_TIMEOUT.as_secs()
                ),
            });
        }
        if !workspace.is_absolute() || !workspace.is_dir() {
            return Err(Error::Invalid {
                field: "workspace",
                reason: format!(
                    "{} is not an existing directory given by its absolute path",
                    workspace.display()
                ),
            });
        }
        let workspace = self.safe_workspace(workspace)?;
        let workspace = workspace.to_str().ok_or_else(|| Error::Invalid {
            field: "workspace",
            reason: "is not valid UTF-8".into(),
        })?;
        self.submit(ConfigureOp {
            credentials: credentials.clone(),
            mode: mode.to_owned(),
            workspace: workspace.to_owned(),
            timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
        })
        .await
    }

    /// The workspace, resolved (no `..`, no links), if commands may write
    /// there: not the root, not the home directory, and not a directory that
    /// holds the database or its key (a command could forge approvals).
    fn safe_workspace(&self, workspace: &Path) -> Result<std::path::PathBuf> {
        let refuse = |why: &str| Error::Invalid {
            field: "workspace",
            reason: format!("{} {why}", workspace.display()),
        };
        let resolved = workspace
            .canonicalize()
            .map_err(|_| refuse("cannot be resolved"))?;
        if resolved.parent().is_none() {
            return Err(refuse("is the root directory"));
        }
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
        if home.and_then(|home| home.canonicalize().ok()).as_deref() == Some(resolved.as_path()) {
            return Err(refuse("is the home directory"));
        }
        for file in [self.path().to_path_buf(), self.options().key_path()?] {
            let file = file.canonicalize().unwrap_or(file);
            if file.starts_with(&resolved) {
                return Err(refuse(&format!(
                    "holds {}: commands could rewrite the bridge's own files",
                    file.display()
                )));
            }
        }
        Ok(resolved)
    }

    /// Records a command refused by validation.
    pub async fn record_blocked(
        &self,
        credentials: &Credentials,
        command: &str,
        reason: &str,
    ) -> Result<()> {
        self.submit(BlockedOp {
            credentials: credentials.clone(),
            command: audited(command),
            reason: audited(reason),
        })
        .await
    }

    /// Consumes `approval` for a command of the caller's conversation and
    /// records its start. Refused unless execution is enabled and configured
    /// as `settings` (what the command was validated against: a change
    /// since then refuses it) and the token is known, unused, unexpired and
    /// (if bound) of this conversation; a refused token stays as it was.
    pub async fn begin_command(
        &self,
        credentials: &Credentials,
        settings: &YoloSettings,
        approval: &Token,
        command: &str,
    ) -> Result<Started> {
        let digest = hex::encode(self.shared().key.digest(approval));
        self.submit(BeginOp {
            credentials: credentials.clone(),
            expected: settings.clone(),
            digest,
            command: audited(command),
        })
        .await
    }

    /// Records how a started command ended, and sends the caller's partner
    /// `report` (the result as text, redacted here) as a message from
    /// `system`. Returns the message's id.
    pub async fn finish_command(
        &self,
        credentials: &Credentials,
        started: &Started,
        finished: &Finished,
        report: &str,
    ) -> Result<i64> {
        let redaction = redact::redact(report);
        let redacted = redaction.redacted();
        self.submit(FinishOp {
            credentials: credentials.clone(),
            command: started.audited.clone(),
            finished: finished.clone(),
            report: redaction.text.into_owned(),
            redacted,
        })
        .await
    }
}

/// The settings of an enabled conversation, or the refusal.
fn enabled<'b>(batch: &'b Batch<'_>, conversation_id: &ConversationId) -> Result<&'b YoloRow> {
    batch
        .yolo(conversation_id)
        .ok_or_else(|| not_enabled(conversation_id))
}

/// The refusal of a conversation for which execution is not enabled.
fn not_enabled(conversation_id: &ConversationId) -> Error {
    Error::NotAllowed {
        reason: format!(
            "command execution is not enabled for conversation {conversation_id}; \
             the operator enables it with `bridgectl yolo enable {conversation_id}`"
        ),
    }
}

/// The caller's credentials row and its conversation's settings, if any
/// ($1 conversation, $2 the caller's session).
const SETTINGS_SQL: &str = "
SELECT c.expires_at,
       CASE $2 WHEN 'a' THEN c.token_digest_a ELSE c.token_digest_b END AS digest,
       s.last_seen,
       y.enabled_at, y.mode, y.workspace, y.timeout_ms, y.configured_by
FROM conversation AS c
JOIN session AS s ON s.conversation_id = c.id AND s.session = $2
LEFT JOIN yolo AS y ON y.conversation_id = c.id
WHERE c.id = $1";

#[derive(sqlx::FromRow)]
struct SettingsRow {
    expires_at: i64,
    digest: Vec<u8>,
    last_seen: Option<i64>,
    enabled_at: Option<i64>,
    mode: Option<String>,
    workspace: Option<String>,
    timeout_ms: Option<i64>,
    configured_by: Option<String>,
}

impl CallerRow for SettingsRow {
    fn digest(&self) -> &[u8] {
        &self.digest
    }

    fn expires_at(&self) -> i64 {
        self.expires_at
    }

    fn caller_last_seen(&self) -> Option<i64> {
        self.last_seen
    }
}

struct EnableOp {
    conversation_id: ConversationId,
}

impl Operation for EnableOp {
    type Output = YoloSettings;

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.conversation_id, SessionId::A);
        out.yolo(&self.conversation_id);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<YoloSettings> {
        batch.live_session(&self.conversation_id, SessionId::A)?;
        if let Some(row) = batch.yolo(&self.conversation_id) {
            return Ok(YoloSettings::from_row(row));
        }
        let row = YoloRow {
            conversation_id: self.conversation_id.clone(),
            enabled_at: batch.now.as_millis(),
            mode: None,
            workspace: None,
            timeout_ms: None,
            configured_at: None,
            configured_by: None,
        };
        let settings = YoloSettings::from_row(&row);
        batch.put_yolo(row);
        batch.audit(
            Some(&self.conversation_id),
            None,
            "yolo_enabled",
            serde_json::json!({}),
        );
        Ok(settings)
    }
}

struct DisableOp {
    conversation_id: ConversationId,
}

impl Operation for DisableOp {
    type Output = bool;

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.conversation_id, SessionId::A);
        out.yolo(&self.conversation_id);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<bool> {
        if batch.session(&self.conversation_id, SessionId::A).is_none() {
            return Err(Error::NoSuchConversation {
                conversation_id: self.conversation_id.clone(),
            });
        }
        if batch.yolo(&self.conversation_id).is_none() {
            return Ok(false);
        }
        batch.delete_yolo(&self.conversation_id);
        batch.audit(
            Some(&self.conversation_id),
            None,
            "yolo_disabled",
            serde_json::json!({}),
        );
        Ok(true)
    }
}

struct IssueOp {
    digest: String,
    preview: String,
    conversation_id: Option<ConversationId>,
    ttl: Duration,
}

impl Operation for IssueOp {
    type Output = Approval;

    fn lookups(&self, out: &mut Lookups) {
        if let Some(id) = &self.conversation_id {
            out.session(id, SessionId::A);
        }
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<Approval> {
        if let Some(id) = &self.conversation_id {
            batch.live_session(id, SessionId::A)?;
        }
        let created_at = batch.now.as_millis();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at = created_at.saturating_add(ttl_ms);
        batch.insert_approval(ApprovalRow::issued(
            self.digest.clone(),
            self.preview.clone(),
            self.conversation_id.clone(),
            created_at,
            expires_at,
        ));
        batch.audit(
            self.conversation_id.as_ref(),
            None,
            "approval_issued",
            serde_json::json!({ "preview": self.preview, "expires_at": expires_at }),
        );
        Ok(Approval {
            preview: self.preview.clone(),
            conversation_id: self.conversation_id.clone(),
            created_at: Timestamp::from_millis(created_at),
            expires_at: Timestamp::from_millis(expires_at),
        })
    }
}

struct CleanupOp {
    ids: Vec<i64>,
}

impl Operation for CleanupOp {
    type Output = ();

    fn lookups(&self, _out: &mut Lookups) {}

    fn apply(&self, batch: &mut Batch<'_>) -> Result<()> {
        batch.delete_approvals(self.ids.iter().copied());
        batch.audit(
            None,
            None,
            "approvals_cleaned",
            serde_json::json!({ "count": self.ids.len() }),
        );
        Ok(())
    }
}

struct ConfigureOp {
    credentials: Credentials,
    mode: String,
    workspace: String,
    timeout_ms: i64,
}

impl Operation for ConfigureOp {
    type Output = YoloSettings;

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.credentials.conversation_id, self.credentials.session);
        out.yolo(&self.credentials.conversation_id);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<YoloSettings> {
        batch.authenticate(&self.credentials)?;
        batch.check_write(&self.credentials)?;
        let conversation_id = &self.credentials.conversation_id;
        let mut row = enabled(batch, conversation_id)?.clone();
        row.mode = Some(self.mode.clone());
        row.workspace = Some(self.workspace.clone());
        row.timeout_ms = Some(self.timeout_ms);
        row.configured_at = Some(batch.now.as_millis());
        row.configured_by = Some(self.credentials.session);
        let settings = YoloSettings::from_row(&row);
        batch.put_yolo(row);
        batch.audit(
            Some(conversation_id),
            Some(self.credentials.session),
            "yolo_configured",
            serde_json::json!({
                "mode": self.mode,
                "workspace": self.workspace,
                "timeout_ms": self.timeout_ms,
            }),
        );
        Ok(settings)
    }
}

struct BlockedOp {
    credentials: Credentials,
    command: String,
    reason: String,
}

impl Operation for BlockedOp {
    type Output = ();

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.credentials.conversation_id, self.credentials.session);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<()> {
        batch.authenticate(&self.credentials)?;
        batch.check_write(&self.credentials)?;
        batch.audit(
            Some(&self.credentials.conversation_id),
            Some(self.credentials.session),
            "command_blocked",
            serde_json::json!({ "command": self.command, "reason": self.reason }),
        );
        Ok(())
    }
}

struct BeginOp {
    credentials: Credentials,
    /// The settings the command was validated against.
    expected: YoloSettings,
    digest: String,
    command: String,
}

impl BeginOp {
    /// Why the approval token cannot be used here, if it cannot.
    fn refusal(&self, batch: &Batch<'_>) -> Option<&'static str> {
        let Some(approval) = batch.approval(&self.digest) else {
            return Some("is not known");
        };
        if approval.used_at.is_some() {
            return Some("was already used");
        }
        if approval.expires_at <= batch.now.as_millis() {
            return Some("has expired");
        }
        match &approval.conversation_id {
            Some(bound) if *bound != self.credentials.conversation_id => {
                Some("belongs to another conversation")
            }
            _ => None,
        }
    }
}

impl Operation for BeginOp {
    type Output = Started;

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.credentials.conversation_id, self.credentials.session);
        out.yolo(&self.credentials.conversation_id);
        out.approval(&self.digest);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<Started> {
        batch.authenticate(&self.credentials)?;
        batch.check_write(&self.credentials)?;
        let conversation_id = &self.credentials.conversation_id;
        let settings = enabled(batch, conversation_id)?;
        let Some(mode) = settings.mode.clone() else {
            return Err(Error::NotAllowed {
                reason: "command execution is not configured: call enable_yolo_mode first".into(),
            });
        };
        if YoloSettings::from_row(settings) != self.expected {
            return Err(Error::NotAllowed {
                reason: "the execution settings changed while the command was checked; call again"
                    .into(),
            });
        }
        if let Some(refusal) = self.refusal(batch) {
            // Refused tokens are not audited: the trail would grow with
            // every guess, and nothing changed.
            return Err(Error::NotAllowed {
                reason: format!("the approval token {refusal}"),
            });
        }
        batch.use_approval(&self.digest);
        let preview = batch
            .approval(&self.digest)
            .map(|approval| approval.preview.clone())
            .unwrap_or_default();
        batch.audit(
            Some(conversation_id),
            Some(self.credentials.session),
            "command_started",
            serde_json::json!({ "command": self.command, "mode": mode, "approval": preview }),
        );
        Ok(Started {
            mode,
            audited: self.command.clone(),
            at: batch.now,
        })
    }
}

struct FinishOp {
    credentials: Credentials,
    command: String,
    finished: Finished,
    report: String,
    redacted: bool,
}

impl Operation for FinishOp {
    type Output = i64;

    fn lookups(&self, out: &mut Lookups) {
        out.session(&self.credentials.conversation_id, self.credentials.session);
    }

    fn apply(&self, batch: &mut Batch<'_>) -> Result<i64> {
        // Not authenticated again: the start was, and the end is recorded
        // even if the conversation expired or its tokens were rotated while
        // the command ran.
        let conversation_id = &self.credentials.conversation_id;
        if batch
            .session(conversation_id, self.credentials.session)
            .is_none()
        {
            return Err(Error::NoSuchConversation {
                conversation_id: conversation_id.clone(),
            });
        }
        let session = self.credentials.session;
        let (id, _) = batch.insert_message(MessageRow::system(
            conversation_id,
            session.partner(),
            self.report.clone(),
            serde_json::json!({
                "event": "command_result",
                "executor": session,
                "exit_code": self.finished.exit_code,
                "timed_out": self.finished.timed_out,
            }),
            self.redacted,
        ));
        let mut detail = serde_json::to_value(&self.finished).unwrap_or_default();
        if let serde_json::Value::Object(fields) = &mut detail {
            fields.insert("command".into(), self.command.clone().into());
            fields.insert("message_id".into(), id.into());
        }
        batch.audit(
            Some(conversation_id),
            Some(session),
            "command_completed",
            detail,
        );
        Ok(id)
    }
}

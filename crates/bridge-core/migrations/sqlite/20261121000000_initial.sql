-- The first schema of the mcp-bridge store.
--
-- Times are Unix milliseconds (UTC). Message and audit ids are assigned by the
-- store's writer under the write lock (AUTOINCREMENT keeps them from ever being
-- reused after a clean-up). Tokens are never stored: only
-- HMAC-SHA256(server_key, token), 32 bytes.

CREATE TABLE conversation (
    id             TEXT PRIMARY KEY NOT NULL
                   CHECK (length(id) = 21 AND id GLOB 'conv_[0-9a-f]*'),
    role_a         TEXT NOT NULL,
    role_b         TEXT NOT NULL,
    team           TEXT,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    token_digest_a BLOB NOT NULL CHECK (length(token_digest_a) = 32),
    token_digest_b BLOB NOT NULL CHECK (length(token_digest_b) = 32)
) STRICT;

CREATE INDEX conversation_by_team ON conversation (team) WHERE team IS NOT NULL;
CREATE INDEX conversation_by_expiry ON conversation (expires_at);

-- One row per (conversation, session): liveness, status and the delivery
-- cursor (the id of the last message handed to that session by a consuming read).
CREATE TABLE session (
    conversation_id TEXT NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    session         TEXT NOT NULL CHECK (session IN ('a', 'b')),
    status          TEXT CHECK (status IN ('working', 'waiting', 'blocked', 'complete', 'active', 'silent')),
    status_at       INTEGER,
    last_heartbeat  INTEGER,
    last_seen       INTEGER,
    delivered_id    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, session)
) STRICT, WITHOUT ROWID;

CREATE TABLE message (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    sender          TEXT NOT NULL CHECK (sender IN ('a', 'b', 'system')),
    recipient       TEXT NOT NULL CHECK (recipient IN ('a', 'b')),
    body            TEXT NOT NULL,
    action_type     TEXT NOT NULL
                    CHECK (action_type IN ('question', 'info', 'proposal', 'blocked', 'complete')),
    files_involved  TEXT NOT NULL DEFAULT '[]',
    metadata        TEXT,
    redacted        INTEGER NOT NULL DEFAULT 0 CHECK (redacted IN (0, 1)),
    created_at      INTEGER NOT NULL
) STRICT;

-- Serves the inbox query (messages for one session after its cursor) and the
-- cascade when a conversation is cleaned up.
CREATE INDEX message_inbox ON message (conversation_id, recipient, id);

-- The hash-chained audit trail. No foreign key: the trail outlives the
-- conversations it describes. Deliberately no index by conversation: every
-- write appends here, and an index keyed by conversation would dirty one more
-- page per conversation per commit; listing one conversation's rows scans.
CREATE TABLE audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    conversation_id TEXT,
    session         TEXT,
    action          TEXT NOT NULL,
    detail          TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
) STRICT;

-- Facts about the store itself, e.g. the fingerprint of the server key that
-- issued the stored token digests.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- The writer's optimistic check (see the store's writer): a batch computed
-- from remembered state inserts a row here when this connection's
-- data_version shows that another connection committed since, and the
-- trigger turns that into an error that aborts the batch before it writes
-- anything. No row is ever stored.
CREATE TABLE writer_guard (
    data_version INTEGER NOT NULL
) STRICT;

CREATE TRIGGER writer_guard_abort BEFORE INSERT ON writer_guard
BEGIN
    SELECT RAISE(ABORT, 'mcp-bridge: stale writer state');
END;

-- The mcp-bridge store on PostgreSQL: the same tables, columns and meaning
-- as the SQLite schema after its migration 20261127000000 (the SQLite files
-- explain each table), in PostgreSQL's types. Times are milliseconds since
-- the epoch (BIGINT), digests 32 bytes (BYTEA), flags BOOLEAN.
--
-- What differs, and why:
-- * `head` replaces SQLite's `sqlite_sequence` and its database-wide write
--   lock. Message, audit and task ids are assigned by the writer, one after
--   the last, under a row lock on the `head` rows that every batch takes
--   first (SELECT ... FOR UPDATE). So batches of all hubs on one database
--   commit one at a time, ids follow commit order (the delivery cursors rely
--   on it), and the audit chain stays one chain: its last hash is kept here.
-- * No `writer_guard`: it is the SQLite writer's check that no other
--   connection committed since its last batch.
-- * `session.heard_at` is stored, not virtual (PostgreSQL's generated
--   columns are stored).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE head (
    name    TEXT PRIMARY KEY CHECK (name IN ('message', 'audit', 'task')),
    last_id BIGINT NOT NULL DEFAULT 0 CHECK (last_id >= 0),
    -- The hash of the last audit row (on the 'audit' row only).
    hash    TEXT
);

INSERT INTO head (name) VALUES ('message'), ('audit'), ('task');

CREATE TABLE conversation (
    id             TEXT PRIMARY KEY
                   CHECK (length(id) = 21 AND id ~ '^conv_[0-9a-f]+$'),
    role_a         TEXT NOT NULL,
    role_b         TEXT NOT NULL,
    team           TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    token_digest_a BYTEA NOT NULL CHECK (length(token_digest_a) = 32),
    token_digest_b BYTEA NOT NULL CHECK (length(token_digest_b) = 32)
);

CREATE INDEX conversation_by_team ON conversation (team) WHERE team IS NOT NULL;
CREATE INDEX conversation_by_expiry ON conversation (expires_at);
CREATE INDEX conversation_by_digest_a ON conversation (token_digest_a);
CREATE INDEX conversation_by_digest_b ON conversation (token_digest_b);

CREATE TABLE session (
    conversation_id TEXT NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    session         TEXT NOT NULL CHECK (session IN ('a', 'b')),
    status          TEXT CHECK (status IN ('working', 'waiting', 'blocked', 'complete', 'active', 'silent')),
    status_at       BIGINT,
    last_heartbeat  BIGINT,
    last_seen       BIGINT,
    delivered_id    BIGINT NOT NULL DEFAULT 0,
    acked_id        BIGINT NOT NULL DEFAULT 0,
    heard_at        BIGINT NOT NULL
                    GENERATED ALWAYS AS (greatest(coalesce(last_heartbeat, 0), coalesce(last_seen, 0))) STORED,
    PRIMARY KEY (conversation_id, session)
);

CREATE INDEX session_by_heard_at ON session (session, heard_at);
CREATE INDEX session_silent ON session (session) WHERE status = 'silent';

CREATE TABLE message (
    id              BIGINT PRIMARY KEY CHECK (id > 0),
    conversation_id TEXT NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    sender          TEXT NOT NULL CHECK (sender IN ('a', 'b', 'system')),
    recipient       TEXT NOT NULL CHECK (recipient IN ('a', 'b')),
    body            TEXT NOT NULL,
    action_type     TEXT NOT NULL
                    CHECK (action_type IN ('question', 'info', 'proposal', 'blocked', 'complete')),
    files_involved  TEXT NOT NULL DEFAULT '[]',
    metadata        TEXT,
    redacted        BOOLEAN NOT NULL DEFAULT false,
    created_at      BIGINT NOT NULL
);

CREATE INDEX message_inbox ON message (conversation_id, recipient, id);

CREATE TABLE audit (
    id              BIGINT PRIMARY KEY CHECK (id > 0),
    at              BIGINT NOT NULL,
    conversation_id TEXT,
    session         TEXT,
    action          TEXT NOT NULL,
    detail          TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);

CREATE TABLE task (
    id              BIGINT PRIMARY KEY CHECK (id > 0),
    team            TEXT,
    conversation_id TEXT NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    title           TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL
                    CHECK (state IN ('open', 'in_progress', 'done', 'failed', 'cancelled')),
    attempts        BIGINT NOT NULL DEFAULT 1,
    unassigned      BOOLEAN NOT NULL DEFAULT false,
    note            TEXT,
    redacted        BOOLEAN NOT NULL DEFAULT false,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE INDEX task_by_conversation ON task (conversation_id, state);

CREATE TABLE task_assignment (
    task_id         BIGINT NOT NULL REFERENCES task (id) ON DELETE CASCADE,
    attempt         BIGINT NOT NULL,
    conversation_id TEXT NOT NULL,
    assigned_at     BIGINT NOT NULL,
    ended_at        BIGINT,
    ended_by        TEXT CHECK (ended_by IN ('reassigned', 'done', 'failed', 'cancelled')),
    PRIMARY KEY (task_id, attempt)
);

CREATE TABLE yolo (
    conversation_id TEXT PRIMARY KEY REFERENCES conversation (id) ON DELETE CASCADE,
    enabled_at      BIGINT NOT NULL,
    mode            TEXT CHECK (mode IN ('safe', 'restricted', 'yolo')),
    workspace       TEXT,
    timeout_ms      BIGINT,
    configured_at   BIGINT,
    configured_by   TEXT CHECK (configured_by IN ('a', 'b'))
);

CREATE TABLE approval (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    digest          BYTEA NOT NULL UNIQUE,
    preview         TEXT NOT NULL,
    conversation_id TEXT REFERENCES conversation (id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT
);

CREATE INDEX approval_by_conversation ON approval (conversation_id)
    WHERE conversation_id IS NOT NULL;

CREATE TABLE idempotency (
    conversation_id TEXT NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    session         TEXT NOT NULL CHECK (session IN ('a', 'b')),
    key_digest      BYTEA NOT NULL CHECK (length(key_digest) = 32),
    tool            TEXT NOT NULL CHECK (tool IN ('send_to_partner', 'assign_task')),
    request_digest  BYTEA NOT NULL CHECK (length(request_digest) = 32),
    -- The message id (send_to_partner) or task id (assign_task).
    result_id       BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, session, key_digest)
);

CREATE TABLE access_key (
    name          TEXT PRIMARY KEY,
    digest        BYTEA NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT
);

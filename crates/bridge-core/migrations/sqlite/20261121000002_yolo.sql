-- Command execution ("YOLO mode"), behind the operator's gates.
--
-- `yolo` holds a conversation the operator enabled execution for (at a
-- terminal: bridgectl yolo enable), and what an agent of it then chose with
-- enable_yolo_mode: mode, workspace and timeout (NULL until it has).
-- `approval` holds the single-use approval tokens the operator issues
-- (bridgectl yolo token): their HMAC digest only, a preview of their first
-- characters for listings, the conversation they are bound to (NULL: any),
-- and when they were used.

CREATE TABLE yolo (
    conversation_id TEXT PRIMARY KEY NOT NULL
                    REFERENCES conversation (id) ON DELETE CASCADE,
    enabled_at      INTEGER NOT NULL,
    mode            TEXT CHECK (mode IN ('safe', 'restricted', 'yolo')),
    workspace       TEXT,
    timeout_ms      INTEGER,
    configured_at   INTEGER,
    configured_by   TEXT CHECK (configured_by IN ('a', 'b'))
) STRICT, WITHOUT ROWID;

CREATE TABLE approval (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    digest          BLOB NOT NULL UNIQUE,
    preview         TEXT NOT NULL,
    conversation_id TEXT REFERENCES conversation (id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER
) STRICT;

CREATE INDEX approval_by_conversation ON approval (conversation_id)
    WHERE conversation_id IS NOT NULL;

-- Delivery that survives a crash, and writes that can be retried.
--
-- A consuming read does not confirm what it hands out: the messages stay
-- pending until the client confirms that it received them (its server does
-- so on the client's next call, once the answer was written whole; or the
-- client acknowledges an id). Per (conversation, session):
--   acked_id      the last message confirmed: everything up to it reached
--                 the client;
--   delivered_id  (the column of the first schema) the highest id ever
--                 handed out. What lies between the two is pending: it comes
--                 again, first and marked as redelivered, at the next read.
-- Before this migration a consuming read confirmed at once, so what was
-- delivered is confirmed.

ALTER TABLE session ADD COLUMN acked_id INTEGER NOT NULL DEFAULT 0;
UPDATE session SET acked_id = delivered_id;

-- Idempotency keys: a write (a message sent, a task assigned) retried with
-- the same key by the same session returns what the first one returned and
-- stores nothing. The key is kept as its SHA-256 (the client chose it; it may
-- say more than we need to keep), with a digest of the request it came with,
-- so that the same key with other content is refused. Rows go with their
-- conversation.
CREATE TABLE idempotency (
    conversation_id TEXT NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    session         TEXT NOT NULL CHECK (session IN ('a', 'b')),
    key_digest      BLOB NOT NULL CHECK (length(key_digest) = 32),
    tool            TEXT NOT NULL CHECK (tool IN ('send_to_partner', 'assign_task')),
    request_digest  BLOB NOT NULL CHECK (length(request_digest) = 32),
    -- The message id (send_to_partner) or task id (assign_task).
    result_id       INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, session, key_digest)
) STRICT, WITHOUT ROWID;

-- Authentication at the HTTP layer.
--
-- `access_key` holds the operator's access keys (bridgectl access create):
-- a name the operator chose, the key's HMAC digest under the server key
-- (never the key), when it was made, when it stops working (NULL: never),
-- and when it was last used (updated at most once a minute). Revoking a key
-- deletes its row, so the next request with it is refused.
--
-- A session token can also be presented as a key, in the Authorization
-- header without its conversation id: the two indexes find its
-- conversation by digest.

CREATE TABLE access_key (
    name          TEXT PRIMARY KEY NOT NULL,
    digest        BLOB NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER
) STRICT, WITHOUT ROWID;

CREATE INDEX conversation_by_digest_a ON conversation (token_digest_a);
CREATE INDEX conversation_by_digest_b ON conversation (token_digest_b);

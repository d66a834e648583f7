-- A batch's writes in one statement: the PostgreSQL writer's commit
-- (`writer/postgres.rs`), one round trip instead of one per table.
--
-- The writer reads the rows its batch needs and the `head` rows (with the
-- transaction that last wrote them, `xmin`) in one statement, without a
-- lock; runs the operations in memory; then calls `mcp_bridge_commit` with
-- the write set, one JSON array per kind of row. The function locks the
-- heads (in name order, as before) and checks that no batch committed since
-- the writer read them (`p_seen`, the heads' `xmin` then): every batch of
-- every hub rewrites the heads, so unchanged heads mean that every row the
-- batch read is still as it was. If one did, it raises
-- `serialization_failure` and writes nothing; the writer reads again, and
-- after a few such conflicts takes the lock first (BEGIN, lock, read, this
-- function, COMMIT), which cannot conflict. Called on its own the function
-- is its own transaction: it commits when it returns. It returns its
-- transaction's id as the heads' `xmin` will show it: a writer that keeps
-- the state its batch left passes it as `p_seen` with its next batch,
-- without reading first.
--
-- `writer_batch` holds, per writer (a random id each writer draws when it
-- starts), the number of its last committed batch: a writer whose
-- connection broke before the answer came asks it whether its batch went
-- through. A writer's row is written with each of its batches; rows of
-- writers gone quiet for a day are removed when a new writer first commits.
--
-- The notification carries the heads as the change feed's periodic check
-- reads them (`audit=…,message=…,task=…@xid`) and, after a space, the
-- writer's id, so that a store's listener can skip its own batches.

CREATE TABLE writer_batch (
    writer TEXT PRIMARY KEY,
    token  BIGINT NOT NULL,
    at     BIGINT NOT NULL
);

CREATE FUNCTION mcp_bridge_commit(
    p_seen text,
    p_writer text,
    p_token bigint,
    p_at bigint,
    p_message_id bigint,
    p_audit_id bigint,
    p_task_id bigint,
    p_hash text,
    p_heads text,
    p_conversations jsonb,
    p_new_tasks jsonb,
    p_task_updates jsonb,
    p_new_assignments jsonb,
    p_ended_assignments jsonb,
    p_messages jsonb,
    p_idempotency jsonb,
    p_sessions jsonb,
    p_rekeys jsonb,
    p_yolo jsonb,
    p_yolo_deletions jsonb,
    p_new_approvals jsonb,
    p_used_approvals jsonb,
    p_approval_deletions jsonb,
    p_access jsonb,
    p_access_deletions jsonb,
    p_audits jsonb,
    p_deletions jsonb
) RETURNS TABLE (transaction_id text, payload text)
LANGUAGE plpgsql
AS $function$
DECLARE
    v_seen text;
BEGIN
    SELECT min(locked.written_by::text COLLATE "C") INTO v_seen
    FROM (SELECT head.xmin AS written_by FROM head ORDER BY name FOR UPDATE) AS locked;
    IF v_seen IS DISTINCT FROM p_seen THEN
        RAISE EXCEPTION 'another batch committed since this one read its rows'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF jsonb_array_length(p_conversations) > 0 THEN
        INSERT INTO conversation (id, role_a, role_b, team, created_at, expires_at,
                                  token_digest_a, token_digest_b)
        SELECT v ->> 'id', v ->> 'role_a', v ->> 'role_b', v ->> 'team',
               (v ->> 'created_at')::bigint, (v ->> 'expires_at')::bigint,
               decode(v ->> 'digest_a', 'hex'), decode(v ->> 'digest_b', 'hex')
        FROM jsonb_array_elements(p_conversations) AS v;
        INSERT INTO session (conversation_id, session)
        SELECT v ->> 'id', s.name
        FROM jsonb_array_elements(p_conversations) AS v, (VALUES ('a'), ('b')) AS s (name);
    END IF;
    IF jsonb_array_length(p_new_tasks) > 0 THEN
        INSERT INTO task (id, team, conversation_id, title, body, state, attempts, unassigned,
                          note, redacted, created_at, updated_at)
        SELECT (v ->> 'id')::bigint, v ->> 'team', v ->> 'conversation_id', v ->> 'title',
               v ->> 'body', v ->> 'state', (v ->> 'attempts')::bigint,
               (v ->> 'unassigned')::boolean, v ->> 'note', (v ->> 'redacted')::boolean,
               (v ->> 'created_at')::bigint, (v ->> 'updated_at')::bigint
        FROM jsonb_array_elements(p_new_tasks) AS v;
    END IF;
    IF jsonb_array_length(p_task_updates) > 0 THEN
        UPDATE task
        SET conversation_id = u ->> 'conversation_id', state = u ->> 'state',
            attempts = (u ->> 'attempts')::bigint, unassigned = (u ->> 'unassigned')::boolean,
            note = u ->> 'note', updated_at = (u ->> 'updated_at')::bigint
        FROM jsonb_array_elements(p_task_updates) AS u
        WHERE task.id = (u ->> 'id')::bigint;
    END IF;
    IF jsonb_array_length(p_new_assignments) > 0 THEN
        INSERT INTO task_assignment (task_id, attempt, conversation_id, assigned_at)
        SELECT (v ->> 0)::bigint, (v ->> 1)::bigint, v ->> 2, (v ->> 3)::bigint
        FROM jsonb_array_elements(p_new_assignments) AS v;
    END IF;
    IF jsonb_array_length(p_ended_assignments) > 0 THEN
        UPDATE task_assignment SET ended_at = (u ->> 2)::bigint, ended_by = u ->> 3
        FROM jsonb_array_elements(p_ended_assignments) AS u
        WHERE task_assignment.task_id = (u ->> 0)::bigint
          AND task_assignment.attempt = (u ->> 1)::bigint;
    END IF;
    IF jsonb_array_length(p_messages) > 0 THEN
        INSERT INTO message (id, conversation_id, sender, recipient, body, action_type,
                             files_involved, metadata, redacted, created_at)
        SELECT (v ->> 0)::bigint, v ->> 1, v ->> 2, v ->> 3, v ->> 4, v ->> 5, v ->> 6,
               v ->> 7, (v ->> 8)::boolean, (v ->> 9)::bigint
        FROM jsonb_array_elements(p_messages) AS v;
    END IF;
    IF jsonb_array_length(p_idempotency) > 0 THEN
        INSERT INTO idempotency (conversation_id, session, key_digest, tool, request_digest,
                                 result_id, created_at)
        SELECT v ->> 0, v ->> 1, decode(v ->> 2, 'hex'), v ->> 3, decode(v ->> 4, 'hex'),
               (v ->> 5)::bigint, (v ->> 6)::bigint
        FROM jsonb_array_elements(p_idempotency) AS v;
    END IF;
    IF jsonb_array_length(p_sessions) > 0 THEN
        UPDATE session
        SET status = u ->> 'status', status_at = (u ->> 'status_at')::bigint,
            last_heartbeat = (u ->> 'last_heartbeat')::bigint,
            last_seen = (u ->> 'last_seen')::bigint,
            delivered_id = (u ->> 'delivered_id')::bigint,
            acked_id = (u ->> 'acked_id')::bigint
        FROM jsonb_array_elements(p_sessions) AS u
        WHERE session.conversation_id = u ->> 'conversation_id'
          AND session.session = u ->> 'session';
    END IF;
    IF jsonb_array_length(p_rekeys) > 0 THEN
        UPDATE conversation
        SET token_digest_a = coalesce(decode(u ->> 'a', 'hex'), token_digest_a),
            token_digest_b = coalesce(decode(u ->> 'b', 'hex'), token_digest_b)
        FROM jsonb_array_elements(p_rekeys) AS u
        WHERE conversation.id = u ->> 'id';
    END IF;
    IF jsonb_array_length(p_yolo) > 0 THEN
        INSERT INTO yolo (conversation_id, enabled_at, mode, workspace, timeout_ms,
                          configured_at, configured_by)
        SELECT v ->> 'conversation_id', (v ->> 'enabled_at')::bigint, v ->> 'mode',
               v ->> 'workspace', (v ->> 'timeout_ms')::bigint,
               (v ->> 'configured_at')::bigint, v ->> 'configured_by'
        FROM jsonb_array_elements(p_yolo) AS v
        ON CONFLICT (conversation_id) DO UPDATE
            SET enabled_at = excluded.enabled_at, mode = excluded.mode,
                workspace = excluded.workspace, timeout_ms = excluded.timeout_ms,
                configured_at = excluded.configured_at,
                configured_by = excluded.configured_by;
    END IF;
    IF jsonb_array_length(p_yolo_deletions) > 0 THEN
        DELETE FROM yolo
        WHERE conversation_id IN (SELECT value FROM jsonb_array_elements_text(p_yolo_deletions));
    END IF;
    IF jsonb_array_length(p_new_approvals) > 0 THEN
        INSERT INTO approval (digest, preview, conversation_id, created_at, expires_at)
        SELECT decode(v ->> 'digest', 'hex'), v ->> 'preview', v ->> 'conversation_id',
               (v ->> 'created_at')::bigint, (v ->> 'expires_at')::bigint
        FROM jsonb_array_elements(p_new_approvals) AS v;
    END IF;
    IF jsonb_array_length(p_used_approvals) > 0 THEN
        UPDATE approval SET used_at = (u ->> 1)::bigint
        FROM jsonb_array_elements(p_used_approvals) AS u
        WHERE approval.digest = decode(u ->> 0, 'hex');
    END IF;
    IF jsonb_array_length(p_approval_deletions) > 0 THEN
        DELETE FROM approval
        WHERE id IN (SELECT value::bigint FROM jsonb_array_elements_text(p_approval_deletions));
    END IF;
    IF jsonb_array_length(p_access) > 0 THEN
        INSERT INTO access_key (name, digest, created_at, expires_at, last_used_at)
        SELECT v ->> 'name', decode(v ->> 'digest', 'hex'), (v ->> 'created_at')::bigint,
               (v ->> 'expires_at')::bigint, (v ->> 'last_used_at')::bigint
        FROM jsonb_array_elements(p_access) AS v
        ON CONFLICT (name) DO UPDATE SET last_used_at = excluded.last_used_at;
    END IF;
    IF jsonb_array_length(p_access_deletions) > 0 THEN
        DELETE FROM access_key
        WHERE name IN (SELECT value FROM jsonb_array_elements_text(p_access_deletions));
    END IF;
    IF jsonb_array_length(p_audits) > 0 THEN
        INSERT INTO audit (id, at, conversation_id, session, action, detail, prev_hash, hash)
        SELECT (v ->> 0)::bigint, (v ->> 1)::bigint, v ->> 2, v ->> 3, v ->> 4, v ->> 5,
               v ->> 6, v ->> 7
        FROM jsonb_array_elements(p_audits) AS v;
    END IF;
    IF jsonb_array_length(p_deletions) > 0 THEN
        DELETE FROM conversation
        WHERE id IN (SELECT value FROM jsonb_array_elements_text(p_deletions));
    END IF;
    UPDATE head
    SET last_id = CASE name WHEN 'message' THEN p_message_id WHEN 'audit' THEN p_audit_id
                            ELSE p_task_id END,
        hash = CASE name WHEN 'audit' THEN p_hash ELSE hash END;
    UPDATE writer_batch SET token = p_token, at = p_at WHERE writer = p_writer;
    IF NOT FOUND THEN
        DELETE FROM writer_batch WHERE writer_batch.at < p_at - 86400000;
        INSERT INTO writer_batch (writer, token, at) VALUES (p_writer, p_token, p_at);
    END IF;
    transaction_id := pg_current_xact_id()::xid::text;
    payload := p_heads || '@' || pg_current_xact_id()::xid || ' ' || p_writer;
    PERFORM pg_notify('mcp_bridge', payload);
    RETURN NEXT;
END
$function$;

-- The heads and the rows a batch names, as one JSON document (see
-- `writer/postgres.rs`), locking the heads first when `p_lock`: then, in a
-- transaction, the batch holds them until it commits, and the read, a
-- statement of its own after the lock, sees what the last holder committed
-- (under READ COMMITTED each statement of a function reads what was
-- committed when it began).
CREATE FUNCTION mcp_bridge_read(
    p_lock boolean,
    p_sessions jsonb,
    p_tasks jsonb,
    p_yolo jsonb,
    p_approvals jsonb,
    p_access jsonb,
    p_idempotency jsonb
) RETURNS text
LANGUAGE plpgsql
AS $function$
BEGIN
    IF p_lock THEN
        PERFORM FROM head ORDER BY name FOR UPDATE;
    END IF;
    RETURN (
    SELECT json_build_object(
      'heads', (SELECT json_agg(json_build_object('name', name, 'last_id', last_id, 'hash', hash,
                                                  'written_by', xmin::text))
                FROM head),
      'sessions', (SELECT coalesce(json_agg(json_build_object(
                      'conversation_id', c.id, 'session', s.session, 'expires_at', c.expires_at,
                      'team', c.team,
                      'digest', encode(CASE s.session WHEN 'a' THEN c.token_digest_a
                                                       ELSE c.token_digest_b END, 'hex'),
                      'status', s.status, 'status_at', s.status_at,
                      'last_heartbeat', s.last_heartbeat, 'last_seen', s.last_seen,
                      'delivered_id', s.delivered_id, 'acked_id', s.acked_id)), '[]')
                   FROM jsonb_array_elements(p_sessions) AS k
                   JOIN conversation AS c ON c.id = k ->> 0
                   JOIN session AS s ON s.conversation_id = c.id AND s.session = k ->> 1),
      'tasks', (SELECT coalesce(json_agg(t), '[]') FROM task AS t
                WHERE t.id IN (SELECT value::bigint FROM jsonb_array_elements_text(p_tasks))),
      'yolo', (SELECT coalesce(json_agg(y), '[]') FROM yolo AS y
               WHERE y.conversation_id IN (SELECT value FROM jsonb_array_elements_text(p_yolo))),
      'approvals', (SELECT coalesce(json_agg(json_build_object(
                       'digest', encode(a.digest, 'hex'), 'preview', a.preview,
                       'conversation_id', a.conversation_id, 'created_at', a.created_at,
                       'expires_at', a.expires_at, 'used_at', a.used_at)), '[]')
                    FROM approval AS a
                    WHERE a.digest IN (SELECT decode(value, 'hex')
                                       FROM jsonb_array_elements_text(p_approvals))),
      'access', (SELECT coalesce(json_agg(json_build_object(
                    'name', x.name, 'digest', encode(x.digest, 'hex'), 'created_at', x.created_at,
                    'expires_at', x.expires_at, 'last_used_at', x.last_used_at)), '[]')
                 FROM access_key AS x
                 WHERE x.name IN (SELECT value FROM jsonb_array_elements_text(p_access))),
      'idempotency', (SELECT coalesce(json_agg(json_build_object(
                         'conversation_id', i.conversation_id, 'session', i.session,
                         'key', encode(i.key_digest, 'hex'), 'tool', i.tool,
                         'request', encode(i.request_digest, 'hex'), 'result_id', i.result_id,
                         'created_at', i.created_at)), '[]')
                      FROM jsonb_array_elements(p_idempotency) AS k
                      JOIN idempotency AS i ON i.conversation_id = k ->> 0 AND i.session = k ->> 1
                                           AND i.key_digest = decode(k ->> 2, 'hex'))
    )::text);
END
$function$;

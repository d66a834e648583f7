-- An overtaken batch gets its new state in the same round trip
-- (`writer/postgres.rs`).
--
-- `mcp_bridge_commit` used to raise `serialization_failure` when another
-- batch had committed since this one read its rows (the heads' `xmin` had
-- changed); the writer then read again, or, another hub being busy, took
-- the lock first for a while and held it across two round trips. Now the
-- call also carries the batch's lookups (the arrays `mcp_bridge_read`
-- takes), and when the check fails it writes nothing and returns, in
-- `reread`, the document `mcp_bridge_read` gives, read while it holds the
-- lock on the heads: what every batch before it committed. The writer runs
-- its operations again against that and calls again; no lock is ever held
-- across a round trip, and an overtaken batch costs one round trip more,
-- not a read and a locked transaction. On success `reread` is null, as
-- before `transaction_id` is the batch's transaction as the heads' `xmin`
-- shows it.
--
-- The signature changes, so this is a second `mcp_bridge_commit`, with six
-- more arguments. The first stays: a hub still running the binary before
-- this migration keeps committing through it until it is restarted (its
-- batches then conflict as before, and its check still guards them).

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
    p_deletions jsonb,
    p_lookup_sessions jsonb,
    p_lookup_tasks jsonb,
    p_lookup_yolo jsonb,
    p_lookup_approvals jsonb,
    p_lookup_access jsonb,
    p_lookup_idempotency jsonb
) RETURNS TABLE (transaction_id text, payload text, reread text)
LANGUAGE plpgsql
AS $function$
DECLARE
    v_seen text;
BEGIN
    SELECT min(locked.written_by::text COLLATE "C") INTO v_seen
    FROM (SELECT head.xmin AS written_by FROM head ORDER BY name FOR UPDATE) AS locked;
    IF v_seen IS DISTINCT FROM p_seen THEN
        -- Overtaken: write nothing, and answer with what the batch must
        -- run against now, read under the lock. This transaction only
        -- locked rows: its commit need not wait for the WAL to reach disk.
        PERFORM set_config('synchronous_commit', 'off', true);
        reread := mcp_bridge_read(false, p_lookup_sessions, p_lookup_tasks, p_lookup_yolo,
                                 p_lookup_approvals, p_lookup_access, p_lookup_idempotency);
        RETURN NEXT;
        RETURN;
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

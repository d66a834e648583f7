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
-- its operations again against that and calls again: no lock is held
-- across that round trip, and an overtaken batch costs one round trip
-- more, not a read and a locked transaction. On success `reread` is null
-- and `transaction_id` is, as before, the batch's transaction as the
-- heads' `xmin` shows it.
--
-- The signature changes, so this is a second `mcp_bridge_commit`, with six
-- more arguments, around the first: once its own check passed, it holds
-- the heads, the first's check passes as well, and the first writes. The
-- first stays as it was, so the write statements are written once, and a
-- hub still running the binary before this migration keeps committing
-- through it until it is restarted.

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
    RETURN QUERY
    SELECT written.transaction_id, written.payload, NULL::text
    FROM mcp_bridge_commit(p_seen, p_writer, p_token, p_at, p_message_id, p_audit_id, p_task_id,
                           p_hash, p_heads, p_conversations, p_new_tasks, p_task_updates,
                           p_new_assignments, p_ended_assignments, p_messages, p_idempotency,
                           p_sessions, p_rekeys, p_yolo, p_yolo_deletions, p_new_approvals,
                           p_used_approvals, p_approval_deletions, p_access, p_access_deletions,
                           p_audits, p_deletions) AS written;
END
$function$;

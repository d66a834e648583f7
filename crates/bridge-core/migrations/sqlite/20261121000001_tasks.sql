-- Tasks that an orchestrator hands to the workers of its team.
--
-- A task is assigned to one conversation (its worker is session b). When that
-- worker falls silent, the task moves to a healthy worker of the same team;
-- task_assignment keeps every assignment. `unassigned` marks a task whose
-- worker is silent and for which no healthy worker was found yet.

CREATE TABLE task (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    team            TEXT,
    conversation_id TEXT NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    title           TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL
                    CHECK (state IN ('open', 'in_progress', 'done', 'failed', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 1,
    unassigned      INTEGER NOT NULL DEFAULT 0 CHECK (unassigned IN (0, 1)),
    note            TEXT,
    redacted        INTEGER NOT NULL DEFAULT 0 CHECK (redacted IN (0, 1)),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;

-- A conversation's tasks by state: listing, and a worker's load.
CREATE INDEX task_by_conversation ON task (conversation_id, state);

CREATE TABLE task_assignment (
    task_id         INTEGER NOT NULL REFERENCES task (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    conversation_id TEXT NOT NULL,
    assigned_at     INTEGER NOT NULL,
    ended_at        INTEGER,
    ended_by        TEXT CHECK (ended_by IN ('reassigned', 'done', 'failed', 'cancelled')),
    PRIMARY KEY (task_id, attempt)
) STRICT, WITHOUT ROWID;

-- The watchdog's scan: workers not heard from since a time, and workers
-- marked silent, found through indexes rather than by reading every session.
-- heard_at is 0 for a session never heard from (its conversation's creation
-- then counts, which the scan checks on the rows this index finds).
ALTER TABLE session ADD COLUMN heard_at INTEGER
    GENERATED ALWAYS AS (max(coalesce(last_heartbeat, 0), coalesce(last_seen, 0))) VIRTUAL;
CREATE INDEX session_by_heard_at ON session (session, heard_at);
CREATE INDEX session_silent ON session (session) WHERE status = 'silent';

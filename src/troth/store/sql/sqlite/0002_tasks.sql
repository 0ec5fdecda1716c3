-- The task framework (API.md 2, 3, 5): callbacks and subscriptions, tasks, locks.
--
-- States are stored as their enum values; every partial index below spells its state
-- condition exactly as the queries in sqlite.py do (SQLite only uses a partial index when the
-- query's WHERE contains the index's WHERE term for term).

-- Resume callbacks and notify subscriptions, waiting for their promise to complete.
CREATE TABLE callbacks (
    id TEXT PRIMARY KEY NOT NULL,
    promise_id TEXT NOT NULL,
    root_promise_id TEXT,
    recv TEXT NOT NULL,                 -- JSON of troth.model.Recv
    timeout INTEGER NOT NULL,
    created_on INTEGER NOT NULL
);

-- take_callbacks: every callback of a promise, in (created_on, id) order without a sort.
CREATE INDEX callbacks_by_promise ON callbacks (promise_id, created_on, id);

-- Tasks. The implicit rowid is the insertion sequence; "oldest first" is (created_on, id),
-- the order every backend agrees on.
CREATE TABLE tasks (
    id TEXT PRIMARY KEY NOT NULL,
    type TEXT NOT NULL,                 -- invoke | resume | notify
    state TEXT NOT NULL,                -- INIT | ENQUEUED | CLAIMED | COMPLETED | TIMEDOUT
    recv TEXT NOT NULL,                 -- JSON of troth.model.Recv
    recv_key TEXT NOT NULL,             -- Recv.key: poll:<group> | http:<url>
    root_promise_id TEXT NOT NULL,
    leaf_promise_id TEXT,
    counter INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    process_id TEXT,
    ttl INTEGER,
    timeout INTEGER NOT NULL,
    expires_at INTEGER,                 -- lease (CLAIMED) or time-to-claim (ENQUEUED) deadline
    ready_at INTEGER NOT NULL,
    created_on INTEGER NOT NULL,
    completed_on INTEGER
);

-- dispatchable_tasks (range ready_at <= now) and next_task_time (min ready_at).
CREATE INDEX tasks_init_by_ready ON tasks (ready_at) WHERE state = 'INIT';
-- overdue_tasks (lease or claim time passed) and next_task_time (min expires_at).
CREATE INDEX tasks_active_by_expiry ON tasks (expires_at)
    WHERE state IN ('ENQUEUED', 'CLAIMED');
-- overdue_tasks (deadline passed) and next_task_time (min timeout).
CREATE INDEX tasks_unfinished_by_timeout ON tasks (timeout)
    WHERE state NOT IN ('COMPLETED', 'TIMEDOUT');
-- tasks_of_root, and dispatchable_tasks' per-root checks (is the root busy? is there an
-- older ready task of the same root?).
CREATE INDEX tasks_by_root ON tasks (root_promise_id, state, created_on, id);
-- heartbeat_tasks.
CREATE INDEX tasks_claimed_by_process ON tasks (process_id) WHERE state = 'CLAIMED';
-- ready_tasks_for: INIT tasks of one receiver not ready yet.
CREATE INDEX tasks_init_by_recv ON tasks (recv_key, ready_at) WHERE state = 'INIT';

-- Locks (API.md 5).
CREATE TABLE locks (
    resource_id TEXT PRIMARY KEY NOT NULL,
    execution_id TEXT NOT NULL,
    process_id TEXT NOT NULL,
    ttl INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

-- heartbeat_locks.
CREATE INDEX locks_by_process ON locks (process_id);

-- troth on PostgreSQL: promises, the task framework, schedules, locks, metadata.
--
-- Ids are TEXT COLLATE "C": byte order, so the unique index also answers prefix searches
-- (id LIKE 'orders/%'). Times are milliseconds since the epoch (BIGINT). Several server
-- processes share these tables; every rule that needs mutual exclusion is enforced with row
-- locks (FOR UPDATE), advisory transaction locks or unique constraints, never in process.

CREATE TABLE promises (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- search pages newest first by it
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    state TEXT NOT NULL,
    param_headers TEXT,                 -- JSON object or NULL
    param_data BYTEA,
    value_headers TEXT,
    value_data BYTEA,
    timeout BIGINT NOT NULL,
    ikey_create TEXT,
    ikey_complete TEXT,
    tags TEXT,                          -- JSON object or NULL, as given (key order kept)
    tags_index JSONB GENERATED ALWAYS AS (tags::jsonb) STORED,  -- searched with @>
    is_timer BOOLEAN NOT NULL DEFAULT FALSE,
    created_on BIGINT NOT NULL,
    completed_on BIGINT,
    watched BOOLEAN NOT NULL DEFAULT FALSE  -- has callbacks or roots tasks (see sqlite 0003)
);

-- The sweeper (due, earliest first) and next_deadline; the search's state filters.
CREATE INDEX promises_pending_by_timeout ON promises (timeout) WHERE state = 'PENDING';
-- Search by state, newest first.
CREATE INDEX promises_by_state ON promises (state, seq);
-- Search by tags (tags @> '{"k": "v"}').
CREATE INDEX promises_by_tags ON promises USING GIN (tags_index jsonb_path_ops);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE callbacks (
    id TEXT COLLATE "C" PRIMARY KEY,
    promise_id TEXT COLLATE "C" NOT NULL,
    root_promise_id TEXT COLLATE "C",
    recv TEXT NOT NULL,                 -- JSON of troth.model.Recv
    timeout BIGINT NOT NULL,
    created_on BIGINT NOT NULL
);
CREATE INDEX callbacks_by_promise ON callbacks (promise_id, created_on, id);

CREATE TABLE tasks (
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    id TEXT COLLATE "C" PRIMARY KEY,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    recv TEXT NOT NULL,
    recv_key TEXT COLLATE "C" NOT NULL,
    root_promise_id TEXT COLLATE "C" NOT NULL,
    leaf_promise_id TEXT COLLATE "C",
    counter INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    process_id TEXT,
    ttl BIGINT,
    timeout BIGINT NOT NULL,
    expires_at BIGINT,
    ready_at BIGINT NOT NULL,
    created_on BIGINT NOT NULL,
    completed_on BIGINT
);
CREATE INDEX tasks_init_by_ready ON tasks (ready_at) WHERE state = 'INIT';
CREATE INDEX tasks_active_by_expiry ON tasks (expires_at) WHERE state IN ('ENQUEUED', 'CLAIMED');
CREATE INDEX tasks_unfinished_by_timeout ON tasks (timeout)
    WHERE state NOT IN ('COMPLETED', 'TIMEDOUT');
CREATE INDEX tasks_by_root ON tasks (root_promise_id, state, created_on, id);
CREATE INDEX tasks_claimed_by_process ON tasks (process_id) WHERE state = 'CLAIMED';
CREATE INDEX tasks_init_by_recv ON tasks (recv_key, ready_at) WHERE state = 'INIT';

CREATE TABLE locks (
    resource_id TEXT COLLATE "C" PRIMARY KEY,
    execution_id TEXT NOT NULL,
    process_id TEXT NOT NULL,
    ttl BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX locks_by_process ON locks (process_id);

CREATE TABLE schedules (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    description TEXT,
    cron TEXT NOT NULL,
    tags TEXT,
    tags_index JSONB GENERATED ALWAYS AS (tags::jsonb) STORED,
    promise_id TEXT NOT NULL,
    promise_timeout BIGINT NOT NULL,
    promise_param_headers TEXT,
    promise_param_data BYTEA,
    promise_tags TEXT,
    last_run_time BIGINT,
    next_run_time BIGINT NOT NULL,
    idempotency_key TEXT,
    created_on BIGINT NOT NULL
);
CREATE INDEX schedules_by_next_run ON schedules (next_run_time, id);
CREATE INDEX schedules_by_tags ON schedules USING GIN (tags_index jsonb_path_ops);

-- Schedules (API.md 4) and their tags (for indexed tag search).
CREATE TABLE schedules (
    -- Insertion order: search pages newest first by it. AUTOINCREMENT: never reused, even
    -- after the newest schedule is deleted, so a search cursor handed out earlier cannot
    -- later take in a schedule created after it (as in the memory store).
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    description TEXT,
    cron TEXT NOT NULL,
    tags TEXT,                          -- JSON object or NULL
    promise_id TEXT NOT NULL,           -- template: {{.id}}, {{.timestamp}}
    promise_timeout INTEGER NOT NULL,
    promise_param_headers TEXT,         -- JSON object or NULL
    promise_param_data BLOB,
    promise_tags TEXT,                  -- JSON object or NULL
    last_run_time INTEGER,
    next_run_time INTEGER NOT NULL,
    idempotency_key TEXT,
    created_on INTEGER NOT NULL
);

-- due_schedules (range next_run_time <= now, in (next_run_time, id) order without a sort)
-- and next_schedule_time (the first entry).
CREATE INDEX schedules_by_next_run ON schedules (next_run_time, id);

CREATE TABLE schedule_tags (
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (key, value, seq)
) WITHOUT ROWID;

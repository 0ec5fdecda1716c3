-- Promises, their tags (for indexed tag search) and server metadata.
CREATE TABLE promises (
    seq INTEGER PRIMARY KEY,            -- insertion order: search pages newest first by it
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    param_headers TEXT,                 -- JSON object or NULL
    param_data BLOB,
    value_headers TEXT,
    value_data BLOB,
    timeout INTEGER NOT NULL,
    ikey_create TEXT,
    ikey_complete TEXT,
    tags TEXT,                          -- JSON object or NULL
    is_timer INTEGER NOT NULL DEFAULT 0,
    created_on INTEGER NOT NULL,
    completed_on INTEGER
);

-- The sweeper's query and the search's state filters: pending promises by deadline.
CREATE INDEX promises_pending_by_timeout ON promises (timeout) WHERE state = 'PENDING';
-- Search by state, newest first.
CREATE INDEX promises_by_state ON promises (state, seq);

CREATE TABLE promise_tags (
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (key, value, seq)
) WITHOUT ROWID;

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Flags every bot process shares (an admin's pause): one row per flag, absent = off.
CREATE TABLE bot_flags (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_by TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);

CREATE INDEX jobs_created_idx ON jobs (created_at);

-- Flags every bot process shares (an admin's pause): one row per flag, absent = off.
CREATE TABLE bot_flags (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX jobs_created_idx ON jobs (created_at);

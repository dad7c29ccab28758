-- What an adapter must remember about a job between restarts, as one JSON object per job
-- (Slack: the channel, thread and progress message, so a restart edits the same message).
CREATE TABLE delivery_state (
    job_id     TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    state      TEXT NOT NULL,
    updated_at REAL NOT NULL
);

-- The durable queue: jobs, their artifacts, delivery receipts, rate buckets, worker liveness.
-- Timestamps are REAL unix seconds (UTC); the backend converts them to datetimes.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,            -- a uuid4
    platform         TEXT NOT NULL,
    request_id       TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    channel          TEXT NOT NULL DEFAULT '',
    guild            TEXT NOT NULL DEFAULT '',
    kind             TEXT NOT NULL,
    params           TEXT NOT NULL,               -- exactly Request.to_json()
    batch_key        TEXT NOT NULL,
    images           INTEGER NOT NULL CHECK (images >= 1),
    fair_round       INTEGER NOT NULL DEFAULT 0,  -- round-robin round, fixed at enqueue
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_until      REAL,
    worker_id        TEXT,
    progress         REAL NOT NULL DEFAULT 0,
    error            TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    UNIQUE (platform, request_id)
);

CREATE INDEX jobs_queued_idx ON jobs (fair_round, created_at, id) WHERE status = 'queued';
CREATE INDEX jobs_queued_key_idx ON jobs (batch_key, fair_round, created_at) WHERE status = 'queued';
CREATE INDEX jobs_running_lease_idx ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_user_status_idx ON jobs (user_id, status);
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE status = 'succeeded';
CREATE INDEX jobs_terminal_platform_idx ON jobs (platform, finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled', 'dead');

CREATE TABLE artifacts (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    mime       TEXT NOT NULL,
    data       BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, name)
);

CREATE TABLE deliveries (
    job_id       TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    delivered_at REAL NOT NULL,
    ref          TEXT NOT NULL DEFAULT ''
);

CREATE TABLE rate_buckets (
    user_id    TEXT PRIMARY KEY,
    tokens     REAL NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE workers (
    id        TEXT PRIMARY KEY,
    last_seen REAL NOT NULL
);

-- The durable queue: jobs, their artifacts, delivery receipts, rate buckets, worker liveness.

CREATE TABLE jobs (
    id               text PRIMARY KEY,            -- a uuid4, as text on both backends
    platform         text NOT NULL,
    request_id       text NOT NULL,
    user_id          text NOT NULL,
    channel          text NOT NULL DEFAULT '',
    guild            text NOT NULL DEFAULT '',
    kind             text NOT NULL,
    params           jsonb NOT NULL,              -- Request.to_json()
    batch_key        text NOT NULL,
    images           integer NOT NULL CHECK (images >= 1),
    fair_round       bigint NOT NULL DEFAULT 0,   -- round-robin round, fixed at enqueue
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    lease_until      timestamptz,
    worker_id        text,
    progress         double precision NOT NULL DEFAULT 0,
    error            text,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at       timestamptz,
    finished_at      timestamptz,
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
    job_id     text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name       text NOT NULL,
    kind       text NOT NULL,
    mime       text NOT NULL,
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_id, name)
);

CREATE TABLE deliveries (
    job_id       text PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    delivered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ref          text NOT NULL DEFAULT ''
);

CREATE TABLE rate_buckets (
    user_id    text PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE workers (
    id        text PRIMARY KEY,
    last_seen timestamptz NOT NULL DEFAULT clock_timestamp()
);

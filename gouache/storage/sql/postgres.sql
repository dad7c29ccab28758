-- Named queries for the PostgreSQL backend (asyncpg; :name becomes $n when loaded).
-- Time comes from the database clock so workers on several hosts agree on leases.

-- name: get_job
SELECT * FROM jobs WHERE id = :id

-- name: get_by_request
SELECT * FROM jobs WHERE platform = :platform AND request_id = :request_id

-- name: lock_user
-- Serialises one user's admissions across bot processes (token bucket + pending cap).
SELECT pg_advisory_xact_lock(hashtext('gouache:user:' || :user_id))

-- name: ensure_bucket
INSERT INTO rate_buckets (user_id, tokens, updated_at) VALUES (:user_id, :tokens, now())
ON CONFLICT (user_id) DO NOTHING

-- name: read_bucket
SELECT tokens, extract(epoch FROM now() - updated_at)::float8 AS elapsed
FROM rate_buckets WHERE user_id = :user_id FOR UPDATE

-- name: write_bucket
UPDATE rate_buckets SET tokens = :tokens, updated_at = now() WHERE user_id = :user_id

-- name: pending_counts
SELECT count(*) FILTER (WHERE status = 'queued')::int AS queued,
       count(*) FILTER (WHERE user_id = :user_id)::int AS user_pending,
       count(*) FILTER (WHERE guild = :guild AND :guild <> '')::int AS guild_pending,
       count(*) FILTER (WHERE status = 'queued' AND platform = :platform)::int AS platform_queued
FROM jobs WHERE status IN ('queued', 'running')

-- name: insert_job
-- fair_round: the current round, or where the user's latest unfinished job's turn ends
-- (its fair_round + fair_cost), whichever is later (batching.py).
INSERT INTO jobs (id, platform, request_id, user_id, channel, guild, kind, params, batch_key, shape_key,
                  model, images, fair_cost, fair_round)
VALUES (:id, :platform, :request_id, :user_id, :channel, :guild, :kind, :params::jsonb, :batch_key, :shape_key, :model, :images, :fair_cost, GREATEST(
    COALESCE((SELECT min(fair_round) FROM jobs WHERE status = 'queued'),
             (SELECT max(fair_round) FROM jobs WHERE status = 'running'), 0),
    COALESCE((SELECT max(fair_round + fair_cost) FROM jobs
              WHERE user_id = :user_id AND status IN ('queued', 'running')), 0)))
ON CONFLICT (platform, request_id) DO NOTHING
RETURNING *

-- name: upsert_artifact
INSERT INTO artifacts (job_id, name, kind, mime, image_index, data) VALUES (:job_id, :name, :kind, :mime, :image_index, :data)
ON CONFLICT (job_id, name) DO UPDATE
SET kind = EXCLUDED.kind, mime = EXCLUDED.mime, image_index = EXCLUDED.image_index, data = EXCLUDED.data

-- name: notify
SELECT pg_notify('gouache_jobs', :event)

-- name: cancel
UPDATE jobs SET
    status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
    error = CASE WHEN status = 'queued' THEN :message ELSE error END,
    finished_at = CASE WHEN status = 'queued' THEN clock_timestamp() ELSE finished_at END,
    cancel_requested = cancel_requested OR status = 'running',
    updated_at = clock_timestamp()
WHERE id = :id
RETURNING *

-- name: head
SELECT h.batch_key, h.attempts, h.model,
       extract(epoch FROM clock_timestamp() - h.created_at)::float8 AS age,
       (SELECT sum(images) FROM jobs
        WHERE status = 'queued' AND batch_key = h.batch_key)::int AS images
FROM (SELECT batch_key, created_at, attempts, model FROM jobs
      WHERE status = 'queued' AND (:models::text[] IS NULL OR model = ANY(:models::text[]))
      ORDER BY fair_round, created_at, id LIMIT 1) AS h

-- name: head_by_shape
SELECT h.shape_key AS batch_key, h.attempts, h.model,
       extract(epoch FROM clock_timestamp() - h.created_at)::float8 AS age,
       (SELECT sum(images) FROM jobs
        WHERE status = 'queued' AND shape_key = h.shape_key)::int AS images
FROM (SELECT shape_key, created_at, attempts, model FROM jobs
      WHERE status = 'queued' AND (:models::text[] IS NULL OR model = ANY(:models::text[]))
      ORDER BY fair_round, created_at, id LIMIT 1) AS h

-- name: claim_candidates_by_shape
SELECT id, images, attempts FROM jobs
WHERE status = 'queued' AND shape_key = :batch_key
ORDER BY fair_round, created_at, id
LIMIT :limit
FOR UPDATE SKIP LOCKED

-- name: claim_candidates
SELECT id, images, attempts FROM jobs
WHERE status = 'queued' AND batch_key = :batch_key
ORDER BY fair_round, created_at, id
LIMIT :limit
FOR UPDATE SKIP LOCKED

-- name: claim
UPDATE jobs SET status = 'running', attempts = attempts + 1, worker_id = :worker_id,
    lease_until = now() + make_interval(secs => :lease), started_at = now(), updated_at = now(),
    progress = 0
WHERE id = ANY(:ids::text[]) AND status = 'queued'
RETURNING *

-- name: touch_worker
INSERT INTO workers (id, last_seen) VALUES (:worker_id, clock_timestamp())
ON CONFLICT (id) DO UPDATE SET last_seen = EXCLUDED.last_seen

-- name: heartbeat
UPDATE jobs SET lease_until = clock_timestamp() + make_interval(secs => :lease),
    updated_at = clock_timestamp()
WHERE id = ANY(:ids::text[]) AND worker_id = :worker_id AND status = 'running'
RETURNING id, cancel_requested

-- name: set_progress
UPDATE jobs SET progress = :progress, updated_at = clock_timestamp()
WHERE id = :id AND status = 'running' AND (:worker_id::text IS NULL OR worker_id = :worker_id)
RETURNING id

-- name: lock_job
SELECT status, worker_id, cancel_requested FROM jobs WHERE id = :id FOR UPDATE

-- name: finish
UPDATE jobs SET status = :status, error = :error, finished_at = clock_timestamp(),
    updated_at = clock_timestamp(), lease_until = NULL,
    progress = CASE WHEN :status = 'succeeded' THEN 1 ELSE progress END
WHERE id = :id
RETURNING *

-- name: requeue_expired
-- A cancel that was requested wins; then dead at max_attempts; otherwise back to the queue,
-- keeping fair_round so it goes to the front of its round.
UPDATE jobs SET
    status = CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN attempts >= :max_attempts THEN 'dead' ELSE 'queued' END,
    error = CASE WHEN cancel_requested THEN :cancelled WHEN attempts >= :max_attempts THEN :dead ELSE error END,
    finished_at = CASE WHEN cancel_requested OR attempts >= :max_attempts THEN clock_timestamp() END,
    lease_until = NULL,
    updated_at = clock_timestamp()
WHERE status = 'running' AND lease_until < clock_timestamp()
RETURNING *

-- name: release
-- A draining worker hands back jobs it will not finish: queued again at once (not after the
-- lease), the attempt not counted (the job did not crash anything), a requested cancel wins.
UPDATE jobs SET
    status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
    error = CASE WHEN cancel_requested THEN :cancelled ELSE error END,
    finished_at = CASE WHEN cancel_requested THEN clock_timestamp() END,
    attempts = CASE WHEN cancel_requested THEN attempts ELSE GREATEST(attempts - 1, 0) END,
    lease_until = NULL, progress = 0, started_at = CASE WHEN cancel_requested THEN started_at END,
    updated_at = clock_timestamp()
WHERE (:ids::text[] IS NULL OR id = ANY(:ids::text[])) AND worker_id = :worker_id AND status = 'running'
RETURNING *

-- name: queue_position
SELECT count(*)::int AS jobs, COALESCE(sum(o.images), 0)::int AS images
FROM jobs AS j JOIN jobs AS o
  ON o.status = 'queued'
 AND (o.fair_round, o.created_at, o.id) <= (j.fair_round, j.created_at, j.id)
WHERE j.id = :id AND j.status = 'queued'

-- name: stats
SELECT count(*) FILTER (WHERE status = 'queued')::int AS queued_jobs,
       COALESCE(sum(images) FILTER (WHERE status = 'queued'), 0)::int AS queued_images,
       count(*) FILTER (WHERE status = 'running')::int AS running_jobs,
       count(*) FILTER (WHERE user_id = :user_id)::int AS user_pending
FROM jobs WHERE status IN ('queued', 'running')

-- name: seconds_per_image
-- Jobs claimed together share worker_id and started_at: one batch. Mean over recent batches.
SELECT sum(d) / NULLIF(sum(n), 0) AS spi FROM (
    SELECT extract(epoch FROM max(finished_at) - started_at)::float8 AS d, sum(images) AS n
    FROM (SELECT worker_id, started_at, finished_at, images FROM jobs
          WHERE status = 'succeeded' AND started_at IS NOT NULL
          ORDER BY finished_at DESC LIMIT 200) AS recent
    GROUP BY worker_id, started_at) AS batches

-- name: workers
SELECT max(last_seen) AS last_seen,
       count(*) FILTER (WHERE last_seen > clock_timestamp() - make_interval(secs => :active_seconds))::int
           AS active
FROM workers

-- name: list_jobs
SELECT * FROM jobs
WHERE (:user_id::text IS NULL OR user_id = :user_id) AND (:status::text IS NULL OR status = :status)
ORDER BY created_at DESC, id
LIMIT :limit

-- name: artifacts
SELECT * FROM artifacts WHERE job_id = :job_id ORDER BY name

-- name: undelivered
SELECT j.* FROM jobs AS j LEFT JOIN deliveries AS d ON d.job_id = j.id
WHERE j.status IN ('succeeded', 'failed', 'cancelled', 'dead')
  AND j.platform = ANY(:platforms::text[]) AND d.job_id IS NULL
ORDER BY j.finished_at, j.id
LIMIT :limit

-- name: mark_delivered
INSERT INTO deliveries (job_id, ref) VALUES (:job_id, :ref)
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id

-- name: get_delivery_state
SELECT state FROM delivery_state WHERE job_id = :job_id

-- name: set_delivery_state
INSERT INTO delivery_state (job_id, state, channel, thread) VALUES (:job_id, :state, :channel, :thread)
ON CONFLICT (job_id) DO UPDATE SET state = EXCLUDED.state, channel = EXCLUDED.channel,
                                   thread = EXCLUDED.thread, updated_at = now()

-- name: job_in_thread
SELECT j.* FROM delivery_state AS s JOIN jobs AS j ON j.id = s.job_id
WHERE s.channel = :channel AND s.thread = :thread AND j.platform = :platform
  AND j.status = 'succeeded'
ORDER BY j.finished_at DESC, j.id DESC
LIMIT 1

-- name: get_flag
SELECT value, updated_by, updated_at FROM bot_flags WHERE name = :name

-- name: set_flag
INSERT INTO bot_flags (name, value, updated_by, updated_at)
VALUES (:name, :value, :updated_by, clock_timestamp())
ON CONFLICT (name) DO UPDATE
SET value = excluded.value, updated_by = excluded.updated_by, updated_at = excluded.updated_at

-- name: clear_flag
DELETE FROM bot_flags WHERE name = :name RETURNING name

-- name: prune_buckets
-- A bucket idle this long has refilled to its burst: it is the same as no row at all.
-- SKIP LOCKED: two admissions pruning at once never wait on each other's rows.
DELETE FROM rate_buckets WHERE user_id IN (
    SELECT user_id FROM rate_buckets WHERE updated_at < now() - make_interval(secs => :idle_seconds)
    ORDER BY updated_at LIMIT 100 FOR UPDATE SKIP LOCKED)

-- name: reset_bucket
DELETE FROM rate_buckets WHERE user_id = :user_id RETURNING user_id

-- name: usage
-- Jobs and image-steps (images x steps) per platform, guild and user since :seconds ago.
SELECT platform, guild, user_id, count(*)::int AS jobs,
       COALESCE(sum(images * (params->>'steps')::int), 0)::bigint AS image_steps
FROM jobs WHERE created_at >= now() - make_interval(secs => :seconds)
GROUP BY platform, guild, user_id
ORDER BY image_steps DESC, jobs DESC, user_id

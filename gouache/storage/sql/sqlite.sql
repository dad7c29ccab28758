-- Named queries for the SQLite backend (aiosqlite, :name parameters).
-- Time is REAL unix seconds passed in as :now; one host owns the file, so its clock is the clock.

-- name: get_job
SELECT * FROM jobs WHERE id = :id

-- name: get_by_request
SELECT * FROM jobs WHERE platform = :platform AND request_id = :request_id

-- name: ensure_bucket
INSERT INTO rate_buckets (user_id, tokens, updated_at) VALUES (:user_id, :tokens, :now)
ON CONFLICT (user_id) DO NOTHING

-- name: lock_user
-- BEGIN IMMEDIATE already serialises every writer on the file.
SELECT :user_id

-- name: read_bucket
SELECT tokens, :now - updated_at AS elapsed FROM rate_buckets WHERE user_id = :user_id

-- name: write_bucket
UPDATE rate_buckets SET tokens = :tokens, updated_at = :now WHERE user_id = :user_id

-- name: pending_counts
SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE user_id = :user_id) AS user_pending,
       count(*) FILTER (WHERE guild = :guild AND :guild <> '') AS guild_pending,
       count(*) FILTER (WHERE status = 'queued' AND platform = :platform) AS platform_queued
FROM jobs WHERE status IN ('queued', 'running')

-- name: insert_job
-- fair_round: the current round, or where the user's latest unfinished job's turn ends
-- (its fair_round + fair_cost), whichever is later (batching.py).
INSERT INTO jobs (id, platform, request_id, user_id, channel, guild, kind, params, batch_key, shape_key,
                  model, images, fair_cost, fair_round, created_at, updated_at)
VALUES (:id, :platform, :request_id, :user_id, :channel, :guild, :kind, :params, :batch_key, :shape_key,
        :model, :images, :fair_cost, max(
    COALESCE((SELECT min(fair_round) FROM jobs WHERE status = 'queued'),
             (SELECT max(fair_round) FROM jobs WHERE status = 'running'), 0),
    COALESCE((SELECT max(fair_round + fair_cost) FROM jobs
              WHERE user_id = :user_id AND status IN ('queued', 'running')), 0)),
        :now, :now)
ON CONFLICT (platform, request_id) DO NOTHING
RETURNING *

-- name: notify
-- The backend wakes this process's waiters after commit; other processes poll.
SELECT :event

-- name: upsert_artifact
INSERT INTO artifacts (job_id, name, kind, mime, image_index, data, created_at)
VALUES (:job_id, :name, :kind, :mime, :image_index, :data, :now)
ON CONFLICT (job_id, name) DO UPDATE
SET kind = excluded.kind, mime = excluded.mime, image_index = excluded.image_index, data = excluded.data

-- name: cancel
UPDATE jobs SET
    status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
    error = CASE WHEN status = 'queued' THEN :message ELSE error END,
    finished_at = CASE WHEN status = 'queued' THEN :now ELSE finished_at END,
    cancel_requested = cancel_requested OR status = 'running',
    updated_at = :now
WHERE id = :id
RETURNING *

-- name: head
SELECT h.batch_key, h.attempts, h.model, :now - h.created_at AS age,
       (SELECT sum(images) FROM jobs
        WHERE status = 'queued' AND batch_key = h.batch_key) AS images
FROM (SELECT batch_key, created_at, attempts, model FROM jobs
      WHERE status = 'queued' AND (:models IS NULL OR model IN (SELECT value FROM json_each(:models)))
      ORDER BY fair_round, created_at, id LIMIT 1) AS h

-- name: head_by_shape
SELECT h.shape_key AS batch_key, h.attempts, h.model, :now - h.created_at AS age,
       (SELECT sum(images) FROM jobs
        WHERE status = 'queued' AND shape_key = h.shape_key) AS images
FROM (SELECT shape_key, created_at, attempts, model FROM jobs
      WHERE status = 'queued' AND (:models IS NULL OR model IN (SELECT value FROM json_each(:models)))
      ORDER BY fair_round, created_at, id LIMIT 1) AS h

-- name: claim_candidates_by_shape
SELECT id, images, attempts FROM jobs
WHERE status = 'queued' AND shape_key = :batch_key
ORDER BY fair_round, created_at, id
LIMIT :limit

-- name: claim_candidates
SELECT id, images, attempts FROM jobs
WHERE status = 'queued' AND batch_key = :batch_key
ORDER BY fair_round, created_at, id
LIMIT :limit

-- name: claim
UPDATE jobs SET status = 'running', attempts = attempts + 1, worker_id = :worker_id,
    lease_until = :now + :lease, started_at = :now, updated_at = :now, progress = 0
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'queued'
RETURNING *

-- name: touch_worker
INSERT INTO workers (id, last_seen) VALUES (:worker_id, :now)
ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen

-- name: heartbeat
UPDATE jobs SET lease_until = :now + :lease, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND worker_id = :worker_id
  AND status = 'running'
RETURNING id, cancel_requested

-- name: set_progress
UPDATE jobs SET progress = :progress, updated_at = :now
WHERE id = :id AND status = 'running' AND (:worker_id IS NULL OR worker_id = :worker_id)
RETURNING id

-- name: lock_job
SELECT status, worker_id, cancel_requested FROM jobs WHERE id = :id

-- name: finish
UPDATE jobs SET status = :status, error = :error, finished_at = :now, updated_at = :now,
    lease_until = NULL,
    progress = CASE WHEN :status = 'succeeded' THEN 1 ELSE progress END
WHERE id = :id
RETURNING *

-- name: requeue_expired
-- A cancel that was requested wins; then dead at max_attempts; otherwise back to the queue,
-- keeping fair_round so it goes to the front of its round.
UPDATE jobs SET
    status = CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN attempts >= :max_attempts THEN 'dead' ELSE 'queued' END,
    error = CASE WHEN cancel_requested THEN :cancelled
                 WHEN attempts >= :max_attempts THEN :dead ELSE error END,
    finished_at = CASE WHEN cancel_requested OR attempts >= :max_attempts THEN :now END,
    lease_until = NULL,
    updated_at = :now
WHERE status = 'running' AND lease_until < :now
RETURNING *

-- name: release
-- A draining worker hands back jobs it will not finish: queued again at once (not after the
-- lease), the attempt not counted (the job did not crash anything), a requested cancel wins.
UPDATE jobs SET
    status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
    error = CASE WHEN cancel_requested THEN :cancelled ELSE error END,
    finished_at = CASE WHEN cancel_requested THEN :now END,
    attempts = CASE WHEN cancel_requested THEN attempts ELSE max(attempts - 1, 0) END,
    lease_until = NULL, progress = 0, started_at = CASE WHEN cancel_requested THEN started_at END,
    updated_at = :now
WHERE (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids))) AND worker_id = :worker_id AND status = 'running'
RETURNING *

-- name: queue_position
SELECT count(*) AS jobs, COALESCE(sum(o.images), 0) AS images
FROM jobs AS j JOIN jobs AS o
  ON o.status = 'queued'
 AND (o.fair_round, o.created_at, o.id) <= (j.fair_round, j.created_at, j.id)
WHERE j.id = :id AND j.status = 'queued'

-- name: stats
SELECT count(*) FILTER (WHERE status = 'queued') AS queued_jobs,
       COALESCE(sum(images) FILTER (WHERE status = 'queued'), 0) AS queued_images,
       count(*) FILTER (WHERE status = 'running') AS running_jobs,
       count(*) FILTER (WHERE user_id = :user_id) AS user_pending
FROM jobs WHERE status IN ('queued', 'running')

-- name: seconds_per_image
-- Jobs claimed together share worker_id and started_at: one batch. Mean over recent batches.
SELECT sum(d) / NULLIF(sum(n), 0) AS spi FROM (
    SELECT max(finished_at) - started_at AS d, sum(images) AS n
    FROM (SELECT worker_id, started_at, finished_at, images FROM jobs
          WHERE status = 'succeeded' AND started_at IS NOT NULL
          ORDER BY finished_at DESC LIMIT 200) AS recent
    GROUP BY worker_id, started_at) AS batches

-- name: workers
SELECT max(last_seen) AS last_seen,
       count(*) FILTER (WHERE last_seen > :now - :active_seconds) AS active
FROM workers

-- name: list_jobs
SELECT * FROM jobs
WHERE (:user_id IS NULL OR user_id = :user_id) AND (:status IS NULL OR status = :status)
ORDER BY created_at DESC, id
LIMIT :limit

-- name: artifacts
SELECT * FROM artifacts WHERE job_id = :job_id ORDER BY name

-- name: undelivered
SELECT j.* FROM jobs AS j LEFT JOIN deliveries AS d ON d.job_id = j.id
WHERE j.status IN ('succeeded', 'failed', 'cancelled', 'dead')
  AND j.platform IN (SELECT value FROM json_each(:platforms)) AND d.job_id IS NULL
ORDER BY j.finished_at, j.id
LIMIT :limit

-- name: mark_delivered
INSERT INTO deliveries (job_id, delivered_at, ref) VALUES (:job_id, :now, :ref)
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id

-- name: get_delivery_state
SELECT state FROM delivery_state WHERE job_id = :job_id

-- name: set_delivery_state
INSERT INTO delivery_state (job_id, state, channel, thread, updated_at)
VALUES (:job_id, :state, :channel, :thread, :now)
ON CONFLICT (job_id) DO UPDATE SET state = excluded.state, channel = excluded.channel,
                                   thread = excluded.thread, updated_at = excluded.updated_at

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
VALUES (:name, :value, :updated_by, :now)
ON CONFLICT (name) DO UPDATE
SET value = excluded.value, updated_by = excluded.updated_by, updated_at = excluded.updated_at

-- name: clear_flag
DELETE FROM bot_flags WHERE name = :name RETURNING name

-- name: prune_buckets
-- A bucket idle this long has refilled to its burst: it is the same as no row at all.
DELETE FROM rate_buckets WHERE user_id IN (
    SELECT user_id FROM rate_buckets WHERE updated_at < :now - :idle_seconds LIMIT 100)

-- name: reset_bucket
DELETE FROM rate_buckets WHERE user_id = :user_id RETURNING user_id

-- name: usage
-- Jobs and image-steps (images x steps) per platform, guild and user since :seconds ago.
SELECT platform, guild, user_id, count(*) AS jobs,
       COALESCE(sum(images * CAST(json_extract(params, '$.steps') AS INTEGER)), 0) AS image_steps
FROM jobs WHERE created_at >= :now - :seconds
GROUP BY platform, guild, user_id
ORDER BY image_steps DESC, jobs DESC, user_id

-- KEDA's postgresql trigger (deploy/kubernetes): the GPU workers one model group needs now,
-- its queued and running images over the images one worker serves, rounded up; 0 on an empty
-- queue. PostgreSQL only. gouache.storage.scaling inlines :models and :per_worker as literals
-- (`gouache scaling-query` prints the result). Reads jobs_active_model_idx (unfinished jobs).
SELECT CEIL(COALESCE(SUM(images), 0)::numeric / :per_worker::int)::int AS workers
FROM jobs
WHERE status IN ('queued', 'running') AND (:models::text[] IS NULL OR model = ANY(:models::text[]))

-- The model a job is for, as a column: the KEDA scaling query (`gouache scaling-query`) counts
-- queued and running images per model group, and a worker of one group claims only its models.
ALTER TABLE jobs ADD COLUMN model TEXT NOT NULL DEFAULT '';
UPDATE jobs SET model = json_extract(params, '$.model');
-- Only unfinished jobs are in it, so the scaling query's cost follows the backlog, not the history.
CREATE INDEX jobs_active_model_idx ON jobs (model, status, images) WHERE status IN ('queued', 'running');

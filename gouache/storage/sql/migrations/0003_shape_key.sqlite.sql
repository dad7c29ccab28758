-- Jobs of one model and latent size can share a step-level batch (Request.shape_key), whatever
-- their steps, sampler or guidance; the worker claims newcomers by this key between steps.
ALTER TABLE jobs ADD COLUMN shape_key TEXT NOT NULL DEFAULT '';
UPDATE jobs SET shape_key = json_extract(params, '$.model') || '|'
    || json_extract(params, '$.width') || 'x' || json_extract(params, '$.height');
CREATE INDEX jobs_queued_shape_idx ON jobs (shape_key, fair_round, created_at) WHERE status = 'queued';

-- A job's turn advances its user's fair_round by its work, not by one (batching.fair_cost):
-- the job's image-steps in quanta of 20, so a 4-image 50-step job counts ten 1-image 20-step ones.
ALTER TABLE jobs ADD COLUMN fair_cost integer NOT NULL DEFAULT 1;
UPDATE jobs SET fair_cost = GREATEST(1, (images * (params->>'steps')::int + 19) / 20);

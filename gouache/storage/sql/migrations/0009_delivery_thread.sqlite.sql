-- Where a job's result was posted (its delivery state's channel and thread), as columns with an
-- index: a reply in that thread finds the job it answers (job_in_thread).
ALTER TABLE delivery_state ADD COLUMN channel TEXT;
ALTER TABLE delivery_state ADD COLUMN thread TEXT;
UPDATE delivery_state
SET channel = json_extract(state, '$.channel'), thread = json_extract(state, '$.thread');
CREATE INDEX delivery_state_thread ON delivery_state (channel, thread);

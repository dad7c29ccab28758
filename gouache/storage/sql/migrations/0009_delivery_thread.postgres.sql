-- Where a job's result was posted (its delivery state's channel and thread), as columns with an
-- index: a reply in that thread finds the job it answers (job_in_thread).
ALTER TABLE delivery_state ADD COLUMN channel text, ADD COLUMN thread text;
UPDATE delivery_state SET channel = state::jsonb ->> 'channel', thread = state::jsonb ->> 'thread';
CREATE INDEX delivery_state_thread ON delivery_state (channel, thread);

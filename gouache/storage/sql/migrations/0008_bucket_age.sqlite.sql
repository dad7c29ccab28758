-- Stale rate buckets are pruned by age (prune_buckets): an index keeps that a range delete.
CREATE INDEX rate_buckets_updated_at ON rate_buckets (updated_at);

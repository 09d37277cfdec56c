-- The Redis key prefixes quota has kept state under: a prefix seen before whose state is gone is a Redis that
-- lost its data (its rate-limit buckets count as full), not a first start (they start empty).
CREATE TABLE IF NOT EXISTS redis_prefixes (
    prefix TEXT PRIMARY KEY,
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Durable record of open reservations (written by quota in group-commit batches, deleted in the transaction
-- that charges them): when Redis loses its data, no reservation escapes its charge and rebuilt counters hold
-- what the open reservations reserve.
CREATE TABLE IF NOT EXISTS open_reservations (
    reservation_id TEXT PRIMARY KEY,
    expires_ms BIGINT NOT NULL,
    pool_id TEXT NOT NULL,          -- the first leg's pool: its ledger row marks the reservation charged
    keys TEXT[] NOT NULL,           -- the counter key of each leg
    amounts BIGINT[] NOT NULL,      -- what each leg holds (shrunk to the usage once released)
    fields JSONB NOT NULL           -- the Redis hash, to put back
);
CREATE INDEX IF NOT EXISTS open_reservations_expiry ON open_reservations (expires_ms);
CREATE INDEX IF NOT EXISTS open_reservations_keys ON open_reservations USING gin (keys);

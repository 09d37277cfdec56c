-- Several orchestrator instances share the purchases: each drives only the sagas it holds a lease on
-- (renewed by a heartbeat; an expired lease is claimed by any live instance with FOR UPDATE SKIP LOCKED).
ALTER TABLE purchases ADD COLUMN IF NOT EXISTS owner TEXT;
ALTER TABLE purchases ADD COLUMN IF NOT EXISTS lease_until TIMESTAMPTZ;
-- The command in flight (re-sent unchanged, same event id, until its reply or the step deadline).
ALTER TABLE purchases ADD COLUMN IF NOT EXISTS command_id TEXT;
ALTER TABLE purchases ADD COLUMN IF NOT EXISTS resend_at TIMESTAMPTZ;
ALTER TABLE purchases ADD COLUMN IF NOT EXISTS resends INTEGER NOT NULL DEFAULT 0;
-- W3C trace context of the request that started the purchase: every step, on any instance, joins it.
ALTER TABLE purchases ADD COLUMN IF NOT EXISTS trace_context JSONB NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX IF NOT EXISTS purchases_claimable ON purchases (lease_until NULLS FIRST, created_at)
    WHERE status NOT IN ('COMPLETED', 'COMPENSATED', 'FAILED');

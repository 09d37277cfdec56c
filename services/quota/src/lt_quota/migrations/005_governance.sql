-- Governance: org settings, user and key policies, scoped and periodic pools (also key caps and session
-- budgets), ledger periods and sources, threshold announcements and approvals.

ALTER TABLE orgs ADD COLUMN vacation_share_percent INT NOT NULL DEFAULT 10
    CHECK (vacation_share_percent BETWEEN 0 AND 100);
ALTER TABLE orgs ADD COLUMN allow_vacation_sharing BOOLEAN NOT NULL DEFAULT true;
ALTER TABLE orgs ADD COLUMN default_session_budget_usd_micros BIGINT NOT NULL DEFAULT 10000000
    CHECK (default_session_budget_usd_micros >= 0);
ALTER TABLE orgs ADD COLUMN strict_sessions BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE orgs ADD COLUMN privacy_strict BOOLEAN NOT NULL DEFAULT false;

ALTER TABLE users ADD COLUMN default_priority TEXT NOT NULL DEFAULT 'normal'
    CHECK (default_priority IN ('low', 'normal', 'high', 'critical'));
ALTER TABLE users ADD COLUMN allow_priority_bypass BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN privacy_default TEXT NOT NULL DEFAULT 'standard'
    CHECK (privacy_default IN ('standard', 'strict'));
ALTER TABLE users ADD COLUMN tier TEXT NOT NULL DEFAULT 'standard';

ALTER TABLE api_keys ADD COLUMN allowed_models TEXT[];
ALTER TABLE api_keys ADD COLUMN allowed_priorities TEXT[];

-- Key caps and session budgets are pools too, so one admission script and one ledger govern every cap.
ALTER TABLE pools DROP CONSTRAINT pools_owner_type_check;
ALTER TABLE pools ADD CONSTRAINT pools_owner_type_check
    CHECK (owner_type IN ('user', 'team', 'org', 'key', 'session'));
ALTER TABLE pools DROP CONSTRAINT pools_period_check;
ALTER TABLE pools ADD CONSTRAINT pools_period_check CHECK (period IN ('none', 'daily', 'weekly', 'monthly'));
-- Scope: '' = any provider / any model; a model is a glob ('gpt-4o*').
ALTER TABLE pools ADD COLUMN provider TEXT NOT NULL DEFAULT '';
ALTER TABLE pools ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE pools DROP CONSTRAINT pools_owner_type_owner_id_unit_key;
ALTER TABLE pools ADD CONSTRAINT pools_owner_scope_key UNIQUE (owner_type, owner_id, unit, provider, model);
CREATE INDEX pools_org ON pools (org_id);

-- period_key names the calendar period a charge belongs to ('' for pools without a period); source says which
-- balancer rule provided the tokens. 'reset' rows (negative) clear a session budget without deleting history.
ALTER TABLE ledger ADD COLUMN period_key TEXT NOT NULL DEFAULT '';
ALTER TABLE ledger ADD COLUMN source TEXT;
ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check CHECK (kind IN ('usage', 'expiry', 'credit', 'debit', 'reset'));
CREATE INDEX ledger_pool_period ON ledger (pool_id, period_key);

-- One QuotaThresholdReached per pool, period and percentage.
CREATE TABLE threshold_events (
    pool_id TEXT NOT NULL REFERENCES pools (id),
    period_key TEXT NOT NULL,
    percent INT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (pool_id, period_key, percent)
);

CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id),
    team_id TEXT NOT NULL REFERENCES teams (id),
    requester_user_id TEXT NOT NULL REFERENCES users (id),
    pool_id TEXT NOT NULL REFERENCES pools (id),
    amount BIGINT NOT NULL CHECK (amount > 0),
    unit TEXT NOT NULL DEFAULT 'tokens',
    reason TEXT NOT NULL DEFAULT '',
    priority TEXT NOT NULL DEFAULT 'high',
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
    approved_amount BIGINT,
    decided_by TEXT REFERENCES users (id),
    decision_reason TEXT,
    decided_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX approvals_pending ON approvals (team_id) WHERE status = 'pending';

-- Running totals of the ledger per pool, period and source ('' = every source), kept in the transaction
-- that appends each ledger row: rebuilding a counter or checking a threshold reads one row, not a sum.
CREATE TABLE pool_usage (
    pool_id TEXT NOT NULL REFERENCES pools (id),
    period_key TEXT NOT NULL,
    source TEXT NOT NULL,
    used BIGINT NOT NULL,
    PRIMARY KEY (pool_id, period_key, source)
);
INSERT INTO pool_usage (pool_id, period_key, source, used)
    SELECT pool_id, period_key, '', SUM(amount) FROM ledger GROUP BY pool_id, period_key;

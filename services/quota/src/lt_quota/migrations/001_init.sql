-- Quota service schema: identities, keys, pools, the append-only ledger, limit adjustments, freezes,
-- the consumer inbox and the transactional outbox. IDs are uuid hex text; amounts are integers.

CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    timezone TEXT NOT NULL DEFAULT 'UTC',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id),
    name TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs (id),
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'on_vacation', 'suspended')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (org_id, email)
);

CREATE TABLE team_members (
    team_id TEXT NOT NULL REFERENCES teams (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'manager')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (user_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    org_id TEXT NOT NULL REFERENCES orgs (id),
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ,
    expires_at TIMESTAMPTZ
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE pools (
    id TEXT PRIMARY KEY,
    owner_type TEXT NOT NULL CHECK (owner_type IN ('user', 'team', 'org')),
    owner_id TEXT NOT NULL,
    org_id TEXT NOT NULL REFERENCES orgs (id),
    unit TEXT NOT NULL DEFAULT 'tokens' CHECK (unit IN ('tokens', 'usd')),
    "limit" BIGINT NOT NULL CHECK ("limit" >= 0),
    period TEXT NOT NULL DEFAULT 'none' CHECK (period IN ('none')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (owner_type, owner_id, unit)
);

-- Consumption only; never updated or deleted. used(pool) = sum(amount).
CREATE TABLE ledger (
    id BIGSERIAL PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools (id),
    amount BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('usage', 'expiry', 'credit', 'debit')),
    idempotency_key TEXT NOT NULL UNIQUE,
    request_id TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ledger_pool ON ledger (pool_id);

-- Limit changes (purchases and their compensations), one per (purchase, step, kind); keeps the reply sent.
CREATE TABLE adjustments (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools (id),
    kind TEXT NOT NULL CHECK (kind IN ('credit', 'debit')),
    amount BIGINT NOT NULL CHECK (amount > 0),
    purchase_id TEXT NOT NULL,
    step TEXT NOT NULL,
    saga_id TEXT NOT NULL,
    new_limit BIGINT NOT NULL,
    reply_event_id TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (purchase_id, step, kind)
);

CREATE TABLE freezes (
    id TEXT PRIMARY KEY,
    target_type TEXT NOT NULL CHECK (target_type IN ('session', 'key', 'user')),
    target_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE inbox (
    event_id TEXT PRIMARY KEY,
    handled_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

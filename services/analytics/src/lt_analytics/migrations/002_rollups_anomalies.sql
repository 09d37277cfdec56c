-- Loop detection needs the prompt fingerprint (a hash, never text); detectors scan recent rows per session/key.
ALTER TABLE request_log ADD COLUMN prompt_fingerprint TEXT;
CREATE INDEX request_log_session_time ON request_log (session_id, occurred_at) WHERE session_id IS NOT NULL;
CREATE INDEX request_log_key_time ON request_log (key_id, occurred_at) WHERE key_id IS NOT NULL;
CREATE INDEX request_log_team_time ON request_log (team_id, occurred_at) WHERE team_id IS NOT NULL;

-- Per scope (user, team, org, key, session), grain (minute, hour, day), bucket, model and provider.
-- efficiency_sum is the sum of per-request completion/prompt ratios in units of 1e-4 (integers only).
CREATE TABLE usage_rollup (
    scope_type TEXT NOT NULL,
    scope_id TEXT NOT NULL,
    grain TEXT NOT NULL,
    bucket TIMESTAMPTZ NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    org_id TEXT,
    requests BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL,
    cost_usd_micros BIGINT NOT NULL,
    efficiency_sum BIGINT NOT NULL,
    PRIMARY KEY (scope_type, scope_id, grain, bucket, model, provider)
);
CREATE INDEX usage_rollup_org ON usage_rollup (grain, org_id, scope_type, bucket);

-- Consecutive identical prompts per session (or key when the request had no session).
CREATE TABLE loop_streaks (
    scope_type TEXT NOT NULL,
    scope_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    count INTEGER NOT NULL,
    last_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope_type, scope_id)
);

-- Every detection (the anomalies API reads it; detectors use it as their cool-down).
CREATE TABLE anomalies (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    org_id TEXT,
    team_id TEXT,
    user_id TEXT,
    key_id TEXT,
    session_id TEXT,
    value DOUBLE PRECISION NOT NULL,
    threshold DOUBLE PRECISION NOT NULL,
    detail TEXT NOT NULL,
    frozen BOOLEAN NOT NULL,
    freeze_duration_s INTEGER,
    trigger_event_id TEXT NOT NULL,
    detected_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX anomalies_target ON anomalies (kind, target_type, target_id, detected_at);
CREATE INDEX anomalies_org ON anomalies (org_id, detected_at DESC);
CREATE INDEX anomalies_time ON anomalies (detected_at DESC);

-- Threshold overrides: org_id '*' is the global row (over the env defaults), other rows override per org.
CREATE TABLE anomaly_thresholds (
    org_id TEXT PRIMARY KEY,
    config JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    key TEXT,
    value BYTEA NOT NULL,
    headers JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- One row per UsageRecorded event (never any prompt or completion text); the primary key is the inbox.
CREATE TABLE request_log (
    event_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    org_id TEXT,
    team_id TEXT,
    user_id TEXT,
    key_id TEXT,
    session_id TEXT,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL,
    cost_usd_micros BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    stream BOOLEAN NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX request_log_user_time ON request_log (user_id, occurred_at);
CREATE INDEX request_log_org_time ON request_log (org_id, occurred_at);

-- Per user, model and UTC day.
CREATE TABLE usage_daily (
    user_id TEXT NOT NULL,
    model TEXT NOT NULL,
    day DATE NOT NULL,
    requests BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL,
    cost_usd_micros BIGINT NOT NULL,
    PRIMARY KEY (user_id, day, model)
);

-- Per org and UTC minute (spend velocity, dashboards).
CREATE TABLE org_usage_minute (
    org_id TEXT NOT NULL,
    minute TIMESTAMPTZ NOT NULL,
    requests BIGINT NOT NULL,
    total_tokens BIGINT NOT NULL,
    cost_usd_micros BIGINT NOT NULL,
    PRIMARY KEY (org_id, minute)
);

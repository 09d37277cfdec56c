-- Authorization and tenancy: self-set vacations end, an org may cap what a manager approves, an audit log of
-- self-service status changes and approval decisions, and counting an org's new sessions cheaply.
ALTER TABLE users ADD COLUMN vacation_until TIMESTAMPTZ;
ALTER TABLE orgs ADD COLUMN manager_approval_limit BIGINT CHECK (manager_approval_limit > 0);

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    org_id TEXT NOT NULL,
    actor_user_id TEXT NOT NULL,
    action TEXT NOT NULL,
    target_id TEXT NOT NULL,
    detail JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_actor ON audit_log (actor_user_id, action, created_at);
CREATE INDEX audit_log_org ON audit_log (org_id, created_at);

CREATE INDEX pools_org_sessions ON pools (org_id, created_at) WHERE owner_type = 'session';

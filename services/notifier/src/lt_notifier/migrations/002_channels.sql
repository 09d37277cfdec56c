-- Subscriptions become channel subscriptions: Slack, Teams, Telegram, WhatsApp, email or a generic webhook,
-- routed by event type, minimum severity and scope (org, team, user). Secrets live apart from the config
-- that the API shows.
ALTER TABLE webhook_subscriptions ALTER COLUMN url DROP NOT NULL;
ALTER TABLE webhook_subscriptions
    ADD COLUMN channel TEXT NOT NULL DEFAULT 'webhook'
        CHECK (channel IN ('webhook', 'slack', 'teams', 'telegram', 'whatsapp', 'email')),
    ADD COLUMN name TEXT,
    ADD COLUMN config JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN secrets JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN min_severity TEXT NOT NULL DEFAULT 'info'
        CHECK (min_severity IN ('info', 'warning', 'error', 'critical')),
    ADD COLUMN org_id TEXT,
    ADD COLUMN team_id TEXT,
    ADD COLUMN user_id TEXT;
UPDATE webhook_subscriptions SET secrets = jsonb_build_object('secret', secret) WHERE secret IS NOT NULL;
ALTER TABLE webhook_subscriptions DROP COLUMN secret;

ALTER TABLE deliveries
    ADD COLUMN channel TEXT NOT NULL DEFAULT 'webhook',
    ADD COLUMN severity TEXT NOT NULL DEFAULT 'info';
CREATE INDEX deliveries_status ON deliveries (status, created_at DESC);

-- One notification per dedup key (e.g. one alert per quota threshold per period), whatever the event ids.
CREATE TABLE notification_dedup (
    dedup_key TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now()
);

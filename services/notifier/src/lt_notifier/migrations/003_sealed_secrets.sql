-- Channel URLs and secrets are sealed at rest (AES-GCM, see leaky_common.sealing); the notifier re-seals
-- plaintext rows left from before this migration (and rows sealed with a retired key) at start-up. What the
-- API shows of a URL is kept apart: the full URL of a generic webhook, only the origin of a Slack or Teams URL
-- (those URLs are credentials).
ALTER TABLE webhook_subscriptions ADD COLUMN url_shown TEXT;
UPDATE webhook_subscriptions
SET url_shown = CASE
    WHEN channel IN ('slack', 'teams') THEN regexp_replace(url, '^([A-Za-z][A-Za-z0-9+.-]*://[^/?#]*).*$', '\1/***')
    ELSE url
END
WHERE url IS NOT NULL;

-- Leaky-bucket sizes per org and per key. NULL means "not overridden": a key without its own size takes
-- the org's, an org without one takes the service's LT_*_PER_PERIOD settings.

ALTER TABLE orgs ADD COLUMN key_requests_per_period INT CHECK (key_requests_per_period > 0);
ALTER TABLE orgs ADD COLUMN key_tokens_per_period BIGINT CHECK (key_tokens_per_period > 0);
ALTER TABLE orgs ADD COLUMN user_requests_per_period INT CHECK (user_requests_per_period > 0);
ALTER TABLE orgs ADD COLUMN user_tokens_per_period BIGINT CHECK (user_tokens_per_period > 0);

ALTER TABLE api_keys ADD COLUMN rate_limit_requests_per_period INT CHECK (rate_limit_requests_per_period > 0);
ALTER TABLE api_keys ADD COLUMN rate_limit_tokens_per_period BIGINT CHECK (rate_limit_tokens_per_period > 0);

-- Leaky-bucket sizes per team (NULL: not overridden, the org's size applies), and a user's primary team:
-- the team a user in several teams is charged to (NULL, or no longer a member: the team joined first).

ALTER TABLE teams ADD COLUMN key_requests_per_period INT CHECK (key_requests_per_period > 0);
ALTER TABLE teams ADD COLUMN key_tokens_per_period BIGINT CHECK (key_tokens_per_period > 0);
ALTER TABLE teams ADD COLUMN user_requests_per_period INT CHECK (user_requests_per_period > 0);
ALTER TABLE teams ADD COLUMN user_tokens_per_period BIGINT CHECK (user_tokens_per_period > 0);

ALTER TABLE users ADD COLUMN primary_team_id TEXT REFERENCES teams (id) ON DELETE SET NULL;

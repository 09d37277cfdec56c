-- Sign-in with email and password (docs/security.md, "Sign-in"): an argon2id hash per user, sign-in sessions
-- (one per login: the family of its rotating refresh tokens) and the refresh tokens themselves, by SHA-256.
ALTER TABLE users ADD COLUMN password_hash TEXT;
ALTER TABLE users ADD COLUMN password_changed_at TIMESTAMPTZ;
-- Emails are unique per org only; the email a user signs in with must name one user across orgs.
CREATE UNIQUE INDEX users_sign_in_email ON users (lower(email)) WHERE password_hash IS NOT NULL;

CREATE TABLE auth_sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    revoked_reason TEXT
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id) WHERE revoked_at IS NULL;

-- Each refresh is single-use: `used_at` is set when it is exchanged; presenting it again revokes its session.
CREATE TABLE refresh_tokens (
    hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES auth_sessions (id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    used_at TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

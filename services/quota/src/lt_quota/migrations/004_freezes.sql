-- Freezes may last until lifted (no expiry); lifting is recorded, never deleted, so the history stays.
ALTER TABLE freezes ALTER COLUMN expires_at DROP NOT NULL;
ALTER TABLE freezes ADD COLUMN lifted_at TIMESTAMPTZ;
ALTER TABLE freezes ADD COLUMN source TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE freezes ADD COLUMN org_id TEXT;
ALTER TABLE freezes ADD COLUMN user_id TEXT;
CREATE INDEX freezes_live ON freezes (target_type, target_id) WHERE lifted_at IS NULL;

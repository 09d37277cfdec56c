-- The platform org (the one the bootstrap admin belongs to): its admins create and list organisations.
ALTER TABLE orgs ADD COLUMN platform BOOLEAN NOT NULL DEFAULT false;
UPDATE orgs SET platform = true WHERE name = 'default';

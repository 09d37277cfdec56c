-- A limit adjustment can be refused and still recorded: a debit with no applied credit to undo (the
-- credit command was lost or is late) leaves a tombstone so that a late credit for the same purchase is
-- refused too. A retried command then gets the same answer.
ALTER TABLE adjustments ADD COLUMN applied BOOLEAN NOT NULL DEFAULT true;
ALTER TABLE adjustments ADD COLUMN reason TEXT;

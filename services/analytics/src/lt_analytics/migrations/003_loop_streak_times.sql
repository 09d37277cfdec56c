-- When a run's latest repeats happened: without a session, a key's repeats count only within the loop
-- window (lt_analytics.domain.detection.extend_run). Runs stored before this start afresh.
ALTER TABLE loop_streaks ADD COLUMN times TIMESTAMPTZ[] NOT NULL DEFAULT '{}';

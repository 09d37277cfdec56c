-- Sessions are (org, session id): a session id is the client's, so it names a session only within its org.
-- Rollups of no org (unauthenticated requests) are nobody's; session rollups were keyed by the raw id, so two
-- orgs' sessions of one id were merged into the row of whichever wrote first: rebuild them, per org, from the
-- request log.
DELETE FROM usage_rollup WHERE org_id IS NULL OR scope_type = 'session';
ALTER TABLE usage_rollup DROP CONSTRAINT usage_rollup_pkey;
ALTER TABLE usage_rollup ALTER COLUMN org_id SET NOT NULL;
ALTER TABLE usage_rollup ADD PRIMARY KEY (scope_type, scope_id, org_id, grain, bucket, model, provider);
INSERT INTO usage_rollup (
    scope_type, scope_id, org_id, grain, bucket, model, provider,
    requests, prompt_tokens, completion_tokens, total_tokens, cost_usd_micros, efficiency_sum
)
SELECT 'session', r.session_id, r.org_id, g.grain, date_trunc(g.grain, r.occurred_at, 'UTC'), r.model, r.provider,
       count(*), sum(r.prompt_tokens), sum(r.completion_tokens), sum(r.total_tokens), sum(r.cost_usd_micros),
       sum(CASE WHEN r.prompt_tokens > 0
                THEN (r.completion_tokens * 20000 + r.prompt_tokens) / (r.prompt_tokens * 2) ELSE 0 END)
FROM request_log r CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) AS g (grain)
WHERE r.session_id IS NOT NULL AND r.org_id IS NOT NULL
GROUP BY r.session_id, r.org_id, g.grain, date_trunc(g.grain, r.occurred_at, 'UTC'), r.model, r.provider;

-- Loop streaks per (kind, org, id); the streaks in flight are dropped (a run simply starts again).
DELETE FROM loop_streaks;
ALTER TABLE loop_streaks ADD COLUMN org_id TEXT NOT NULL;
ALTER TABLE loop_streaks DROP CONSTRAINT loop_streaks_pkey;
ALTER TABLE loop_streaks ADD PRIMARY KEY (scope_type, org_id, scope_id);

-- The detectors scan a session's recent requests within its org.
DROP INDEX request_log_session_time;
CREATE INDEX request_log_org_session_time ON request_log (org_id, session_id, occurred_at)
    WHERE session_id IS NOT NULL;

-- The request log (by day of occurred_at) and the rollups (by month of bucket) become range-partitioned tables,
-- so that old data leaves by dropping whole partitions (lt_analytics.adapters.partitions, run by the worker)
-- rather than by DELETE and VACUUM. Rows outside every dated partition land in the default one; the worker
-- moves them into a dated partition when it creates it.
-- The inbox key of the request log becomes (event_id, occurred_at): a partitioned table's unique keys must hold
-- its partition column. A redelivered event carries the occurred_at it was published with, so it is still
-- recognised (the gateway's crash journal also keeps it).
ALTER TABLE request_log RENAME TO request_log_unpartitioned;
ALTER TABLE request_log_unpartitioned RENAME CONSTRAINT request_log_pkey TO request_log_unpartitioned_pkey;
CREATE TABLE request_log (LIKE request_log_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (occurred_at);
ALTER TABLE request_log ADD PRIMARY KEY (event_id, occurred_at);
CREATE TABLE request_log_default PARTITION OF request_log DEFAULT;
INSERT INTO request_log SELECT * FROM request_log_unpartitioned;
DROP TABLE request_log_unpartitioned;
CREATE INDEX request_log_user_time ON request_log (user_id, occurred_at);
CREATE INDEX request_log_org_time ON request_log (org_id, occurred_at);
CREATE INDEX request_log_key_time ON request_log (key_id, occurred_at) WHERE key_id IS NOT NULL;
CREATE INDEX request_log_team_time ON request_log (team_id, occurred_at) WHERE team_id IS NOT NULL;
CREATE INDEX request_log_org_session_time ON request_log (org_id, session_id, occurred_at)
    WHERE session_id IS NOT NULL;

ALTER TABLE usage_rollup RENAME TO usage_rollup_unpartitioned;
ALTER TABLE usage_rollup_unpartitioned RENAME CONSTRAINT usage_rollup_pkey TO usage_rollup_unpartitioned_pkey;
CREATE TABLE usage_rollup (LIKE usage_rollup_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (bucket);
ALTER TABLE usage_rollup ADD PRIMARY KEY (scope_type, scope_id, org_id, grain, bucket, model, provider);
CREATE TABLE usage_rollup_default PARTITION OF usage_rollup DEFAULT;
INSERT INTO usage_rollup SELECT * FROM usage_rollup_unpartitioned;
DROP TABLE usage_rollup_unpartitioned;
CREATE INDEX usage_rollup_org ON usage_rollup (grain, org_id, scope_type, bucket);

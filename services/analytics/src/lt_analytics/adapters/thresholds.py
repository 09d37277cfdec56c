"""SQL of the detector threshold overrides, and the worker's short-lived cache of what is in force per org."""

from __future__ import annotations

import time

import asyncpg

from lt_analytics.domain.thresholds import GLOBAL, ThresholdOverrides, Thresholds, effective_thresholds

__all__ = ["ThresholdStore", "set_threshold_overrides", "threshold_overrides"]


class ThresholdStore:
    """Effective thresholds per org, cached for `ttl_s` seconds (so an API change applies within it)."""

    def __init__(self, defaults: Thresholds, ttl_s: float = 5.0) -> None:
        self._defaults = defaults
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Thresholds]] = {}

    async def get(self, conn: asyncpg.Connection, org_id: str | None) -> Thresholds:
        """Defaults, then the global override row, then the org's row."""
        key = org_id or GLOBAL
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        rows = await conn.fetch(
            "SELECT org_id, config::text AS config FROM anomaly_thresholds WHERE org_id = ANY($1::text[])",
            [GLOBAL, key],
        )
        by_org = {r["org_id"]: ThresholdOverrides.model_validate_json(r["config"]) for r in rows}
        effective = effective_thresholds(self._defaults, by_org, key)
        self._cache[key] = (now, effective)
        return effective


async def threshold_overrides(pool: asyncpg.Pool) -> dict[str, ThresholdOverrides]:
    """Every override row by org id ('*' = global)."""
    rows = await pool.fetch("SELECT org_id, config::text AS config FROM anomaly_thresholds")
    return {r["org_id"]: ThresholdOverrides.model_validate_json(r["config"]) for r in rows}


async def set_threshold_overrides(pool: asyncpg.Pool, org_id: str, overrides: ThresholdOverrides) -> None:
    """Replace the overrides of one org (or '*'); an empty set removes the row."""
    config = overrides.model_dump_json(exclude_unset=True, exclude_none=True)
    if config == "{}":
        await pool.execute("DELETE FROM anomaly_thresholds WHERE org_id = $1", org_id)
        return
    await pool.execute(
        """
        INSERT INTO anomaly_thresholds (org_id, config) VALUES ($1, $2::jsonb)
        ON CONFLICT (org_id) DO UPDATE SET config = EXCLUDED.config, updated_at = now()
        """,
        org_id,
        config,
    )

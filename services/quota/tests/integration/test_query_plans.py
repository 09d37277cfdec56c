"""Plans of the statements quota runs on every flush, as a connection caches them: generic plans made while the
ledger is new. Each must stay an index probe per row, never a scan of the whole ledger (which grows by a row
per request and is re-analyzed only now and then)."""

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from leaky_common.db import apply_migrations, create_database, create_pool
from lt_quota.adapters.repository.reservations import UPSERT_OPEN_RESERVATIONS
from lt_quota.bootstrap import MIGRATIONS

pytestmark = pytest.mark.integration

LEDGER_ROWS = 20_000


@pytest.fixture
async def conn(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    url = await create_database(postgres_url, f"quota_plans_{uuid.uuid4().hex[:10]}")
    pool = await create_pool(url)
    try:
        await apply_migrations(pool, MIGRATIONS)
        async with pool.acquire() as conn:
            yield conn
    finally:
        await pool.close()


async def generic_plan(conn: asyncpg.Connection, arguments: str) -> str:
    """EXPLAIN ANALYZE of the prepared statement `plan_check` run with `arguments` (SQL literals), by the plan
    it has cached."""
    rows = await conn.fetch(
        f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE plan_check({arguments})"
    )
    return "\n".join(r[0] for r in rows)


async def test_the_open_reservations_flush_probes_the_ledger_by_index(conn: asyncpg.Connection) -> None:
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    # Planned once, while the ledger is empty, as a connection caches it on its first flushes.
    await conn.execute(f"PREPARE plan_check AS {UPSERT_OPEN_RESERVATIONS}")
    empty = "'{}'::text[], '{}'::bigint[], '{}'::text[], '{}'::jsonb[], '{}'::jsonb[], '{}'::jsonb[]"
    await conn.execute(f"EXECUTE plan_check({empty})")  # the generic plan is made at the first execution
    await conn.execute("INSERT INTO orgs (id, name) VALUES ('o1', 'o1')")
    await conn.execute(
        """INSERT INTO pools (id, owner_type, owner_id, org_id, "limit") VALUES ('p1', 'user', 'u1', 'o1', 1000)"""
    )
    await conn.execute(
        """INSERT INTO ledger (pool_id, amount, kind, idempotency_key, period_key, source)
           SELECT 'p1', 1, 'usage', 'reservation:r' || g || ':p1', 'all', '' FROM generate_series(1, $1) g""",
        LEDGER_ROWS,
    )
    charged, fresh = "r7", uuid.uuid4().hex
    plan = await generic_plan(
        conn,
        f"ARRAY['{charged}', '{fresh}'], ARRAY[1, 2], ARRAY['p1', 'p1'], ARRAY['[\"k\"]', '[\"k\"]']::jsonb[],"
        " ARRAY['[1]', '[1]']::jsonb[], ARRAY['{}', '{}']::jsonb[]",
    )
    assert "Seq Scan on ledger" not in plan, plan
    assert "Index Only Scan using ledger_idempotency_key_key on ledger" in plan, plan
    # And it still does its job: the charged reservation is skipped, the other recorded.
    ids = [r["reservation_id"] for r in await conn.fetch("SELECT reservation_id FROM open_reservations")]
    assert ids == [fresh]

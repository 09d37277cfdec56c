"""PostgreSQL glue: connection pools, per-service databases and a small ordered SQL migration runner."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from leaky_common.errors import store_unavailable
from leaky_common.metrics import track_pool
from leaky_common.store_spans import TracedConnection

__all__ = ["apply_migrations", "create_database", "create_pool", "database_url_for", "ping"]

logger = logging.getLogger(__name__)

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
# Any constant works; it serialises concurrent migration runs of one database.
_MIGRATION_LOCK = 7_311_001


def database_url_for(server_url: str, database: str) -> str:
    """Replace the database name in a postgresql:// URL."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def create_database(server_url: str, database: str) -> str:
    """Create `database` on the server if it does not exist; return its URL."""
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await conn.close()
    return database_url_for(server_url, database)


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10, name: str = "main") -> asyncpg.Pool:
    """An asyncpg pool; statements are cached per connection. Its size is reported as `lt_db_pool_*{pool=name}`.

    Its connections make a span per query in sampled traces (`leaky_common.store_spans`)."""
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, command_timeout=30, connection_class=TracedConnection
    )
    assert pool is not None
    track_pool(pool, name)
    store_unavailable()  # the store clients' exceptions imported now, not in a request at the first failure
    return pool


async def ping(pool: asyncpg.Pool | None, timeout: float = 2.0) -> bool:
    """True when the pool gives a connection and runs `SELECT 1`, both within `timeout` seconds (for /ready)."""
    if pool is None:
        return False
    try:
        async with asyncio.timeout(timeout), pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT 1") == 1)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        return False


async def apply_migrations(pool: asyncpg.Pool, directory: Path) -> list[str]:
    """Apply `NNN_name.sql` files from `directory` in order, each once, each in its own transaction."""
    applied: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(_MIGRATIONS_TABLE)
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for path in sorted(directory.glob("*.sql")):
                if path.stem in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
                applied.append(path.stem)
                logger.info("applied migration %s", path.stem)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied

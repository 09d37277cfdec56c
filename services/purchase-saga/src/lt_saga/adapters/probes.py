"""Readiness probes: can this instance reach PostgreSQL and the broker right now?"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import asyncpg

__all__ = ["broker_reachable", "postgres_ready"]


async def postgres_ready(pool: asyncpg.Pool | None) -> bool:
    """A `SELECT 1` answered within a second."""
    if pool is None:
        return False
    try:
        async with pool.acquire(timeout=1.0) as conn:
            return bool(await conn.fetchval("SELECT 1") == 1)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False


async def broker_reachable(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """A TCP connection to one of the bootstrap servers opens within `timeout_s`."""
    for address in bootstrap.split(","):
        parts = urlsplit(f"//{address.strip()}")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, parts.port or 9092), timeout=timeout_s
            )
        except (OSError, TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False

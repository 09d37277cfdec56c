"""Fixtures shared by the analytics integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from leaky_common.db import apply_migrations, create_pool
from lt_analytics.adapters.repository import MIGRATIONS


@pytest.fixture
async def db_url(make_database: Any) -> str:
    """A fresh, empty database for one test."""
    url: str = await make_database("analytics_it")
    return url


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on that database with the analytics migrations applied."""
    p = await create_pool(db_url, max_size=4)
    await apply_migrations(p, MIGRATIONS)
    try:
        yield p
    finally:
        await p.close()

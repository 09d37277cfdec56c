"""The gateway has no Redis and no PostgreSQL: it must not import their clients (redis-py alone costs a process
about 20 MB of RSS, and issue 14 wants every service idle under 120 MB)."""

from __future__ import annotations

import subprocess
import sys


def test_the_gateway_imports_neither_redis_nor_asyncpg() -> None:
    code = "import sys, lt_gateway.main; print(sorted(m for m in ('redis', 'asyncpg') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_the_store_errors_are_still_known_where_they_are_used() -> None:
    code = (
        "import sys; from leaky_common.kafka import transient_errors; import redis.exceptions, asyncpg;"
        "t = transient_errors(); print(redis.exceptions.ConnectionError in t, asyncpg.InterfaceError in t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == ["True", "True"], out.stderr

"""Commands packed by hiredis are the bytes redis-py's own packer makes, under the same rules."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from lt_quota.adapters.redis_packing import HiredisPacking, pack_with_hiredis

PackingConnection = type("PackingConnection", (HiredisPacking, Connection), {})

COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", "a" * 40, 2, "lt:{1a2b3c4d}:pool:p1", "lt:{1a2b3c4d}:res:r1", 1733180000000, -1, 0, 1.5, 0.1),
    ("HSET", "k", "naïve ☃ 日本", b"\x00\xffraw", 2**70, -(2**63), 1e-7, 3.0, float("inf")),
    ("SCRIPT LOAD", "return 1"),
    (b"CLIENT SETNAME", b"quota"),
    ("SET", "k", ""),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_hiredis_packs_the_bytes_redis_py_packs(command: tuple[Any, ...]) -> None:
    ours = b"".join(PackingConnection().pack_command(*command))
    theirs = b"".join(Connection().pack_command(*command))
    assert ours == theirs


def test_what_redis_py_refuses_is_still_refused_and_other_types_still_packed() -> None:
    with pytest.raises(DataError):
        PackingConnection().pack_command("SET", "k", True)
    view = ("SET", "k", memoryview(b"abc"))
    assert b"".join(PackingConnection().pack_command(*view)) == b"".join(Connection().pack_command(*view))
    ours, theirs = PackingConnection(encoding="latin-1"), Connection(encoding="latin-1")
    assert b"".join(ours.pack_command("SET", "k", "é")) == b"".join(theirs.pack_command("SET", "k", "é"))


@pytest.mark.parametrize("kind", [Connection, SSLConnection, UnixDomainSocketConnection])
def test_a_pool_keeps_its_connection_kind_and_packs_with_hiredis(kind: type[Connection]) -> None:
    pool: BlockingConnectionPool[Any] = BlockingConnectionPool(connection_class=kind)
    pack_with_hiredis(pool)
    pack_with_hiredis(pool)  # twice: one mixin
    assert issubclass(pool.connection_class, HiredisPacking) and issubclass(pool.connection_class, kind)
    assert pool.connection_class.__mro__.count(HiredisPacking) == 1

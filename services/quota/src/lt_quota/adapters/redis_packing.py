"""Redis commands packed by hiredis (C) instead of redis-py's Python packer.

redis-py's asyncio connection packs every command in Python, joining bytes once per argument: the admission
script's EVALSHA, about 66 arguments, took 40 µs of quota's CPU to pack, hiredis's `pack_command` 5 µs. The
bytes on the wire are the same (`tests/unit/test_redis_packing.py` compares them), and so are the rules: str as
UTF-8, int and float by `repr`, bytes as they are; anything else (a bool, a memoryview, another encoding) goes
to redis-py's own packer, which accepts or refuses it as before.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import AbstractConnection

__all__ = ["HiredisPacking", "pack_with_hiredis"]

_PLAIN = frozenset((str, bytes, int))
_WITH_FLOAT = _PLAIN | {float}


class HiredisPacking:
    """A mixin for a redis-py asyncio connection class: `pack_command` by hiredis."""

    def pack_command(self, *args: Any) -> list[bytes]:
        connection: Any = self
        encoder = connection.encoder
        first = args[0]
        if (
            isinstance(first, str) and " " in first
        ):  # `SCRIPT LOAD`: each word its own argument, as redis-py does
            args = (*first.split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        kinds = set(map(type, args))
        utf8 = encoder.encoding.lower().replace("-", "") == "utf8" and encoder.encoding_errors == "strict"
        pack: Any = hiredis.pack_command  # its stub types the tuple as one item
        if utf8 and kinds <= _PLAIN:
            return [pack(args)]
        if utf8 and kinds <= _WITH_FLOAT:  # by repr, redis-py's rule
            return [pack(tuple(repr(a) if type(a) is float else a for a in args))]
        return super().pack_command(*args)  # type: ignore[misc, no-any-return]


def pack_with_hiredis(pool: BlockingConnectionPool[Any]) -> None:
    """Make the pool's new connections pack commands with hiredis (whatever their class: TCP, TLS, Unix)."""
    base: type[AbstractConnection] = pool.connection_class
    if not issubclass(base, HiredisPacking):
        pool.connection_class = type(f"HiredisPacking{base.__name__}", (HiredisPacking, base), {})

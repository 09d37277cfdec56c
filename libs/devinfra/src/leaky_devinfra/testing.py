"""Test support: waiting on conditions with a deadline, and a clock tests move by hand."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["ManualClock", "eventually"]


async def eventually(
    check: Callable[[], Awaitable[Any] | Any],
    timeout: float = 30.0,
    what: str = "condition",
    *,
    interval: float = 0.05,
) -> Any:
    """Poll `check` (sync or async) until it returns a truthy value and return it; fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last value: {last!r})")
        await asyncio.sleep(interval)


class ManualClock:
    """An injectable clock in epoch milliseconds that moves only when a test sets or advances `now_ms`."""

    def __init__(self, now_ms: int | None = None) -> None:
        self.now_ms = now_ms if now_ms is not None else int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now_ms

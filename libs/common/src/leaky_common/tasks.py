"""Stopping background tasks for sure.

`task.cancel(); await task` waits for ever when the task swallows the cancellation and goes on (say into its
next hour-long sleep). Libraries do that: on Python 3.11, `asyncio.wait_for` returns a result that arrived
together with the cancel, and redis-py wraps every command's write in it once a socket timeout is set. A
service stopping then never stops (seen in CI: quota's sweeper, cancelled during its first sweep, slept on
while the lifespan waited for it; measured: 4 of 40 immediate start-stops of quota).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["cancel_and_wait"]

logger = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[Any] | None, *, grace_s: float = 1.0) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again every `grace_s` while it goes on. An
    exception the task ended with (other than the cancellation) is raised here, as `await task` would."""
    if task is None:
        return
    attempts = 0
    while not task.done():
        task.cancel()
        attempts += 1
        if attempts == 2:
            logger.warning("task %s swallowed its cancellation; cancelling it again", task.get_name())
        await asyncio.wait([task], timeout=grace_s)
    if not task.cancelled():
        task.result()

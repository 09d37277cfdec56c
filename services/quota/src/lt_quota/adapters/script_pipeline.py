"""Lua scripts sent to Redis in one pipeline (one round trip), which Redis runs in order on one connection."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from leaky_common.client_spans import fail
from leaky_common.store_spans import batch_span

__all__ = ["ScriptCall", "ScriptPipeline"]

# A Lua script to run, with its keys and arguments.
ScriptCall = tuple[AsyncScript, list[str], list[Any]]


class ScriptPipeline:
    """Runs scripts in one pipeline, in order (not on Redis Cluster: its pipelines refuse EVALSHA).

    Unlike a single script call, a pipeline's EVALSHA does not load its script: the scripts are loaded before
    the first pipeline. One Redis does not hold (NOSCRIPT: it restarted or flushed its scripts since, so it
    holds none of them) did not run: the scripts are loaded again and those run on their own, in order, after
    the pipeline."""

    def __init__(self, redis: Redis[str]) -> None:
        self.redis = redis
        self._loaded: set[str] = set()  # SHA-1s of the scripts loaded into Redis by this pipeline
        self._queued: list[tuple[list[ScriptCall], asyncio.Future[list[Any]]]] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self.pipelines = 0  # pipelines sent by `run_together`
        self.calls = 0  # the calls they carried

    async def run_together(self, calls: list[ScriptCall], span_name: str) -> list[Any]:
        """As `run`, but the calls of every caller within one turn of the event loop go in one pipeline (their
        order kept within each caller's calls): under load, several admissions share a round trip, a write
        and a read on each side, instead of one each. The replies are each caller's own."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if not self._queued:
            asyncio.get_running_loop().call_soon(self._flush, span_name)
        self._queued.append((calls, future))
        return await future

    def _flush(self, span_name: str) -> None:
        queued, self._queued = self._queued, []
        task = asyncio.ensure_future(self._run_queued(queued, span_name))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _run_queued(
        self, queued: list[tuple[list[ScriptCall], asyncio.Future[list[Any]]]], span_name: str
    ) -> None:
        flat = [call for calls, _ in queued for call in calls]
        self.pipelines += 1
        self.calls += len(flat)
        try:
            replies = await self.run(flat, span_name)
        except BaseException as exc:  # the pipeline failed as a whole (connection lost): every caller sees it
            for _, future in queued:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RedisError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for calls, future in queued:
            if not future.done():  # (a caller cancelled meanwhile: its calls ran all the same)
                future.set_result(replies[start : start + len(calls)])
            start += len(calls)

    async def run(self, calls: list[ScriptCall], span_name: str) -> list[Any]:
        """Each call's reply, or the error Redis answered for it; one `BATCH EVALSHA <span_name>` span in a
        sampled trace."""
        span = batch_span(self.redis, span_name, len(calls))
        try:
            return await self._run(calls)
        except BaseException as exc:
            if span is not None:
                fail(span, type(exc).__name__)
            raise
        finally:
            if span is not None:
                span.end()

    async def _run(self, calls: list[ScriptCall]) -> list[Any]:
        if any(cast(Any, c[0]).sha not in self._loaded for c in calls):
            # Each script is loaded before its first pipeline: one that is not would answer NOSCRIPT and run
            # only after the pipeline, out of its caller's order (a release after the admission it rides on).
            await self._load(calls)
        pipe = self.redis.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(cast(Any, script).sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            self._loaded.clear()  # Redis forgot its scripts (restart, flush): all of them, not only these
            await self._load(calls)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                script, keys, args = calls[i]
                try:
                    replies[i] = await script(keys=keys, args=args)
                except RedisError as exc:
                    replies[i] = exc
        return replies

    async def _load(self, calls: list[ScriptCall]) -> None:
        client: Any = self.redis  # SCRIPT LOAD is untyped in types-redis
        for script in {id(c[0]): c[0] for c in calls}.values():
            if cast(Any, script).sha not in self._loaded:  # (after NOSCRIPT none is: each is loaded again)
                await client.script_load(cast(Any, script).script)
                self._loaded.add(cast(Any, script).sha)

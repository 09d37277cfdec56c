"""The faust app the worker runs: its stream buffer comes from `LT_STREAM_BUFFER_MAX`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from leaky_devinfra.testing import eventually
from lt_analytics import worker
from lt_analytics.settings import AnalyticsSettings
from lt_analytics.worker import build_faust_app


class _Handler:
    async def handle_batch(self, raws: list[bytes]) -> list[Any]:
        return []


def test_the_stream_buffer_comes_from_the_settings(tmp_path: Any) -> None:
    settings = AnalyticsSettings(_env_file=None, faust_datadir=tmp_path)
    app = build_faust_app(settings, _Handler())  # type: ignore[arg-type]
    # faust's own default (4,096) left the worker idle after each 4,096 events of a backlog.
    assert app.conf.stream_buffer_maxsize == settings.stream_buffer_max == 16_384
    small = build_faust_app(settings.model_copy(update={"stream_buffer_max": 100}), _Handler())  # type: ignore[arg-type]
    assert small.conf.stream_buffer_maxsize == 100


def test_a_stream_buffer_below_one_event_is_refused() -> None:
    with pytest.raises(ValueError, match="stream_buffer_max"):
        AnalyticsSettings(_env_file=None, stream_buffer_max=0)


class _Message:
    def __init__(self, offset: int) -> None:
        self.refcount = 1  # delivered to the agent's stream (faust's conductor takes this reference)
        self.acked = False
        self.key = b"k"
        self.tp = ("usage", 0)
        self.offset = offset

    def incref(self) -> None:
        self.refcount += 1


class _Event:
    """A faust event as far as the agent uses it: acked for good once nobody holds its message."""

    def __init__(self, offset: int) -> None:
        self.message = _Message(offset)
        self.value = b"{}"
        self.headers: list[tuple[str, bytes]] = []

    def ack(self) -> None:
        self.message.refcount -= 1
        if self.message.refcount == 0:
            self.message.acked = True


class _Stream:
    """faust's `take_events`: yields each batch, and acks its events as soon as the agent's loop moves on."""

    def __init__(self, batches: list[list[_Event]]) -> None:
        self.batches = batches

    async def take_events(self, max_: int, within: float) -> Any:
        for batch in self.batches:
            yield batch
            for event in batch:
                event.ack()


class _SlowHandler:
    """Each batch's transaction ends only when the test lets it."""

    def __init__(self) -> None:
        self.prepared: list[int] = []
        self.started: list[int] = []
        self.finish: dict[int, asyncio.Event] = {}

    def prepare(self, raws: list[bytes]) -> list[bytes]:
        self.prepared.append(len(raws))
        return raws

    async def handle_prepared(self, raws: list[bytes]) -> list[Any]:
        n = len(self.started)
        self.started.append(len(raws))
        self.finish[n] = asyncio.Event()
        await self.finish[n].wait()
        from lt_analytics.handlers import Outcome

        return [Outcome.RECORDED] * len(raws)


async def test_a_batch_is_acked_only_once_committed_and_batches_are_written_one_at_a_time_in_order(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No broker here: the lag sampler would build faust's consumer (and its thread's event loop) to ask.
    monkeypatch.setattr(worker, "_highwater", lambda app, tp: None)
    settings = AnalyticsSettings(_env_file=None, faust_datadir=tmp_path)
    handler = _SlowHandler()
    app = build_faust_app(settings, handler)  # type: ignore[arg-type]
    agent = next(iter(app.agents.values()))
    first, second = [_Event(i) for i in range(3)], [_Event(i) for i in range(3, 5)]
    task = asyncio.ensure_future(agent.fun(_Stream([first, second])))

    await eventually(lambda: handler.started == [3])
    # faust's own ack of the first batch came and went (the agent took the second batch meanwhile): still held.
    await eventually(lambda: all(e.message.refcount == 1 for e in first))
    assert not any(e.message.acked for e in first)
    # The second batch is parsed and summed while the first one is written, but written only after it.
    await eventually(lambda: handler.prepared == [3, 2])
    assert handler.started == [3]  # the second batch waits for the first one's transaction
    handler.finish[0].set()
    await eventually(lambda: handler.started == [3, 2])
    assert all(e.message.acked for e in first) and not any(e.message.acked for e in second)
    handler.finish[1].set()
    await asyncio.wait_for(task, 5)
    assert all(e.message.acked for e in second)

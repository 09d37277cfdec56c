"""Database trouble while recording a batch is retried, never raised: raised, it would crash the faust agent and
the batch would be lost to analytics (seen when PostgreSQL is killed mid-transaction)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from leaky_common.events import UsageRecorded
from lt_analytics.domain.rollups import Aggregates
from lt_analytics.usecases.ingest import Ingest, Outcome


class Flaky(Ingest):
    def __init__(self, failures: list[BaseException]) -> None:
        super().__init__(pool=None, retry_backoff_s=0.0, max_backoff_s=0.0)
        self.failures = failures
        self.calls = 0

    async def record_batch(self, events: list[UsageRecorded], sums: Aggregates | None = None) -> set[str]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {e.event_id for e in events}


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.PostgresConnectionError("terminating connection"),
        ConnectionRefusedError(111, "refused"),
    ],
)
async def test_a_dropped_connection_is_retried_until_the_batch_is_recorded(error: Any) -> None:
    ingest = Flaky([error, error])
    event = UsageRecorded(request_id="r1", model="m", provider="p")
    assert await ingest.record([event]) == {event.event_id: Outcome.RECORDED}
    assert ingest.calls == 3

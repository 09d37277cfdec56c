"""Time partitions of the request log (one per UTC day) and the rollups (one per UTC month): create the ones the
next days need, move rows the default partition caught into their dated partition, and drop the partitions
older than the retention.

All DDL runs in one transaction under an advisory lock, so several worker instances may call it at once.
Partitions are named `<table>_pYYYYMMDD` (day) or `<table>_pYYYYMM` (month); only names of that shape are
ever dropped.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import asyncpg

from leaky_common.tasks import cancel_and_wait

__all__ = ["PartitionKeeper", "PartitionReport", "TimePartitioned", "maintain", "partitioned_tables"]

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key of partition maintenance (any constant unique within the analytics database).
_LOCK = 0x4C54_5041_5254  # "LTPART"


@dataclass(frozen=True, slots=True)
class TimePartitioned:
    """A table range-partitioned on `column` by `interval`, keeping `retention_days` of data."""

    table: Literal["request_log", "usage_rollup"]
    column: Literal["occurred_at", "bucket"]
    interval: Literal["day", "month"]
    retention_days: int

    def start_of(self, day: date) -> date:
        """The first day of the partition that holds `day`."""
        return day if self.interval == "day" else day.replace(day=1)

    def after(self, start: date) -> date:
        """The first day of the next partition."""
        if self.interval == "day":
            return start + timedelta(days=1)
        return date(start.year + start.month // 12, start.month % 12 + 1, 1)

    def name(self, start: date) -> str:
        """The partition's table name."""
        return f"{self.table}_p{start:%Y%m%d}" if self.interval == "day" else f"{self.table}_p{start:%Y%m}"

    def start_from_name(self, name: str) -> date | None:
        """The first day of a partition named by `name`, or None for a table of another shape."""
        digits = 8 if self.interval == "day" else 6
        match = re.fullmatch(rf"{self.table}_p(\d{{{digits}}})", name)
        if match is None:
            return None
        text = match.group(1)
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:8]) if digits == 8 else 1)
        except ValueError:
            return None


@dataclass(slots=True)
class PartitionReport:
    """What one maintenance run did."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved_rows: int = 0


def partitioned_tables(request_log_days: int, rollup_days: int) -> tuple[TimePartitioned, ...]:
    """The analytics tables partitioned by time, with their retention."""
    return (
        TimePartitioned("request_log", "occurred_at", "day", request_log_days),
        TimePartitioned("usage_rollup", "bucket", "month", rollup_days),
    )


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def _partitions(conn: asyncpg.Connection, spec: TimePartitioned) -> dict[date, str]:
    rows = await conn.fetch(
        """
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = $1
        """,
        spec.table,
    )
    found: dict[date, str] = {}
    for row in rows:
        start = spec.start_from_name(row["relname"])
        if start is not None:
            found[start] = row["relname"]
    return found


async def _create(conn: asyncpg.Connection, spec: TimePartitioned, start: date) -> int:
    """Create the partition starting at `start`, moving into it what the default partition holds of its range."""
    low, high = _at(start), _at(spec.after(start))
    name = spec.name(start)
    # The default partition may not keep rows of a range a new partition covers: take them out first.
    await conn.execute(
        f"""
        CREATE TEMP TABLE lt_moving ON COMMIT DROP AS
        WITH gone AS (
            DELETE FROM {spec.table}_default WHERE {spec.column} >= $1 AND {spec.column} < $2 RETURNING *
        )
        SELECT * FROM gone
        """,
        low,
        high,
    )
    await conn.execute(
        f"CREATE TABLE {name} PARTITION OF {spec.table} FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
    )
    moved = await conn.execute(f"INSERT INTO {spec.table} SELECT * FROM lt_moving")
    await conn.execute("DROP TABLE lt_moving")
    return int(moved.rsplit(" ", 1)[-1])


async def maintain(
    pool: asyncpg.Pool, specs: tuple[TimePartitioned, ...], now: datetime, ahead_days: int = 7
) -> PartitionReport:
    """Partitions from the retention cutoff through `ahead_days` after `now`; older ones dropped."""
    report = PartitionReport()
    today = now.astimezone(UTC).date()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        for spec in specs:
            # Keep every row newer than the cutoff: a partition goes only when all of its range is older.
            cutoff = today - timedelta(days=spec.retention_days)
            existing = await _partitions(conn, spec)
            for start, name in sorted(existing.items()):
                if spec.after(start) <= cutoff:
                    await conn.execute(f"DROP TABLE {name}")
                    report.dropped.append(name)
            await conn.execute(
                f"DELETE FROM {spec.table}_default WHERE {spec.column} < $1",
                _at(cutoff),
            )
            start = spec.start_of(cutoff)
            last = spec.start_of(today + timedelta(days=ahead_days))
            while start <= last:
                if start not in existing and spec.after(start) > cutoff:
                    report.moved_rows += await _create(conn, spec, start)
                    report.created.append(spec.name(start))
                start = spec.after(start)
    return report


class PartitionKeeper:
    """Runs `maintain` at start and then every `interval_s` in the background (a failed run is logged and
    retried at the next interval: inserts meanwhile land in the default partition, nothing is lost)."""

    def __init__(self, pool: asyncpg.Pool, specs: tuple[TimePartitioned, ...], interval_s: float) -> None:
        self._pool = pool
        self._specs = specs
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> PartitionReport | None:
        """One maintenance run; None when it failed (logged)."""
        try:
            report = await maintain(self._pool, self._specs, datetime.now(UTC))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            logger.warning("partition maintenance failed (%r); retrying in %.0fs", exc, self._interval_s)
            return None
        if report.created or report.dropped:
            logger.info(
                "partitions: created %d, dropped %d (%s), moved %d rows out of the default partitions",
                len(report.created),
                len(report.dropped),
                ", ".join(report.dropped) or "none",
                report.moved_rows,
            )
        return report

    async def start(self) -> None:
        """Maintain now, then keep doing it in the background."""
        await self.run_once()
        self._task = asyncio.create_task(self._loop(), name="analytics:partitions")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.run_once()

    async def stop(self) -> None:
        """Stop the background task."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

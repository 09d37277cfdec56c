"""A batch's sums: every event counted once under each row it belongs to, whatever its time zone or missing
ids, and the rows in one order whatever order the events came in (two workers lock shared rows alike)."""

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from leaky_common.events import UsageRecorded
from lt_analytics.adapters.repository import _columns
from lt_analytics.domain.rollups import (
    aggregate,
    day_bucket,
    efficiency,
    grain_buckets,
    minute_bucket,
    rollup_scopes,
)


def _events(rng: random.Random, n: int) -> list[UsageRecorded]:
    start = datetime(2026, 12, 31, 23, 58, tzinfo=UTC)  # across a minute, an hour, a day and a year
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), None]
    events = []
    for i in range(n):
        at = start + timedelta(seconds=rng.randint(0, 300))
        zone = rng.choice(zones)
        occurred = at.replace(tzinfo=None) if zone is None else at.astimezone(zone)
        prompt, completion = rng.randint(0, 500), rng.randint(0, 500)
        events.append(
            UsageRecorded(
                request_id=f"r{i}",
                org_id=rng.choice(["o1", "o2", None, ""]),
                user_id=rng.choice(["u1", "u2", "u3", None, ""]),
                team_id=rng.choice(["t1", None]),
                key_id=rng.choice(["k1", "k2", None]),
                session_id=rng.choice(["s1", "s2", None]),
                model=rng.choice(["m1", "m2"]),
                provider="p",
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cost_usd_micros=rng.randint(0, 10_000),
                occurred_at=occurred,
            )
        )
    return events


def _reference(events: list[UsageRecorded]) -> dict[str, dict[tuple[Any, ...], list[int]]]:
    """The sums worked out one row at a time from the bucket and scope functions."""
    out: dict[str, dict[tuple[Any, ...], list[int]]] = {
        "daily": defaultdict(lambda: [0] * 5),
        "minute": defaultdict(lambda: [0] * 3),
        "rollup": defaultdict(lambda: [0] * 6),
    }
    for e in events:
        p, c, t, x = e.prompt_tokens, e.completion_tokens, e.total_tokens, e.cost_usd_micros
        if e.user_id is not None:
            for i, v in enumerate((1, p, c, t, x)):
                out["daily"][(e.user_id, e.model, day_bucket(e.occurred_at))][i] += v
        if e.org_id is not None:
            for i, v in enumerate((1, t, x)):
                out["minute"][(e.org_id, minute_bucket(e.occurred_at))][i] += v
        for kind, scope in rollup_scopes(e):
            for grain, bucket in grain_buckets(e.occurred_at):
                key = (kind, scope, grain, bucket, e.model, e.provider, e.org_id)
                for i, v in enumerate((1, p, c, t, x, efficiency(p, c))):
                    out["rollup"][key][i] += v
    return {name: dict(rows) for name, rows in out.items()}


def test_each_event_is_summed_once_under_every_row_it_counts_towards() -> None:
    rng = random.Random(11)
    events = _events(rng, 400)
    sums = aggregate(events)
    assert {"daily": sums.daily, "minute": sums.minute, "rollup": sums.rollup} == _reference(events)
    # The batch really spans buckets, and events of no org or no user added nothing they should not.
    assert len({key[1] for key in sums.minute}) > 1
    assert len({key[2] for key in sums.daily}) == 2
    assert sum(s[0] for s in sums.minute.values()) == sum(e.org_id is not None for e in events)
    assert sum(s[0] for s in sums.daily.values()) == sum(e.user_id is not None for e in events)


def test_rows_come_in_one_order_whatever_order_the_events_came_in() -> None:
    rng = random.Random(12)
    events = _events(rng, 300)
    shuffled = events[:]
    rng.shuffle(shuffled)
    first, second = aggregate(events), aggregate(shuffled)
    for rows_a, rows_b in (
        (first.daily, second.daily),
        (first.minute, second.minute),
        (first.rollup, second.rollup),
    ):
        columns = _columns(rows_a)
        assert columns == _columns(rows_b)
        keys = list(zip(*columns[: len(next(iter(rows_a)))], strict=True))
        assert keys == sorted(keys) and len(keys) == len(rows_a)
    assert _columns({}) == []

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from lt_analytics.domain.rollups import day_bucket, minute_bucket
from lt_analytics.domain.usage import DailyUsage, summarise
from lt_analytics.domain.windows import window_start


def row(day: date, model: str, requests: int, prompt: int, completion: int, cost: int) -> DailyUsage:
    return DailyUsage(
        day=day,
        model=model,
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd_micros=cost,
    )


def test_buckets_are_utc() -> None:
    cet = timezone(timedelta(hours=1))
    at = datetime(2026, 3, 1, 0, 30, 45, 123, tzinfo=cet)  # 23:30:45 UTC on Feb 28
    assert day_bucket(at) == date(2026, 2, 28)
    assert minute_bucket(at) == datetime(2026, 2, 28, 23, 30, tzinfo=UTC)
    assert day_bucket(datetime(2026, 3, 1, 0, 0)) == date(2026, 3, 1)  # naive means UTC


def test_window_includes_today() -> None:
    assert window_start(date(2026, 3, 10), 1) == date(2026, 3, 10)
    assert window_start(date(2026, 3, 10), 7) == date(2026, 3, 4)
    with pytest.raises(ValueError):
        window_start(date(2026, 3, 10), 0)


def test_summarise_totals_models_and_days() -> None:
    d1, d2 = date(2026, 3, 9), date(2026, 3, 10)
    summary = summarise(
        "u1",
        7,
        [
            row(d2, "small", 3, 30, 10, 7),
            row(d1, "big", 1, 100, 200, 900),
            row(d1, "small", 2, 20, 5, 3),
        ],
    )
    assert summary.user_id == "u1"
    assert summary.days == 7
    assert summary.total_requests == 6
    assert summary.prompt_tokens == 150
    assert summary.completion_tokens == 215
    assert summary.total_tokens == 365
    assert summary.cost_usd_micros == 910
    # Most tokens first.
    assert [(m.model, m.requests, m.total_tokens, m.cost_usd_micros) for m in summary.by_model] == [
        ("big", 1, 300, 900),
        ("small", 5, 65, 10),
    ]
    # Oldest day first.
    assert [(d.date, d.requests, d.total_tokens, d.cost_usd_micros) for d in summary.by_day] == [
        (d1, 3, 325, 903),
        (d2, 3, 40, 7),
    ]


def test_summarise_empty() -> None:
    summary = summarise("nobody", 30, [])
    body = summary.model_dump(mode="json")
    assert body == {
        "user_id": "nobody",
        "days": 30,
        "total_requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost_usd_micros": 0,
        "by_model": [],
        "by_day": [],
        "average_efficiency": 0.0,
    }


def test_day_totals_serialise_as_iso_dates() -> None:
    summary = summarise("u", 1, [row(date(2026, 1, 2), "m", 1, 1, 1, 1)])
    assert summary.model_dump(mode="json")["by_day"][0]["date"] == "2026-01-02"

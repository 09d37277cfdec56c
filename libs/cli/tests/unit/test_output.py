"""Formatting: exact money, tables, the one-time key, the `lt top` frame, error messages, path segments."""

from __future__ import annotations

import io

import httpx
import pytest
from rich.console import Console, RenderableType

from leaky_cli.client import ApiError, BadInput, error_message, seg
from leaky_cli.commands.keys import render_new_key
from leaky_cli.commands.me import By, render_quota, render_usage
from leaky_cli.commands.top import render, sparkline
from leaky_cli.output import list_table, text, tokens, usd


def plain(renderable: RenderableType, width: int = 200) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize(
    ("micros", "shown"),
    [
        (0, "$0.000000"),
        (1, "$0.000001"),
        (1_234_567, "$1.234567"),
        (-150_000, "-$0.150000"),
        (10**15 + 1, "$1,000,000,000.000001"),
        (None, "-"),
    ],
)
def test_micro_dollars_are_shown_exactly(micros: int | None, shown: str) -> None:
    assert usd(micros) == shown


def test_cells() -> None:
    assert tokens(1234567) == "1,234,567"
    assert [text(None), text(True), text(["a", "b"]), text(3)] == ["-", "yes", "a, b", "3"]


def test_an_empty_list_says_so() -> None:
    assert "nothing to show" in plain(list_table([], [("id", "id")], title="Keys"))


def test_quota_shows_each_pool_in_its_unit() -> None:
    pool = {
        "id": "p1",
        "owner_type": "user",
        "owner_id": "u",
        "period": "none",
        "used": 1500,
        "reserved": 0,
        "resets_at": None,
    }
    data = {
        "pools": [
            {**pool, "unit": "tokens", "limit": 1_000_000, "remaining": 998_500},
            {**pool, "id": "p2", "unit": "usd", "limit": 2_000_000, "remaining": 1_998_500},
        ],
        "personal_quota": 1_000_000,
        "used_tokens": 1500,
        "reserved_tokens": 0,
        "available_quota": 998_500,
        "team_pool_available": 0,
        "vacation_share_available": 0,
        "status": "active",
    }
    out = plain(render_quota(data))
    assert "998,500" in out and "$1.998500" in out and "status active" in out


def test_usage_by_day_shows_the_day_rows() -> None:
    data = {
        "days": 2,
        "total_requests": 3,
        "total_tokens": 30,
        "prompt_tokens": 20,
        "completion_tokens": 10,
        "cost_usd_micros": 42,
        "by_model": [{"model": "mock-gpt", "requests": 3, "total_tokens": 30, "cost_usd_micros": 42}],
        "by_day": [{"date": "2026-12-01", "requests": 3, "total_tokens": 30, "cost_usd_micros": 42}],
    }
    assert "2026-12-01" in plain(render_usage(data, By.day))
    assert "mock-gpt" in plain(render_usage(data, By.model)) and "$0.000042" in plain(render_usage(data))


def test_a_new_key_is_shown_with_the_warning_that_it_is_shown_once() -> None:
    out = plain(
        render_new_key({"id": "k1", "name": "ci", "key_prefix": "lt-abc", "api_key": "lt-abc-secret"})
    )
    assert "lt-abc-secret" in out and "only this once" in out


def test_a_top_frame_shows_what_it_could_read_and_why_not_the_rest() -> None:
    snap = {
        "at": "2026-12-01T00:00:00+00:00",
        "quota": {"pools": []},
        "usage": {"cost_usd_micros": 1_500_000, "total_requests": 7, "total_tokens": 700},
        "timeseries": {"scope": "user", "data": [{"requests": 2, "cost_usd_micros": 5}, {"requests": 5}]},
        "freezes": {"error": "admin key required", "status": 403},
        "anomalies": {
            "data": [
                {
                    "kind": "loop",
                    "severity": "warning",
                    "target_type": "session",
                    "target_id": "s-1",
                    "detected_at": "t",
                    "value": 4,
                    "threshold": 4,
                }
            ]
        },
    }
    out = plain(render(snap, 5))
    assert "$1.500000" in out and "7 requests" in out and "last hour (user): 7 requests" in out
    assert "freezes: not shown (admin key required)" in out
    assert "loop" in out and "session s-1" in out


def test_sparkline_scales_to_the_largest_value() -> None:
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([0, 7, 14]) == "▁▄█"


def test_error_messages_come_from_our_error_body() -> None:
    body = {
        "error": {
            "message": "admin key required",
            "type": "permission_error",
            "param": None,
            "code": "forbidden",
        }
    }
    assert error_message(httpx.Response(403, json=body)) == ("admin key required", "forbidden")
    assert error_message(httpx.Response(404, json={"detail": "Not Found"})) == ("Not Found", None)
    assert error_message(httpx.Response(502, text="bad gateway")) == ("bad gateway", None)
    assert str(ApiError(403, "admin key required", "forbidden")) == "HTTP 403: admin key required (forbidden)"


@pytest.mark.parametrize(
    ("value", "segment"), [("abc", "abc"), ("a/../b", "a%2F..%2Fb"), ("x?y#z", "x%3Fy%23z")]
)
def test_an_id_is_always_one_path_segment(value: str, segment: str) -> None:
    assert seg(value) == segment


@pytest.mark.parametrize("value", ["", ".", ".."])
def test_ids_that_would_move_the_path_are_refused(value: str) -> None:
    with pytest.raises(BadInput):
        seg(value)


def test_values_from_the_api_are_never_read_as_markup() -> None:
    out = plain(list_table([{"name": "[bold]x[/]", "bad": "[/]"}], [("name", "name"), ("bad", "bad")]))
    assert "[bold]x[/]" in out and "[/]" in out

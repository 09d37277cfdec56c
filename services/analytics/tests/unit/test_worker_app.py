"""The faust app the worker runs: its stream buffer comes from `LT_STREAM_BUFFER_MAX`."""

from __future__ import annotations

from typing import Any

import pytest

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

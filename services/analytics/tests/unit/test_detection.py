from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from leaky_common.events import UsageRecorded
from lt_analytics.domain.detection import Detection, baseline_ratio, target_of
from lt_analytics.domain.rollups import efficiency, grain_buckets, rollup_scopes
from lt_analytics.domain.thresholds import ThresholdOverrides, Thresholds


def test_overrides_apply_in_order_and_only_what_they_set() -> None:
    defaults = Thresholds()
    assert (defaults.loop_consecutive, defaults.rate_max_requests, defaults.freeze_duration_s) == (
        4,
        100,
        300,
    )
    global_row = ThresholdOverrides(rate_max_requests=50, freeze_on=frozenset({"loop"}))
    org_row = ThresholdOverrides(loop_consecutive=3)
    effective = defaults.apply(global_row).apply(org_row)
    assert (effective.loop_consecutive, effective.rate_max_requests) == (3, 50)
    assert effective.freeze_on == frozenset({"loop"})
    assert effective.spend_max_usd_micros_per_minute == 1_000_000
    assert defaults.apply(None) is defaults


@pytest.mark.parametrize(
    "bad", [{"loop_consecutive": 1}, {"baseline_multiplier": 1.0}, {"freeze_on": ["nope"]}]
)
def test_overrides_are_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ThresholdOverrides.model_validate(bad)


def test_only_sessions_and_keys_are_frozen_and_severities() -> None:
    limits = Thresholds()
    loop = Detection("loop", "session", "s", 4, 4, "x")
    org = Detection("baseline_ratio", "org", "o", 3.0, 2.0, "x")
    spend = Detection("spend_velocity", "key", "k", 2, 1, "x")
    assert loop.freezes(limits) and spend.freezes(limits) and not org.freezes(limits)
    assert not Detection("baseline_ratio", "session", "s", 3, 2, "x").freezes(limits)
    assert (loop.severity, org.severity, spend.severity) == ("error", "warning", "critical")


def test_efficiency_is_an_integer_in_1e4_units() -> None:
    assert efficiency(10, 5) == 5_000
    assert efficiency(3, 1) == 3_333
    assert efficiency(3, 2) == 6_667  # rounded half up
    assert efficiency(0, 50) == 0


def test_baseline_ratio() -> None:
    assert baseline_ratio(500, [100, 100]) == (100.0, 5.0)
    assert baseline_ratio(500, [0, 0]) == (0.0, 0.0)
    assert baseline_ratio(5, []) == (0.0, 0.0)


def test_rollup_scopes_and_grains() -> None:
    e = UsageRecorded(request_id="r", model="m", provider="p", user_id="u", org_id="o", session_id="s")
    assert rollup_scopes(e) == [("user", "u"), ("org", "o"), ("session", "s")]
    at = datetime(2026, 5, 1, 13, 47, 12, tzinfo=UTC)
    assert grain_buckets(at) == [
        ("minute", datetime(2026, 5, 1, 13, 47, tzinfo=UTC)),
        ("hour", datetime(2026, 5, 1, 13, tzinfo=UTC)),
        ("day", datetime(2026, 5, 1, tzinfo=UTC)),
    ]


def test_sessions_are_per_org_and_requests_of_no_org_are_nobodys() -> None:
    def ev(org: str | None, session: str | None = "s", key: str | None = "k") -> UsageRecorded:
        return UsageRecorded(
            request_id="r", model="m", provider="p", org_id=org, session_id=session, key_id=key
        )

    assert target_of(ev("o1")) == ("session", "o1", "s")
    assert target_of(ev("o1")) != target_of(ev("o2"))
    assert target_of(ev("o1", session=None)) == ("key", "o1", "k")
    assert target_of(ev(None)) is None  # an unauthenticated request (bad key, unknown model)
    assert rollup_scopes(ev(None)) == []

import hashlib
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from leaky_common.contracts import AdmitRequest
from leaky_common.model_access import model_in_scope as model_matches
from lt_quota.api.schemas import AddMemberBody, CreateTeamBody, CreateUserBody
from lt_quota.domain import (
    AdmitDenied,
    AdmitGranted,
    Period,
    generate_api_key,
    hash_api_key,
    key_prefix,
    parse_admit_result,
    period_of,
    retry_after_seconds,
    thresholds_crossed,
)
from lt_quota.settings import QuotaSettings


def test_generated_keys_are_prefixed_long_and_unique() -> None:
    keys = {generate_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("lt-")
        assert len(key) >= 3 + 43  # 32 random bytes, urlsafe base64


def test_key_hash_is_sha256_hex_and_prefix_is_visible_part() -> None:
    key = "lt-abcdefgh-secret-part"
    assert hash_api_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert hash_api_key(key) != hash_api_key(key + "x")
    assert key_prefix(key) == "lt-abcdefgh"
    assert "secret" not in key_prefix(key)


@pytest.mark.parametrize(("ms", "seconds"), [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 2), (59_001, 60)])
def test_retry_after_is_whole_seconds_at_least_one(ms: int, seconds: int) -> None:
    assert retry_after_seconds(ms) == seconds


def test_parse_admit_results() -> None:
    granted = parse_admit_result(["ok", 300, 200, 600, 599, 100, 200000, 199700, 90, "vacation_share", 77])
    assert granted == AdmitGranted(300, 200, 600, 599, 100, 200000, 199700, 90, "vacation_share", 77)
    assert parse_admit_result(["frozen", "session", "loop"]) == AdmitDenied(
        "frozen", detail="session", reason_text="loop"
    )
    assert parse_admit_result(["rate", "key_requests", 1500]) == AdmitDenied(
        "rate_limited", detail="key_requests", retry_ms=1500
    )
    assert parse_admit_result(["quota", "org", 42]) == AdmitDenied("quota", detail="org", remaining=42)
    assert parse_admit_result(["nopool", "lt:pool:x"]) == AdmitDenied("no_pool", detail="lt:pool:x")
    with pytest.raises(ValueError, match="unexpected"):
        parse_admit_result(["weird"])


def test_create_user_body_normalises_and_validates() -> None:
    body = CreateUserBody.model_validate({"email": "  Alice@Example.COM ", "name": "Alice"})
    assert body.email == "alice@example.com"
    assert body.personal_quota is None
    for bad in (
        {"email": "not-an-email", "name": "x"},
        {"email": "a@b.c", "name": ""},
        {"email": "a@b.c", "name": "x", "personal_quota": -1},
        {"email": "a@b.c", "name": "x", "personal_quota": 1.5},
        {"email": "a@b.c", "name": "x", "role": "root"},
        {"email": "a@b.c", "name": "x", "unit": "eur"},
        {"email": "a@b.c", "name": "x", "period": "hourly"},
        {"email": "a@b.c", "name": "x", "surprise": 1},
    ):
        with pytest.raises(ValidationError):
            CreateUserBody.model_validate(bad)


def test_team_and_member_bodies() -> None:
    assert CreateTeamBody.model_validate({"name": "core", "pool": 10}).pool == 10
    with pytest.raises(ValidationError):
        CreateTeamBody.model_validate({"name": "core", "pool": -5})
    assert AddMemberBody().role == "member"
    with pytest.raises(ValidationError):
        AddMemberBody.model_validate({"role": "owner"})


def test_admit_request_rejects_negative_tokens() -> None:
    with pytest.raises(ValidationError):
        AdmitRequest(api_key="k", request_id="r", model="m", provider="p", prompt_tokens=-1)


def test_settings_defaults() -> None:
    s = QuotaSettings(_env_file=None)
    assert (s.port, s.service_name, s.default_personal_quota, s.reservation_ttl_s) == (
        8082,
        "quota",
        100_000,
        600,
    )
    assert (s.key_requests_per_period, s.key_tokens_per_period) == (600, 200_000)


def test_periods_follow_the_org_calendar() -> None:
    # 2026-03-29 23:30 UTC is already 2026-03-30 01:30 in Berlin (CEST, the day DST started).
    now = int(datetime(2026, 3, 29, 23, 30, tzinfo=UTC).timestamp() * 1000)
    daily = period_of("daily", now, "Europe/Berlin")
    assert daily.key == "d:2026-03-30"
    assert daily.start == datetime(2026, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert daily.end is not None and daily.end.astimezone(UTC) == datetime(2026, 3, 30, 22, tzinfo=UTC)
    assert period_of("daily", now, "UTC").key == "d:2026-03-29"
    weekly = period_of("weekly", now, "Europe/Berlin")
    assert weekly.key == "w:2026-03-30"  # a Monday
    monthly = period_of("monthly", now, "America/New_York")
    assert monthly.key == "m:2026-03"
    assert monthly.end == datetime(2026, 4, 1, tzinfo=ZoneInfo("America/New_York"))
    assert period_of(
        "monthly", int(datetime(2026, 12, 31, 12, tzinfo=UTC).timestamp() * 1000), "UTC"
    ).end == (datetime(2027, 1, 1, tzinfo=ZoneInfo("UTC")))
    assert period_of("none", now, "UTC") == Period("", None, None)
    with pytest.raises(ValueError, match="unknown period"):
        period_of("hourly", now, "UTC")


def test_thresholds_and_model_scopes() -> None:
    assert thresholds_crossed(79, 100) == []
    assert thresholds_crossed(80, 100) == [80]
    assert thresholds_crossed(95, 100) == [80, 90]
    assert thresholds_crossed(100, 100) == [80, 90, 100]
    assert thresholds_crossed(5, 0) == []
    assert model_matches("", "gpt-4o") and model_matches("*", "x")
    assert model_matches("gpt-4o*", "gpt-4o-mini") and not model_matches("gpt-4o*", "mock-gpt")

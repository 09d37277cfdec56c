import hashlib

import pytest
from pydantic import ValidationError

from leaky_common.contracts import AdmitRequest
from lt_quota.api.schemas import AddMemberBody, CreateTeamBody, CreateUserBody
from lt_quota.domain import (
    AdmitDenied,
    AdmitGranted,
    generate_api_key,
    hash_api_key,
    key_prefix,
    parse_admit_result,
    retry_after_seconds,
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
    granted = parse_admit_result(["ok", 300, 200, 600, 599, 100, 200000, 199700, 90, "extra"][:9])
    assert granted == AdmitGranted(300, 200, 600, 599, 100, 200000, 199700, 90)
    assert parse_admit_result(["frozen", "session"]) == AdmitDenied("frozen", detail="session")
    assert parse_admit_result(["rate", "key_requests", 1500]) == AdmitDenied(
        "rate_limited", detail="key_requests", retry_ms=1500
    )
    assert parse_admit_result(["quota", 42]) == AdmitDenied("quota", remaining=42)
    assert parse_admit_result(["nopool"]) == AdmitDenied("no_pool")
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
        {"email": "a@b.c", "name": "x", "unit": "usd"},
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

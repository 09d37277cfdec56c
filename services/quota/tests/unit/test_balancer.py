"""The balancer's inputs to the admission script, and the key policy checks (no I/O)."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from leaky_common.contracts import AdmitRequest
from leaky_common.errors import Forbidden, InvalidRequest
from lt_quota.adapters.redis_state import RedisState, org_tag
from lt_quota.domain import BucketSizes, check_key_policy
from lt_quota.domain.records import KeyRecord, OrgSettings, PoolRecord
from lt_quota.settings import QuotaSettings
from lt_quota.usecases.context import QuotaContext

NOW = int(datetime(2026, 11, 23, 12, tzinfo=UTC).timestamp() * 1000)
ORG = OrgSettings("o1", "default", "UTC", 10, True, 10_000_000, False, False)


def service() -> QuotaContext:
    # Redis clients connect lazily: nothing here touches the network.
    state = RedisState(Redis.from_url("redis://127.0.0.1:1/0", decode_responses=True), "t:")
    return QuotaContext(QuotaSettings(_env_file=None), None, state, lambda: NOW)


def policy(key: KeyRecord, req: AdmitRequest) -> bool:
    return check_key_policy(key, req.model, req.priority)


def record(**kw: object) -> KeyRecord:
    base: dict[str, object] = {
        "key_id": "k1",
        "user_id": "u1",
        "org_id": "o1",
        "team_id": "t1",
        "role": "user",
        "email": "u@x",
        "status": "active",
        "expires_at": None,
        "revoked": False,
        "pool_id": "p-user",
        "org": ORG,
    }
    base.update(kw)
    return KeyRecord(**base)  # type: ignore[arg-type]


POOLS = [
    PoolRecord("p-user", "user", "u1", "o1", "tokens", 100),
    PoolRecord("p-user-usd", "user", "u1", "o1", "usd", 5_000_000, "daily"),
    PoolRecord("p-user-gpt4", "user", "u1", "o1", "tokens", 10, model="gpt-4o*"),
    PoolRecord("p-team", "team", "t1", "o1", "tokens", 1000, "monthly"),
    PoolRecord("p-org", "org", "o1", "o1", "tokens", 10**6),
    PoolRecord("p-org-openai", "org", "o1", "o1", "tokens", 10, provider="openai"),
    PoolRecord("p-key", "key", "k1", "o1", "tokens", 500),
]
SESSION = PoolRecord("p-sess", "session", "o1/s1", "o1", "usd", 10_000_000)


def test_caps_and_alternatives_in_balancer_order() -> None:
    svc = service()
    counters, sources = svc.counters(
        record(), POOLS, provider="mock", model="mock-gpt", critical=True, vacation=True, session=SESSION
    )
    assert sources == ["personal", "priority_bypass", "vacation_share"]
    by_group = [(c.group, c.label, c.leg.split("|")[0]) for c in counters]
    assert by_group == [
        (0, "org", "p-org"),  # the openai-only org pool and the gpt-4o personal pool do not apply
        (0, "key_cap", "p-key"),
        (0, "session", "p-sess"),
        (1, "personal", "p-user"),
        (1, "personal", "p-user-usd"),
        (2, "team", "p-team"),
        (3, "team", "p-team"),
        (3, "vacation_share", "p-team"),
    ]
    vac = counters[-1]
    tag = "{" + org_tag(record().org_id) + "}"  # every key of one admission in its org's hash slot
    assert vac.pct == 10 and vac.key == f"t:{tag}:vac:p-team:m:2026-11" and vac.leg == "p-team|m:2026-11|v"
    assert counters[4].key == f"t:{tag}:pool:p-user-usd:d:2026-11-23" and counters[4].unit == "u"
    assert counters[3].key == f"t:{tag}:pool:p-user" and counters[3].unit == "t"
    assert len({key_slot(c.key.encode()) for c in counters}) == 1


def test_no_bypass_without_critical_and_no_share_when_the_org_disallows_it() -> None:
    svc = service()
    _, sources = svc.counters(
        record(), POOLS, provider="mock", model="mock-gpt", critical=False, vacation=False, session=None
    )
    assert sources == ["personal"]
    no_sharing = OrgSettings("o1", "default", "UTC", 10, False, 10_000_000, False, False)
    _, sources = svc.counters(
        record(org=no_sharing),
        POOLS,
        provider="mock",
        model="mock-gpt",
        critical=False,
        vacation=True,
        session=None,
    )
    assert sources == ["personal"]
    counters, sources = svc.counters(
        record(), POOLS, provider="openai", model="gpt-4o-mini", critical=False, vacation=False, session=None
    )
    assert {c.leg.split("|")[0] for c in counters} >= {"p-org-openai", "p-user-gpt4"}


def admit(**kw: object) -> AdmitRequest:
    return AdmitRequest(api_key="k", request_id="r", model="mock-gpt", provider="mock", prompt_tokens=1, **kw)


def test_key_policy_models_and_priorities() -> None:
    assert policy(record(), admit()) is False
    with pytest.raises(Forbidden) as exc:
        policy(record(allowed_models=("gpt-*",)), admit())
    assert exc.value.code == "model_not_allowed"
    assert policy(record(allowed_models=("mock-*",)), admit()) is False
    with pytest.raises(Forbidden) as exc:
        policy(record(), admit(priority="critical"))
    assert exc.value.code == "priority_not_allowed"
    assert policy(record(allow_priority_bypass=True), admit(priority="critical")) is True
    # A key's allowed priorities only narrow: critical on the key without the user's bypass right is refused
    # (issue 17, finding 2), and with the right it may be used.
    with pytest.raises(Forbidden) as exc:
        policy(record(allowed_priorities=("normal", "critical")), admit(priority="critical"))
    assert exc.value.code == "priority_not_allowed"
    both = record(allowed_priorities=("normal", "critical"), allow_priority_bypass=True)
    assert policy(both, admit(priority="critical")) is True
    with pytest.raises(Forbidden):
        policy(record(allowed_priorities=("normal",), allow_priority_bypass=True), admit(priority="critical"))
    with pytest.raises(Forbidden):
        policy(record(allowed_priorities=("low",)), admit(priority="high"))
    with pytest.raises(InvalidRequest):
        policy(record(), admit(priority="asap"))
    # A default priority of critical without the right is simply normal, not an error.
    assert policy(record(default_priority="critical"), admit()) is False
    assert policy(record(default_priority="critical", allow_priority_bypass=True), admit()) is True


def test_bucket_sizes_key_then_org_then_settings() -> None:
    svc = service()  # settings: 600 requests and 200,000 tokens per period for keys and users
    assert svc.bucket_sizes(record()) == BucketSizes(600, 200_000, 600, 200_000)
    # The org's sizes replace the settings and are scaled by tier and the admin multiplier like them.
    org = replace(ORG, key_requests_per_period=10, user_tokens_per_period=5_000)
    assert svc.bucket_sizes(record(org=org)) == BucketSizes(10, 200_000, 600, 5_000)
    assert svc.bucket_sizes(record(org=org, tier="pro", role="admin")) == BucketSizes(
        40, 800_000, 2400, 20_000
    )
    # A key's own sizes are used exactly as set, whatever the tier; the user's buckets keep the org's.
    own = record(org=org, tier="pro", rate_limit_requests=3, rate_limit_tokens=1_000)
    assert svc.bucket_sizes(own) == BucketSizes(3, 1_000, 1200, 10_000)
    assert svc.default_bucket_sizes(None, "unknown-tier", "user") == BucketSizes(600, 200_000, 600, 200_000)

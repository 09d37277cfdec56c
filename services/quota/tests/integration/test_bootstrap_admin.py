"""The bootstrap admin key follows LT_BOOTSTRAP_ADMIN_KEY: a changed key replaces the old one (which stops
working), restarts with the same key change nothing, and a revoked key never comes back."""

import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from leaky_common.auth import Principal
from leaky_common.errors import Unauthorized
from lt_quota.bootstrap import run_quota
from lt_quota.settings import QuotaSettings

pytestmark = pytest.mark.integration


def settings_for(database_url: str, redis_url: str, kafka_bootstrap: str, key: str) -> QuotaSettings:
    return QuotaSettings(
        _env_file=None,
        environment="test",
        database_url=database_url,
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        bootstrap_admin_key=key,
        redis_prefix=f"lt:{uuid.uuid4().hex[:8]}:",
        consumer_group=f"quota-{uuid.uuid4().hex[:8]}",
        sweep_interval_s=3600,
        log_json=False,
    )


async def valid(settings: QuotaSettings, *keys: str) -> list[bool]:
    """Start quota with `settings` and say which of `keys` authenticate."""
    out = []
    async with run_quota(settings) as quota:
        for key in keys:
            try:
                await quota.ctx.key_record(key)
                out.append(True)
            except Unauthorized:
                out.append(False)
    return out


Infra = Callable[[str], Coroutine[Any, Any, QuotaSettings]]


@pytest.fixture
async def infra(
    make_database: Callable[[str], Coroutine[Any, Any, str]], redis_url: str, kafka_bootstrap: str
) -> Infra:
    database_url = await make_database("quota_boot")

    async def with_key(key: str) -> QuotaSettings:
        return settings_for(database_url, redis_url, kafka_bootstrap, key)

    return with_key


async def test_a_changed_bootstrap_key_replaces_the_old_one(infra: Infra) -> None:
    old, new = f"lt-old-{uuid.uuid4().hex}", f"lt-new-{uuid.uuid4().hex}"
    assert await valid(await infra(old), old) == [True]
    assert await valid(await infra(old), old) == [True]  # a restart with the same key changes nothing
    assert await valid(await infra(new), old, new) == [False, True]
    assert await valid(await infra(new), old, new) == [False, True]


async def test_a_revoked_bootstrap_key_stays_revoked(infra: Infra) -> None:
    first, second = f"lt-a-{uuid.uuid4().hex}", f"lt-b-{uuid.uuid4().hex}"
    assert await valid(await infra(first), first) == [True]
    assert await valid(await infra(second), first, second) == [False, True]
    # Setting the first key again does not resurrect it, and leaves the second one alone.
    assert await valid(await infra(first), first, second) == [False, True]


async def test_a_bootstrap_key_rotated_through_the_api_is_not_undone_by_a_restart(infra: Infra) -> None:
    key = f"lt-r-{uuid.uuid4().hex}"
    async with run_quota(await infra(key)) as quota:
        record = await quota.ctx.key_record(key)
        rotated = await quota.management.keys.rotate_key(
            Principal(user_id=record.user_id, org_id=record.org_id), record.key_id
        )
    assert await valid(await infra(key), key, rotated["api_key"]) == [False, True]

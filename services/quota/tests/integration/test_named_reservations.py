"""The gateway names each reservation (in the key's org) before it asks for it, so that one whose answer was
lost (quota died after reserving, a timeout, the client or the gateway gone) is released at zero by its id
instead of being charged in full at expiry. Quota admits a name once, and only in the key's org."""

import uuid
from typing import Any

import pytest

from leaky_common.contracts import org_tag
from leaky_common.events import UsageRecorded
from lt_quota.settings import QuotaSettings
from lt_quota.usecases.settlement_batch import BatchSettlement

from .test_settlement_core import Harness, database_url, internal, running, settings

pytestmark = pytest.mark.integration
__all__ = ["database_url", "settings"]  # the fixtures, per test: a database, one Redis and a Redis Cluster


def lost_answer(reservation_id: str, org_id: str) -> UsageRecorded:
    """The gateway's event for an admission whose answer it never had: no user (quota's answer named it),
    nothing used."""
    return UsageRecorded(
        request_id=uuid.uuid4().hex, reservation_id=reservation_id, org_id=org_id, model="mock-gpt",
        provider="mock", status="error", http_status=503, error_code="quota_unavailable",
    )  # fmt: skip


async def org_of(h: Harness, api_key: str) -> str:
    r = await h.client.post("/internal/authenticate", json={"api_key": api_key}, headers=internal())
    return str(r.json()["org_id"])


async def ledger_rows(h: Harness, reservation_id: str) -> list[tuple[int, str]]:
    async with h.service.db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT amount, kind FROM ledger WHERE idempotency_key LIKE $1", f"reservation:{reservation_id}:%"
        )
    return [(int(r["amount"]), str(r["kind"])) for r in rows]


async def test_a_named_reservation_is_admitted_once_and_released_at_zero_by_a_lost_answer(
    settings: QuotaSettings,
) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=1000)
        org = await org_of(h, user["api_key"])
        named = org_tag(org) + uuid.uuid4().hex
        r = await h.admit(user["api_key"], max_output_tokens=90, reservation_id=named)
        assert r.status_code == 200 and r.json()["reservation_id"] == named, r.text
        assert await h.pool(user["pool_id"]) == (0, 100)
        again = await h.admit(user["api_key"], max_output_tokens=90, reservation_id=named)
        assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate_reservation", (
            again.text
        )
        assert await h.pool(user["pool_id"]) == (0, 100)  # the second ask reserved nothing
        await h.service.settlement.settle_usage(lost_answer(named, org))
        assert await h.pool(user["pool_id"]) == (0, 0)
        assert await ledger_rows(h, named) == [(0, "usage")]
        # Batched, and again: still one row of nothing.
        second = org_tag(org) + uuid.uuid4().hex
        assert (
            await h.admit(user["api_key"], max_output_tokens=90, reservation_id=second)
        ).status_code == 200
        await BatchSettlement(h.service.settlement).settle(
            [lost_answer(second, org), lost_answer(named, org)]
        )
        assert await h.pool(user["pool_id"]) == (0, 0)
        assert await ledger_rows(h, second) == [(0, "usage")]
        assert await ledger_rows(h, named) == [(0, "usage")]


async def test_a_lost_answer_for_a_reservation_never_made_charges_nothing(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=1000)
        org = await org_of(h, user["api_key"])
        never = org_tag(org) + uuid.uuid4().hex
        await h.service.settlement.settle_usage(lost_answer(never, org))
        await BatchSettlement(h.service.settlement).settle([lost_answer(never, org)])
        assert await ledger_rows(h, never) == []
        # The name stays free: an admission that arrives late (quota was slow) is still admitted, and charged.
        assert (await h.admit(user["api_key"], max_output_tokens=90, reservation_id=never)).status_code == 200
        assert await h.pool(user["pool_id"]) == (0, 100)


@pytest.mark.parametrize(
    ("proposed", "refused"),
    [("0" * 40, False), (None, False), ("not-hex" + "0" * 33, True), ("ab" * 21, True)],
    ids=["another org", "none", "not hex", "too long"],
)
async def test_quota_names_the_reservation_when_the_gateway_did_not_name_it_in_the_keys_org(
    settings: QuotaSettings, proposed: str | None, refused: bool
) -> None:
    async with running(settings) as h:
        user = await h.create_user(quota=1000)
        org = await org_of(h, user["api_key"])
        assert org_tag(org) != "0" * 8
        fields: dict[str, Any] = {} if proposed is None else {"reservation_id": proposed}
        r = await h.admit(user["api_key"], max_output_tokens=90, **fields)
        if refused:
            assert r.status_code in (400, 422), r.text
            assert await h.pool(user["pool_id"]) == (0, 0)
        else:
            # Not named, or named in another org (a stale cache at the gateway): admitted under quota's own name.
            assert r.status_code == 200, r.text
            assert r.json()["reservation_id"] != proposed
            assert r.json()["reservation_id"].startswith(org_tag(org))
            assert await h.pool(user["pool_id"]) == (0, 100)

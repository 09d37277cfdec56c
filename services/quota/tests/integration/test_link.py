"""Quota's internal link (`LT_LINK_PORT`): the gateway's admissions and releases without HTTP, with the same
authorization, validation, answers and metrics as `POST /internal/admit` and `POST /internal/release`."""

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from leaky_common.auth import ASSERTION_HEADER, Principal
from leaky_common.contracts import QUOTA_LINK_ADMIT, QUOTA_LINK_RELEASE
from leaky_common.db import create_database
from leaky_common.link import LinkClient
from leaky_devinfra.testing import TEST_KEYS, InternalKeys
from lt_quota.main import create_app
from lt_quota.settings import QuotaSettings

pytestmark = pytest.mark.integration

ADMIN_KEY = "lt-test-admin-" + uuid.uuid4().hex


@pytest.fixture
async def settings(postgres_url: str, redis_url: str, kafka_bootstrap: str) -> QuotaSettings:
    return QuotaSettings(
        _env_file=None,
        environment="test",
        database_url=await create_database(postgres_url, f"quota_{uuid.uuid4().hex[:10]}"),
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        **TEST_KEYS.settings(),
        bootstrap_admin_key=ADMIN_KEY,
        redis_prefix=f"lt:{uuid.uuid4().hex[:8]}:",
        consumer_group=f"quota-{uuid.uuid4().hex[:8]}",
        sweep_interval_s=3600,
        log_json=False,
        link_port=0,
    )


@contextlib.asynccontextmanager
async def running(settings: QuotaSettings) -> AsyncIterator[tuple[httpx.AsyncClient, LinkClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        link = LinkClient("127.0.0.1", app.state.link_port)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://quota") as client:
                yield client, link
        finally:
            await link.close()


def caller() -> str:
    return TEST_KEYS.headers("quota")[ASSERTION_HEADER]


async def new_user(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post(
        "/internal/authenticate", json={"api_key": ADMIN_KEY}, headers=TEST_KEYS.headers("quota")
    )
    admin = TEST_KEYS.headers("quota", Principal.model_validate_json(r.text))
    body = {"email": f"{uuid.uuid4().hex[:8]}@example.com", "name": "Someone", "personal_quota": 1000}
    r = await client.post("/v1/admin/users", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


def admit_body(api_key: str, **fields: Any) -> bytes:
    body = {"api_key": api_key, "request_id": uuid.uuid4().hex, "model": "mock-gpt", "provider": "mock"}
    return orjson.dumps({"prompt_tokens": 10, **body, **fields})


def requests_metric(route: str, status: str) -> float:
    labels = {"service": "quota", "method": "POST", "route": route, "status": status}
    return REGISTRY.get_sample_value("lt_http_requests_total", labels) or 0.0


async def test_admission_and_release_over_the_link_match_http(settings: QuotaSettings) -> None:
    async with running(settings) as (client, link):
        user = await new_user(client)
        before = requests_metric("/internal/admit", "200")
        answer = await link.call(
            QUOTA_LINK_ADMIT, caller(), "", admit_body(user["api_key"], max_output_tokens=90), 5
        )
        assert answer.status == 200, answer.body
        admitted = orjson.loads(answer.body)
        assert admitted["reserved_tokens"] == 100 and admitted["principal"]["user_id"] == user["id"]
        assert requests_metric("/internal/admit", "200") == before + 1  # the route's own series

        release = {"reservation_id": admitted["reservation_id"], "total_tokens": 30, "cost_usd_micros": 0}
        answer = await link.call(QUOTA_LINK_RELEASE, caller(), "", orjson.dumps(release), 5)
        assert (answer.status, orjson.loads(answer.body)) == (200, {"released": True})
        r = await client.get("/v1/users/me/quota", headers=TEST_KEYS.headers("quota", admitted["principal"]))
        assert r.status_code == 200 and r.json()["available_quota"] == 1000 - 30, r.text
        answer = await link.call(QUOTA_LINK_RELEASE, caller(), "", orjson.dumps(release), 5)
        assert orjson.loads(answer.body) == {"released": False}  # applied once

        # A refusal keeps its status, body and Retry-After, as over HTTP.
        over = await link.call(
            QUOTA_LINK_ADMIT, caller(), "", admit_body(user["api_key"], prompt_tokens=5000), 5
        )
        assert over.status == 402 and orjson.loads(over.body)["error"]["type"] == "insufficient_quota"


async def test_the_link_takes_only_the_gateways_caller_assertion(settings: QuotaSettings) -> None:
    """Who may: a caller assertion signed by a trusted key for quota. Who may not: none, a user's assertion, one
    for another service, one signed by a key quota does not trust. Nothing is admitted for them."""
    async with running(settings) as (client, link):
        user = await new_user(client)
        body = admit_body(user["api_key"], max_output_tokens=10)
        principal = Principal(user_id=user["id"], org_id=user["org_id"], role="user", email="a@example.com")
        stranger = InternalKeys.generate()
        refused = {
            "none": "",
            "a user's": TEST_KEYS.headers("quota", principal)[ASSERTION_HEADER],
            "another audience": TEST_KEYS.headers("saga")[ASSERTION_HEADER],
            "an untrusted key": stranger.headers("quota")[ASSERTION_HEADER],
            "garbage": "not.a.token",
        }
        for what, assertion in refused.items():
            for op in (QUOTA_LINK_ADMIT, QUOTA_LINK_RELEASE):
                answer = await link.call(op, assertion, "", body, 5)
                assert answer.status == 401, (what, op, answer.body)
                assert orjson.loads(answer.body)["error"]["type"], what
        r = await client.get("/v1/users/me/quota", headers=TEST_KEYS.headers("quota", principal))
        assert r.json()["available_quota"] == 1000  # nothing was reserved


async def test_bad_input_over_the_link_is_a_400_naming_the_field(settings: QuotaSettings) -> None:
    async with running(settings) as (client, link):
        user = await new_user(client)
        cases = {
            b"not json": None,
            admit_body(user["api_key"], prompt_tokens=-1): "prompt_tokens",
            orjson.dumps({"api_key": user["api_key"]}): "request_id",
        }
        for body, param in cases.items():
            answer = await link.call(QUOTA_LINK_ADMIT, caller(), "", body, 5)
            assert answer.status == 400, answer.body
            error = orjson.loads(answer.body)["error"]
            assert error["code"] == "invalid_request" and (param is None or error["param"] == param), error
        bad_release = orjson.dumps({"reservation_id": "", "total_tokens": 1, "cost_usd_micros": 0})
        answer = await link.call(QUOTA_LINK_RELEASE, caller(), "", bad_release, 5)
        assert answer.status == 400 and orjson.loads(answer.body)["error"]["param"] == "reservation_id"

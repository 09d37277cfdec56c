"""`GET /internal/probe`: only a caller assertion opens it (never an API key, an admin's included); it proves
quota and the provider answer, and records nothing (it has no usage sink to record with)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from leaky_common.contracts import ProbeResponse
from leaky_common.errors import ServiceUnavailable
from leaky_devinfra.testing import TEST_KEYS
from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.providers import Completion, Provider
from lt_gateway.adapters.providers.mock import MockProvider
from lt_gateway.adapters.quota_client import QuotaClient
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.probe import probe_body
from lt_gateway.main import create_app
from lt_gateway.settings import GatewaySettings
from lt_gateway.usecases.probe import Probe

TOKEN = "probe-test-internal-token"  # a string that is no credential at all


class FakeQuota(QuotaClient):
    def __init__(self, fail: bool = False) -> None:
        super().__init__("http://quota.invalid", TEST_KEYS.signer(), 1)
        self.fail = fail
        self.probes = 0
        self.admissions = 0

    async def probe(self) -> ProbeResponse:
        self.probes += 1
        if self.fail:
            raise ServiceUnavailable(
                "quota probe failed: invalid_internal_assertion", code="quota_unavailable"
            )
        return ProbeResponse(postgres=True, redis=True)

    async def admit(self, request: Any) -> Any:
        self.admissions += 1
        raise AssertionError("the probe never admits")


class BrokenProvider(MockProvider):
    async def complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        raise ConnectionResetError("upstream went away")


def client(quota: FakeQuota, provider: Provider | None = None) -> TestClient:
    app = create_app(GatewaySettings(_env_file=None, **TEST_KEYS.settings()))
    app.state.probe = Probe(quota, ModelTable.load(None), {"mock": provider or MockProvider()})
    return TestClient(app, raise_server_exceptions=False)


def test_only_a_caller_assertion_opens_the_probe() -> None:
    quota = FakeQuota()
    http = client(quota)
    refused = [
        {},
        {"X-LT-Internal-Token": "not-the-internal-token"},
        # An API key, however powerful, is not the internal credential.
        {"Authorization": "Bearer lt-admin-bootstrap-key"},
        {"X-API-Key": TOKEN},
        {"Authorization": f"Bearer {TOKEN}"},
    ]
    for headers in refused:
        r = http.get("/internal/probe", headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_internal_assertion"), headers
    assert quota.probes == 0  # refused before anything was touched

    r = http.get("/internal/probe", headers=TEST_KEYS.headers("gateway"))
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("status", "model", "provider")} == {
        "status": "ok",
        "model": "mock-gpt",
        "provider": "mock",
    }
    assert (quota.probes, quota.admissions) == (1, 0)


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("?model=no-such-model", 404, "model_not_found"),
        ("?model=" + "x" * 201, 400, "invalid_request"),
        ("?model=", 400, "invalid_request"),
    ],
)
def test_bad_input_is_a_4xx(query: str, status: int, code: str) -> None:
    quota = FakeQuota()
    r = client(quota).get(f"/internal/probe{query}", headers=TEST_KEYS.headers("gateway"))
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    assert quota.probes == 0


def test_a_failing_leg_is_named() -> None:
    r = client(FakeQuota(fail=True)).get("/internal/probe", headers=TEST_KEYS.headers("gateway"))
    assert r.status_code == 503
    assert "invalid_internal_assertion" in r.json()["error"]["message"]
    r = client(FakeQuota(), BrokenProvider()).get("/internal/probe", headers=TEST_KEYS.headers("gateway"))
    assert (r.status_code, r.json()["error"]["type"]) == (502, "upstream_error")
    assert "ConnectionResetError" in r.json()["error"]["message"]


def test_the_probe_asks_for_one_token_in_the_mode_of_the_model() -> None:
    models = ModelTable.load(None)
    chat, embedding = models.get("mock-gpt"), models.get("mock-embedding")
    assert chat is not None and embedding is not None
    assert probe_body(chat) == {
        "model": "mock-gpt",
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
    }
    assert probe_body(embedding) == {"model": "mock-embedding", "input": "ping"}
    openai = chat.model_copy(update={"provider": "openai", "mode": "completion"})
    assert probe_body(openai) == {"model": "mock-gpt", "prompt": "ping", "max_tokens": 1}


def test_the_probe_is_documented_as_internal_only() -> None:
    doc = client(FakeQuota()).get("/openapi.json").json()
    op = doc["paths"]["/internal/probe"]["get"]
    assert op["security"] == [{"InternalAssertion": []}]
    assert {"200", "401", "404", "503"} <= op["responses"].keys() and "422" not in op["responses"]

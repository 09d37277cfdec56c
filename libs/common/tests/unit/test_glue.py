"""The shared glue: model matcher, handler table, principal dependencies and the OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from leaky_common.api import (
    AdminPrincipal,
    CurrentPrincipal,
    InternalCaller,
    error_responses,
    install_openapi,
)
from leaky_common.auth import AssertionVerifier, Principal
from leaky_common.dispatch import dispatcher
from leaky_common.errors import install_error_handlers
from leaky_common.events import CreditTokens, UsageRecorded
from leaky_common.model_access import model_allowed, model_in_scope
from leaky_common.settings import ServiceSettings
from leaky_devinfra.testing import TEST_KEYS, InternalKeys


@pytest.mark.parametrize(
    ("pattern", "model", "expected"),
    [
        ("", "gpt-4o", True),
        ("*", "anything", True),
        ("gpt-4o", "gpt-4o", True),
        ("gpt-4o", "gpt-4o-mini", False),
        ("gpt-4o*", "gpt-4o-mini", True),
        ("GPT-4o", "gpt-4o", False),
        ("claude-?-haiku", "claude-3-haiku", True),
    ],
)
def test_model_in_scope(pattern: str, model: str, expected: bool) -> None:
    assert model_in_scope(pattern, model) is expected


def test_model_allowed_none_is_every_model_and_a_list_is_any_of_its_patterns() -> None:
    assert model_allowed(None, "x")
    assert not model_allowed([], "x")
    assert model_allowed(["a", "mock-*"], "mock-gpt")
    assert not model_allowed(("a", "b*"), "c")


async def test_dispatcher_calls_the_handler_of_the_message_type_and_skips_others() -> None:
    seen: list[Any] = []

    async def on_usage(message: UsageRecorded) -> None:
        seen.append(message)

    handle = dispatcher({UsageRecorded: on_usage})
    usage = UsageRecorded(request_id="r1", user_id="u", org_id="o", model="m", provider="p")
    other = CreditTokens(saga_id="s", step="credit", purchase_id="p1", user_id="u", amount=5)
    await handle(usage, None)
    await handle(other, None)
    assert seen == [usage]

    class LaterUsage(UsageRecorded):
        pass

    later = LaterUsage(request_id="r2", user_id="u", org_id="o", model="m", provider="p")
    await handle(later, None)
    assert seen == [usage, later]


class Thing(BaseModel):
    name: str


def _app() -> FastAPI:
    app = FastAPI(title="t")
    app.state.settings = ServiceSettings(**TEST_KEYS.settings())
    app.state.verifier = AssertionVerifier({TEST_KEYS.kid: TEST_KEYS.public}, "leaky-tokens")
    install_error_handlers(app)
    router = APIRouter(responses=error_responses(403))

    @router.get("/me")
    async def me(principal: CurrentPrincipal) -> Thing:
        return Thing(name=principal.user_id)

    @router.post("/admin/things", status_code=201)
    async def create(body: Thing, principal: AdminPrincipal) -> Thing:
        return Thing(name=f"{body.name}@{principal.org_id}")

    @router.get("/internal/ping", dependencies=[InternalCaller])
    async def ping() -> Thing:
        return Thing(name="pong")

    app.include_router(router)
    install_openapi(app)
    return app


def _headers(role: str = "user", keys: InternalKeys = TEST_KEYS) -> dict[str, str]:
    return keys.headers("leaky-tokens", Principal(user_id="u1", org_id="o1", role=role))


def test_principal_dependencies_who_may_and_who_may_not() -> None:
    client = TestClient(_app())
    assert client.get("/me", headers=_headers()).json() == {"name": "u1"}
    assert client.get("/me").status_code == 401
    assert client.get("/me", headers=_headers(keys=InternalKeys.generate())).status_code == 401
    assert client.post("/admin/things", json={"name": "a"}, headers=_headers()).status_code == 403
    created = client.post("/admin/things", json={"name": "a"}, headers=_headers("admin"))
    assert (created.status_code, created.json()) == (201, {"name": "a@o1"})
    assert client.get("/internal/ping", headers=TEST_KEYS.headers("leaky-tokens")).status_code == 200
    denied = client.get("/internal/ping", headers=_headers("admin"))  # a user's assertion, not a caller's
    assert (denied.status_code, denied.json()["error"]["code"]) == (401, "invalid_internal_assertion")


def test_bad_input_is_an_openai_shaped_400_as_the_document_says() -> None:
    client = TestClient(_app())
    response = client.post("/admin/things", json={"nope": 1}, headers=_headers("admin"))
    assert response.status_code == 400
    assert set(response.json()["error"]) >= {"message", "type", "param", "code"}
    operation = client.get("/openapi.json").json()["paths"]["/admin/things"]["post"]
    assert "400" in operation["responses"]


def test_openapi_has_no_phantom_422_and_names_the_auth_and_the_error_shape() -> None:
    document = TestClient(_app()).get("/openapi.json").json()
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert all("422" not in op["responses"] for op in operations)
    assert set(document["components"]["securitySchemes"]) == {"InternalAssertion"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    me = document["paths"]["/me"]["get"]
    assert me["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Thing"
    }
    assert me["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "403" in me["responses"]
    assert "ErrorBody" in document["components"]["schemas"]


def test_ops_routes_are_typed_and_ready_answers_503_in_the_same_shape() -> None:
    from leaky_common.observability import add_ops_routes

    checks = {"postgres": True, "redis": False}

    async def ready() -> dict[str, bool]:
        return checks

    app = _app()
    add_ops_routes(app, "t", ready)
    client = TestClient(app)
    assert client.get("/health").json() == {"status": "ok", "service": "t"}
    not_ready = client.get("/ready")
    assert (not_ready.status_code, not_ready.json()["status"]) == (503, "not_ready")
    checks["redis"] = True
    assert client.get("/ready").json() == {"status": "ready", "service": "t", "checks": checks}
    paths = client.get("/openapi.json").json()["paths"]
    assert paths["/ready"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "503" in paths["/ready"]["get"]["responses"]
    assert paths["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "text/plain" in next(iter(paths["/metrics"]["get"]["responses"]["200"]["content"]))


def test_service_app_has_the_shared_skeleton_and_serves_the_hot_route() -> None:
    import contextlib
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    from leaky_common.api import service_app

    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("started")
        app.state.dependency_up = True
        yield
        events.append("stopped")

    async def ready(app: FastAPI) -> dict[str, bool]:
        return {"dependency": getattr(app.state, "dependency_up", False)}

    async def hot(request: Request) -> Response:
        return JSONResponse({"hot": (await request.json())["n"] + 1})

    settings = ServiceSettings(service_name="skeleton", metrics_token="scraper-token", **TEST_KEYS.settings())
    app = service_app(settings, title="t", lifespan=lifespan, ready=ready, hot_route=("/hot", hot))
    assert app.state.settings is settings
    with TestClient(app) as client:
        assert client.post("/hot", json={"n": 1}).json() == {"hot": 2}
        assert client.get("/ready").json() == {
            "status": "ready",
            "service": "skeleton",
            "checks": {"dependency": True},
        }
        assert client.get("/nope").json()["error"]["type"] == "not_found_error"
        # Only the scraper reads /metrics; anyone else sees no such route.
        assert client.get("/metrics").status_code == 404
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 404
        metrics = client.get("/metrics", headers={"Authorization": "Bearer scraper-token"}).text
        assert 'lt_http_requests_total{method="POST",route="/hot",service="skeleton",status="200"}' in metrics
        assert "/health" in client.get("/openapi.json").json()["paths"]
    assert events == ["started", "stopped"]

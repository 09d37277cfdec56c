"""No route of an internal service answers anyone but the gateway: without a signed assertion, or with a forged,
expired, too long-lived, wrongly addressed or unknown-key one, every route is a 401; `/internal/*` routes refuse
a user's assertion (they take only a caller assertion); an admin route refuses a user's principal with 403. All
of that happens before any route touches state or reads its input (the apps run here without their lifespan,
so a route that reached its use case would fail with a 500 instead)."""

from __future__ import annotations

import importlib
import json
import re
import time
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from leaky_common.api import admin_principal
from leaky_devinfra.testing import TEST_KEYS, InternalKeys

INTERNAL = {
    "lt_quota": "QuotaSettings",
    "lt_saga": "SagaSettings",
    "lt_analytics": "AnalyticsSettings",
    "lt_notifier": "NotifierSettings",
}
AUDIENCE = {"lt_quota": "quota", "lt_saga": "saga", "lt_analytics": "analytics", "lt_notifier": "notifier"}
JUNK = {"amount": "lots", "email": 7, "url": ["x"], "tokens": -1}


def _app(package: str, settings_class: str) -> FastAPI:
    settings = getattr(importlib.import_module(f"{package}.settings"), settings_class)
    app: FastAPI = importlib.import_module(f"{package}.main").create_app(
        settings(_env_file=None, **TEST_KEYS.settings())
    )
    return app


def _calls(dependant: Dependant) -> set[Any]:
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


OPS = {"/health", "/ready", "/metrics"}


def _routes(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    """Every API route with its full path (included routers resolved) and each method, ops routes aside."""
    found = []
    for context in iter_route_contexts(app.routes):
        route, path = context.original_route, context.path
        if isinstance(route, APIRoute) and path and path not in OPS:
            found += [
                (method, re.sub(r"\{[^}]+\}", "x1", path), route) for method in sorted(route.methods or ())
            ]
    return found


def _principal(role: str, audience: str) -> dict[str, str]:
    return TEST_KEYS.headers(audience, user_id="u1", org_id="o1", role=role)


def _bad_assertions(audience: str) -> dict[str, dict[str, str]]:
    """Every way an assertion can be wrong, each carrying an admin principal."""
    admin = {"user_id": "u1", "org_id": "o1", "role": "admin"}
    now = int(time.time())
    live = {"iss": "gateway", "iat": now, "exp": now + 30, "lt_principal": admin}
    intruder = InternalKeys.generate(kid=TEST_KEYS.kid)  # same kid, a key nobody trusts
    valid = TEST_KEYS.headers(audience, admin)["x-lt-assertion"]
    head, payload, signature = valid.split(".")
    return {
        "none": {},
        "garbage": {"x-lt-assertion": "not-a-jwt"},
        "forged": intruder.forged_headers(audience, live),
        "tampered": {"x-lt-assertion": f"{head}.{payload}.{signature[:-4]}AAAA"},
        "expired": TEST_KEYS.forged_headers(audience, {**live, "iat": now - 120, "exp": now - 60}),
        "too long-lived": TEST_KEYS.forged_headers(audience, {**live, "exp": now + 3600}),
        "wrong audience": TEST_KEYS.headers("gateway", admin),
        "unknown kid": TEST_KEYS.forged_headers(audience, live, kid="retired-key"),
        "static token": {
            "x-lt-internal-token": "dev-internal-token-change-me",
            "x-lt-principal": json.dumps(admin),
        },
    }


@pytest.mark.parametrize(("package", "settings_class"), sorted(INTERNAL.items()), ids=sorted(INTERNAL))
def test_every_route_needs_a_valid_assertion(package: str, settings_class: str) -> None:
    app = _app(package, settings_class)
    client = TestClient(app, raise_server_exceptions=False)
    routes = _routes(app)
    # The notifier's tenth is Alertmanager's webhook: its own bearer token, 401 to every assertion too.
    assert len(routes) == {"lt_quota": 57, "lt_saga": 6, "lt_analytics": 11, "lt_notifier": 10}[package]
    answers = {
        (method, path, case): client.request(method, path, json=JUNK, headers=headers).status_code
        for method, path, _ in routes
        for case, headers in _bad_assertions(AUDIENCE[package]).items()
    }
    assert {key: status for key, status in answers.items() if status != 401} == {}


def test_internal_routes_refuse_a_user_assertion() -> None:
    app = _app("lt_quota", "QuotaSettings")
    client = TestClient(app, raise_server_exceptions=False)
    internal = [(m, p) for m, p, _ in _routes(app) if p.startswith("/internal/")]
    assert len(internal) == 9
    user_admin = _principal("admin", "quota")
    assert {(m, p): client.request(m, p, json=JUNK, headers=user_admin).status_code for m, p in internal} == {
        (m, p): 401 for m, p in internal
    }
    # A caller assertion gets past authentication (to the use case, which fails here without the lifespan).
    caller = TEST_KEYS.headers("quota")
    assert 401 not in {client.request(m, p, json=JUNK, headers=caller).status_code for m, p in internal}


@pytest.mark.parametrize(("package", "settings_class"), sorted(INTERNAL.items()), ids=sorted(INTERNAL))
def test_admin_routes_refuse_a_user(package: str, settings_class: str) -> None:
    app = _app(package, settings_class)
    client = TestClient(app, raise_server_exceptions=False)
    admin_routes = [(m, p) for m, p, route in _routes(app) if admin_principal in _calls(route.dependant)]
    answers = {
        (m, p): client.request(m, p, json=JUNK, headers=_principal("user", AUDIENCE[package])).status_code
        for m, p in admin_routes
    }
    assert {key: status for key, status in answers.items() if status != 403} == {}
    # Today's admin routes; a new one must keep the count honest (and an admin route lost shows here too).
    assert len(admin_routes) == {"lt_quota": 28, "lt_saga": 1, "lt_analytics": 2, "lt_notifier": 9}[package]


def test_the_gateway_answers_nothing_governed_without_a_key() -> None:
    from lt_gateway.main import create_app
    from lt_gateway.settings import GatewaySettings

    client = TestClient(create_app(GatewaySettings(_env_file=None)), raise_server_exceptions=False)
    for method, path in (
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/mock-gpt"),
    ):
        response = client.request(method, path, json={"model": "mock-gpt", "messages": "junk"})
        assert (method, path, response.status_code) == (method, path, 401)
        assert response.json()["error"]["type"] == "authentication_error"


def test_the_gateway_internal_routes_need_a_caller_assertion() -> None:
    """The public gateway's own `/internal/*` routes (the deep probe) take a caller assertion, never an API key."""
    from lt_gateway.main import create_app
    from lt_gateway.settings import GatewaySettings

    app = create_app(GatewaySettings(_env_file=None, **TEST_KEYS.settings()))
    client = TestClient(app, raise_server_exceptions=False)
    internal = [(m, p) for m, p, _ in _routes(app) if p.startswith("/internal/")]
    assert internal == [("GET", "/internal/probe")]
    for headers in (
        *_bad_assertions("gateway").values(),
        TEST_KEYS.headers("gateway", user_id="u", org_id="o"),
    ):
        answers = {(m, p): client.request(m, p, headers=headers).status_code for m, p in internal}
        assert set(answers.values()) == {401}, (headers, answers)

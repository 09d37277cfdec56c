"""No route of an internal service answers anyone but the gateway: without the internal token (or with a
wrong one) every route is a 401, an admin route refuses a user's principal with 403, and all of that happens
before any route touches state or reads its input (the apps run here without their lifespan, so a route that
reached its use case would fail with a 500 instead)."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from leaky_common.api import admin_principal
from leaky_common.auth import Principal

INTERNAL = {
    "lt_quota": "QuotaSettings",
    "lt_saga": "SagaSettings",
    "lt_analytics": "AnalyticsSettings",
    "lt_notifier": "NotifierSettings",
}
TOKEN = "route-auth-test-internal-token"
JUNK = {"amount": "lots", "email": 7, "url": ["x"], "tokens": -1}


def _app(package: str, settings_class: str) -> FastAPI:
    settings = getattr(importlib.import_module(f"{package}.settings"), settings_class)
    app: FastAPI = importlib.import_module(f"{package}.main").create_app(
        settings(_env_file=None, internal_token=TOKEN)
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


def _principal(role: str) -> dict[str, str]:
    principal = Principal.model_validate({"user_id": "u1", "org_id": "o1", "role": role})
    return {"X-LT-Principal": principal.header_value(), "X-LT-Internal-Token": TOKEN}


@pytest.mark.parametrize(("package", "settings_class"), sorted(INTERNAL.items()), ids=sorted(INTERNAL))
def test_every_route_needs_the_internal_token(package: str, settings_class: str) -> None:
    app = _app(package, settings_class)
    client = TestClient(app, raise_server_exceptions=False)
    routes = _routes(app)
    assert len(routes) == {"lt_quota": 51, "lt_saga": 6, "lt_analytics": 11, "lt_notifier": 9}[package]
    wrong = {"X-LT-Principal": _principal("admin")["X-LT-Principal"], "X-LT-Internal-Token": "not-the-token"}
    answers = {
        (method, path, case): client.request(method, path, json=JUNK, headers=headers).status_code
        for method, path, _ in routes
        for case, headers in (("none", {}), ("wrong token", wrong))
    }
    assert {key: status for key, status in answers.items() if status != 401} == {}


@pytest.mark.parametrize(("package", "settings_class"), sorted(INTERNAL.items()), ids=sorted(INTERNAL))
def test_admin_routes_refuse_a_user(package: str, settings_class: str) -> None:
    app = _app(package, settings_class)
    client = TestClient(app, raise_server_exceptions=False)
    admin_routes = [(m, p) for m, p, route in _routes(app) if admin_principal in _calls(route.dependant)]
    answers = {
        (m, p): client.request(m, p, json=JUNK, headers=_principal("user")).status_code
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


def test_the_gateway_internal_routes_need_the_internal_token() -> None:
    """The public gateway's own `/internal/*` routes (the deep probe) take the internal token, never an API key."""
    from lt_gateway.main import create_app
    from lt_gateway.settings import GatewaySettings

    app = create_app(GatewaySettings(_env_file=None, internal_token=TOKEN))
    client = TestClient(app, raise_server_exceptions=False)
    internal = [(m, p) for m, p, _ in _routes(app) if p.startswith("/internal/")]
    assert internal == [("GET", "/internal/probe")]
    for headers in ({}, {"X-LT-Internal-Token": "not-the-token"}, {"Authorization": f"Bearer {TOKEN}"}):
        answers = {(m, p): client.request(m, p, headers=headers).status_code for m, p in internal}
        assert set(answers.values()) == {401}, (headers, answers)

"""The gateway's table of public routes (`lt_gateway.domain.routing.PUBLIC_ROUTES`) is exactly every owner's
routes minus `/internal/*`, the ops routes and the notifier's Alertmanager webhook (`DIRECT`): a route an owner adds is not reachable through the gateway until
it is listed, and nothing else ever is."""

from __future__ import annotations

import importlib
import re

from fastapi.routing import APIRoute, iter_route_contexts

from lt_gateway.domain.routing import PUBLIC_ROUTES

OWNERS = {
    "quota": ("lt_quota", "QuotaSettings"),
    "saga": ("lt_saga", "SagaSettings"),
    "analytics": ("lt_analytics", "AnalyticsSettings"),
    "notifier": ("lt_notifier", "NotifierSettings"),
}
OPS = {"/health", "/ready", "/metrics"}
# Called inside the deployment by a component of its own with its own bearer token, never through the gateway.
DIRECT = {"notifier": {"/v1/alertmanager/alerts"}}


def _published(package: str, settings_class: str) -> set[str]:
    settings = getattr(importlib.import_module(f"{package}.settings"), settings_class)
    app = importlib.import_module(f"{package}.main").create_app(settings(_env_file=None))
    paths = set()
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute) and context.path and context.path not in OPS:
            paths.add(re.sub(r"\{[^}]+\}", "{}", context.path))
    return paths


def test_the_gateway_forwards_exactly_the_owners_public_routes() -> None:
    for owner, (package, settings_class) in OWNERS.items():
        published = _published(package, settings_class)
        public = {p for p in published if not p.startswith("/internal/")} - DIRECT.get(owner, set())
        assert set(PUBLIC_ROUTES[owner]) == public, owner
        assert not any(p.startswith("/internal") for p in PUBLIC_ROUTES[owner])
        assert not DIRECT.get(owner, set()) & set(PUBLIC_ROUTES[owner]), owner
        assert DIRECT.get(owner, set()) <= published, owner
    assert set(PUBLIC_ROUTES) == set(OWNERS)

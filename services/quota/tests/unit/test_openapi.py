"""Quota's own OpenAPI facts: every route listed, every route secured by the internal schemes. (No 422, typed
responses and the error shape are checked for every service in tests/structure/test_openapi.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from lt_quota.main import create_app
from lt_quota.settings import QuotaSettings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    doc: dict[str, Any] = create_app(QuotaSettings(_env_file=None)).openapi()
    return doc


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation of the service's own routes (`ops` routes (/health, /ready, /metrics) are
    leaky_common's, shared by every service)."""
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if "ops" not in op.get("tags", [])
    ]


def test_the_document_lists_the_service_routes(document: dict[str, Any]) -> None:
    assert len(_operations(document)) == 57


def test_the_security_schemes_are_declared(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    for name, header in (("InternalAssertion", "X-LT-Assertion"),):
        assert (schemes[name]["type"], schemes[name]["in"], schemes[name]["name"]) == (
            "apiKey",
            "header",
            header,
        )
    secured = [(m, p) for m, p, op in _operations(document) if op.get("security")]
    assert len(secured) == len(_operations(document))

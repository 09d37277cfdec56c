"""Every service's OpenAPI document tells the truth: what each route returns, the error shape it sends, who
may call it, and no phantom 422 (validation errors are OpenAI-shaped 400s). Built without infrastructure: the
documents need no lifespan. Service-specific checks (which routes, which schemes) live in each service's
`tests/unit/test_openapi.py`."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from fastapi.testclient import TestClient

SERVICES = {
    "lt_gateway": "GatewaySettings",
    "lt_quota": "QuotaSettings",
    "lt_saga": "SagaSettings",
    "lt_analytics": "AnalyticsSettings",
    "lt_notifier": "NotifierSettings",
}
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture(scope="module", params=sorted(SERVICES))
def document(request: pytest.FixtureRequest) -> dict[str, Any]:
    package: str = request.param
    settings_class = getattr(importlib.import_module(f"{package}.settings"), SERVICES[package])
    app = importlib.import_module(f"{package}.main").create_app(settings_class(_env_file=None))
    response = TestClient(app).get("/openapi.json")  # no `with`: the lifespan does not run
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_no_operation_advertises_a_422(document: dict[str, Any]) -> None:
    assert [name for name, op in _operations(document) if "422" in op["responses"]] == []
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_success_response_says_what_it_returns(document: dict[str, Any]) -> None:
    untyped = [
        f"{name} {status}"
        for name, op in _operations(document)
        for status, response in op["responses"].items()
        if status.startswith("2") and status != "204"
        if not all(media.get("schema") for media in response.get("content", {"?": {}}).values())
    ]
    assert untyped == []


def test_every_error_response_is_the_one_error_shape(document: dict[str, Any]) -> None:
    other = [
        f"{name} {status}"
        for name, op in _operations(document)
        for status, response in op["responses"].items()
        if status.startswith("4")
        if response.get("content", {}).get("application/json", {}).get("schema") != ERROR_BODY
    ]
    assert other == []


def test_routes_that_need_credentials_say_so_and_document_the_401(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]
    secured = [(name, op) for name, op in _operations(document) if op.get("security")]
    assert secured
    assert [name for name, op in secured if "401" not in op["responses"]] == []

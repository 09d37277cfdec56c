"""The quota service's OpenAPI document says what each route returns, how callers authenticate and which
errors come back, in the one error shape; built without infrastructure (the lifespan does not run)."""

from __future__ import annotations

from typing import Any

import pytest

from lt_quota.main import create_app
from lt_quota.settings import QuotaSettings

ERROR_BODY = "#/components/schemas/ErrorBody"


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
    assert len(_operations(document)) == 47


def test_no_operation_advertises_a_422(document: dict[str, Any]) -> None:
    assert [(m, p) for m, p, op in _operations(document) if "422" in op["responses"]] == []


def test_every_success_response_has_a_schema(document: dict[str, Any]) -> None:
    missing = []
    for method, path, op in _operations(document):
        successes = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert successes, (method, path)
        for code, response in successes.items():
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            if not schema:
                missing.append((method, path, code))
    assert missing == []


def test_every_error_response_has_the_error_body_shape(document: dict[str, Any]) -> None:
    wrong = []
    for method, path, op in _operations(document):
        errors = {code: r for code, r in op["responses"].items() if code[0] in "45"}
        assert "401" in errors, (method, path)
        for code, response in errors.items():
            if response["content"]["application/json"]["schema"] != {"$ref": ERROR_BODY}:
                wrong.append((method, path, code))
    assert wrong == []
    assert "ErrorBody" in document["components"]["schemas"]


def test_the_security_schemes_are_declared(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    for name, header in (("Principal", "X-LT-Principal"), ("InternalToken", "X-LT-Internal-Token")):
        assert (schemes[name]["type"], schemes[name]["in"], schemes[name]["name"]) == (
            "apiKey",
            "header",
            header,
        )
    secured = [(m, p) for m, p, op in _operations(document) if op.get("security")]
    assert len(secured) == len(_operations(document))

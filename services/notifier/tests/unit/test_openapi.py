"""The notifier's OpenAPI document says what every route returns, who may call it, and no phantom 422."""

from typing import Any

from fastapi.testclient import TestClient

from lt_notifier.main import create_app
from lt_notifier.settings import NotifierSettings


def _document() -> dict[str, Any]:
    # No `with`: the lifespan (database, broker) is not started; the document needs none of it.
    document: dict[str, Any] = TestClient(create_app(NotifierSettings())).get("/openapi.json").json()
    return document


def test_no_operation_advertises_a_422() -> None:
    operations = [op for item in _document()["paths"].values() for op in item.values()]
    assert operations
    assert [op["operationId"] for op in operations if "422" in op["responses"]] == []


def test_every_success_response_has_a_schema() -> None:
    # The ops routes (/ready, /metrics) come from leaky_common.observability and are not the notifier's API.
    untyped = [
        f"{method.upper()} {path}"
        for path, item in _document()["paths"].items()
        for method, op in item.items()
        if "ops" not in op.get("tags", [])
        for status in ("200", "201")
        if status in op["responses"]
        and not op["responses"][status].get("content", {}).get("application/json", {}).get("schema")
    ]
    assert untyped == []


def test_admin_routes_name_their_auth_and_errors() -> None:
    document = _document()
    assert set(document["components"]["securitySchemes"]) == {"Principal", "InternalToken"}
    admin_ops = [
        op for path, item in document["paths"].items() if path.startswith("/v1/admin") for op in item.values()
    ]
    assert admin_ops
    assert all({"401", "403"} <= set(op["responses"]) for op in admin_ops)

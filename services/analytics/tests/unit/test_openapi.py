"""The analytics OpenAPI document says what each route answers: no phantom 422, a schema for every success
response, and the gateway's internal auth as security schemes."""

from typing import Any

from lt_analytics.main import create_app
from lt_analytics.settings import AnalyticsSettings


def _document() -> dict[str, Any]:
    settings = AnalyticsSettings(
        internal_token="openapi-test-internal-token", environment="test", log_json=False
    )
    document: dict[str, Any] = create_app(settings).openapi()
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


def test_no_operation_advertises_a_422() -> None:
    document = _document()
    assert [(p, m) for p, m, op in _operations(document) if "422" in op["responses"]] == []
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_success_response_has_a_schema() -> None:
    missing = []
    for path, method, operation in _operations(_document()):
        if "ops" in operation.get("tags", []):
            continue  # /ready and /metrics come from leaky_common.observability, shared by every service
        for status in ("200", "201"):
            response = operation["responses"].get(status)
            if response is None:
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            if not schema:
                missing.append((path, method, status))
    assert missing == []


def test_analytics_routes_name_the_internal_auth_and_their_errors() -> None:
    document = _document()
    schemes = document["components"]["securitySchemes"]
    assert {"Principal", "InternalToken"} <= set(schemes)
    analytics = [(p, op) for p, _, op in _operations(document) if p.startswith("/v1/analytics/")]
    assert len(analytics) == 8
    for path, operation in analytics:
        assert operation.get("security"), path
        assert {"400", "401", "403"} <= set(operation["responses"]), path

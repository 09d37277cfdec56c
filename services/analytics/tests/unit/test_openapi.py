"""Analytics' own OpenAPI facts: its routes name the internal auth and the errors they send. (No 422, typed
responses and the error shape are checked for every service in tests/structure/test_openapi.py.)"""

from typing import Any

from lt_analytics.main import create_app
from lt_analytics.settings import AnalyticsSettings


def _document() -> dict[str, Any]:
    settings = AnalyticsSettings(environment="test", log_json=False)
    document: dict[str, Any] = create_app(settings).openapi()
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


def test_analytics_routes_name_the_internal_auth_and_their_errors() -> None:
    document = _document()
    schemes = document["components"]["securitySchemes"]
    assert "InternalAssertion" in schemes
    analytics = [(p, op) for p, _, op in _operations(document) if p.startswith("/v1/analytics/")]
    assert len(analytics) == 8
    for path, operation in analytics:
        assert operation.get("security"), path
        assert {"400", "401", "403"} <= set(operation["responses"]), path

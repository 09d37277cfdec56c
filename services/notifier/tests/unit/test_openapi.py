"""The notifier's own OpenAPI facts: its admin routes name their auth and errors. (No 422, typed responses and
the error shape are checked for every service in tests/structure/test_openapi.py.)"""

from typing import Any

from fastapi.testclient import TestClient

from lt_notifier.main import create_app
from lt_notifier.settings import NotifierSettings


def _document() -> dict[str, Any]:
    # No `with`: the lifespan (database, broker) is not started; the document needs none of it.
    document: dict[str, Any] = TestClient(create_app(NotifierSettings())).get("/openapi.json").json()
    return document


def test_admin_routes_name_their_auth_and_errors() -> None:
    document = _document()
    assert set(document["components"]["securitySchemes"]) == {"InternalAssertion"}
    admin_ops = [
        op for path, item in document["paths"].items() if path.startswith("/v1/admin") for op in item.values()
    ]
    assert admin_ops
    assert all({"401", "403"} <= set(op["responses"]) for op in admin_ops)

"""The saga's own OpenAPI facts: purchase routes name their auth and errors; the alias keeps its names. (No 422,
typed responses and the error shape are checked for every service in tests/structure/test_openapi.py.)"""

from typing import Any

from fastapi.testclient import TestClient

from lt_saga.main import create_app
from lt_saga.settings import SagaSettings


def _document() -> dict[str, Any]:
    # No `with`: the lifespan (database, broker) is not started; the document needs none of it.
    document: dict[str, Any] = TestClient(create_app(SagaSettings())).get("/openapi.json").json()
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op) for path, item in document["paths"].items() for method, op in item.items()
    ]


def test_purchase_routes_name_their_auth_and_errors() -> None:
    document = _document()
    assert set(document["components"]["securitySchemes"]) == {"InternalAssertion"}
    purchase_ops = [(m, p, op) for m, p, op in _operations(document) if "purchase" in p]
    assert len(purchase_ops) == 6
    assert all("401" in op["responses"] for _, _, op in purchase_ops)
    assert "403" in document["paths"]["/v1/admin/purchases"]["get"]["responses"]
    assert {"400", "409", "503"} <= set(document["paths"]["/v1/purchases"]["post"]["responses"])


def test_the_alias_answers_with_its_original_names() -> None:
    document = _document()
    created = document["paths"]["/api/v1/tokens/purchase"]["post"]["responses"]["202"]
    ref = created["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert {"sagaId", "status", "createdAt"} <= set(document["components"]["schemas"][ref]["properties"])

"""The gateway's own OpenAPI facts: the public key schemes and which routes it documents. (No 422, typed
responses and the error shape are checked for every service in tests/structure/test_openapi.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from lt_gateway.main import create_app
from lt_gateway.settings import GatewaySettings

PUBLIC = {
    ("post", "/v1/chat/completions"),
    ("post", "/v1/completions"),
    ("post", "/v1/embeddings"),
    ("get", "/v1/models"),
    ("get", "/v1/models/{model_id}"),
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    # No lifespan: building the document opens no connection.
    client = TestClient(create_app(GatewaySettings()))
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items()]


def test_public_routes_name_the_api_key_schemes(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["BearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key as `Authorization: Bearer <key>`.",
    }
    assert schemes["ApiKeyAuth"]["in"] == "header" and schemes["ApiKeyAuth"]["name"] == "X-API-Key"
    operations = {(m, p): op for m, p, op in _operations(document)}
    assert operations.keys() >= PUBLIC
    for key in PUBLIC:
        expected: list[dict[str, list[str]]] = [{"BearerAuth": []}, {"ApiKeyAuth": []}]
        if key[1].startswith("/v1/models"):  # a sign-in access token lists the user's models too
            expected.append({"AccessToken": []})
        assert operations[key]["security"] == expected, key
        assert "401" in operations[key]["responses"], key


def test_management_proxy_is_not_documented_here(document: dict[str, Any]) -> None:
    """Its catch-alls are not operations; the owners' routes it forwards are (tests/structure/test_public_openapi)."""
    assert not any("{rest}" in p for p in document["paths"])

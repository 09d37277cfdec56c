"""The gateway's `/openapi.json` describes every public route (issue 12): its own, and each owner's management
routes as the owner documents them, in the schemes a client uses at the gateway (API key; sign-in access token
on management routes), with every schema reference resolved. The owners' part is generated and must not drift."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lt_gateway.api.docs import merge_owners
from lt_gateway.domain.routing import PUBLIC_ROUTES
from lt_gateway.main import create_app
from lt_gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_OWN = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/{model_id}",
    "/v1/auth/login",
    "/v1/auth/refresh",
    "/v1/auth/logout",
    "/.well-known/jwks.json",
}
UNAUTHENTICATED = {"/v1/auth/login", "/v1/auth/refresh", "/v1/auth/logout", "/.well-known/jwks.json"}
OPS = {"/health", "/ready", "/metrics"}
WITH_ACCESS_TOKEN = {t for templates in PUBLIC_ROUTES.values() for t in templates} | {
    "/v1/models",
    "/v1/models/{}",
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app = create_app(GatewaySettings(_env_file=None))
    response = TestClient(app).get("/openapi.json")  # no `with`: the lifespan does not run
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_the_owners_part_is_generated_from_the_owners() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_public_openapi.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_every_public_route_is_documented(document: dict[str, Any]) -> None:
    documented = {_template(p) for p in document["paths"]}
    expected = {t for templates in PUBLIC_ROUTES.values() for t in templates} | {
        _template(p) for p in GATEWAY_OWN
    }
    assert sorted(expected - documented) == []
    operations = sum(
        len(item) for path, item in document["paths"].items() if not path.startswith("/internal")
    )
    assert operations >= 80  # 9 of the gateway's own, 74 of the owners' today


def test_management_routes_take_a_key_or_an_access_token(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert {"BearerAuth", "ApiKeyAuth", "AccessToken"} <= set(schemes)
    assert schemes["AccessToken"]["bearerFormat"] == "JWT"
    wrong = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            names = {name for requirement in operation.get("security", []) for name in requirement}
            if path in UNAUTHENTICATED or path in OPS:
                ok = not names
            elif _template(path) in WITH_ACCESS_TOKEN and (method, path) != (
                "post",
                "/api/v1/tokens/consume",
            ):
                ok = names == {"BearerAuth", "ApiKeyAuth", "AccessToken"}
            elif path.startswith("/internal/"):
                ok = names == {"InternalAssertion"}
            else:  # the governed endpoints and consume: API keys only
                ok = names == {"BearerAuth", "ApiKeyAuth"}
            if not ok:
                wrong.append(f"{method.upper()} {path}: {sorted(names)}")
    assert wrong == []


def test_every_schema_reference_resolves(document: dict[str, Any]) -> None:
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(document)))
    assert refs
    assert sorted(refs - set(document["components"]["schemas"])) == []


def test_a_schema_name_two_documents_define_differently_is_renamed() -> None:
    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    doc: dict[str, Any] = {
        "paths": {"/a": {"get": {"x": ref("View")}}},
        "components": {"schemas": {"View": {}}},
    }
    owners = {
        "quota": {
            "paths": {"/b": {"get": {"x": ref("View"), "y": ref("Same")}}},
            "schemas": {"View": {"type": "object"}, "Same": {}},
        },
        "saga": {"paths": {"/c": {"get": {"x": ref("Same")}}}, "schemas": {"Same": {}}},
    }
    merged = merge_owners(doc, owners)
    assert merged["paths"]["/a"]["get"]["x"] == ref("View")
    assert merged["paths"]["/b"]["get"] == {"x": ref("quota_View"), "y": ref("Same")}
    assert merged["paths"]["/c"]["get"]["x"] == ref("Same")
    assert merged["components"]["schemas"]["quota_View"] == {"type": "object"}
    assert merged["components"]["schemas"]["View"] == {}

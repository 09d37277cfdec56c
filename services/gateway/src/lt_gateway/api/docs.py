"""The gateway's OpenAPI document (`/openapi.json`, `/docs`): its own routes and every public management route,
merged from the owners' documents, with the auth schemes a client uses here.

The owners' part is generated from their apps by `scripts/gen_public_openapi.py` (`make docs`; a test fails
when it drifts) into `lt_gateway/data/owners_openapi.json`, because the gateway may not import the owners. A
schema name two documents define differently is renamed `<owner>_<name>` in the owner's part.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from fastapi import FastAPI

__all__ = ["ACCESS_TOKEN_SCHEME", "install_public_openapi", "merge_owners"]

ACCESS_TOKEN_SCHEME: dict[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": (
        "A sign-in access token from `POST /v1/auth/login` as `Authorization: Bearer <token>` (an EdDSA JWT "
        "with a `kid`; keys at `/.well-known/jwks.json`). Management routes only: chat, completions and "
        "embeddings take an API key."
    ),
}


def _owners() -> dict[str, Any]:
    text = (resources.files("lt_gateway") / "data" / "owners_openapi.json").read_text(encoding="utf-8")
    owners: dict[str, Any] = json.loads(text)
    return owners


def _renamed(part: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    if not names:
        return part
    pattern = re.compile(r'"#/components/schemas/(' + "|".join(map(re.escape, names)) + r')"')
    text = pattern.sub(lambda m: f'"#/components/schemas/{names[m.group(1)]}"', json.dumps(part))
    out: dict[str, Any] = json.loads(text)
    out["schemas"] = {names.get(k, k): v for k, v in out["schemas"].items()}
    return out


def merge_owners(doc: dict[str, Any], owners: dict[str, Any]) -> dict[str, Any]:
    """`doc` with every owner's operations and schemas added (in place), and the access-token scheme."""
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    for owner, documented in sorted(owners.items()):
        clashes = {
            name: f"{owner}_{name}"
            for name, definition in documented["schemas"].items()
            if name in schemas and schemas[name] != definition
        }
        part = _renamed(documented, clashes)
        for path, item in part["paths"].items():
            doc["paths"].setdefault(path, {}).update(item)
        for name, definition in part["schemas"].items():
            schemas.setdefault(name, definition)
    doc["components"].setdefault("securitySchemes", {})["AccessToken"] = ACCESS_TOKEN_SCHEME
    return doc


def install_public_openapi(app: FastAPI) -> None:
    """Serve the gateway's own document with the owners' public operations merged in (built once)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if not getattr(app.state, "openapi_merged", False):
            app.openapi_schema = merge_owners(build(), _owners())
            app.state.openapi_merged = True
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

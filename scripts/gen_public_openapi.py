"""Generate the owners' part of the gateway's OpenAPI document: every public management route, as its owner
documents it, in the auth schemes a client uses at the gateway.

    python scripts/gen_public_openapi.py           # print it
    python scripts/gen_public_openapi.py --write   # rewrite lt_gateway/data/owners_openapi.json (`make docs`)
    python scripts/gen_public_openapi.py --check   # exit 1 when the file has drifted

Each owner's app is built without its lifespan (no infrastructure) and asked for its document; only the
operations on one of its public routes (`lt_gateway.domain.routing.PUBLIC_ROUTES`) are kept, with the schemas
they reach. The owners authenticate the gateway's internal assertion; at the gateway the same operations take
an API key or a sign-in access token, so their `security` is rewritten to the gateway's schemes. The gateway
merges the file into its own document at run time (`lt_gateway.api.docs`), since it may not import the owners.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from lt_gateway.domain.routing import PUBLIC_ROUTES

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "services" / "gateway" / "src" / "lt_gateway" / "data" / "owners_openapi.json"

# owner in PUBLIC_ROUTES -> (package, settings class)
OWNERS = {
    "quota": ("lt_quota", "QuotaSettings"),
    "saga": ("lt_saga", "SagaSettings"),
    "analytics": ("lt_analytics", "AnalyticsSettings"),
    "notifier": ("lt_notifier", "NotifierSettings"),
}
# Operations that spend: an API key only (a sign-in access token is refused there, as on chat).
KEY_ONLY = {("post", "/api/v1/tokens/consume")}
KEY_SCHEMES: list[dict[str, list[str]]] = [{"BearerAuth": []}, {"ApiKeyAuth": []}]
ANY_SCHEME: list[dict[str, list[str]]] = [*KEY_SCHEMES, {"AccessToken": []}]
_REF = re.compile(r"#/components/schemas/([A-Za-z0-9_.\-]+)")


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def _refs(node: Any) -> set[str]:
    return set(_REF.findall(json.dumps(node)))


def owner_part(owner: str) -> dict[str, Any]:
    """The owner's public operations (security rewritten) and every schema they reach."""
    package, settings_class = OWNERS[owner]
    settings = getattr(importlib.import_module(f"{package}.settings"), settings_class)(_env_file=None)
    doc: dict[str, Any] = importlib.import_module(f"{package}.main").create_app(settings).openapi()
    public = set(PUBLIC_ROUTES[owner])
    paths: dict[str, Any] = {}
    for path, item in sorted(doc["paths"].items()):
        if _template(path) not in public:
            continue
        for method, documented in item.items():
            operation = json.loads(json.dumps(documented))
            operation["security"] = KEY_SCHEMES if (method, path) in KEY_ONLY else ANY_SCHEME
            operation.setdefault("tags", [owner])
            paths.setdefault(path, {})[method] = operation
    # Aliases an owner keeps out of its own document (`/api/v1/analytics/usage` is `/v1/analytics/usage`).
    for template in sorted(public - {_template(p) for p in paths}):
        original = template.replace("/api/v1/", "/v1/", 1)
        if original == template or original not in paths:
            raise SystemExit(f"{owner} documents no operation for its public route {template}")
        for method, operation in paths[original].items():
            alias = json.loads(json.dumps(operation))
            alias["operationId"] = f"{operation.get('operationId', method)}_alias"
            alias["description"] = f"Alias of `{method.upper()} {original}`. " + operation.get(
                "description", ""
            )
            paths.setdefault(template, {})[method] = alias
    schemas: dict[str, Any] = doc.get("components", {}).get("schemas", {})
    wanted, todo = set(), _refs(paths)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo |= _refs(schemas[name])
    return {"paths": paths, "schemas": {name: schemas[name] for name in sorted(wanted)}}


def generate() -> str:
    parts = {owner: owner_part(owner) for owner in OWNERS}
    return json.dumps(parts, indent=1, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = generate()
    if args.write:
        TARGET.write_text(text)
    elif args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            sys.stderr.write(f"{TARGET.relative_to(ROOT)} is stale: run `make docs`\n")
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

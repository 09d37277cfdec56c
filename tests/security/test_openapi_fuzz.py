"""Property-based fuzzing (schemathesis) of every service's OpenAPI document against the live stack: each owner
directly (with an assertion signed by the stack's key for the admin of a fresh org, so the cases reach the
routes) and through the gateway (the owners' public routes and the gateway's own, with that admin's key).
Valid and invalid inputs alike must never get a server error or a stack trace in the body.

Bounded for CI: `LT_FUZZ_EXAMPLES` cases per operation and generation mode (default 4); the figures are
printed (`pytest -s`) and the failures listed in the assertion.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import pkgutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from leaky_common.auth import AssertionSigner, Principal

pytestmark = pytest.mark.e2e


def _import_schemathesis_eagerly() -> None:
    """Import now, at collection, every schemathesis module the run would import lazily. pytest rewrites
    schemathesis' modules (it is a pytest plugin), and CPython 3.11.7's AST constructor can raise a spurious
    `SystemError: AST constructor recursion depth mismatch` (cpython#106905) when that rewrite runs deep inside a
    busy test; at collection the stack is shallow and nothing else runs."""
    for name in ("specs.openapi", "generation", "transport", "openapi", "core", "engine", "python"):
        package = importlib.import_module(f"schemathesis.{name}")
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)


_import_schemathesis_eagerly()

EXAMPLES = int(os.environ.get("LT_FUZZ_EXAMPLES", "4"))
OWNERS = {"quota": "quota", "saga": "saga", "analytics": "analytics", "notifier": "notifier"}
OPS = ("/health", "/ready", "/metrics")
TRACE_MARKS = ("Traceback (most recent call last)", 'File "/', "site-packages")
# Direct cases carry a valid assertion: at most this share may still be refused (401, e.g. a route that checks
# the API key itself), or the direct run would test authentication rather than the routes.
MAX_DIRECT_401 = 0.2


@dataclass
class Tally:
    operations: int = 0
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    sample_401: str = ""


def _fuzz_operation(
    operation: Any, base_url: str, headers: Any, session: requests.Session, tally: Tally
) -> None:
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
    )

    @settings(
        max_examples=EXAMPLES * 2,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        ours = headers(case.path)
        # Schemathesis fills the documented auth header itself (with junk); ours replace it.
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() not in {h.lower() for h in ours}
        }
        try:
            response = case.call(base_url=base_url, headers=ours, session=session, timeout=30)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError):
            return  # a request no HTTP client would send: nothing reached the server
        except requests.exceptions.ConnectionError as exc:
            tally.failures.append(f"{case.method} {case.formatted_path}: connection failed ({exc})")
            return
        tally.cases += 1
        tally.statuses[response.status_code] += 1
        if response.status_code == 401 and not tally.sample_401:
            tally.sample_401 = f"{case.method} {case.path}: {response.text[:200]}"
        text = response.text
        if response.status_code >= 500 or any(mark in text for mark in TRACE_MARKS):
            tally.failures.append(
                f"{case.method} {case.formatted_path} -> {response.status_code}: {text[:200]} (body {str(case.body)[:200]})"
            )

    run()
    tally.operations += 1


def _without_security(document: dict[str, Any]) -> dict[str, Any]:
    """The document without its security schemes: the harness sends the credentials itself. Left in, a negative
    case that mutates the auth header (a header parameter to schemathesis) is sent WITHOUT it, whatever headers
    the call is given, so it only ever tests authentication."""
    stripped = copy.deepcopy(document)
    stripped.pop("security", None)
    stripped.get("components", {}).pop("securitySchemes", None)
    for item in stripped.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict):
                operation.pop("security", None)
    return stripped


def _fuzz(document: dict[str, Any], base_url: str, headers: Any, tally: Tally, *, internal: bool) -> None:
    schema = schemathesis.openapi.from_dict(_without_security(document))
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            if operation.path in OPS or (operation.path.startswith("/internal/") and not internal):
                continue
            _fuzz_operation(operation, base_url, headers, session, tally)


def _fresh_org_admin(gateway: str, platform_key: str) -> dict[str, Any]:
    body = {"name": f"fuzz-{uuid.uuid4().hex[:6]}", "admin_email": f"fuzz-{uuid.uuid4().hex[:6]}@example.com"}
    resp = httpx.post(
        f"{gateway}/v1/admin/orgs", json=body, headers={"Authorization": f"Bearer {platform_key}"}
    )
    assert resp.status_code == 201, resp.text
    admin: dict[str, Any] = resp.json()["admin"]
    return admin


@pytest.mark.timeout(900)
def test_every_openapi_operation_survives_fuzzing(stack: Any) -> None:
    if stack.run_dir is None:
        pytest.skip("needs the stack's ports and signing key (a stack started by the tests)")
    ports = json.loads((stack.run_dir / "stack.json").read_text())["ports"]
    signer = AssertionSigner(
        (stack.run_dir / "internal_signing_key").read_text().strip(), "dev-1", issuer="fuzz", ttl_s=60
    )
    admin = _fresh_org_admin(stack.gateway_url, stack.admin_key)
    principal = Principal.model_validate_json(
        httpx.post(
            f"http://127.0.0.1:{ports['quota']}/internal/authenticate",
            json={"api_key": admin["api_key"]},
            headers=signer.headers("quota"),
        ).text
    )
    key_headers = {"Authorization": f"Bearer {admin['api_key']}"}
    figures: dict[str, Tally] = {}
    owners_paths: set[str] = set()
    for owner, audience in OWNERS.items():
        url = f"http://127.0.0.1:{ports[owner]}"
        document = httpx.get(f"{url}/openapi.json").json()
        owners_paths |= set(document["paths"])
        direct = figures.setdefault(f"{owner} direct", Tally())
        _fuzz(
            document,
            url,
            # Called with the case's path: the audience is bound here (it once took the path's place). Internal
            # routes take a caller assertion (no principal), user routes the admin's.
            lambda path, a=audience: signer.headers(a, None if path.startswith("/internal/") else principal),
            direct,
            internal=owner == "quota",
        )
        via = figures.setdefault(f"{owner} via gateway", Tally())
        _fuzz(document, stack.gateway_url, lambda _: key_headers, via, internal=False)
    gateway_doc = httpx.get(f"{stack.gateway_url}/openapi.json").json()
    # The gateway's document also lists the owners' public routes: those were fuzzed through it just above.
    gateway_doc["paths"] = {p: item for p, item in gateway_doc["paths"].items() if p not in owners_paths}
    _fuzz(
        gateway_doc,
        stack.gateway_url,
        lambda _: key_headers,
        figures.setdefault("gateway", Tally()),
        internal=False,
    )

    for name, tally in figures.items():
        print(
            f"fuzz {name}: {tally.operations} operations, {tally.cases} cases, {len(tally.failures)} failures, "
            f"statuses {dict(sorted(tally.statuses.items()))}; a 401: {tally.sample_401}"
        )
    refused = {
        name: tally.statuses[401] / tally.cases
        for name, tally in figures.items()
        if name.endswith(" direct") and tally.cases
    }
    assert all(share < MAX_DIRECT_401 for share in refused.values()), refused
    assert all(figures[f"{owner} direct"].cases > 0 for owner in OWNERS)
    total = [f"{name}: {failure}" for name, tally in figures.items() for failure in tally.failures]
    assert total == []

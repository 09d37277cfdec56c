"""Addresses relayed by the web console count only with the gateway's own proof: the console's users do not
share one per-address budget, and nobody else can pick the address they are counted under."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lt_gateway.api.http import client_address
from lt_gateway.api.limits import ClientLimits
from lt_gateway.domain.client_address import ADDRESS_HEADER, PROOF_HEADER, AddressProof
from lt_gateway.main import create_app
from lt_gateway.settings import GatewaySettings

PROOF = AddressProof.from_secrets(["a secret every gateway shares"])


def test_a_proof_holds_for_its_address_and_window_only() -> None:
    now = 1_000_000.0
    proof = PROOF.sign("203.0.113.7", now)
    assert PROOF.verified("203.0.113.7", proof, now) == "203.0.113.7"
    assert PROOF.verified("203.0.113.7", proof, now + 300) == "203.0.113.7"  # the next window still
    assert PROOF.verified("203.0.113.7", proof, now + 900) is None  # stale
    assert PROOF.verified("203.0.113.8", proof, now) is None  # another address
    altered = proof[:-1] + ("1" if proof.endswith("0") else "0")
    assert PROOF.verified("203.0.113.7", altered, now) is None
    assert PROOF.verified("203.0.113.7", None, now) is None
    # Another gateway secret, or none (a random key), does not honour it.
    assert AddressProof.from_secrets(["another secret"]).verified("203.0.113.7", proof, now) is None
    assert AddressProof.from_secrets([None]).verified("203.0.113.7", proof, now) is None
    # Instances sharing the secret agree.
    assert AddressProof.from_secrets([None, "a secret every gateway shares"]).verified(
        "203.0.113.7", proof, now
    )


def test_only_plain_ip_addresses_are_relayed() -> None:
    now = 1_000_000.0
    for bad in ("unknown", "203.0.113.7, 10.0.0.1", "::FFFF:1.2.3.4", "203.0.113.7\n", "x" * 80):
        assert PROOF.verified(bad, PROOF.sign(bad, now), now) is None, bad


def _limited(rate: int, proof: AddressProof = PROOF, peer: str = "testclient") -> TestClient:
    async def where(request: Request) -> JSONResponse:
        return JSONResponse({"address": client_address(request)})

    app = Starlette(routes=[Route("/v1/{path:path}", where)])
    return TestClient(
        ClientLimits(app, management_rate_per_min=rate, unauthenticated_rate_per_min=0, proof=PROOF)
    )


def _relayed(address: str, proof: str | None = None) -> dict[str, str]:
    return {ADDRESS_HEADER: address, PROOF_HEADER: proof or PROOF.sign(address, time.time())}


def test_each_relayed_address_has_its_own_budget_and_a_forged_one_counts_as_the_peer() -> None:
    client = _limited(rate=2)
    assert client.get("/v1/x", headers=_relayed("198.51.100.1")).json() == {"address": "198.51.100.1"}
    assert client.get("/v1/x", headers=_relayed("198.51.100.1")).status_code == 200
    assert client.get("/v1/x", headers=_relayed("198.51.100.1")).status_code == 429
    # Another console user is not held back by the first one's use.
    assert client.get("/v1/x", headers=_relayed("198.51.100.2")).status_code == 200
    # A forged proof: the call counts against the peer itself (the test client, "testclient").
    forged = _relayed("198.51.100.3", "0" * 64)
    assert client.get("/v1/x", headers=forged).json() == {"address": "testclient"}
    assert client.get("/v1/x", headers={ADDRESS_HEADER: "198.51.100.3"}).json() == {"address": "testclient"}


def test_the_console_route_hands_the_console_a_valid_proof_of_the_callers_address() -> None:
    sent: list[dict[str, str]] = []

    class Console:
        async def send_console(
            self, method: str, path: str, query: str, body: bytes, headers: dict[str, str]
        ) -> tuple[int, bytes, list[tuple[str, str]]]:
            sent.append(headers)
            return 200, b"ok", [("content-type", "text/plain")]

    app = create_app(GatewaySettings(_env_file=None, fingerprint_secret="a secret every gateway shares"))
    app.state.console = Console()
    client = TestClient(app, client=("203.0.113.50", 40000))
    # A caller's own relayed headers are not trusted (no valid proof) and not passed on as they are.
    r = client.get("/console/overview", headers={ADDRESS_HEADER: "192.0.2.9", PROOF_HEADER: "f" * 64})
    assert r.status_code == 200
    (headers,) = sent
    assert headers[ADDRESS_HEADER] == "203.0.113.50"
    proof: Any = app.state.address_proof
    assert proof.verified("203.0.113.50", headers[PROOF_HEADER], time.time()) == "203.0.113.50"
    # The console sends them back with its API calls: counted as the caller, wherever the console runs.
    relayed = {ADDRESS_HEADER: "203.0.113.50", PROOF_HEADER: headers[PROOF_HEADER]}
    where = _limited(rate=5, proof=proof, peer="10.0.0.2")  # the console's own address
    assert where.get("/v1/x", headers=relayed).json() == {"address": "203.0.113.50"}

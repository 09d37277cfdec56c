"""The web console (`/console/...`): forwarded to the console service, which serves its pages from this
address and calls the public API like any client. The path is checked first (plain segments only), only the
headers a page needs travel either way, and bodies are small forms."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from leaky_common.errors import PayloadTooLarge, ServiceError, error_response
from lt_gateway.adapters.management_client import ManagementClient
from lt_gateway.api.http import client_address, request_id_from
from lt_gateway.domain.client_address import ADDRESS_HEADER, PROOF_HEADER, AddressProof
from lt_gateway.domain.console_path import CONSOLE_PREFIX, console_target

router = APIRouter(include_in_schema=False)

_REQUEST_HEADERS = (
    "cookie", "content-type", "accept", "accept-language", "hx-request", "hx-target", "hx-trigger",
    "hx-current-url", "hx-boosted", "x-csrf-token",
)  # fmt: skip
_MAX_FORM_BYTES = 64 * 1024


async def _small_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > _MAX_FORM_BYTES):
        raise PayloadTooLarge("console forms are small", code="body_too_large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise PayloadTooLarge("console forms are small", code="body_too_large")
    return body


@router.get(CONSOLE_PREFIX)
async def console_root() -> Response:
    """`/console` -> `/console/`."""
    return RedirectResponse(CONSOLE_PREFIX + "/", status_code=308)


@router.api_route(CONSOLE_PREFIX + "/{rest:path}", methods=["GET", "POST"])
async def console(rest: str, request: Request) -> Response:
    """One console page, fragment, form post or static file."""
    request_id = request_id_from(request)
    client: ManagementClient = request.app.state.console
    raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    try:
        path, query = console_target(raw_path, request.scope["path"], request.scope.get("query_string", b""))
        headers = {h: request.headers[h] for h in _REQUEST_HEADERS if h in request.headers}
        headers["x-request-id"] = request_id
        # The caller's address, proven, for the console to send back on the API calls it makes for this page.
        address = client_address(request)
        proof: AddressProof = request.app.state.address_proof
        headers[ADDRESS_HEADER] = address
        headers[PROOF_HEADER] = proof.sign(address, time.time())
        body = await _small_body(request) if request.method == "POST" else b""
        status, answer, out = await client.send_console(request.method, path, query, body, headers)
    except ServiceError as exc:
        return error_response(exc.status, exc.body(), {"x-request-id": request_id, **exc.headers})
    response = Response(answer, status_code=status)
    for key, value in out:
        response.headers.append(key, value)
    response.headers["x-request-id"] = request_id
    return response

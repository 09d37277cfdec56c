"""What the gateway reads from every public request's headers: the API key, the request id, governance."""

from __future__ import annotations

from uuid import uuid4

from starlette.requests import Request

from leaky_common.auth import looks_like_access_token
from leaky_common.errors import Unauthorized
from lt_gateway.domain.requests import GovernanceHeaders, governance


def api_key_from(request: Request) -> str:
    """The API key from `Authorization: Bearer` or `X-API-Key`; 401 if neither."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    raise Unauthorized(
        "Missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'.", code="missing_api_key"
    )


def governed_key_from(request: Request) -> str:
    """The API key of a governed request (chat, completions, embeddings): a sign-in access token is refused
    with 401 `api_key_required`, since spending is tied to a key (its caps, models and rate limits)."""
    key = api_key_from(request)
    if looks_like_access_token(key):
        raise Unauthorized(
            "chat, completions and embeddings take an API key; sign-in access tokens are for management routes",
            code="api_key_required",
        )
    return key


def request_id_from(request: Request) -> str:
    """The client's `X-Request-ID` if sane, else a new one."""
    rid = request.headers.get("x-request-id")
    if rid and len(rid) <= 128 and rid.isprintable():
        return rid
    return f"req_{uuid4().hex}"


def governance_headers(request: Request) -> GovernanceHeaders:
    """`X-Session-ID` (or `?session_id=`), `X-Privacy-Mode`, `X-Project-Priority`, validated."""
    headers = request.headers
    return governance(
        headers.get("x-session-id") or request.query_params.get("session_id"),
        headers.get("x-privacy-mode"),
        headers.get("x-project-priority"),
    )


def client_address(request: Request) -> str:
    """The caller's address as the per-address limits counted it (`api.limits`), at most 64 characters."""
    address = request.scope.get("state", {}).get("client_address")
    if not isinstance(address, str):
        address = request.client.host if request.client else "unknown"
    return address[:64]

"""Sign-in (`/v1/auth/login`, `/v1/auth/refresh`, `/v1/auth/logout`) and the keys access tokens are signed with
(`/.well-known/jwks.json`): quota owns users, passwords and sign-in sessions, and answers; the gateway checks
the body, adds the client's address (login attempts are counted per address) and passes the answer on.

None of these takes a credential: the body is one. Answers are never cached (RFC 6749, section 5.1), except
the public key set.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from leaky_common.api import error_responses
from leaky_common.contracts import JwkSet, LoginBody, LoginRequest, RefreshBody, TokenResponse
from lt_gateway.api.deps import Quota
from lt_gateway.api.http import client_address, request_id_from
from lt_gateway.usecases.completion.flow import JSON

__all__ = ["router"]

router = APIRouter(tags=["auth"])

_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


def _answer(request: Request, answer: tuple[int, bytes, dict[str, str]], cache: dict[str, str]) -> Response:
    status, body, headers = answer
    extra = {**headers, **cache, "x-request-id": request_id_from(request)}
    if status == 204:
        return Response(status_code=204, headers=extra)
    return Response(body, status_code=status, media_type=JSON, headers=extra)


@router.post("/v1/auth/login", response_model=TokenResponse, responses=error_responses(400, 401, 429, 503))
async def login(body: LoginBody, request: Request, quota: Quota) -> Response:
    """Sign in with email and password: a short-lived access token (an EdDSA JWT, `Authorization: Bearer` on
    every management route) and a single-use refresh token. Every failure is the same 401
    (`invalid_credentials`); too many attempts for the account or from the address are 429 with Retry-After."""
    address = client_address(request)
    payload = LoginRequest(email=body.email, password=body.password, client_address=address)
    answer = await quota.sign_in("/internal/auth/login", payload.model_dump_json().encode())
    return _answer(request, answer, _NO_STORE)


@router.post("/v1/auth/refresh", response_model=TokenResponse, responses=error_responses(400, 401, 503))
async def refresh(body: RefreshBody, request: Request, quota: Quota) -> Response:
    """Exchange a refresh token for a new pair. Each refresh token works once: presenting a used one again
    ends the whole sign-in session (401 `refresh_token_reused`), whoever holds its other tokens."""
    answer = await quota.sign_in("/internal/auth/refresh", body.model_dump_json().encode())
    return _answer(request, answer, _NO_STORE)


@router.post("/v1/auth/logout", status_code=204, responses=error_responses(400))
async def logout(body: RefreshBody, request: Request, quota: Quota) -> Response:
    """End the sign-in session of this refresh token: its access tokens stop working at once. 204 whether or
    not the token was known."""
    answer = await quota.sign_in("/internal/auth/logout", body.model_dump_json().encode())
    return _answer(request, answer, _NO_STORE)


@router.get("/.well-known/jwks.json", response_model=JwkSet, responses=error_responses(503))
async def jwks(request: Request, quota: Quota) -> Response:
    """The public keys (JWK Set, Ed25519) access tokens are verified with: the current signing key and the
    ones still accepted after a rotation."""
    answer = await quota.sign_in("/internal/auth/jwks", b"")
    return _answer(request, answer, {"cache-control": "public, max-age=300"})

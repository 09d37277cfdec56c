"""Internal routes: only the gateway (or another internal service) calls them, with a signed caller
assertion (`X-LT-Assertion`)."""

from __future__ import annotations

from fastapi import APIRouter, status

from leaky_common.api import InternalCaller, error_responses
from leaky_common.auth import Principal
from leaky_common.contracts import (
    AccessTokenRequest,
    AdmitRequest,
    AdmitResponse,
    AuthenticateRequest,
    JwkSet,
    LoginRequest,
    ProbeResponse,
    RefreshBody,
    ReleaseRequest,
    ReleaseResponse,
    TokenResponse,
)
from lt_quota.api.deps import AdmissionDep, SettlementDep, SignInDep
from lt_quota.usecases.signin import TokenPair

__all__ = ["router"]

router = APIRouter(
    prefix="/internal", tags=["internal"], dependencies=[InternalCaller], responses=error_responses(401)
)


@router.post("/authenticate")
async def authenticate(body: AuthenticateRequest, admission: AdmissionDep) -> Principal:
    return await admission.authenticate(body.api_key)


@router.post("/admit", responses=error_responses(400, 402, 403, 429))
async def admit(body: AdmitRequest, admission: AdmissionDep) -> AdmitResponse:
    """Authenticate, rate-limit and reserve in one call; the releases the call carries are applied first (in
    the same Redis round trip), whatever the admission's answer."""
    return await admission.admit(body)


@router.post("/probe", responses=error_responses(503))
async def probe(admission: AdmissionDep) -> ProbeResponse:
    """The gateway's deep readiness probe: could quota admit now? Touches no key and records nothing."""
    return await admission.probe()


@router.post("/release", responses=error_responses(400))
async def release(body: ReleaseRequest, settlement: SettlementDep) -> ReleaseResponse:
    """Shrink a reservation to what its answer used (the gateway, before the client has the whole answer)."""
    released = await settlement.release(body.reservation_id, body.total_tokens, body.cost_usd_micros)
    return ReleaseResponse(released=released)


# --- sign-in (the gateway's `/v1/auth/*` and `/.well-known/jwks.json`; docs/security.md, "Sign-in") --------


def _token_response(pair: TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token,
        token_type=pair.token_type,
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
    )


@router.post("/authenticate-token")
async def authenticate_token(body: AccessTokenRequest, signin: SignInDep) -> Principal:
    """Resolve a sign-in access token (JWT) to its principal, as `/authenticate` does an API key."""
    return await signin.authenticate(body.access_token)


@router.post("/auth/login", responses=error_responses(400, 429, 503))
async def login(body: LoginRequest, signin: SignInDep) -> TokenResponse:
    return _token_response(await signin.login(body.email, body.password, body.client_address))


@router.post("/auth/refresh", responses=error_responses(400, 503))
async def refresh(body: RefreshBody, signin: SignInDep) -> TokenResponse:
    return _token_response(await signin.refresh(body.refresh_token))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(400))
async def logout(body: RefreshBody, signin: SignInDep) -> None:
    await signin.logout(body.refresh_token)


@router.post("/auth/jwks")
async def jwks(signin: SignInDep) -> JwkSet:
    """The public keys access tokens are verified with (JWK Set), published by the gateway."""
    return JwkSet.model_validate(signin.tokens.jwks())

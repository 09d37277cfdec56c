"""Dependencies of the FastAPI routes: the public auth schemes (for the docs) and the app's collaborators.

The governed endpoints take none of these: they read their key themselves (`api.http.api_key_from`), so
their per-request work stays what it was; their OpenAPI operations name the same schemes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.quota_client import QuotaClient
from lt_gateway.usecases.management import ManagementProxy
from lt_gateway.usecases.probe import Probe

_bearer = HTTPBearer(
    scheme_name="BearerAuth",
    description="An API key as `Authorization: Bearer <key>`.",
    auto_error=False,
)
_api_key = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKeyAuth",
    description="The API key as `X-API-Key: <key>` (either header will do).",
    auto_error=False,
)
# Documentation only: `api_key_from` reads the key (the same headers) and answers 401 without one.
PUBLIC_AUTH = [Security(_bearer), Security(_api_key)]
# The same requirement for operations that declare it in `openapi_extra` (either scheme).
PUBLIC_SECURITY: list[dict[str, Any]] = [{"BearerAuth": []}, {"ApiKeyAuth": []}]


def _models(request: Request) -> ModelTable:
    models: ModelTable = request.app.state.models
    return models


def _quota(request: Request) -> QuotaClient:
    quota: QuotaClient = request.app.state.quota
    return quota


def _management(request: Request) -> ManagementProxy:
    proxy: ManagementProxy = request.app.state.management
    return proxy


def _probe(request: Request) -> Probe:
    probe: Probe = request.app.state.probe
    return probe


Models = Annotated[ModelTable, Depends(_models)]
Quota = Annotated[QuotaClient, Depends(_quota)]
Management = Annotated[ManagementProxy, Depends(_management)]
ProbeDep = Annotated[Probe, Depends(_probe)]

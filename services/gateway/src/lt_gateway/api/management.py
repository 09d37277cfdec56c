"""Management routes (`/v1/...`, `/api/v1/...` owned by quota, saga, analytics and notifier): forwarded.

Matched after every gateway route; each owner documents its own API.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from leaky_common.errors import NotFound, ServiceError, error_response
from lt_gateway.adapters.quota_client import Denial
from lt_gateway.api.deps import Management
from lt_gateway.api.http import api_key_from, request_id_from
from lt_gateway.domain.routing import FORWARD_REQUEST_HEADERS, normal_segments, owner_of
from lt_gateway.usecases.completion.flow import JSON
from lt_gateway.usecases.management import ManagementProxy, ManagementRequest

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

router = APIRouter(include_in_schema=False)


async def forward(request: Request, proxy: ManagementProxy) -> Response:
    """Authenticate and forward one request to the service that owns its path."""
    request_id = request_id_from(request)
    raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    try:
        owner = owner_of(normal_segments(raw_path, request.scope["path"]))
        if owner is None:
            raise NotFound(f"no route for {request.method} {request.scope['path']}", code="unknown_url")
        headers = {h: request.headers[h] for h in FORWARD_REQUEST_HEADERS if h in request.headers}
        # The path goes on as the client encoded it (checked above), so the owner decodes the same segments.
        req = ManagementRequest(
            owner, request.method, raw_path.decode("latin-1"), request.query_params.multi_items(), headers,
            request.body,
        )  # fmt: skip
        answer = await proxy.forward(api_key_from(request), request_id, req)
    except ServiceError as exc:
        return error_response(exc.status, exc.body(), {"x-request-id": request_id, **exc.headers})
    if isinstance(answer, Denial):
        return Response(
            answer.body, status_code=answer.status, media_type=JSON, headers={"x-request-id": request_id}
        )
    return Response(
        answer.body, status_code=answer.status, headers={**answer.headers, "x-request-id": request_id}
    )


@router.api_route("/v1/{rest:path}", methods=_METHODS)
async def management_v1(rest: str, request: Request, proxy: Management) -> Response:
    """`/v1/admin/...`, `/v1/users/...`, `/v1/purchases`, `/v1/analytics/...` and friends."""
    return await forward(request, proxy)


@router.api_route("/api/v1/{rest:path}", methods=_METHODS)
async def management_api_v1(rest: str, request: Request, proxy: Management) -> Response:
    """`/api/v1/tokens/...` and `/api/v1/analytics/...`."""
    return await forward(request, proxy)

"""The public OpenAI-compatible routes: the governed endpoints (documented here, served by `api.chat`) and
the model list."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from leaky_common.api import error_responses
from leaky_common.errors import NotFound
from lt_gateway.adapters.quota_client import Denial
from lt_gateway.api.chat import ChatHandler
from lt_gateway.api.deps import PUBLIC_AUTH, PUBLIC_SECURITY, Models, Quota
from lt_gateway.api.http import api_key_from
from lt_gateway.api.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    ModelCard,
    ModelList,
    TextCompletion,
    request_body,
)
from lt_gateway.domain.models import may_use
from lt_gateway.usecases.completion.flow import JSON

# Every status the governed endpoints answer besides 200 (quota's refusals are passed on as they come).
_GOVERNED_ERRORS = error_responses(400, 401, 402, 403, 404, 413, 429, 502, 503, 504)
_STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer; with `stream: true`, server-sent events ending in `data: [DONE]`",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def _governed(body: type[BaseModel]) -> dict[str, Any]:
    return {**request_body(body), "security": PUBLIC_SECURITY}


def governed_router(chat: ChatHandler) -> APIRouter:
    """The three governed endpoints (chat is served by HotRoute before routing; its route is for the docs)."""
    router = APIRouter(tags=["openai"], responses=_GOVERNED_ERRORS)

    @router.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        responses=_STREAMED,
        openapi_extra=_governed(ChatCompletionRequest),
    )
    async def chat_completions(request: Request) -> Response:
        return await chat.handle(request)

    @router.post(
        "/v1/completions",
        response_model=TextCompletion,
        responses=_STREAMED,
        openapi_extra=_governed(CompletionRequest),
    )
    async def completions(request: Request) -> Response:
        return await chat.handle_completion(request)

    @router.post("/v1/embeddings", response_model=EmbeddingList, openapi_extra=_governed(EmbeddingRequest))
    async def embeddings(request: Request) -> Response:
        return await chat.handle_embedding(request)

    return router


# FastAPI appends an operation's `security` to the one its dependencies make (the API key schemes).
_ALSO_ACCESS_TOKEN: dict[str, Any] = {"security": [{"AccessToken": []}]}

models_router = APIRouter(tags=["openai"], dependencies=PUBLIC_AUTH, responses=error_responses(401, 403, 503))


def _denied(denial: Denial) -> Response:
    return Response(denial.body, status_code=denial.status, media_type=JSON)


@models_router.get("/v1/models", response_model=ModelList, openapi_extra=_ALSO_ACCESS_TOKEN)
async def list_models(request: Request, models: Models, quota: Quota) -> Response:
    """The models this key (or, with an access token, this user) may call."""
    principal = await quota.authenticate(api_key_from(request))
    if isinstance(principal, Denial):
        return _denied(principal)
    cards = ModelList(data=[ModelCard.of(m) for m in models.all() if may_use(principal, m)])
    return Response(orjson.dumps(cards.model_dump()), media_type=JSON)


@models_router.get(
    "/v1/models/{model_id:path}",
    response_model=ModelCard,
    responses=error_responses(404),
    openapi_extra=_ALSO_ACCESS_TOKEN,
)
async def get_model(model_id: str, request: Request, models: Models, quota: Quota) -> Response:
    """One model, if this key may call it (404 otherwise, as if it did not exist)."""
    principal = await quota.authenticate(api_key_from(request))
    if isinstance(principal, Denial):
        return _denied(principal)
    spec = models.get(model_id)
    if spec is None or not may_use(principal, spec):
        raise NotFound(f"The model '{model_id}' does not exist", param="model", code="model_not_found")
    return Response(orjson.dumps(ModelCard.of(spec).model_dump()), media_type=JSON)

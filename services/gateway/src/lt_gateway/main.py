"""Gateway app factory: the public OpenAI-compatible API and the management proxy."""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from leaky_common.auth import Principal
from leaky_common.errors import NotFound, install_error_handlers
from leaky_common.kafka import EventPublisher
from leaky_common.observability import MetricsMiddleware, add_ops_routes
from leaky_common.serve import HotRoute
from lt_gateway.chat import ChatHandler
from lt_gateway.models import ModelSpec, ModelTable
from lt_gateway.providers import Provider
from lt_gateway.providers.http import UpstreamHTTP
from lt_gateway.providers.registry import build_providers
from lt_gateway.proxy import ManagementProxy
from lt_gateway.quota_client import Denial, QuotaClient
from lt_gateway.requests import api_key_from
from lt_gateway.settings import GatewaySettings
from lt_gateway.tokens import encoding
from lt_gateway.usage import UsageSink

_CHAT_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "messages"],
                    "properties": {
                        "model": {"type": "string"},
                        "messages": {"type": "array", "items": {"type": "object"}},
                        "stream": {"type": "boolean"},
                        "max_tokens": {"type": "integer", "minimum": 1},
                        "max_completion_tokens": {"type": "integer", "minimum": 1},
                    },
                }
            }
        },
    }
}

_COMPLETION_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "prompt"],
                    "properties": {
                        "model": {"type": "string"},
                        "prompt": {"oneOf": [{"type": "string"}, {"type": "array"}]},
                        "max_tokens": {"type": "integer", "minimum": 1},
                    },
                }
            }
        },
    }
}
_EMBEDDING_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "input"],
                    "properties": {
                        "model": {"type": "string"},
                        "input": {"oneOf": [{"type": "string"}, {"type": "array"}]},
                    },
                }
            }
        },
    }
}

logger = logging.getLogger(__name__)

_MANAGEMENT_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def create_app(settings: GatewaySettings, providers: dict[str, Provider] | None = None) -> FastAPI:
    """Build the gateway app; resources are created in the lifespan."""
    models = ModelTable.load(settings.models_file)
    for spec in models.all():
        if spec.api_key_env and not os.environ.get(spec.api_key_env):
            logger.warning(
                "model %s: %s is not set; %s will refuse the calls",
                spec.name,
                spec.api_key_env,
                spec.provider,
            )
    quota = QuotaClient(settings.quota_url, settings.internal_token, settings.internal_timeout_s)
    usage = UsageSink(
        EventPublisher(settings),
        settings.usage_queue_max,
        spool_path=settings.spool_path(),
        linger_s=settings.usage_linger_s,
    )
    upstream = UpstreamHTTP(settings.upstream_timeout_s, settings.upstream_retry_backoff_s)
    chat = ChatHandler(
        models=models,
        providers=providers or build_providers(upstream),
        quota=quota,
        usage=usage,
        max_body_bytes=settings.max_body_bytes,
    )
    proxy = ManagementProxy(settings, quota)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        encoding()  # load the tokenizer now rather than on the first request
        await quota.start()
        await proxy.start()
        await upstream.start()
        await usage.start()
        app.state.usage = usage
        try:
            yield
        finally:
            await usage.stop()
            await upstream.close()
            await proxy.close()
            await quota.close()

    app = FastAPI(
        title="Leaky Tokens gateway",
        version="0.1.0",
        description="OpenAI-compatible, governed LLM gateway. Management paths are forwarded to their owners.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # The chat endpoint skips FastAPI's routing layers (the route below stays for the docs).
    app.add_middleware(HotRoute, method="POST", path="/v1/chat/completions", endpoint=chat.handle)
    app.add_middleware(MetricsMiddleware, service="gateway")

    async def ready() -> dict[str, bool]:
        # A broker outage does not make the gateway unready (usage events are spooled); quota being away does.
        return {
            "quota_reachable": await quota.reachable(),
            "usage_backlog_ok": usage.in_memory < settings.usage_queue_max // 2,
        }

    add_ops_routes(app, "gateway", ready)

    @app.post("/v1/chat/completions", tags=["openai"], openapi_extra=_CHAT_SCHEMA)
    async def chat_completions(request: Request) -> Response:
        return await chat.handle(request)

    @app.post("/v1/completions", tags=["openai"], openapi_extra=_COMPLETION_SCHEMA)
    async def completions(request: Request) -> Response:
        return await chat.handle_completion(request)

    @app.post("/v1/embeddings", tags=["openai"], openapi_extra=_EMBEDDING_SCHEMA)
    async def embeddings(request: Request) -> Response:
        return await chat.handle_embedding(request)

    @app.get("/v1/models", tags=["openai"])
    async def list_models(request: Request) -> Response:
        principal = await quota.authenticate(api_key_from(request))
        if isinstance(principal, Denial):
            return Response(principal.body, status_code=principal.status, media_type="application/json")
        data = [_model_card(m) for m in models.all() if _may_use(principal, m)]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    @app.get("/v1/models/{model_id:path}", tags=["openai"])
    async def get_model(model_id: str, request: Request) -> Response:
        principal = await quota.authenticate(api_key_from(request))
        if isinstance(principal, Denial):
            return Response(principal.body, status_code=principal.status, media_type="application/json")
        spec = models.get(model_id)
        if spec is None or not _may_use(principal, spec):
            raise NotFound(f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        return Response(orjson.dumps(_model_card(spec)), media_type="application/json")

    @app.api_route("/v1/{rest:path}", methods=_MANAGEMENT_METHODS, include_in_schema=False)
    async def management_v1(rest: str, request: Request) -> Response:
        return await proxy.handle(request)

    @app.api_route("/api/v1/{rest:path}", methods=_MANAGEMENT_METHODS, include_in_schema=False)
    async def management_api_v1(rest: str, request: Request) -> Response:
        return await proxy.handle(request)

    return app


def _may_use(principal: Principal, spec: ModelSpec) -> bool:
    """Whether the key may call `spec` (`allowed_models` holds names or shell-style patterns)."""
    allowed = principal.allowed_models
    return allowed is None or any(fnmatch.fnmatchcase(spec.name, pattern) for pattern in allowed)


def _model_card(spec: ModelSpec) -> dict[str, Any]:
    """An OpenAI model object, plus what the gateway knows about limits and prices."""
    return {
        "id": spec.name,
        "object": "model",
        "created": 0,
        "owned_by": spec.provider,
        "leaky_tokens": {
            "mode": spec.mode,
            "max_output_tokens": spec.max_output_tokens,
            "context_window": spec.context_window,
            "input_usd_micros_per_mtok": spec.input_usd_micros_per_mtok,
            "output_usd_micros_per_mtok": spec.output_usd_micros_per_mtok,
        },
    }

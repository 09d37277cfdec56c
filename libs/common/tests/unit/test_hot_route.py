import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY
from starlette.requests import Request
from starlette.responses import Response

from leaky_common.errors import install_error_handlers
from leaky_common.observability import MetricsMiddleware
from leaky_common.serve import HotRoute


def build() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    async def fast(request: Request) -> Response:
        if request.headers.get("x-boom"):
            raise RuntimeError("secret internals")
        return Response(b"fast:" + await request.body())

    app.add_middleware(HotRoute, method="POST", path="/hot", endpoint=fast)
    app.add_middleware(MetricsMiddleware, service="hot-test")

    @app.post("/hot")
    async def documented() -> dict[str, str]:
        return {"served_by": "fastapi"}

    @app.get("/hot")
    async def get_hot() -> dict[str, str]:
        return {"served_by": "fastapi-get"}

    return app


async def test_hot_route_serves_exact_method_and_path_and_passes_the_rest_on() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build()), base_url="http://t") as client:
        assert (await client.post("/hot", content=b"x")).text == "fast:x"
        assert (await client.get("/hot")).json() == {"served_by": "fastapi-get"}
        assert (await client.post("/hot/")).status_code in (307, 404)


async def test_hot_route_is_measured_and_errors_keep_the_openai_shape() -> None:
    before = REGISTRY.get_sample_value(
        "lt_http_requests_total", {"service": "hot-test", "method": "POST", "route": "/hot", "status": "200"}
    )
    transport = httpx.ASGITransport(app=build(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/hot")).status_code == 200
        boom = await client.post("/hot", headers={"x-boom": "1"})
    after = REGISTRY.get_sample_value(
        "lt_http_requests_total", {"service": "hot-test", "method": "POST", "route": "/hot", "status": "200"}
    )
    assert (after or 0) - (before or 0) == 1
    assert boom.status_code == 500
    assert boom.json()["error"]["type"] == "api_error"
    assert "secret" not in boom.text

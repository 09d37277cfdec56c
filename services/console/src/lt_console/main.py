"""Console app factory: the pages, sign-in, the shipped static files, security headers and error pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from lt_console import admin, pages, signin
from lt_console.gateway import ApiError, Gateway, SignedOut, relay_from
from lt_console.sessions import COOKIE, SessionStore
from lt_console.settings import ConsoleSettings
from lt_console.web import PREFIX, CsrfRefused, NotSignedIn, render, store_of, to_sign_in

_SECURITY_HEADERS = {
    # Everything is served from here: no inline script or style, no other origin, no framing.
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}
_CSRF_MESSAGE = (
    "This form was not sent from your console session (CSRF check failed). Reload the page and try again."
)


async def _not_signed_in(request: Request, _: Exception) -> Response:
    return to_sign_in(request)


async def _signed_out(request: Request, _: Exception) -> Response:
    store_of(request).drop(request.cookies.get(COOKIE, ""))
    response = to_sign_in(request)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


async def _csrf_refused(request: Request, _: Exception) -> Response:
    return render(request, "error.html", None, status=403, title="Refused", message=_CSRF_MESSAGE)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
    return render(request, "error.html", None, status=exc.status_code, title="Not found", message=message)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return render(request, "error.html", None, status=exc.status, title="Error", message=exc.message)


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    relay_from(request.headers)
    response = await call_next(request)
    for key, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


async def _health() -> Response:
    return JSONResponse({"status": "ok"})


def create_app(settings: ConsoleSettings, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """Build the console; `transport` replaces the network in unit tests (httpx.MockTransport)."""
    gateway = Gateway(settings.gateway_url, settings.gateway_timeout_s, transport)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await gateway.close()

    app = FastAPI(
        title="Leaky Tokens console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.gateway = gateway
    app.state.sessions = SessionStore(settings.console_session_idle_s, settings.console_max_sessions)
    app.state.secure_cookie = settings.console_secure_cookie
    app.middleware("http")(_security_headers)
    app.add_exception_handler(NotSignedIn, _not_signed_in)
    app.add_exception_handler(SignedOut, _signed_out)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_api_route("/health", _health, include_in_schema=False)
    app.add_api_route(PREFIX + "/health", _health, include_in_schema=False)
    app.include_router(signin.router)
    app.include_router(pages.router)
    app.include_router(admin.router)
    app.mount(PREFIX + "/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app

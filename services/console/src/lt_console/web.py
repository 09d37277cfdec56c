"""What every console route shares: the session from the cookie, the CSRF check, rendering and flashes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from lt_console.gateway import ApiError, Gateway, SignedOut
from lt_console.sessions import COOKIE, Session, SessionStore, same_token


def usd(micros: float) -> str:
    """Micro-dollars as dollars: to the micro-dollar under a cent (a few requests cost that much; 4 decimals
    would show them as $0.0000), else to a hundredth of a cent."""
    return f"${micros / 1_000_000:,.6f}" if abs(micros) < 10_000 else f"${micros / 1_000_000:,.4f}"


PREFIX = "/console"
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["num"] = lambda v: f"{v:,}" if isinstance(v, int | float) else ("—" if v is None else v)
templates.env.filters["usd"] = lambda v: usd(v) if isinstance(v, int | float) else "—"
templates.env.filters["when"] = lambda v: str(v).replace("T", " ")[:19] if v else "—"


class NotSignedIn(Exception):
    """No live session: the route answers with a way to the sign-in page."""


class CsrfRefused(Exception):
    """A POST without this session's CSRF token."""


@dataclass(slots=True)
class Loaded:
    """One section of a page: the API's data, or the message to show instead."""

    data: Any = None
    error: str | None = None
    status: int | None = None

    @property
    def forbidden(self) -> bool:
        """The API said this caller may not see it."""
        return self.status == 403


def to_sign_in(request: Request) -> Response:
    """To the sign-in page: a redirect, or for an htmx request an HX-Redirect (a fragment swap cannot)."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"hx-redirect": PREFIX + "/login"})
    return RedirectResponse(PREFIX + "/login", status_code=303)


def store_of(request: Request) -> SessionStore:
    """The app's session store."""
    store: SessionStore = request.app.state.sessions
    return store


def gateway_of(request: Request) -> Gateway:
    """The app's gateway client."""
    gateway: Gateway = request.app.state.gateway
    return gateway


def current_session(request: Request) -> Session:
    """The signed-in session of this request, else NotSignedIn."""
    session = store_of(request).get(request.cookies.get(COOKIE))
    if session is None:
        raise NotSignedIn
    return session


SessionDep = Annotated[Session, Depends(current_session)]


async def checked_form(request: Request, session: SessionDep) -> FormData:
    """The POSTed form, once its CSRF token (field `csrf_token` or header X-CSRF-Token) is this session's."""
    form = await request.form()
    given = form.get("csrf_token") or request.headers.get("x-csrf-token")
    if not same_token(session.csrf, given if isinstance(given, str) else None):
        raise CsrfRefused
    return form


FormDep = Annotated[FormData, Depends(checked_form)]


def field(form: FormData, name: str, default: str = "") -> str:
    """A text field of the form, stripped."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else default


async def load(call: Callable[[], Awaitable[Any]]) -> Loaded:
    """Run one API call for a page section; a refusal becomes the section's message (SignedOut propagates)."""
    try:
        return Loaded(await call())
    except ApiError as exc:
        return Loaded(error=exc.message, status=exc.status)


def render(
    request: Request, template: str, session: Session | None, status: int = 200, **context: Any
) -> Response:
    """A page (or an htmx fragment) with the session's nav, CSRF token and flash."""
    flash, flash_error = None, False
    if session is not None and not template.startswith("_"):
        flash, flash_error, session.flash = session.flash, session.flash_error, None
    response = templates.TemplateResponse(
        request,
        template,
        {"s": session, "prefix": PREFIX, "flash": flash, "flash_error": flash_error, **context},
        status_code=status,
    )
    response.headers["cache-control"] = "no-store"
    return response


def back(to: str, session: Session, message: str, *, error: bool = False) -> Response:
    """Redirect after a POST (303), with a message for the next page."""
    session.flash, session.flash_error = message, error
    return RedirectResponse(PREFIX + to, status_code=303)


async def act(session: Session, to: str, done: str, call: Callable[[], Awaitable[Any]]) -> Response:
    """Run one API action for a form, then back to `to` saying `done` or the API's message."""
    try:
        await call()
    except ApiError as exc:
        return back(to, session, exc.message, error=True)
    return back(to, session, done)


__all__ = ["SignedOut"]

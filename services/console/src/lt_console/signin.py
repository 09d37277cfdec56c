"""Sign-in (email and password, or an API key), sign-out, and the session cookie."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from lt_console.gateway import ApiError
from lt_console.sessions import COOKIE, LOGIN_CSRF_COOKIE, same_token
from lt_console.web import PREFIX, CsrfRefused, field, gateway_of, render, store_of, to_sign_in

router = APIRouter(prefix=PREFIX)


def set_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None = None
) -> None:
    """An HttpOnly, SameSite=Strict cookie for the console's path only (Secure when configured)."""
    secure: bool = request.app.state.secure_cookie
    response.set_cookie(
        name, value, max_age=max_age, path=PREFIX, httponly=True, samesite="strict", secure=secure
    )


@router.get("")
@router.get("/")
async def home(request: Request) -> Response:
    signed_in = store_of(request).get(request.cookies.get(COOKIE)) is not None
    return RedirectResponse(PREFIX + ("/overview" if signed_in else "/login"), status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", None, csrf=token, error=None)
    set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    # Before there is a session, the form's token must match the one in its own cookie (double submit).
    given = form.get("csrf_token")
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not same_token(expected, given if isinstance(given, str) else None):
        raise CsrfRefused
    email, password, api_key = field(form, "email"), field(form, "password"), field(form, "api_key")

    def again(message: str, status: int) -> Response:
        return render(request, "login.html", None, status=status, csrf=expected, error=message, email=email)

    gateway = gateway_of(request)
    access, refresh, expires_in = api_key, None, None
    try:
        if not api_key:
            if not (email and password):
                return again("Enter your email and password, or an API key.", 400)
            pair = await gateway.login(email, password)
            access, refresh, expires_in = (
                pair["access_token"],
                pair["refresh_token"],
                float(pair["expires_in"]),
            )
        me = await gateway.whoami(access)
        manages = await gateway.manages_a_team(access)
    except ApiError as exc:
        if exc.status in (400, 401, 403):
            return again("Those credentials did not work. Check them and try again.", 401)
        return again(exc.message, exc.status)
    session = store_of(request).create(
        access_token=access, refresh_token=refresh, expires_in=expires_in, user=me, manages_team=manages
    )
    response = RedirectResponse(PREFIX + "/overview", status_code=303)
    set_cookie(request, response, COOKIE, session.id)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    store = store_of(request)
    session = store.get(request.cookies.get(COOKIE))
    if session is None:
        return to_sign_in(request)
    form = await request.form()
    given = form.get("csrf_token")
    if not same_token(session.csrf, given if isinstance(given, str) else None):
        raise CsrfRefused
    if session.refresh_token:
        await gateway_of(request).logout(session.refresh_token)
    store.drop(session.id)
    response = RedirectResponse(PREFIX + "/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response

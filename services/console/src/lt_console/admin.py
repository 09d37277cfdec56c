"""Admin pages: users, teams, pools, org settings and bucket sizes, anomalies and freezes, thresholds,
notification channels. The API decides who may: a refusal is shown as its message."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from lt_console.gateway import ApiError, seg
from lt_console.web import PREFIX, FormDep, SessionDep, act, back, field, gateway_of, load, render

router = APIRouter(prefix="/console/admin")

BUCKET_FIELDS = (
    "key_requests_per_period",
    "key_tokens_per_period",
    "user_requests_per_period",
    "user_tokens_per_period",
)


def _optional_ints(form: FormData, names: tuple[str, ...]) -> dict[str, int | None]:
    """Blank fields are null (back to the default); anything else must be a whole number, 0 or more."""
    out: dict[str, int | None] = {}
    for name in names:
        text = field(form, name)
        if not text:
            out[name] = None
            continue
        if not text.isdigit():
            raise ApiError(400, f"{name.replace('_', ' ')} must be a whole number or blank.")
        out[name] = int(text)
    return out


@router.get("/users")
async def users(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    listing = await load(lambda: gw.call(s, "GET", "/v1/admin/users"))
    created, s.reveal = s.reveal, None
    return render(request, "admin_users.html", s, users=listing, created=created)


@router.post("/users")
async def create_user(request: Request, s: SessionDep, form: FormDep) -> Response:
    gw = gateway_of(request)
    body: dict[str, Any] = {"email": field(form, "email")[:254], "name": field(form, "name")[:200]}
    if field(form, "team_id"):
        body["team_id"] = field(form, "team_id")[:100]
    try:
        created = await gw.call(s, "POST", "/v1/admin/users", json=body)
    except ApiError as exc:
        return back("/admin/users", s, exc.message, error=True)
    # The new user's API key is shown once, by the page this redirects to.
    s.reveal = created
    return back("/admin/users", s, "User created.")


@router.get("/teams")
async def teams(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    listing = await load(lambda: gw.call(s, "GET", "/v1/admin/teams"))
    return render(request, "admin_teams.html", s, teams=listing)


@router.post("/teams")
async def create_team(request: Request, s: SessionDep, form: FormDep) -> Response:
    gw = gateway_of(request)
    name = field(form, "name")[:200]
    return await act(
        s,
        "/admin/teams",
        f"Team {name} created.",
        lambda: gw.call(s, "POST", "/v1/admin/teams", json={"name": name}),
    )


@router.post("/teams/{team_id}/members")
async def add_member(team_id: str, request: Request, s: SessionDep, form: FormDep) -> Response:
    gw = gateway_of(request)
    role = "manager" if field(form, "role") == "manager" else "member"

    async def call() -> Any:
        path = f"/v1/admin/teams/{seg(team_id)}/members/{seg(field(form, 'user_id'))}"
        return await gw.call(s, "POST", path, json={"role": role})

    return await act(s, "/admin/teams", f"Added as {role}.", call)


@router.get("/pools")
async def pools(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    listing = await load(lambda: gw.call(s, "GET", "/v1/admin/pools"))
    return render(request, "admin_pools.html", s, pools=listing)


@router.get("/pools/table")
async def pools_table(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    listing = await load(lambda: gw.call(s, "GET", "/v1/admin/pools"))
    return render(request, "_admin_pools_table.html", s, pools=listing)


@router.get("/org")
async def org(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    view = await load(lambda: gw.call(s, "GET", "/v1/admin/org"))
    return render(request, "admin_org.html", s, org=view, bucket_fields=BUCKET_FIELDS)


@router.post("/org")
async def update_org(request: Request, s: SessionDep, form: FormDep) -> Response:
    gw = gateway_of(request)

    async def call() -> Any:
        body: dict[str, Any] = dict(_optional_ints(form, BUCKET_FIELDS))
        limit = _optional_ints(form, ("manager_approval_limit",))
        body.update(limit)
        return await gw.call(s, "PATCH", "/v1/admin/org", json=body)

    return await act(s, "/admin/org", "Org settings saved.", call)


@router.get("/anomalies")
async def anomalies(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    found = await load(lambda: gw.call(s, "GET", "/v1/analytics/anomalies", params={"limit": 50}))
    freezes = await load(lambda: gw.call(s, "GET", "/v1/admin/freezes"))
    return render(request, "admin_anomalies.html", s, anomalies=found, freezes=freezes)


@router.post("/freezes")
async def freeze(request: Request, s: SessionDep, form: FormDep) -> Response:
    gw = gateway_of(request)
    target_type = field(form, "target_type")

    async def call() -> Any:
        if target_type not in ("user", "key", "session"):
            raise ApiError(400, "Choose what to freeze: a user, a key or a session.")
        body = {
            "target_type": target_type,
            "target_id": field(form, "target_id")[:200],
            "reason": field(form, "reason")[:500] or "frozen from the console",
        }
        return await gw.call(s, "POST", "/v1/admin/freezes", json=body)

    return await act(s, "/admin/anomalies", f"Froze {target_type} {field(form, 'target_id')[:200]}.", call)


@router.get("/thresholds")
async def thresholds(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    view = await load(lambda: gw.call(s, "GET", "/v1/analytics/thresholds"))
    return render(request, "admin_thresholds.html", s, thresholds=view)


@router.post("/thresholds")
async def save_thresholds(request: Request, s: SessionDep, form: FormDep) -> Response:
    gw = gateway_of(request)

    async def call() -> Any:
        current = await gw.call(s, "GET", "/v1/analytics/thresholds")
        body: dict[str, Any] = {}
        for name, value in current.get("effective", {}).items():
            text = field(form, name)
            if not text or str(value) == text:
                continue
            try:
                body[name] = (
                    int(text) if isinstance(value, int) and not isinstance(value, bool) else float(text)
                )
            except ValueError:
                raise ApiError(400, f"{name.replace('_', ' ')} must be a number.") from None
        return await gw.call(s, "PUT", "/v1/analytics/thresholds", json=body)

    return await act(s, "/admin/thresholds", "Thresholds saved.", call)


@router.get("/channels")
async def channels(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    listing = await load(lambda: gw.call(s, "GET", "/v1/admin/notifications/channels"))
    deliveries = await load(
        lambda: gw.call(s, "GET", "/v1/admin/notifications/deliveries", params={"limit": 30})
    )
    return render(request, "admin_channels.html", s, channels=listing, deliveries=deliveries)


@router.post("/channels")
async def create_channel(request: Request, s: SessionDep, form: FormDep) -> Response:
    gw = gateway_of(request)
    body = {"channel": "webhook", "url": field(form, "url")[:2000], "name": field(form, "name")[:200] or None}
    return await act(
        s,
        "/admin/channels",
        "Channel added.",
        lambda: gw.call(s, "POST", "/v1/admin/notifications/channels", json=body),
    )


@router.post("/channels/{channel_id}/test")
async def test_channel(channel_id: str, request: Request, s: SessionDep, _: FormDep) -> Response:
    gw = gateway_of(request)
    try:
        result = await gw.call(s, "POST", f"/v1/admin/notifications/channels/{seg(channel_id)}/test")
    except ApiError as exc:
        s.flash, s.flash_error = exc.message, True
    else:
        ok = bool(result and result.get("ok"))
        s.flash = "Test message delivered." if ok else f"Test failed: {(result or {}).get('error')}"
        s.flash_error = not ok
    return RedirectResponse(PREFIX + "/admin/channels", status_code=303)


@router.post("/deliveries/{delivery_id}/retry")
async def retry_delivery(delivery_id: str, request: Request, s: SessionDep, _: FormDep) -> Response:
    gw = gateway_of(request)
    path = f"/v1/admin/notifications/deliveries/{seg(delivery_id)}/retry"
    return await act(s, "/admin/channels", "Delivery queued again.", lambda: gw.call(s, "POST", path))

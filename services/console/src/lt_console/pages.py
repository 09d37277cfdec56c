"""The pages every signed-in user has: overview, keys, sessions, purchases, approvals and team."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from lt_console.charts import PALETTE, Series, hourly, line_chart
from lt_console.gateway import ApiError, Gateway, seg
from lt_console.sessions import Session
from lt_console.web import FormDep, Loaded, SessionDep, act, back, field, gateway_of, load, render

router = APIRouter(prefix="/console")

TERMINAL = ("COMPLETED", "FAILED", "COMPENSATED")


def _positive_int(text: str, name: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number.") from None
    if value <= 0:
        raise ApiError(400, f"{name} must be more than 0.")
    return value


async def _spend_chart(gw: Gateway, s: Session) -> Loaded:
    """Spend per hour over the last day, one line per model (the models of the last week's usage)."""

    async def make() -> dict[str, Any]:
        usage = await gw.call(s, "GET", "/v1/analytics/usage", params={"days": 7})
        models = [m.get("model") for m in usage.get("by_model", []) if m.get("model")][:5]
        series: list[Series] = []
        buckets: list[str] = []
        for model in models:
            ts = await gw.call(
                s, "GET", "/v1/analytics/timeseries",
                params={"scope": "user", "id": s.user_id, "grain": "hour", "hours": 24, "model": model},
            )  # fmt: skip
            buckets, micros = hourly(ts.get("data", []), "cost_usd_micros", 24, datetime.now(UTC))
            series.append(Series(model, [m / 1_000_000 for m in micros]))
        title = "Spend per hour by model (USD), last 24 hours"
        svg = line_chart(buckets, series, title=title, unit="$") if series else ""
        return {"svg": svg, "series": series, "usage": usage}

    return await load(make)


@router.get("/overview")
async def overview(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    quota = await load(lambda: gw.call(s, "GET", "/v1/users/me/quota"))
    chart = await _spend_chart(gw, s)
    return render(request, "overview.html", s, quota=quota, chart=chart, palette=list(PALETTE))


@router.get("/overview/pools")
async def overview_pools(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    quota = await load(lambda: gw.call(s, "GET", "/v1/users/me/quota"))
    return render(request, "_pools.html", s, quota=quota)


@router.get("/keys")
async def keys(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    listing = await load(lambda: gw.call(s, "GET", "/v1/users/me/keys"))
    new_key, s.reveal = s.reveal, None
    return render(request, "keys.html", s, keys=listing, new_key=new_key)


@router.post("/keys")
async def create_key(request: Request, s: SessionDep, form: FormDep) -> Response:
    gw = gateway_of(request)
    name = field(form, "name")[:200]
    try:
        created = await gw.call(s, "POST", "/v1/users/me/keys", json={"name": name} if name else None)
    except ApiError as exc:
        return back("/keys", s, exc.message, error=True)
    # Shown by the page this redirects to, once (a reload of it never posts again, nor shows the key again).
    s.reveal = created
    return back("/keys", s, "Key created.")


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, request: Request, s: SessionDep, _: FormDep) -> Response:
    gw = gateway_of(request)
    return await act(
        s, "/keys", "Key revoked.", lambda: gw.call(s, "DELETE", f"/v1/users/me/keys/{seg(key_id)}")
    )


@router.get("/sessions")
async def sessions(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    quota = await load(lambda: gw.call(s, "GET", "/v1/users/me/quota"))
    anomalies = await load(lambda: gw.call(s, "GET", "/v1/analytics/anomalies", params={"limit": 20}))
    listing = freezes = Loaded()
    if s.role == "admin":
        listing = await load(lambda: gw.call(s, "GET", "/v1/admin/sessions"))
        freezes = await load(lambda: gw.call(s, "GET", "/v1/admin/freezes"))
    return render(
        request, "sessions.html", s, quota=quota, anomalies=anomalies, sessions=listing, freezes=freezes
    )


@router.post("/sessions/{session_id}/budget")
async def session_budget(session_id: str, request: Request, s: SessionDep, form: FormDep) -> Response:
    gw = gateway_of(request)

    async def call() -> Any:
        dollars = float(field(form, "budget_usd") or "nan")
        if not dollars >= 0:
            raise ApiError(400, "The budget must be a number of dollars, 0 or more.")
        body = {"budget_usd_micros": round(dollars * 1_000_000)}
        return await gw.call(s, "PUT", f"/v1/admin/sessions/{seg(session_id)}/budget", json=body)

    return await act(s, "/sessions", "Budget set.", call)


@router.post("/freezes/{target_type}/{target_id}/unfreeze")
async def unfreeze(
    target_type: str, target_id: str, request: Request, s: SessionDep, form: FormDep
) -> Response:
    gw = gateway_of(request)
    to = "/admin/anomalies" if field(form, "back") == "anomalies" else "/sessions"
    path = f"/v1/admin/freezes/{seg(target_type)}/{seg(target_id)}"
    return await act(s, to, f"Unfroze {target_type} {target_id}.", lambda: gw.call(s, "DELETE", path))


@router.get("/purchases")
async def purchases(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    listing = await load(lambda: gw.call(s, "GET", "/v1/purchases", params={"limit": 20}))
    return render(request, "purchases.html", s, purchases=listing, idempotency_key=str(uuid.uuid4()))


@router.post("/purchases")
async def buy(request: Request, s: SessionDep, form: FormDep) -> Response:
    gw = gateway_of(request)
    # The form carries its own key (made when it was shown): a double submit or a retry buys once.
    key = field(form, "idempotency_key")
    try:
        uuid.UUID(key)
        tokens = _positive_int(field(form, "tokens"), "Tokens")
        accepted = await gw.call(
            s, "POST", "/v1/purchases", json={"tokens": tokens}, headers={"idempotency-key": key}
        )
    except ValueError:
        return back("/purchases", s, "The form expired; please try again.", error=True)
    except ApiError as exc:
        return back("/purchases", s, exc.message, error=True)
    return back(f"/purchases/{seg(accepted['id'])}", s, "Purchase accepted.")


@router.get("/purchases/{purchase_id}")
async def purchase(purchase_id: str, request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    detail = await load(lambda: gw.call(s, "GET", f"/v1/purchases/{seg(purchase_id)}"))
    return render(request, "purchase.html", s, p=detail, terminal=TERMINAL)


@router.get("/purchases/{purchase_id}/status")
async def purchase_status(purchase_id: str, request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    detail = await load(lambda: gw.call(s, "GET", f"/v1/purchases/{seg(purchase_id)}"))
    return render(request, "_purchase_status.html", s, p=detail, terminal=TERMINAL)


@router.get("/approvals")
async def approvals(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    mine = await load(lambda: gw.call(s, "GET", "/v1/approvals"))
    pending = Loaded()
    if s.manages_team or s.role == "admin":
        pending = await load(lambda: gw.call(s, "GET", "/v1/approvals/pending"))
    return render(request, "approvals.html", s, mine=mine, pending=pending)


@router.post("/approvals")
async def request_approval(request: Request, s: SessionDep, form: FormDep) -> Response:
    gw = gateway_of(request)

    async def call() -> Any:
        credits = _positive_int(field(form, "requested_credits"), "Credits")
        body = {"requested_credits": credits, "reason": field(form, "reason")[:500]}
        return await gw.call(s, "POST", "/v1/approvals", json=body)

    return await act(s, "/approvals", "Request sent to your team's managers.", call)


@router.post("/approvals/{approval_id}/{decision}")
async def decide(approval_id: str, decision: str, request: Request, s: SessionDep, form: FormDep) -> Response:
    gw = gateway_of(request)
    if decision not in ("approve", "reject"):
        return back("/approvals", s, "Unknown decision.", error=True)
    body = {"reason": field(form, "reason")[:500]} if decision == "reject" and field(form, "reason") else None
    done = "Approved." if decision == "approve" else "Rejected."
    path = f"/v1/approvals/{seg(approval_id)}/{decision}"
    return await act(s, "/approvals", done, lambda: gw.call(s, "POST", path, json=body))


@router.get("/team")
async def team(request: Request, s: SessionDep) -> Response:
    gw = gateway_of(request)
    teams = await load(lambda: gw.call(s, "GET", "/v1/users/me/teams"))
    params = {"period": "weekly", "limit": 10}
    board = await load(lambda: gw.call(s, "GET", "/v1/analytics/leaderboard", params=params))
    # The leaderboard names users by id; the members of the teams I manage have names.
    names = {m["id"]: m["name"] for t in (teams.data or {}).get("data", []) for m in (t.get("members") or [])}
    return render(request, "team.html", s, teams=teams, board=board, names=names)

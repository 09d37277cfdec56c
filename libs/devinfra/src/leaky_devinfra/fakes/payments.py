"""A fake, Stripe-like payment provider (PaymentIntents with manual capture, refunds), state in memory.

Speaks Stripe's wire format: form-encoded bodies, `Authorization: Bearer sk_test_...`, `Idempotency-Key`
(the same key replays the same response; a different request under it is an `idempotency_error`), and
errors as `{"error": {"type", "code", "message", ...}}`. Test payment methods:

- `pm_card_visa`: authorizes and captures.
- `pm_card_chargeDeclined`: declined at authorization (402 card_error / card_declined).
- `pm_card_timeout`: answers only after `hang_s` seconds, later than a sane client timeout.
- `pm_card_captureFails`: authorizes, but capture is declined.

Run it with `python -m leaky_devinfra.fakes.payments` (port 8086, or `LT_FAKEPAY_PORT`). State is in memory,
or, with `LT_FAKEPAY_STATE_PATH`, in that JSON file too (rewritten after every change, read at start), so a
killed and restarted provider still knows its intents, like the real one. `GET /v1/payment_intents` lists
every intent (with `refunds` beside them: this fake's way for tests to read what was captured).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from leaky_devinfra.fakes.payments_store import Store as _Store

__all__ = ["TEST_PAYMENT_METHODS", "create_fakepay_app", "main"]

TEST_PAYMENT_METHODS = ("pm_card_visa", "pm_card_chargeDeclined", "pm_card_timeout", "pm_card_captureFails")


class _StripeError(Exception):
    def __init__(self, status: int, type_: str, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": {"type": type_, "message": message, **extra}}
        if code:
            self.body["error"]["code"] = code


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


Operation = Callable[[], Awaitable[dict[str, Any]]]
router = APIRouter()


def create_fakepay_app(*, hang_s: float = 30.0, state_path: Path | None = None) -> FastAPI:
    """The fake provider; `hang_s` is how long `pm_card_timeout` keeps the caller waiting; `state_path`,
    if given, keeps its state across restarts."""
    app = FastAPI(title="Fake payment provider (Stripe-like)", version="0.1.0")
    app.state.store = _Store.load(state_path)
    app.state.hang_s = hang_s
    app.include_router(router)
    return app


def _store_of(request: Request) -> _Store:
    store: _Store = request.app.state.store
    return store


def _api_key_of(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key.startswith("sk_test_"):
        raise _StripeError(401, "invalid_request_error", "Invalid API Key provided.", code="api_key_invalid")
    return key


async def _form_of(request: Request) -> dict[str, str]:
    return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))


def _replayed(store: _Store, slot: tuple[str, str], fingerprint: str) -> Response | None:
    """The answer to a request under an idempotency key already in use or used, else None."""
    if slot in store.in_flight:
        return _json(
            409,
            {
                "error": {
                    "type": "idempotency_error",
                    "code": "idempotency_key_in_use",
                    "message": "There is currently another in-progress request using this key.",
                }
            },
        )
    if slot not in store.idempotent:
        return None
    seen, status, body = store.idempotent[slot]
    if seen != fingerprint:
        return _json(
            400,
            {
                "error": {
                    "type": "idempotency_error",
                    "message": "Keys for idempotent requests can only be used with the same "
                    "parameters they were first used with.",
                }
            },
        )
    return _json(status, body, {"Idempotent-Replayed": "true"})


async def _idempotent(request: Request, params: dict[str, str], run: Operation) -> Response:
    try:
        api_key = _api_key_of(request)
    except _StripeError as exc:
        return _json(exc.status, exc.body)
    store = _store_of(request)
    key = request.headers.get("idempotency-key")
    fingerprint = request.url.path + "?" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    slot = (api_key, key) if key else None
    if slot is not None:
        if (replay := _replayed(store, slot, fingerprint)) is not None:
            return replay
        store.in_flight.add(slot)
    # Like the real provider, finish the operation even if the caller hangs up: a retry with the same
    # key must then see its result.
    status, body = await asyncio.shield(_complete(store, slot, fingerprint, run))
    return _json(status, body)


async def _complete(
    store: _Store, slot: tuple[str, str] | None, fingerprint: str, run: Operation
) -> tuple[int, dict[str, Any]]:
    try:
        try:
            status, body = 200, await run()
        except _StripeError as exc:
            status, body = exc.status, exc.body
        if slot is not None:
            store.idempotent[slot] = (fingerprint, status, body)
        store.save()
        return status, body
    finally:
        if slot is not None:
            store.in_flight.discard(slot)


def _intent_or_404(store: _Store, intent_id: str) -> dict[str, Any]:
    intent = store.intents.get(intent_id)
    if intent is None:
        raise _StripeError(
            404,
            "invalid_request_error",
            f"No such payment_intent: '{intent_id}'",
            code="resource_missing",
        )
    return intent


def _unexpected_state(intent: dict[str, Any], action: str) -> _StripeError:
    return _StripeError(
        400,
        "invalid_request_error",
        f"This PaymentIntent could not be {action} because it has a status of {intent['status']}.",
        code="payment_intent_unexpected_state",
        payment_intent=dict(intent),
    )


def _new_intent(params: dict[str, str]) -> dict[str, Any]:
    """A PaymentIntent awaiting confirmation, or the error Stripe gives for these parameters."""
    try:
        amount = int(params.get("amount", ""))
    except ValueError:
        raise _StripeError(
            400, "invalid_request_error", "Invalid integer: amount", code="parameter_invalid_integer"
        ) from None
    if amount < 1:
        raise _StripeError(
            400, "invalid_request_error", "Amount must be at least 1.", code="amount_too_small"
        )
    currency = params.get("currency", "").lower()
    if not currency:
        raise _StripeError(
            400, "invalid_request_error", "Missing required param: currency.", code="parameter_missing"
        )
    method = params.get("payment_method", "")
    if method not in TEST_PAYMENT_METHODS:
        raise _StripeError(
            400, "invalid_request_error", f"No such PaymentMethod: '{method}'", code="resource_missing"
        )
    return {
        "id": _new_id("pi"),
        "object": "payment_intent",
        "amount": amount,
        "amount_received": 0,
        "currency": currency,
        "payment_method": method,
        "capture_method": params.get("capture_method", "automatic"),
        "status": "requires_confirmation",
        "created": int(time.time()),
        "metadata": {k[9:-1]: v for k, v in params.items() if k.startswith("metadata[") and k.endswith("]")},
    }


async def _confirm(intent: dict[str, Any], hang_s: float) -> dict[str, Any]:
    """Authorize (and with automatic capture, capture) the intent the way its test card says."""
    method = intent["payment_method"]
    if method == "pm_card_timeout":
        await asyncio.sleep(hang_s)
    if method == "pm_card_chargeDeclined":
        intent["status"] = "requires_payment_method"
        raise _StripeError(
            402,
            "card_error",
            "Your card was declined.",
            code="card_declined",
            decline_code="generic_decline",
            payment_intent=dict(intent),
        )
    if intent["capture_method"] == "manual":
        intent["status"] = "requires_capture"
    else:
        intent["status"] = "succeeded"
        intent["amount_received"] = intent["amount"]
    return dict(intent)


@router.get("/health", tags=["ops"])
async def health() -> dict[str, str]:
    """Liveness of the fake."""
    return {"status": "ok", "service": "fakepay"}


@router.post("/v1/payment_intents")
async def create_intent(request: Request) -> Response:
    """Create (and with `confirm=true`, confirm) a PaymentIntent."""
    params = await _form_of(request)
    store = _store_of(request)
    hang_s: float = request.app.state.hang_s

    async def run() -> dict[str, Any]:
        intent = _new_intent(params)
        store.intents[intent["id"]] = intent
        if params.get("confirm") != "true":
            return dict(intent)
        return await _confirm(intent, hang_s)

    return await _idempotent(request, params, run)


@router.get("/v1/payment_intents")
async def list_intents(request: Request) -> Response:
    """Every PaymentIntent, Stripe's list shape, and every refund beside them (not Stripe's: for tests)."""
    try:
        _api_key_of(request)
    except _StripeError as exc:
        return _json(exc.status, exc.body)
    store = _store_of(request)
    return _json(
        200,
        {"object": "list", "data": list(store.intents.values()), "has_more": False,
         "refunds": list(store.refunds.values())},
    )  # fmt: skip


@router.get("/v1/payment_intents/{intent_id}")
async def retrieve_intent(intent_id: str, request: Request) -> Response:
    """One PaymentIntent as it stands."""
    try:
        _api_key_of(request)
        return _json(200, dict(_intent_or_404(_store_of(request), intent_id)))
    except _StripeError as exc:
        return _json(exc.status, exc.body)


@router.post("/v1/payment_intents/{intent_id}/capture")
async def capture_intent(intent_id: str, request: Request) -> Response:
    """Capture an authorized PaymentIntent (declined for `pm_card_captureFails`)."""
    params = await _form_of(request)
    store = _store_of(request)

    async def run() -> dict[str, Any]:
        intent = _intent_or_404(store, intent_id)
        if intent["status"] != "requires_capture":
            raise _unexpected_state(intent, "captured")
        if intent["payment_method"] == "pm_card_captureFails":
            raise _StripeError(
                402,
                "card_error",
                "The capture of this PaymentIntent failed.",
                code="card_declined",
                decline_code="capture_failed",
                payment_intent=dict(intent),
            )
        intent["status"] = "succeeded"
        intent["amount_received"] = intent["amount"]
        return dict(intent)

    return await _idempotent(request, params, run)


@router.post("/v1/payment_intents/{intent_id}/cancel")
async def cancel_intent(intent_id: str, request: Request) -> Response:
    """Cancel a PaymentIntent that has not succeeded, releasing its hold."""
    params = await _form_of(request)
    store = _store_of(request)

    async def run() -> dict[str, Any]:
        intent = _intent_or_404(store, intent_id)
        if intent["status"] in ("succeeded", "canceled"):
            raise _unexpected_state(intent, "canceled")
        intent["status"] = "canceled"
        intent["cancellation_reason"] = params.get("cancellation_reason", "requested_by_customer")
        return dict(intent)

    return await _idempotent(request, params, run)


@router.post("/v1/refunds")
async def create_refund(request: Request) -> Response:
    """Refund (part of) a succeeded PaymentIntent."""
    params = await _form_of(request)
    store = _store_of(request)

    async def run() -> dict[str, Any]:
        intent = _intent_or_404(store, params.get("payment_intent", ""))
        if intent["status"] != "succeeded":
            raise _unexpected_state(intent, "refunded")
        already = sum(r["amount"] for r in store.refunds.values() if r["payment_intent"] == intent["id"])
        amount = int(params.get("amount", intent["amount_received"] - already))
        if amount < 1 or already + amount > intent["amount_received"]:
            raise _StripeError(
                400,
                "invalid_request_error",
                "Refund amount is greater than the unrefunded amount.",
                code="charge_already_refunded",
            )
        refund = {
            "id": _new_id("re"),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "status": "succeeded",
            "created": int(time.time()),
        }
        store.refunds[refund["id"]] = refund
        return dict(refund)

    return await _idempotent(request, params, run)


def main() -> None:
    """Serve the fake provider with uvicorn."""
    import uvicorn

    port = int(os.environ.get("LT_FAKEPAY_PORT", os.environ.get("LT_PORT", "8086")))
    host = os.environ.get("LT_HOST", "127.0.0.1")
    hang_s = float(os.environ.get("LT_FAKEPAY_HANG_S", "30"))
    state = os.environ.get("LT_FAKEPAY_STATE_PATH")
    uvicorn.run(
        create_fakepay_app(hang_s=hang_s, state_path=Path(state) if state else None),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


if __name__ == "__main__":
    main()

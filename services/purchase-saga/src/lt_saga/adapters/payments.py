"""HTTP client for the Stripe-like payment provider (PaymentIntents with manual capture)."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from leaky_common.client_spans import http_client_spans
from lt_saga.domain.payment import PaymentOutcome, PaymentResult

__all__ = ["PROVIDER_KEEPALIVE_S", "PaymentClient"]

# Seconds an idle connection to the provider is kept. Below the 5 s that common servers keep one (uvicorn, which
# fakepay runs on, and Node), so the client closes it first: a call sent on a connection the provider is closing
# that very moment fails ("server disconnected"), comes back UNCERTAIN and waits for the saga's retry.
PROVIDER_KEEPALIVE_S = 4.0

logger = logging.getLogger(__name__)


class PaymentClient:
    """Authorize, capture, cancel and refund; every call carries an Idempotency-Key."""

    def __init__(
        self, base_url: str, api_key: str, timeout_s: float, *, keepalive_s: float = PROVIDER_KEEPALIVE_S
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(keepalive_timeout=self._keepalive_s),
            timeout=self._timeout,
            headers={"Authorization": f"Bearer {self._api_key}"},
            middlewares=(http_client_spans(),),
        )

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def authorize(
        self, *, amount: int, currency: str, payment_method: str, purchase_id: str, idempotency_key: str
    ) -> PaymentResult:
        """Create and confirm a PaymentIntent with manual capture (an authorization hold)."""
        data = {
            "amount": str(amount),
            "currency": currency,
            "payment_method": payment_method,
            "capture_method": "manual",
            "confirm": "true",
            "metadata[purchase_id]": purchase_id,
        }
        return await self._post("/v1/payment_intents", data, idempotency_key)

    async def capture(self, intent_id: str, idempotency_key: str) -> PaymentResult:
        """Capture an authorized PaymentIntent."""
        return await self._post(f"/v1/payment_intents/{intent_id}/capture", {}, idempotency_key)

    async def cancel(self, intent_id: str, idempotency_key: str) -> PaymentResult:
        """Release an uncaptured authorization."""
        return await self._post(f"/v1/payment_intents/{intent_id}/cancel", {}, idempotency_key)

    async def refund(self, intent_id: str, idempotency_key: str) -> PaymentResult:
        """Refund a captured PaymentIntent in full."""
        return await self._post("/v1/refunds", {"payment_intent": intent_id}, idempotency_key)

    async def _post(self, path: str, data: dict[str, str], idempotency_key: str) -> PaymentResult:
        assert self._session is not None, "PaymentClient.start() was not called"
        try:
            async with self._session.post(
                self._base_url + path, data=data, headers={"Idempotency-Key": idempotency_key}
            ) as resp:
                body: dict[str, Any] = await resp.json(content_type=None)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            logger.warning("payment call %s failed: %r", path, exc)
            return PaymentResult(
                PaymentOutcome.UNCERTAIN, message=f"provider unreachable or timed out: {exc!r}"
            )
        if status == 200:
            return PaymentResult(PaymentOutcome.OK, intent_id=body.get("id"), status=body.get("status"))
        raw_error = body.get("error") if isinstance(body, dict) else None
        error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        raw_intent = error.get("payment_intent")
        intent: dict[str, Any] = raw_intent if isinstance(raw_intent, dict) else {}
        outcome = (
            PaymentOutcome.UNCERTAIN if status in (409, 429) or status >= 500 else PaymentOutcome.REFUSED
        )
        return PaymentResult(
            outcome,
            intent_id=intent.get("id"),
            status=intent.get("status"),
            code=error.get("code") or error.get("type") or str(status),
            message=str(error.get("message", "")),
        )

"""Dependencies of the purchase routes: the use case and the trace to carry (the caller is `leaky_common.api`'s)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from opentelemetry import propagate

from lt_saga.usecases.purchases import Purchases

__all__ = ["PurchasesDep", "TraceContext"]


async def _purchases(request: Request) -> Purchases:
    purchases: Purchases = request.app.state.purchases
    return purchases


async def _trace_context(request: Request) -> dict[str, str]:
    """The W3C trace context to continue in every step: the current span's, else the caller's headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if "traceparent" not in carrier:
        # Tracing is off in this process: keep the caller's context so the saga still joins its trace.
        carrier = {k: v for k in ("traceparent", "tracestate") if (v := request.headers.get(k))}
    return carrier


PurchasesDep = Annotated[Purchases, Depends(_purchases)]
TraceContext = Annotated[dict[str, str], Depends(_trace_context)]

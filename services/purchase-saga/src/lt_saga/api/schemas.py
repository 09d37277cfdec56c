"""Request and response bodies of the purchase API. Times are ISO 8601 strings exactly as stored (the
alias routes keep the original Leaky Tokens names: `sagaId`, `createdAt`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lt_saga.domain.purchase import Purchase, PurchaseRequest, Step

__all__ = [
    "MAX_AMOUNT",
    "PurchaseAccepted",
    "PurchaseAcceptedAlias",
    "PurchaseBody",
    "PurchaseDetail",
    "PurchaseList",
    "PurchaseStep",
    "PurchaseSummary",
]

# A trillion tokens (or a million dollars in micro-dollars): far beyond any real top-up, well inside BIGINT.
MAX_AMOUNT = 10**12


class PurchaseBody(BaseModel):
    """`{tokens}` or `{amount, unit, pool_id?}`, optionally with a test `payment_method`."""

    model_config = ConfigDict(extra="forbid")

    tokens: int | None = Field(default=None, gt=0, le=MAX_AMOUNT, strict=True)
    amount: int | None = Field(default=None, gt=0, le=MAX_AMOUNT, strict=True)
    unit: Literal["tokens", "usd"] | None = None
    pool_id: str | None = Field(default=None, min_length=1, max_length=100)
    payment_method: str = Field(
        default="pm_card_visa", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_]+$"
    )

    @model_validator(mode="after")
    def _one_amount(self) -> PurchaseBody:
        if (self.tokens is None) == (self.amount is None):
            raise ValueError("give either tokens or amount (with unit), not both")
        if self.tokens is not None and self.unit not in (None, "tokens"):
            raise ValueError("tokens purchases have unit tokens; use amount with unit usd instead")
        return self

    def to_request(self) -> PurchaseRequest:
        """The domain request."""
        if self.tokens is not None:
            return PurchaseRequest(self.tokens, "tokens", self.pool_id, self.payment_method)
        assert self.amount is not None
        return PurchaseRequest(self.amount, self.unit or "tokens", self.pool_id, self.payment_method)


class PurchaseAccepted(BaseModel):
    """A started (202) or replayed (200) purchase: poll `GET /v1/purchases/{id}` for its outcome."""

    id: str
    status: str
    price_usd_micros: int

    @classmethod
    def of(cls, p: Purchase) -> PurchaseAccepted:
        """The answer for purchase `p`."""
        return cls(id=p.id, status=p.status.value, price_usd_micros=p.price_usd_micros)


class PurchaseAcceptedAlias(BaseModel):
    """The same answer on Leaky Tokens' original path, with its `{sagaId, status, createdAt}` too."""

    id: str
    # camelCase: the original API's field names.
    sagaId: str
    status: str
    createdAt: str
    price_usd_micros: int

    @classmethod
    def of(cls, p: Purchase) -> PurchaseAcceptedAlias:
        """The answer for purchase `p`."""
        return cls(
            id=p.id,
            sagaId=p.id,
            status=p.status.value,
            createdAt=p.created_at.isoformat(),
            price_usd_micros=p.price_usd_micros,
        )


class PurchaseSummary(BaseModel):
    """A purchase without its step log."""

    id: str
    object: Literal["purchase"] = "purchase"
    status: str
    user_id: str
    org_id: str | None
    amount: int
    unit: str
    pool_id: str | None
    price_usd_micros: int
    payment_intent_id: str | None
    reason: str | None
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, p: Purchase) -> PurchaseSummary:
        """The summary of purchase `p`."""
        return cls.model_validate(_summary_fields(p))


def _summary_fields(p: Purchase) -> dict[str, object]:
    return {
        "id": p.id,
        "status": p.status.value,
        "user_id": p.user_id,
        "org_id": p.org_id,
        "amount": p.amount,
        "unit": p.unit,
        "pool_id": p.pool_id,
        "price_usd_micros": p.price_usd_micros,
        "payment_intent_id": p.payment_intent_id,
        "reason": p.reason,
        "created_at": p.created_at.isoformat(),
        "updated_at": p.updated_at.isoformat(),
    }


class PurchaseStep(BaseModel):
    """One entry of the saga's step log."""

    step: str
    status: str
    at: str
    detail: str | None

    @classmethod
    def of(cls, s: Step) -> PurchaseStep:
        """The log entry `s`."""
        return cls(step=s.step, status=s.status, at=s.at.isoformat(), detail=s.detail)


class PurchaseDetail(PurchaseSummary):
    """A purchase with its step log, in order."""

    steps: list[PurchaseStep]

    @classmethod
    def with_steps(cls, p: Purchase, steps: list[Step]) -> PurchaseDetail:
        """Purchase `p` and its log."""
        return cls.model_validate({**_summary_fields(p), "steps": [PurchaseStep.of(s) for s in steps]})


class PurchaseList(BaseModel):
    """Purchases, newest first."""

    object: Literal["list"] = "list"
    data: list[PurchaseSummary]

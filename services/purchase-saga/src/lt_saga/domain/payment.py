"""What a payment provider call can answer (no I/O): done, refused, or unknown (and so worth retrying)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["PaymentOutcome", "PaymentResult"]


class PaymentOutcome(StrEnum):
    OK = "ok"
    # The provider answered no: nothing happened and retrying will not help.
    REFUSED = "refused"
    # Timeout, connection error, 409/429/5xx: it may or may not have happened.
    UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class PaymentResult:
    """One call's outcome, with the intent it concerns and the provider's status, code and message."""

    outcome: PaymentOutcome
    intent_id: str | None = None
    status: str | None = None
    code: str | None = None
    message: str = ""

    @property
    def detail(self) -> str:
        """A short description for the step log."""
        parts = [p for p in (self.intent_id, self.status, self.code, self.message) if p]
        return "; ".join(parts) or self.outcome.value

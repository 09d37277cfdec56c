import pytest
from pydantic import ValidationError

from lt_saga.api.schemas import MAX_AMOUNT, PurchaseBody
from lt_saga.domain.purchase import PurchaseRequest


def test_tokens_body() -> None:
    body = PurchaseBody.model_validate({"tokens": 5000})
    assert body.to_request() == PurchaseRequest(5000, "tokens", None, "pm_card_visa")


def test_amount_body_with_unit_and_pool() -> None:
    body = PurchaseBody.model_validate(
        {"amount": 2_000_000, "unit": "usd", "pool_id": "pool_1", "payment_method": "pm_card_chargeDeclined"}
    )
    assert body.to_request() == PurchaseRequest(2_000_000, "usd", "pool_1", "pm_card_chargeDeclined")


def test_amount_defaults_to_tokens() -> None:
    assert PurchaseBody.model_validate({"amount": 10}).to_request().unit == "tokens"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"tokens": 0},
        {"tokens": -5},
        {"tokens": "100"},
        {"tokens": 1.5},
        {"tokens": True},
        {"tokens": MAX_AMOUNT + 1},
        {"tokens": 10, "amount": 10},
        {"tokens": 10, "unit": "usd"},
        {"amount": 10, "unit": "eur"},
        {"tokens": 10, "extra": 1},
        {"tokens": 10, "payment_method": ""},
        {"tokens": 10, "payment_method": "pm card; drop"},
        {"tokens": 10, "pool_id": ""},
    ],
)
def test_invalid_bodies_are_rejected(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PurchaseBody.model_validate(payload)

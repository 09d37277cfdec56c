import itertools
from datetime import UTC, datetime

import pytest

from lt_saga.domain.purchase import PurchaseRequest, payment_amount_minor, price_usd_micros, request_hash
from lt_saga.domain.saga import (
    SAGA,
    TERMINAL,
    Action,
    InvalidTransition,
    SagaState,
    Status,
    check_transition,
    compensation_plan,
    next_action,
    outcome_of,
)

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_step_table_chains_statuses_from_pending_to_completed() -> None:
    assert [s.name for s in SAGA] == ["authorize_payment", "credit_tokens", "capture_payment"]
    assert SAGA[0].start == Status.PENDING
    for before, after in itertools.pairwise(SAGA):
        assert before.done == after.start
    assert SAGA[-1].done == Status.COMPLETED


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (SagaState(Status.PENDING), Action("call", "authorize_payment")),
        (SagaState(Status.AUTHORIZED), Action("send", "credit_tokens")),
        (SagaState(Status.CREDITING, deadline_at=NOW), Action("await", "credit_tokens")),
        (SagaState(Status.CREDITED), Action("call", "capture_payment")),
        (SagaState(Status.CAPTURING), Action("call", "capture_payment")),
        (SagaState(Status.COMPENSATING, ("debit_tokens", "void_payment")), Action("send", "debit_tokens")),
        (
            SagaState(Status.COMPENSATING, ("debit_tokens", "void_payment"), NOW),
            Action("await", "debit_tokens"),
        ),
        (SagaState(Status.COMPENSATING, ("void_payment",)), Action("call", "void_payment")),
        (SagaState(Status.COMPLETED), Action("done")),
        (SagaState(Status.COMPENSATED), Action("done")),
        (SagaState(Status.FAILED), Action("done")),
    ],
)
def test_next_action(state: SagaState, expected: Action) -> None:
    assert next_action(state) == expected


def test_compensating_without_a_plan_is_invalid() -> None:
    with pytest.raises(InvalidTransition):
        next_action(SagaState(Status.COMPENSATING, ()))


@pytest.mark.parametrize(
    ("step", "uncertain", "plan", "outcome"),
    [
        ("authorize_payment", False, (), Status.FAILED),
        ("authorize_payment", True, ("void_payment",), Status.FAILED),
        ("credit_tokens", False, ("void_payment",), Status.FAILED),
        ("credit_tokens", True, ("debit_tokens", "void_payment"), Status.COMPENSATED),
        ("capture_payment", False, ("debit_tokens", "void_payment"), Status.COMPENSATED),
    ],
)
def test_compensation_plans_undo_in_reverse_order(
    step: str, uncertain: bool, plan: tuple[str, ...], outcome: Status
) -> None:
    assert compensation_plan(step, uncertain=uncertain) == plan
    assert outcome_of(plan) == outcome


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (Status.PENDING, Status.AUTHORIZED),
        (Status.PENDING, Status.FAILED),
        (Status.AUTHORIZED, Status.CREDITING),
        (Status.CREDITING, Status.CREDITED),
        (Status.CREDITING, Status.COMPENSATING),
        (Status.CREDITED, Status.CAPTURING),
        (Status.CAPTURING, Status.COMPLETED),
        (Status.CAPTURING, Status.COMPENSATING),
        (Status.COMPENSATING, Status.COMPENSATED),
        (Status.COMPENSATING, Status.FAILED),
        (Status.CREDITING, Status.CREDITING),
    ],
)
def test_allowed_transitions(current: Status, new: Status) -> None:
    check_transition(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (Status.PENDING, Status.COMPLETED),
        (Status.AUTHORIZED, Status.CAPTURING),
        (Status.CREDITED, Status.COMPLETED),
        (Status.COMPLETED, Status.COMPENSATING),
        (Status.FAILED, Status.PENDING),
        (Status.COMPENSATED, Status.COMPLETED),
    ],
)
def test_forbidden_transitions(current: Status, new: Status) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(current, new)


def test_terminal_statuses_allow_no_way_out() -> None:
    for terminal in TERMINAL:
        for other in Status:
            if other != terminal:
                with pytest.raises(InvalidTransition):
                    check_transition(terminal, other)


@pytest.mark.parametrize(
    ("amount", "unit", "per_1k", "micros"),
    [
        (1000, "tokens", 150_000, 150_000),
        (1, "tokens", 150_000, 150),
        (3, "tokens", 1, 1),  # 0.003 micro-dollars rounds up to one
        (1_000_000, "tokens", 150_000, 150_000_000),
        (2_500_000, "usd", 150_000, 2_500_000),
    ],
)
def test_price_is_integer_and_rounds_up(amount: int, unit: str, per_1k: int, micros: int) -> None:
    assert price_usd_micros(amount, unit, per_1k) == micros


@pytest.mark.parametrize(("micros", "cents"), [(150_000, 15), (150, 1), (10_000, 1), (10_001, 2), (0, 1)])
def test_payment_amount_in_cents_rounds_up(micros: int, cents: int) -> None:
    assert payment_amount_minor(micros) == cents


def test_request_hash_tells_bodies_apart() -> None:
    a = PurchaseRequest(1000, "tokens", None, "pm_card_visa")
    assert request_hash(a) == request_hash(PurchaseRequest(1000, "tokens", None, "pm_card_visa"))
    assert request_hash(a) != request_hash(PurchaseRequest(1001, "tokens", None, "pm_card_visa"))
    assert request_hash(a) != request_hash(PurchaseRequest(1000, "usd", None, "pm_card_visa"))
    assert request_hash(a) != request_hash(PurchaseRequest(1000, "tokens", "pool1", "pm_card_visa"))

"""The saga without I/O: statuses, the declarative step table, allowed transitions, compensation plans and
the next action for a persisted position."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

__all__ = [
    "COMPENSATIONS",
    "SAGA",
    "TERMINAL",
    "Action",
    "InvalidTransition",
    "SagaState",
    "Status",
    "StepDef",
    "StepKind",
    "check_transition",
    "compensation_plan",
    "next_action",
    "outcome_of",
]


class Status(StrEnum):
    PENDING = "PENDING"
    AUTHORIZED = "AUTHORIZED"
    CREDITING = "CREDITING"
    CREDITED = "CREDITED"
    CAPTURING = "CAPTURING"
    COMPLETED = "COMPLETED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"


TERMINAL = frozenset({Status.COMPLETED, Status.COMPENSATED, Status.FAILED})


class StepKind(StrEnum):
    # A synchronous call to the payment provider (idempotency key = purchase id + step).
    PAYMENT = "payment"
    # A command to quota through the outbox, answered on the replies topic.
    COMMAND = "command"


@dataclass(frozen=True)
class StepDef:
    """One forward step: the status it starts from, the status while it runs, the status it leads to."""

    name: str
    kind: StepKind
    start: Status
    running: Status
    done: Status
    compensation: str | None


SAGA: tuple[StepDef, ...] = (
    StepDef(
        "authorize_payment",
        StepKind.PAYMENT,
        Status.PENDING,
        Status.PENDING,
        Status.AUTHORIZED,
        "void_payment",
    ),
    StepDef(
        "credit_tokens",
        StepKind.COMMAND,
        Status.AUTHORIZED,
        Status.CREDITING,
        Status.CREDITED,
        "debit_tokens",
    ),
    StepDef("capture_payment", StepKind.PAYMENT, Status.CREDITED, Status.CAPTURING, Status.COMPLETED, None),
)
COMPENSATIONS: dict[str, StepKind] = {"void_payment": StepKind.PAYMENT, "debit_tokens": StepKind.COMMAND}
# Undoing one of these means the user saw an effect: the purchase ends COMPENSATED, not FAILED.
_VISIBLE_UNDO = frozenset({"debit_tokens"})

_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.AUTHORIZED, Status.COMPENSATING, Status.FAILED}),
    Status.AUTHORIZED: frozenset({Status.CREDITING}),
    Status.CREDITING: frozenset({Status.CREDITED, Status.COMPENSATING}),
    Status.CREDITED: frozenset({Status.CAPTURING}),
    Status.CAPTURING: frozenset({Status.COMPLETED, Status.COMPENSATING}),
    Status.COMPENSATING: frozenset({Status.COMPENSATING, Status.COMPENSATED, Status.FAILED}),
    Status.COMPLETED: frozenset(),
    Status.COMPENSATED: frozenset(),
    Status.FAILED: frozenset(),
}


class InvalidTransition(Exception):
    """A status change the saga does not allow."""


def check_transition(current: Status, new: Status) -> None:
    """Raise InvalidTransition unless `current -> new` is allowed (staying put is always allowed)."""
    if new != current and new not in _TRANSITIONS[current]:
        raise InvalidTransition(f"{current} -> {new}")


def step_for(status: Status) -> StepDef:
    """The forward step to run (or being run) in a non-terminal, non-compensating status."""
    for step in SAGA:
        if status in (step.start, step.running):
            return step
    raise InvalidTransition(f"no forward step from {status}")


def compensation_plan(failed_step: str, *, uncertain: bool) -> tuple[str, ...]:
    """Compensations to run, in order, after `failed_step` failed.

    Completed steps are undone in reverse order; the failed step is undone too when its outcome is
    uncertain (a timeout: it may have taken effect remotely).
    """
    index = next(i for i, step in enumerate(SAGA) if step.name == failed_step)
    undo = SAGA[: index + 1] if uncertain else SAGA[:index]
    return tuple(step.compensation for step in reversed(undo) if step.compensation)


def outcome_of(plan: tuple[str, ...]) -> Status:
    """Terminal status once `plan` has run: COMPENSATED if a user-visible effect was undone, else FAILED."""
    return Status.COMPENSATED if _VISIBLE_UNDO.intersection(plan) else Status.FAILED


@dataclass(frozen=True)
class SagaState:
    """The persisted position of one purchase's saga."""

    status: Status
    compensations: tuple[str, ...] = ()
    # Set while a command is out and its reply awaited.
    deadline_at: datetime | None = None


@dataclass(frozen=True)
class Action:
    """What the runner does next: call the provider, send a command, await a reply, or nothing."""

    kind: Literal["call", "send", "await", "done"]
    step: str | None = None


def next_action(state: SagaState) -> Action:
    """The next thing to do for a saga in `state`."""
    if state.status in TERMINAL:
        return Action("done")
    if state.status == Status.COMPENSATING:
        if not state.compensations:
            raise InvalidTransition("compensating with an empty plan")
        name = state.compensations[0]
        if COMPENSATIONS[name] == StepKind.COMMAND:
            return Action("await" if state.deadline_at is not None else "send", name)
        return Action("call", name)
    step = step_for(state.status)
    if step.kind == StepKind.COMMAND:
        return Action("await" if state.status == step.running else "send", step.name)
    return Action("call", step.name)

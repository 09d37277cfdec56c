"""Every contract class round-trips through `parse_message`, and its `type` names a version."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel, ValidationError

from leaky_common import events
from leaky_common.auth import AssertionSigner, AssertionVerifier, Principal, generate_signing_key

_SAMPLES: dict[str, dict[str, object]] = {
    "UsageRecorded": {"request_id": "r1", "model": "m", "provider": "p"},
    "CreditTokens": {"saga_id": "s", "step": "credit", "purchase_id": "p", "user_id": "u", "amount": 5},
    "DebitTokens": {"saga_id": "s", "step": "debit", "purchase_id": "p", "user_id": "u", "amount": 5},
    "TokensCredited": {"saga_id": "s", "step": "credit", "purchase_id": "p", "success": True},
    "TokensDebited": {"saga_id": "s", "step": "debit", "purchase_id": "p", "success": False},
    "PurchaseCompleted": {"purchase_id": "p", "user_id": "u", "amount": 1},
    "PurchaseFailed": {"purchase_id": "p", "user_id": "u", "amount": 1},
    "PurchaseCompensated": {"purchase_id": "p", "user_id": "u", "amount": 1},
    "QuotaThresholdReached": {
        "pool_id": "pl",
        "owner_type": "team",
        "owner_id": "t",
        "percent": 80,
        "limit": 10,
        "used": 8,
    },
    "RequestFreeze": {"target_type": "session", "target_id": "s1", "reason": "loop"},
    "AnomalyDetected": {"kind": "loop"},
    "ApprovalRequested": {"approval_id": "a", "requester_user_id": "u", "amount": 100},
    "ApprovalDecided": {
        "approval_id": "a",
        "requester_user_id": "u",
        "approver_user_id": "m",
        "decision": "approved",
        "amount": 100,
    },
    "VacationChanged": {"user_id": "u", "on_vacation": True},
    "FreezeChanged": {"target_type": "key", "target_id": "k", "frozen": True, "source": "anomaly"},
    "PlatformAlert": {"alertname": "LtTargetDown", "status": "firing", "labels": {"app": "quota"}},
}


def _contract_classes() -> list[type[BaseModel]]:
    union = typing.get_args(typing.get_args(events.AnyMessage)[0])
    return list(union)


def test_every_contract_class_has_a_sample() -> None:
    assert sorted(c.__name__ for c in _contract_classes()) == sorted(_SAMPLES)


@pytest.mark.parametrize("cls", _contract_classes(), ids=lambda c: c.__name__)
def test_round_trip_through_parse_message(cls: type[BaseModel]) -> None:
    message = cls(**_SAMPLES[cls.__name__])
    parsed = events.parse_message(message.model_dump_json())
    assert type(parsed) is cls
    assert parsed == message
    assert str(getattr(parsed, "type", "")).endswith(".v1")


def test_unknown_type_and_missing_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        events.parse_message('{"type": "Nope.v1"}')
    with pytest.raises(ValidationError):
        events.parse_message('{"type": "ApprovalDecided.v1", "approval_id": "a"}')


def _through_assertion(p: Principal) -> Principal:
    """The principal as a service reads it from the gateway's signed assertion."""
    private, public = generate_signing_key()
    token = AssertionSigner(private, "k", issuer="gateway").sign("svc", p)
    back = AssertionVerifier({"k": public}, "svc").verify(token).principal
    assert back is not None
    return back


def test_principal_carries_allowed_models_through_its_header() -> None:
    p = Principal(user_id="u", org_id="o", allowed_models=("gpt-4o-mini",))
    assert _through_assertion(p).allowed_models == ("gpt-4o-mini",)
    assert Principal(user_id="u", org_id="o").allowed_models is None


def test_principal_carries_managed_teams_through_its_header() -> None:
    p = Principal(user_id="u", org_id="o", team_id="t1", managed_team_ids=("t1", "t2"))
    back = _through_assertion(p)
    assert back.managed_team_ids == ("t1", "t2")
    assert back.manages("t2") and not back.manages("t3")
    # A header from a sender that predates the field still validates, managing nothing.
    old = Principal.model_validate_json('{"user_id": "u", "org_id": "o"}')
    assert old.managed_team_ids == () and not old.manages("t1")


def test_principal_carries_platform_admin_through_its_header_and_defaults_false() -> None:
    p = Principal(user_id="u", org_id="o", role="admin", platform_admin=True)
    assert _through_assertion(p).platform_admin is True
    assert Principal(user_id="u", org_id="o", role="admin").platform_admin is False
    # A header from a sender that predates the field still validates, as no platform admin.
    assert (
        Principal.model_validate_json('{"user_id": "u", "org_id": "o", "role": "admin"}').platform_admin
        is False
    )

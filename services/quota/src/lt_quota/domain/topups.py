"""Top-ups: which pool a purchase may credit (or a compensation debit), and why a command is refused."""

from __future__ import annotations

from lt_quota.domain.records import PoolRecord, UserRecord

__all__ = ["UNIT_NAMES", "adjusted_limit", "may_top_up", "missing_pool_reason", "refusal"]

UNIT_NAMES = {"tokens": "tokens", "usd": "micro-dollars (usd)"}


def missing_pool_reason(pool_id: str | None, user_id: str, unit: str, *, user_exists: bool) -> str:
    """Why a command found no pool: an unknown pool or user, or a user without a pool of that unit."""
    if pool_id:
        return f"unknown pool {pool_id}"
    if not user_exists:
        return f"unknown user {user_id}"
    return (
        f"user {user_id} has no {unit} pool ({UNIT_NAMES[unit]}); "
        "an admin creates one with POST /v1/admin/pools"
    )


def refusal(pool: PoolRecord, kind: str, unit: str, amount: int) -> str | None:
    """Why a credit or debit of `amount` in `unit` cannot apply to `pool` at all (None: it may)."""
    if pool.unit != unit:
        return (
            f"pool {pool.id} is counted in {UNIT_NAMES.get(pool.unit, pool.unit)}, "
            f"but this {kind} is in {UNIT_NAMES[unit]}"
        )
    if amount <= 0:
        return "amount must be positive"
    return None


def may_top_up(pool: PoolRecord, buyer_id: str, buyer: UserRecord | None) -> bool:
    """A purchase may credit the buyer's own pool, their team's pool or their organisation's pool
    (`buyer` None: unknown, so only a pool the buyer owns)."""
    if pool.owner_type == "user":
        return pool.owner_id == buyer_id
    if buyer is None:
        return False
    if pool.owner_type == "team":
        return pool.owner_id == buyer.team_id
    return pool.owner_type == "org" and pool.owner_id == buyer.org_id


def adjusted_limit(kind: str, limit: int, amount: int) -> int:
    """A pool's limit after a credit (raised) or debit (lowered) of `amount`."""
    return limit + amount if kind == "credit" else limit - amount

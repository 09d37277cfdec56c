"""The chaos run (`bench/chaos.py`, `make chaos`), short: a whole stack of its own under a steady mixed load
while some components are killed and restarted (the broker: an outage through its proxy), then the money
invariants and the clients' view (fail closed, no 402, no 2xx that nothing admitted).

The components here are the ones whose outages the invariants hold for today; the full run covers every
process and prints which invariants still fail and where (see docs/operations.md#chaos-runs).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .chaos_harness import load_chaos

pytestmark = pytest.mark.e2e

SHORT = ("gateway", "quota", "redis", "postgres", "broker")


@pytest.mark.timeout(420)  # five outages and the convergence wait; 55-170 s depending on the machine's load
async def test_short_chaos_run_keeps_the_money_invariants_and_fails_closed(tmp_path: Path) -> None:
    chaos = load_chaos()
    config = chaos.Config(
        components=SHORT,
        outage_s=2.0,
        settle_s=3.0,
        warmup_s=3.0,
        workers=3,
        users=2,
        reservation_ttl_s=60,
        converge_s=90.0,
        run_dir=tmp_path / "run",
    )
    result = await chaos.run(config)
    report = "\n".join(result.lines)
    rows = {row.window.name: row for row in result.rows}
    assert list(rows) == list(SHORT), report
    # The outages were real: clients were refused while the gateway, quota, Redis and PostgreSQL were down,
    # and served around them.
    for name in ("gateway", "quota", "redis", "postgres"):
        assert sum(n for s, n in rows[name].seen.items() if s != "2xx" and chaos._closed(s, name)) > 0, report
    assert all(row.seen["2xx"] > 0 for row in rows.values()), report
    assert set(result.invariants.violations) == {"ledger", "reservations", "counted_once", "purchases"}
    assert result.invariants.failed() == [], report
    assert [b for row in rows.values() for b in row.bad] == [], report
    assert result.status == 0, report

"""Fault injection through real processes: the same scenario as `bench/saga_faults.py`, a few hundred purchases.

Two saga instances and the real quota service run as subprocesses; both instances are killed with SIGKILL
and restarted while purchases are in flight; the saga's Kafka traffic goes through a relay that delays,
duplicates and drops messages; cards decline, time out and fail at capture.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[4] / "bench" / "saga_faults.py"


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("saga_faults", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(240)
async def test_purchases_survive_kills_declines_timeouts_and_chaotic_messaging(
    kafka_bootstrap: str, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    faults = _harness()
    config = faults.FaultConfig(purchases=300, instances=2, kills=2, concurrency=16, settle_timeout_s=90)
    report = await faults.run_faults(faults.Infra(kafka_bootstrap, postgres_url, redis_url), config, tmp_path)
    summary = "\n".join(report.lines())
    print(summary)

    assert report.violations == [], summary
    assert report.purchases == 300
    assert sum(report.by_status.values()) == 300
    assert set(report.by_status) <= {"COMPLETED", "COMPENSATED", "FAILED"}
    assert report.kills == 2
    # The faults really happened: every card outcome and every kind of message chaos occurred.
    assert report.by_card["pm_card_visa"]["COMPLETED"] > 0
    assert report.by_card["pm_card_chargeDeclined"] == {
        "FAILED": report.by_card["pm_card_chargeDeclined"].total()
    }
    assert report.by_card["pm_card_captureFails"]["COMPENSATED"] > 0
    assert report.by_card["pm_card_timeout"].total() > 0
    assert min(report.chaos["duplicated"], report.chaos["delayed"], report.chaos["dropped"]) > 0
    # Money and tokens agree: what was credited is exactly what was bought and captured.
    assert report.tokens_credited_net == report.tokens_bought_completed > 0
    assert report.cents_captured_net == report.cents_expected > 0

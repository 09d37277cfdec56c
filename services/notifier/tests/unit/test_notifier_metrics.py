"""The notifier's delivery metric: every channel's series exists, unknown channels fold into `other`."""

from __future__ import annotations

from prometheus_client import REGISTRY

from lt_notifier.adapters.metrics import CHANNELS, DELIVERY_STATUSES, delivery_attempted


def count(channel: str, status: str) -> float | None:
    return REGISTRY.get_sample_value("lt_notifier_deliveries_total", {"channel": channel, "status": status})


def test_deliveries_by_channel_and_status() -> None:
    assert {"slack", "teams", "email", "webhook"} <= CHANNELS
    for channel in CHANNELS:
        for status in DELIVERY_STATUSES:
            assert count(channel, status) is not None  # 0 before the first delivery, not absent
    before = count("slack", "dead") or 0.0
    delivery_attempted("slack", "dead")
    assert count("slack", "dead") == before + 1
    delivery_attempted("carrier-pigeon", "delivered")
    assert count("other", "delivered") is not None
    assert count("carrier-pigeon", "delivered") is None

"""The notifier's Prometheus metrics: delivery attempts by channel and outcome."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter

from leaky_common.metrics import fold
from lt_notifier.domain.channels import ChannelName

__all__ = ["CHANNELS", "DELIVERIES", "DELIVERY_STATUSES", "delivery_attempted"]

CHANNELS = frozenset(get_args(ChannelName))
# delivered; failed and to be retried; failed for the last time (the delivery is dead).
DELIVERY_STATUSES = ("delivered", "retrying", "dead")

DELIVERIES = Counter(
    "lt_notifier_deliveries_total",
    "Delivery attempts of queued notifications, by channel and outcome (delivered, retrying, dead)",
    ["channel", "status"],
)
for _channel in sorted(CHANNELS):  # every series exists from the start (0, not "No data")
    for _status in DELIVERY_STATUSES:
        DELIVERIES.labels(_channel, _status)


def delivery_attempted(channel: str, status: str) -> None:
    """Count one attempt (`channel` folded into the known channels)."""
    DELIVERIES.labels(fold(channel, CHANNELS), status).inc()

"""No metric of any service carries a per-user, per-key, per-session, per-org, per-request or per-purchase label.

Imports every service's app (which registers its metrics in the process-wide registry, as in production) and
the analytics worker, then walks the registry for label names on the deny-list. The e2e test checks the same
on every live service's scraped text."""

from __future__ import annotations

import importlib

from prometheus_client import REGISTRY

from leaky_common.metrics import DENIED_LABELS, denied_labels

SERVICES = {
    "lt_gateway": "GatewaySettings",
    "lt_quota": "QuotaSettings",
    "lt_saga": "SagaSettings",
    "lt_analytics": "AnalyticsSettings",
    "lt_notifier": "NotifierSettings",
}


def test_no_service_metric_has_an_id_label() -> None:
    for package, settings_name in SERVICES.items():
        settings_class = getattr(importlib.import_module(f"{package}.settings"), settings_name)
        importlib.import_module(f"{package}.main").create_app(settings_class(_env_file=None))
    importlib.import_module("lt_analytics.worker")
    families = {family.name for family in REGISTRY.collect()}
    # The walk saw the services' own families (a registry of another process would prove nothing).
    for expected in (
        "lt_gateway_provider_request_duration_seconds",
        "lt_quota_admissions",
        "lt_saga_purchases",
        "lt_analytics_detections",
        "lt_notifier_deliveries",
        "lt_kafka_consumer_lag_messages",
        "lt_db_pool_connections",
    ):
        assert expected in families, expected
    assert denied_labels(REGISTRY) == [], f"labels on the deny-list {sorted(DENIED_LABELS)}"

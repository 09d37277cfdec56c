"""Gateway settings (env prefix LT_)."""

from __future__ import annotations

from pathlib import Path

from leaky_common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Where the owners of management routes live, and hot-path knobs."""

    service_name: str = "gateway"
    port: int = 8080

    quota_url: str = "http://127.0.0.1:8082"
    saga_url: str = "http://127.0.0.1:8084"
    analytics_url: str = "http://127.0.0.1:8083"
    notifier_url: str = "http://127.0.0.1:8085"

    # A JSON model routing file; the built-in table (mock-gpt and friends) is used when unset.
    models_file: Path | None = None
    upstream_timeout_s: float = 120.0
    internal_timeout_s: float = 10.0
    # Usage events wait here while the broker is unreachable.
    usage_queue_max: int = 100_000
    # Largest request body accepted (bytes).
    max_body_bytes: int = 4 * 1024 * 1024

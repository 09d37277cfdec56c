"""Gateway settings (env prefix LT_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

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
    # The release of a reservation's unused part, sent before the last bytes of an answer, waits at most this
    # long (the answer goes out anyway; the usage event settles the reservation).
    release_timeout_s: float = Field(default=0.5, gt=0)
    # Usage events waiting in memory for the broker (beyond this they are dropped; the spool takes over first).
    usage_queue_max: int = 100_000
    # Usage events gather this long before being published together (fewer produce requests).
    usage_linger_s: float = 0.02
    # Largest request body accepted (bytes).
    max_body_bytes: int = 4 * 1024 * 1024
    # Durable spool for usage events the broker has not acknowledged (default: .run/gateway-<port>-usage-spool.sqlite).
    usage_spool_path: Path | None = None
    # First retry delay for upstream 429/5xx/connection failures (doubles per attempt, with jitter).
    upstream_retry_backoff_s: float = 0.25

    # Keys the loop fingerprints of usage events (HMAC per org, derived from it; see docs/security.md). Unset:
    # a random secret per process (fingerprints then differ between gateway processes); required in production.
    fingerprint_secret: SecretStr | None = Field(default=None, min_length=16)

    @model_validator(mode="after")
    def _fingerprint_secret_in_production(self) -> GatewaySettings:
        if self.environment == "production" and self.fingerprint_secret is None:
            raise ValueError("LT_FINGERPRINT_SECRET must be set in production")
        return self

    def spool_path(self) -> Path:
        """Where this gateway spools usage events."""
        return self.usage_spool_path or Path(".run") / f"gateway-{self.port}-usage-spool.sqlite"

"""Gateway settings (env prefix LT_)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator

from leaky_common.link import parse_link_url
from leaky_common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Where the owners of management routes live, and hot-path knobs."""

    service_name: str = "gateway"
    # The governed endpoints authenticate before they read a body, then check its nesting after parsing.
    guard_checks_json: ClassVar[bool] = False
    port: int = 8080

    quota_url: str = "http://127.0.0.1:8082"
    # Seconds after which the pool of keep-alive connections to quota is replaced by a fresh one (0: never).
    # With several quota instances on one address, new connections spread over all of them, so one that
    # (re)started after the pool filled up gets its share of admissions within this time.
    quota_connection_max_age_s: float = Field(default=30.0, ge=0)
    # Quota's internal link (`tcp://host:port`, quota's `LT_LINK_PORT`): admissions and releases go over a few
    # persistent connections without HTTP (less CPU per call at both ends); everything else still
    # calls `quota_url`. Unset: every call over HTTP. The link's connections are renewed like the HTTP pool's.
    quota_link_url: str | None = None
    quota_link_connections: int = Field(default=2, ge=1, le=64)
    saga_url: str = "http://127.0.0.1:8084"
    analytics_url: str = "http://127.0.0.1:8083"
    notifier_url: str = "http://127.0.0.1:8085"
    # The web console service: `/console/...` on this address is forwarded to it (path checked, cookies passed).
    console_url: str = "http://127.0.0.1:8088"

    # A JSON model routing file; the built-in table (mock-gpt and friends) is used when unset.
    models_file: Path | None = None
    upstream_timeout_s: float = 120.0
    internal_timeout_s: float = 10.0
    # A release of a reservation's unused part waits at most this long for quota (the answer goes out anyway;
    # the usage event settles the reservation).
    release_timeout_s: float = Field(default=0.5, gt=0)
    # A release the answer does not wait for (quota said twice the reservation stays free) rides on the next
    # admission to quota; if none comes within this long it is sent on its own (0: always on its own, at once).
    release_linger_s: float = Field(default=0.01, ge=0, le=1)
    # Off: the unused part of a reservation is freed only when quota settles the usage event, tens of ms after
    # the answer, so a client's next request may find its budget still held (a 402 near the end of a budget).
    # Only for measuring what the release costs (`make bench`); keep it on.
    release_before_end: bool = True
    # Usage events waiting in memory for the broker (beyond this they are dropped; the spool takes over first).
    usage_queue_max: int = 100_000
    # Usage events gather this long before being published together (fewer produce requests).
    usage_linger_s: float = 0.02
    # Largest request body accepted (bytes; 413 before more is read).
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Prompts whose body is larger than this are tokenized in a worker thread (at most 2 at a time), so a few
    # large prompts never stall the event loop.
    offload_tokenizing_bytes: int = 64 * 1024
    # Requests per minute per client address on management routes (`/v1/...` beyond the governed endpoints,
    # `/api/v1/...`); 0 turns the limit off.
    management_rate_per_min: int = Field(default=300, ge=0)
    # Refused authentications (401) per minute per client address; beyond it that address gets 429 until its
    # budget refills. 0 turns the limit off.
    unauthenticated_rate_per_min: int = Field(default=60, ge=0)
    # How long a key quota accepted is trusted to pass the pre-tokenizing check (quota still admits every request).
    key_check_cache_s: float = Field(default=30.0, ge=0)
    # Origins allowed by CORS (browser calls); empty: CORS off.
    cors_allow_origins: list[str] = Field(default_factory=list)
    # Durable spool for usage events the broker has not acknowledged (default: .run/gateway-<port>-usage-spool.sqlite).
    usage_spool_path: Path | None = None
    # Crash journal of usage events in memory and streams being relayed, taken over by the next gateway after
    # a kill (default: .run/gateway-<port>-journal; see docs/architecture.md). Gateways sharing a port share it.
    usage_journal_dir: Path | None = None
    # First retry delay for upstream 429/5xx/connection failures (doubles per attempt, with jitter).
    upstream_retry_backoff_s: float = 0.25

    # Keys the loop fingerprints of usage events (HMAC per org, derived from it; see docs/security.md). Unset:
    # a random secret per process (fingerprints then differ between gateway processes); required in production.
    fingerprint_secret: SecretStr | None = Field(default=None, min_length=16)

    @field_validator("quota_link_url")
    @classmethod
    def _link_url(cls, value: str | None) -> str | None:
        if value:
            parse_link_url(value)  # tcp://host:port, or a ValueError naming what was given
        return value or None

    @model_validator(mode="after")
    def _fingerprint_secret_in_production(self) -> GatewaySettings:
        if self.environment == "production" and self.fingerprint_secret is None:
            raise ValueError("LT_FINGERPRINT_SECRET must be set in production")
        return self

    @model_validator(mode="after")
    def _refuse_unsigned_in_production(self) -> GatewaySettings:
        if self.environment == "production" and self.internal_signing_key is None:
            raise ValueError("LT_INTERNAL_SIGNING_KEY must be set in production")
        return self

    def journal_dir(self) -> Path:
        """Where this gateway journals what only its memory holds."""
        return self.usage_journal_dir or Path(".run") / f"gateway-{self.port}-journal"

    def spool_path(self) -> Path:
        """Where this gateway spools usage events."""
        return self.usage_spool_path or Path(".run") / f"gateway-{self.port}-usage-spool.sqlite"

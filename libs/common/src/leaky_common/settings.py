"""Settings base shared by every service: built at start-up, never at import time."""

from __future__ import annotations

import os
from typing import ClassVar, Final, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

__all__ = ["CLIENT_KEEPALIVE_S", "ServiceSettings"]

# The longest our HTTP clients keep an idle connection to one of our servers (the gateway's to quota and the
# other owners, the console's to the gateway): below every server's `keep_alive_s`, so the client always closes
# an idle connection first and never sends on one the server is closing that very moment.
CLIENT_KEEPALIVE_S: Final = 30


class ServiceSettings(BaseSettings):
    """Common settings; each service subclasses it with its own fields and env prefix `LT_`."""

    model_config = SettingsConfigDict(env_prefix="LT_", extra="ignore")
    # Whether leaky_common.guard checks JSON nesting before the app (False: the app checks it after parsing).
    guard_checks_json: ClassVar[bool] = True

    service_name: str = "leaky-tokens"
    environment: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8080
    # Bind the HTTP port with SO_REUSEPORT, so several instances of this service share one address and the
    # kernel spreads connections across them (`stack.py up --replicas N`; Linux). Off: a second instance on
    # the same port fails to start.
    reuse_port: bool = False
    # Seconds the HTTP server keeps an idle client connection open (uvicorn's default is 5). Above the 30 s our
    # clients keep one (CLIENT_KEEPALIVE_S): a request sent on a connection the server closes at that moment
    # fails ("server disconnected") and is not retried. Keep it above the idle timeout of a load balancer too.
    keep_alive_s: int = Field(default=75, gt=CLIENT_KEEPALIVE_S, le=3600)
    # Move every object alive once the app is built (modules, classes, settings: most of the heap) out of the
    # garbage collector's reach, so its full collections, which otherwise walk all of them in the middle of a
    # request, only look at what requests made (`gc.freeze`).
    gc_freeze: bool = True
    # Give the heap pages freed by start-up, and by each burst of work, back to the system: once start-up is
    # over, and whenever a second with work is followed by a quiet one (`leaky_common.serve.trim_when_quiet`;
    # 0 turns the latter off). Without it a service keeps what a burst freed mapped for as long as it runs.
    heap_trim_interval_s: float = Field(default=1.0, ge=0, le=3600)
    log_level: str = "INFO"
    log_json: bool = True

    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"

    kafka_bootstrap: str = "127.0.0.1:9092"
    # tansu (the local broker) supports neither idempotent producers nor transactions; real Kafka does.
    kafka_flavour: Literal["tansu", "kafka"] = "tansu"
    kafka_session_timeout_ms: int = 2000
    kafka_heartbeat_interval_ms: int = 500
    # Broker authentication (off for tansu, which has none): SASL/SCRAM in the compose stack, each service with
    # its own user, the broker's ACLs granting it only its own topics and groups (see docs/security.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # Topics a service creates at start-up (ensure_topics): partitions per topic (consumers of one group share
    # them; the message key decides the partition, so one key's messages stay in order, see
    # docs/architecture.md), replicas per partition, and the replicas that must hold a write before it counts
    # (topic config `min.insync.replicas`; empty: the broker's default). Existing topics are not changed.
    kafka_partitions: int = Field(default=4, ge=1, le=1000)
    kafka_replication_factor: int = Field(default=1, ge=1, le=16)
    kafka_min_insync_replicas: int | None = Field(default=None, ge=1, le=16)

    # Internal identity (leaky_common.auth, docs/security.md): the Ed25519 public keys (unpadded base64url of the
    # raw key) whose signed assertions this service accepts, by key id, as JSON: {"k1": "..."}. Several while a
    # key rotates. Without any, every internal route answers 401.
    internal_public_keys: dict[str, str] = Field(default_factory=dict)
    # This service's name in the assertions it accepts (their `aud`); empty: the service name.
    internal_audience: str = ""
    # Only in callers that sign (the gateway): the Ed25519 private key (base64url, raw) and its key id.
    internal_signing_key: SecretStr | None = None
    internal_signing_kid: str = ""
    # Lifetime of the assertions this process signs (at most 60 s).
    internal_assertion_ttl_s: int = Field(default=30, ge=1, le=60)
    # Largest request body any route reads (bytes; 413 beyond it, before more is read), deepest JSON nesting
    # accepted (400 beyond it).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=32, ge=2, le=256)
    # Bearer token that may read /metrics (the scraper's); empty: /metrics answers 404 (see docs/operations.md).
    metrics_token: SecretStr | None = None

    # OTLP/HTTP collector to send traces to (`http://host:4318`; `/v1/traces` is appended). Empty: no tracer
    # provider is installed and every span is a no-op (the default for tests and benchmarks).
    otlp_endpoint: str | None = None
    # Share of new traces kept (parent-based: a request arriving with a `traceparent` follows its caller's
    # decision, and so does everything downstream of it, across HTTP and Kafka).
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # Below a ratio of 1, still export the spans that failed (status ERROR: 5xx answers, provider errors) of
    # traces not sampled. Costs recording every span; off makes unsampled spans free.
    trace_keep_errors: bool = True
    # CLIENT spans for Redis commands, PostgreSQL queries and outbound HTTP calls in sampled traces
    # (`leaky_common.client_spans`). Off: server, provider and messaging spans only.
    trace_client_spans: bool = True
    # Share of traces that get those client spans, decided from the trace id so every service agrees (a trace
    # has all of them or none). Below 1 because in every trace they cost more than 5% of the hot path's CPU
    # (docs/observability.md).
    trace_client_span_ratio: float = Field(default=0.1, ge=0.0, le=1.0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then `.env`, then one file per setting in `LT_SECRETS_DIR` (if set):
        a file named like the variable (`LT_DATABASE_URL`) holds its value, so secrets stay out of the
        environment and out of the compose file (the compose stack mounts each service's own directory)."""
        sources = [init_settings, env_settings, dotenv_settings]
        if secrets_dir := os.environ.get("LT_SECRETS_DIR"):
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
        return tuple(sources)

    @property
    def kafka_idempotence(self) -> bool:
        """Idempotent producers are on for real Kafka, off for tansu."""
        return self.kafka_flavour == "kafka"

    @property
    def audience(self) -> str:
        """The `aud` of the internal assertions this service accepts."""
        return self.internal_audience or self.service_name

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> ServiceSettings:
        if self.kafka_security_protocol != "PLAINTEXT" and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError("LT_KAFKA_SASL_USERNAME and LT_KAFKA_SASL_PASSWORD are required with SASL")
        return self

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> ServiceSettings:
        if (self.kafka_min_insync_replicas or 0) > self.kafka_replication_factor:
            raise ValueError("LT_KAFKA_MIN_INSYNC_REPLICAS cannot exceed LT_KAFKA_REPLICATION_FACTOR")
        return self

    @model_validator(mode="after")
    def _refuse_missing_keys_in_production(self) -> ServiceSettings:
        if self.environment == "production" and not self.internal_public_keys:
            raise ValueError("LT_INTERNAL_PUBLIC_KEYS must name the gateway's signing keys in production")
        return self

"""Settings base shared by every service: built at start-up, never at import time."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

__all__ = ["DEV_INTERNAL_TOKEN", "ServiceSettings"]

DEV_INTERNAL_TOKEN = "dev-internal-token-change-me"


class ServiceSettings(BaseSettings):
    """Common settings; each service subclasses it with its own fields and env prefix `LT_`."""

    model_config = SettingsConfigDict(env_prefix="LT_", extra="ignore")

    service_name: str = "leaky-tokens"
    environment: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8080
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

    # Shared secret the gateway sends to internal services with the authenticated principal.
    internal_token: str = Field(default=DEV_INTERNAL_TOKEN, min_length=16)

    otlp_endpoint: str | None = None
    trace_sample_ratio: float = 1.0

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

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> ServiceSettings:
        if self.kafka_security_protocol != "PLAINTEXT" and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError("LT_KAFKA_SASL_USERNAME and LT_KAFKA_SASL_PASSWORD are required with SASL")
        return self

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> ServiceSettings:
        if self.environment == "production" and self.internal_token == DEV_INTERNAL_TOKEN:
            raise ValueError("LT_INTERNAL_TOKEN must be set to a real secret in production")
        return self

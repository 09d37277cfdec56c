"""Kafka client options: plain for tansu, SASL/SCRAM with the service's own user for the compose broker."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from leaky_common.kafka import client_options
from leaky_common.settings import ServiceSettings


def test_plaintext_by_default() -> None:
    settings = ServiceSettings(_env_file=None, kafka_bootstrap="k:9092")
    assert client_options(settings) == {"bootstrap_servers": "k:9092"}


def test_sasl_scram_options_carry_the_services_user() -> None:
    settings = ServiceSettings(
        _env_file=None,
        kafka_bootstrap="kafka:9092",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="gateway",
        kafka_sasl_password="s3cret-s3cret",
    )
    assert client_options(settings) == {
        "bootstrap_servers": "kafka:9092",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "gateway",
        "sasl_plain_password": "s3cret-s3cret",
    }
    assert "s3cret" not in repr(settings)


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="LT_KAFKA_SASL_USERNAME"):
        ServiceSettings(_env_file=None, kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="x")


def test_settings_read_a_secrets_directory_after_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path
    (directory / "LT_INTERNAL_TOKEN").write_text("from-a-file-0123456789")
    (directory / "LT_KAFKA_SASL_PASSWORD").write_text("scram-password")
    monkeypatch.setenv("LT_SECRETS_DIR", str(directory))
    monkeypatch.setenv("LT_KAFKA_SASL_USERNAME", "quota")
    monkeypatch.delenv("LT_INTERNAL_TOKEN", raising=False)
    settings = ServiceSettings(_env_file=None, kafka_security_protocol="SASL_PLAINTEXT")
    assert settings.internal_token == "from-a-file-0123456789"
    assert client_options(settings)["sasl_plain_password"] == "scram-password"
    monkeypatch.setenv("LT_INTERNAL_TOKEN", "from-the-environment-0123")
    assert ServiceSettings(_env_file=None).internal_token == "from-the-environment-0123"

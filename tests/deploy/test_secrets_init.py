"""What `secrets-init` generates is what the services' settings parse: each app's directory, read through
LT_SECRETS_DIR with LT_ENVIRONMENT=production, validates; the gateway's signing key (a stdlib Ed25519
derivation, as the init image has no `cryptography`) signs assertions that quota verifies with the key set it
was given; Prometheus' token file is the services' LT_METRICS_TOKEN, Alertmanager's the notifier's
LT_ALERTMANAGER_TOKEN; the old static internal token is gone."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import pytest

from leaky_common.auth import AssertionSigner, AssertionVerifier, Principal, public_key_of
from leaky_common.errors import Unauthorized
from leaky_common.settings import ServiceSettings
from lt_analytics.settings import AnalyticsSettings
from lt_gateway.bootstrap import assertion_signer
from lt_gateway.settings import GatewaySettings
from lt_notifier.settings import NotifierSettings
from lt_quota.settings import QuotaSettings
from lt_saga.settings import SagaSettings

GENERATOR = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "init" / "generate_secrets.py"
SETTINGS: dict[str, type[ServiceSettings]] = {
    "gateway": GatewaySettings,
    "quota": QuotaSettings,
    "purchase-saga": SagaSettings,
    "analytics": AnalyticsSettings,  # the analytics worker mounts the same directory
    "notifier": NotifierSettings,
}
# The compose file's non-secret environment of every app (x-app-env).
COMPOSE_ENV = {
    "LT_ENVIRONMENT": "production",
    "LT_KAFKA_FLAVOUR": "kafka",
    "LT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "LT_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "LT_KAFKA_SASL_USERNAME": "app",
}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_secrets_init", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def secrets_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    generator = _generator()
    monkeypatch.setattr(generator.os, "chown", lambda *_: None)  # the container runs it as root
    for var in ("LT_BOOTSTRAP_ADMIN_KEY", "GRAFANA_ADMIN_PASSWORD", "LT_PAYMENT_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "internal_token").write_text("an old volume's static token")
    (tmp_path / "gateway").mkdir(mode=0o700)
    (tmp_path / "gateway" / "LT_INTERNAL_TOKEN").write_text("an old volume's static token")
    generator.main(tmp_path)
    for name in [n for n in os.environ if n.startswith("LT_")]:
        monkeypatch.delenv(name)  # only the generated files and the compose environment count
    for name, value in COMPOSE_ENV.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def _load(cls: type[ServiceSettings], directory: Path, monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    monkeypatch.setenv("LT_SECRETS_DIR", str(directory))
    return cls(_env_file=None)


def test_every_service_starts_in_production_from_its_own_directory(
    secrets_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = {app: _load(cls, secrets_root / app, monkeypatch) for app, cls in SETTINGS.items()}
    gateway = loaded["gateway"]
    assert isinstance(gateway, GatewaySettings) and gateway.internal_signing_key is not None
    key_sets = {app: s.internal_public_keys for app, s in loaded.items()}
    assert list(key_sets["quota"]) == [gateway.internal_signing_kid]
    assert all(keys == key_sets["quota"] for keys in key_sets.values())
    # The stdlib derivation agrees with `cryptography`'s.
    private = gateway.internal_signing_key.get_secret_value()
    assert key_sets["quota"][gateway.internal_signing_kid] == public_key_of(private)
    tokens = {s.metrics_token.get_secret_value() for s in loaded.values() if s.metrics_token is not None}
    assert tokens == {(secrets_root / "prometheus" / "metrics_token").read_text()}
    assert len(next(iter(tokens))) >= 32
    # Alertmanager posts to the notifier with the notifier's own token; no other app has one.
    notifier_token = loaded["notifier"].alertmanager_token  # type: ignore[attr-defined]
    assert notifier_token is not None
    assert notifier_token.get_secret_value() == (secrets_root / "alertmanager" / "notifier_token").read_text()
    assert len(notifier_token.get_secret_value()) >= 32 and notifier_token.get_secret_value() not in tokens
    assert not list(secrets_root.rglob("*internal_token*")) and not list(
        secrets_root.rglob("*INTERNAL_TOKEN")
    )


def test_the_gateways_assertions_verify_at_quota_and_nowhere_else(
    secrets_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = _load(GatewaySettings, secrets_root / "gateway", monkeypatch)
    quota = _load(QuotaSettings, secrets_root / "quota", monkeypatch)
    analytics = _load(AnalyticsSettings, secrets_root / "analytics", monkeypatch)
    assert isinstance(gateway, GatewaySettings)
    principal = Principal(user_id="u1", org_id="o1")
    token = assertion_signer(gateway).sign(quota.audience, principal)
    verified = AssertionVerifier(quota.internal_public_keys, quota.audience).verify(token)
    assert verified.principal == principal and verified.issuer == "gateway"
    with pytest.raises(Unauthorized):
        AssertionVerifier(analytics.internal_public_keys, analytics.audience).verify(token)
    stranger = _generator().b64url(b"\x01" * 32)
    forged = AssertionSigner(stranger, gateway.internal_signing_kid, issuer="gateway").sign(quota.audience)
    with pytest.raises(Unauthorized):
        AssertionVerifier(quota.internal_public_keys, quota.audience).verify(forged)


def test_restarts_keep_the_key_and_a_deleted_key_is_replaced_with_a_new_kid(
    secrets_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = _generator()
    monkeypatch.setattr(generator.os, "chown", lambda *_: None)
    kid_file = secrets_root / "gateway" / "LT_INTERNAL_SIGNING_KID"
    before = kid_file.read_text(), (secrets_root / "quota" / "LT_INTERNAL_PUBLIC_KEYS").read_text()
    generator.main(secrets_root)
    assert (kid_file.read_text(), (secrets_root / "quota" / "LT_INTERNAL_PUBLIC_KEYS").read_text()) == before
    (secrets_root / "gateway" / "LT_INTERNAL_SIGNING_KEY").unlink()
    generator.main(secrets_root)
    assert kid_file.read_text() != before[0]
    assert list(json.loads((secrets_root / "notifier" / "LT_INTERNAL_PUBLIC_KEYS").read_text())) == [
        kid_file.read_text()
    ]

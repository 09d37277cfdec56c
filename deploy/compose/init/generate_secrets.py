"""One-shot `secrets-init` service of the compose stack: makes every secret the stack needs, once.

Runs as root in `python:3.11-slim` with the `secrets` volume at /secrets, before anything else starts. For
each consumer it makes a directory owned by that consumer's uid (mode 0700, files 0400), so each container
mounts only its own directory (a volume subpath) and reads only its own secrets:

    /secrets/<app>/LT_*          quota, purchase-saga, analytics, notifier, gateway (uid 10001): one file per
                                 setting (read through LT_SECRETS_DIR): database URL with the service's own
                                 password, Kafka SCRAM password, the gateway's public key set
                                 (LT_INTERNAL_PUBLIC_KEYS) and the scraper's LT_METRICS_TOKEN for every app;
                                 the gateway's Ed25519 signing key and kid (LT_INTERNAL_SIGNING_KEY,
                                 LT_INTERNAL_SIGNING_KID), its fingerprint secret, the notifier's
                                 channel-secret key, quota's access-token signing key and kid
                                 (LT_AUTH_SIGNING_KEY, LT_AUTH_SIGNING_KID), ...
    /secrets/postgres/           (uid 999) superuser password and one password per service database
    /secrets/redis/users.acl     (uid 999) ACL users: default off, quota only on lt:* keys
    /secrets/kafka/<user>        (uid 1000) SCRAM passwords of the broker's users
    /secrets/grafana/admin_password  (uid 472)
    /secrets/prometheus/metrics_token (uid 65534) the bearer token Prometheus scrapes /metrics with
    /secrets/alertmanager/notifier_token (uid 65534) the bearer token Alertmanager posts alerts to the
                                 notifier with (the notifier's LT_ALERTMANAGER_TOKEN)

Existing files are kept (restarts change nothing). Three values may come from the environment instead:
LT_BOOTSTRAP_ADMIN_KEY (changing it replaces the old admin key: quota revokes the previous one at start),
GRAFANA_ADMIN_PASSWORD and LT_PAYMENT_API_KEY (the real payment provider's key). A generated admin key or Grafana password is printed once, when it is made.

The gateway's signing key is an Ed25519 key in the format of `leaky_common.auth` (the raw 32-byte key, unpadded
base64url); its kid is derived from the public key, so a new key gets a new kid. This image has only the
standard library, so the public half is computed here (RFC 8032, section 5.1.5); tests/deploy checks it
against `cryptography`. Rotation: docs/security.md ("Internal identity").
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

APPS = {
    "quota": "lt_quota",
    "purchase-saga": "lt_saga",
    "analytics": "lt_analytics",
    "notifier": "lt_notifier",
}
KAFKA_USERS = ("gateway", "quota", "saga", "analytics", "notifier")
KAFKA_USER_OF = {"gateway": "gateway", "quota": "quota", "purchase-saga": "saga"}
KAFKA_USER_OF |= {"analytics": "analytics", "notifier": "notifier"}
UIDS = {"app": 10001, "postgres": 999, "redis": 999, "kafka": 1000, "grafana": 472, "prometheus": 65534}
UIDS["alertmanager"] = 65534

# Ed25519 (RFC 8032): only what deriving a public key from a private key needs.
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Point = tuple[int, int, int, int]


def _add(a: _Point, b: _Point) -> _Point:
    e1, h1 = (a[1] - a[0]) * (b[1] - b[0]) % _P, (a[1] + a[0]) * (b[1] + b[0]) % _P
    c, d = 2 * a[3] * b[3] * _D % _P, 2 * a[2] * b[2] % _P
    e, f, g, h = h1 - e1, d - c, d + c, h1 + e1
    return (e * f, g * h, f * g, e * h)


def _base_point() -> _Point:
    y = 4 * pow(5, _P - 2, _P) % _P
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if x & 1:
        x = _P - x
    return (x, y, 1, x * y % _P)


def ed25519_public(private: bytes) -> bytes:
    """The public key of a 32-byte Ed25519 private key (RFC 8032, 5.1.5)."""
    digest = hashlib.sha512(private).digest()
    scalar = (int.from_bytes(digest[:32], "little") & ((1 << 254) - 8)) | (1 << 254)
    result, point = (0, 1, 1, 0), _base_point()
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point, scalar = _add(point, point), scalar >> 1
    z_inv = pow(result[2], _P - 2, _P)
    x, y = result[0] * z_inv % _P, result[1] * z_inv % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def private_dir(root: Path, name: str, uid: int) -> Path:
    path = root / name
    path.mkdir(mode=0o700, exist_ok=True)
    os.chown(path, uid, uid)
    path.chmod(0o700)
    return path


def put(path: Path, value: str, uid: int, *, replace: bool = False) -> str:
    """Write `value` unless the file exists (or `replace`); returns the file's value."""
    if replace or not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        try:
            os.fchmod(fd, 0o400)
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    os.chown(path, uid, uid)
    path.chmod(0o400)
    return path.read_text()


def token() -> str:
    return secrets.token_hex(32)  # hex: safe inside URLs, ACL files and JAAS strings


def internal_identity(root: Path, gateway: Path) -> dict[str, str]:
    """The gateway's signing key and kid (kept once made), and every app's `LT_INTERNAL_PUBLIC_KEYS`."""
    (root / "internal_token").unlink(missing_ok=True)  # the static shared token of older volumes
    private = put(gateway / "LT_INTERNAL_SIGNING_KEY", b64url(secrets.token_bytes(32)), UIDS["app"])
    public = b64url(ed25519_public(unb64url(private)))
    kid = "k-" + hashlib.sha256(public.encode()).hexdigest()[:12]
    put(gateway / "LT_INTERNAL_SIGNING_KID", kid, UIDS["app"], replace=True)
    return {"LT_INTERNAL_PUBLIC_KEYS": json.dumps({kid: public})}


def sign_in_identity(quota: Path) -> None:
    """Quota's key for signing access tokens (kept once made; only quota holds it) and its kid, derived from
    the public key. Rotation keeps the old public key accepted: docs/security.md ("Sign-in")."""
    private = put(quota / "LT_AUTH_SIGNING_KEY", b64url(secrets.token_bytes(32)), UIDS["app"])
    public = b64url(ed25519_public(unb64url(private)))
    put(
        quota / "LT_AUTH_SIGNING_KID",
        "a-" + hashlib.sha256(public.encode()).hexdigest()[:12],
        UIDS["app"],
        replace=True,
    )


def main(root: Path) -> None:
    root.chmod(0o711)
    made: list[str] = []
    pg = private_dir(root, "postgres", UIDS["postgres"])
    put(pg / "superuser_password", token(), UIDS["postgres"])
    db_passwords = {app: put(pg / f"{db}_password", token(), UIDS["postgres"]) for app, db in APPS.items()}

    kafka = private_dir(root, "kafka", UIDS["kafka"])
    scram = {user: put(kafka / user, token(), UIDS["kafka"]) for user in KAFKA_USERS}

    redis_dir = private_dir(root, "redis", UIDS["redis"])
    quota_redis = put(redis_dir / "quota_password", token(), UIDS["redis"])
    acl = (
        "user default off\n"
        "user healthcheck on nopass -@all +ping\n"
        f"user quota on #{hashlib.sha256(quota_redis.encode()).hexdigest()} resetkeys resetchannels ~lt:* &lt:* +@all -@admin -@dangerous\n"
    )
    put(redis_dir / "users.acl", acl, UIDS["redis"], replace=True)

    grafana = private_dir(root, "grafana", UIDS["grafana"])
    given = os.environ.get("GRAFANA_ADMIN_PASSWORD")
    if not (grafana / "admin_password").exists() and not given:
        made.append("Grafana admin password (user admin): " + put(grafana / "admin_password", token(), 472))
    elif given:
        put(grafana / "admin_password", given, UIDS["grafana"], replace=True)

    apps = {app: private_dir(root, app, UIDS["app"]) for app in [*APPS, "gateway"]}
    shared = internal_identity(root, apps["gateway"])
    sign_in_identity(apps["quota"])
    metrics_token = put(root / "metrics_token", token(), 0)
    shared["LT_METRICS_TOKEN"] = metrics_token
    scraper = private_dir(root, "prometheus", UIDS["prometheus"])
    put(scraper / "metrics_token", metrics_token, UIDS["prometheus"], replace=True)
    for app, directory in apps.items():
        (directory / "LT_INTERNAL_TOKEN").unlink(missing_ok=True)  # the static token it replaced
        values = {**shared, "LT_KAFKA_SASL_PASSWORD": scram[KAFKA_USER_OF[app]]}
        if app in APPS:
            values["LT_DATABASE_URL"] = (
                f"postgresql://{APPS[app]}:{db_passwords[app]}@postgres:5432/{APPS[app]}"
            )
        for name, value in values.items():
            put(directory / name, value, UIDS["app"], replace=True)
    put(apps["gateway"] / "LT_FINGERPRINT_SECRET", token(), UIDS["app"])
    # The key sealing channel secrets at rest (rotation: docs/security.md, "Channel secrets at rest").
    sealing = "k1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    put(apps["notifier"] / "LT_CHANNEL_SECRET_KEYS", sealing, UIDS["app"])
    alert_token = put(apps["notifier"] / "LT_ALERTMANAGER_TOKEN", token(), UIDS["app"])
    alertmanager = private_dir(root, "alertmanager", UIDS["alertmanager"])
    put(alertmanager / "notifier_token", alert_token, UIDS["alertmanager"], replace=True)
    put(
        apps["quota"] / "LT_REDIS_URL", f"redis://quota:{quota_redis}@redis:6379/0", UIDS["app"], replace=True
    )

    payment_key = os.environ.get("LT_PAYMENT_API_KEY")  # the real provider's; else one for the fake provider
    put(
        apps["purchase-saga"] / "LT_PAYMENT_API_KEY",
        payment_key or "sk_test_" + token(),
        10001,
        replace=bool(payment_key),
    )

    admin_file = apps["quota"] / "LT_BOOTSTRAP_ADMIN_KEY"
    if given_key := os.environ.get("LT_BOOTSTRAP_ADMIN_KEY"):
        put(admin_file, given_key, UIDS["app"], replace=True)
    elif not admin_file.exists():
        made.append(
            "platform admin API key: " + put(admin_file, "lt-admin-" + secrets.token_urlsafe(32), 10001)
        )

    for line in made:  # shown once: `docker compose logs secrets-init` right after the first start
        sys.stdout.write(f"generated {line}\n")
    sys.stdout.write(f"secrets ready in {root} (kept in the `secrets` volume)\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/secrets"))

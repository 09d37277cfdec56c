"""One-shot `secrets-init` service of the compose stack: makes every secret the stack needs, once.

Runs as root in `python:3.11-slim` with the `secrets` volume at /secrets, before anything else starts. For
each consumer it makes a directory owned by that consumer's uid (mode 0700, files 0400), so each container
mounts only its own directory (a volume subpath) and reads only its own secrets:

    /secrets/<app>/LT_*          quota, purchase-saga, analytics, notifier, gateway (uid 10001): one file per
                                 setting (read through LT_SECRETS_DIR): database URL with the service's own
                                 password, Kafka SCRAM password, internal token, the gateway's
                                 fingerprint secret, the notifier's channel-secret key, ...
    /secrets/postgres/           (uid 999) superuser password and one password per service database
    /secrets/redis/users.acl     (uid 999) ACL users: default off, quota only on lt:* keys
    /secrets/kafka/<user>        (uid 1000) SCRAM passwords of the broker's users
    /secrets/grafana/admin_password  (uid 472)

Existing files are kept (restarts change nothing). Three values may come from the environment instead:
LT_BOOTSTRAP_ADMIN_KEY (changing it replaces the old admin key: quota revokes the previous one at start),
GRAFANA_ADMIN_PASSWORD and LT_PAYMENT_API_KEY (the real payment provider's key). A generated admin key or Grafana password is printed once, when it is made.
"""

from __future__ import annotations

import base64
import hashlib
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
UIDS = {"app": 10001, "postgres": 999, "redis": 999, "kafka": 1000, "grafana": 472}


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

    shared = {"LT_INTERNAL_TOKEN": put(root / "internal_token", token(), 0)}
    apps = {app: private_dir(root, app, UIDS["app"]) for app in [*APPS, "gateway"]}
    for app, directory in apps.items():
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

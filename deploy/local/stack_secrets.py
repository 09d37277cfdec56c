"""The local stack's secrets: generated at the first `up`, kept in the run directory, owner-only files.

Each secret is a file `<run-dir>/<name>` created with mode 0600 (never world-readable, not even briefly),
reused by later `up`s so keys and fingerprints stay stable across restarts. Delete a file to rotate it
(see docs/security.md).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["SECRETS", "ensure_secrets", "write_private"]

# file name -> (environment variable, generator)
SECRETS = {
    "admin_key": ("LT_BOOTSTRAP_ADMIN_KEY", lambda: "lt-admin-" + secrets.token_urlsafe(32)),
    "internal_token": ("LT_INTERNAL_TOKEN", lambda: secrets.token_urlsafe(32)),
    "fingerprint_secret": ("LT_FINGERPRINT_SECRET", lambda: secrets.token_urlsafe(32)),
}


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by the owner only (also when the file existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def ensure_secrets(run_dir: Path) -> dict[str, str]:
    """Every secret of the stack by environment variable, generating the missing ones."""
    out: dict[str, str] = {}
    for name, (env, generate) in SECRETS.items():
        path = run_dir / name
        if not path.exists():
            write_private(path, generate())
        path.chmod(0o600)
        out[env] = path.read_text().strip()
    return out

"""Webhook signatures the Standard Webhooks way (https://www.standardwebhooks.com), for senders and receivers.

Every request carries `webhook-id` (the message id: the same on every retry, so receivers can deduplicate),
`webhook-timestamp` (integer Unix seconds when it was sent) and `webhook-signature`: `v1,<base64 HMAC-SHA256
of "<id>.<timestamp>.<raw body>">`, possibly several space-separated (while a secret rotates). The key is the
base64 part of a `whsec_<base64>` secret; a secret without that prefix (made before signing followed the
standard) is used as its UTF-8 bytes. A receiver recomputes the signature over the raw body, compares in
constant time and refuses timestamps further than its tolerance (5 minutes here) from its clock, which
bounds replays; the id lets it drop a replay inside the window.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import time
from collections.abc import Mapping

__all__ = [
    "TOLERANCE_S",
    "InvalidSignature",
    "check_secret",
    "new_secret",
    "sign",
    "signed_headers",
    "verify",
]

TOLERANCE_S = 300
_PREFIX = "whsec_"
_TOKEN = re.compile(r"^[A-Za-z0-9+/=]+$")


class InvalidSignature(ValueError):
    """The request is not signed with the secret, or its timestamp is outside the tolerance."""


def new_secret() -> str:
    """A fresh `whsec_` secret (32 random bytes)."""
    return _PREFIX + base64.b64encode(os.urandom(32)).decode()


def check_secret(secret: str) -> str:
    """Accept a `whsec_` secret holding 24 to 64 bytes of key; raise ValueError otherwise."""
    if not secret.startswith(_PREFIX) or not _TOKEN.match(secret[len(_PREFIX) :]):
        raise ValueError("secret must be 'whsec_' followed by base64 (24 to 64 random bytes)")
    if not 24 <= len(_key(secret)) <= 64:
        raise ValueError("secret must hold 24 to 64 bytes of key")
    return secret


def _key(secret: str) -> bytes:
    if secret.startswith(_PREFIX):
        try:
            return base64.b64decode(secret[len(_PREFIX) :], validate=True)
        except binascii.Error:
            raise ValueError("secret after 'whsec_' is not base64") from None
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one message."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`, timestamped now."""
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: int = TOLERANCE_S,
    now: float | None = None,
) -> str:
    """What a receiver does: check the signature and the timestamp window; the message id, or
    InvalidSignature. `headers` is looked up case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (
        lower.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
    )
    if not msg_id or not stamp or not signatures:
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise InvalidSignature("webhook-timestamp is outside the tolerance window")
    expected = sign(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, given) for given in signatures.split(" ")):
        raise InvalidSignature("no matching signature")
    return msg_id

"""Loop fingerprints that reveal nothing outside the gateway.

A prompt's digest stays in the gateway's memory; what leaves it (usage events, and from them every table,
topic and spool) is an HMAC of that digest under a key derived for the caller's org from the gateway's
secret. Without the secret no one can test a guessed prompt against a fingerprint, and fingerprints of
different orgs cannot be compared with each other.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

__all__ = ["Fingerprinter", "prompt_digest"]

_KEY_LABEL = b"leaky-tokens/loop-fingerprint/v1/"


def prompt_digest(model: str, payload: Any) -> bytes:
    """An in-memory digest of a prompt (never sent anywhere: it is unkeyed)."""
    return hashlib.blake2b(orjson.dumps([model, payload]), digest_size=32).digest()


class Fingerprinter:
    """Keyed fingerprints: HMAC-SHA256(org key, digest), the org key HMAC-SHA256(secret, label + org id)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the fingerprint secret must have at least 16 bytes")
        self._secret = secret
        self._org_keys: dict[str, bytes] = {}

    def org_key(self, org_id: str) -> bytes:
        """The org's fingerprint key (derived, cached)."""
        key = self._org_keys.get(org_id)
        if key is None:
            if len(self._org_keys) >= 10_000:
                self._org_keys.clear()
            key = hmac.new(self._secret, _KEY_LABEL + org_id.encode(), hashlib.sha256).digest()
            self._org_keys[org_id] = key
        return key

    def fingerprint(self, org_id: str | None, digest: bytes) -> str | None:
        """The fingerprint a usage event carries; none when the org is unknown (nothing to key it with)."""
        if not org_id:
            return None
        return hmac.new(self.org_key(org_id), digest, hashlib.sha256).hexdigest()[:32]

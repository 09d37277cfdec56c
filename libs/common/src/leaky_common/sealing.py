"""Secrets sealed at rest: AES-256-GCM with a key from settings, the key id stored beside the ciphertext.

A sealed value reads `enc:v1:<key id>:<base64url(12-byte nonce + ciphertext + tag)>`. The associated data
(`context`, e.g. the row id and field name) binds a ciphertext to its place: copied into another row or field
it no longer opens. Keys come as `"<id>:<base64 of 32 bytes>[,<id>:<key>...]"`; the first seals, all open,
so a key is rotated by putting a new one first, letting the owner re-seal (`needs_reseal`), then removing
the old one.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["PREFIX", "SealError", "SecretBox", "is_sealed", "new_key"]

PREFIX = "enc:v1:"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class SealError(ValueError):
    """A bad key setting, an unknown key id or a value that does not open (tampered, moved, wrong key)."""


def new_key() -> str:
    """A fresh base64 key for the keys setting."""
    return base64.b64encode(os.urandom(32)).decode()


def is_sealed(value: str) -> bool:
    """Whether `value` is a sealed value (not a plaintext left from before sealing)."""
    return value.startswith(PREFIX)


def _parse_keys(spec: str) -> list[tuple[str, AESGCM]]:
    keys: list[tuple[str, AESGCM]] = []
    for item in spec.split(","):
        if not item.strip():
            continue
        key_id, _, encoded = item.strip().partition(":")
        if not _KEY_ID.match(key_id):
            raise SealError("each key needs an id of 1-32 letters, digits, '-' or '_' before ':'")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise SealError(f"key {key_id!r} is not base64") from None
        if len(raw) != 32:
            raise SealError(f"key {key_id!r} must be 32 bytes (base64 of 32 random bytes)")
        if any(k == key_id for k, _ in keys):
            raise SealError(f"key id {key_id!r} is given twice")
        keys.append((key_id, AESGCM(raw)))
    return keys


class SecretBox:
    """Seals and opens strings; `configured` is False when no key was given (nothing can be sealed)."""

    def __init__(self, keys: str) -> None:
        self._keys = _parse_keys(keys)

    @property
    def configured(self) -> bool:
        """Whether there is a key to seal with."""
        return bool(self._keys)

    @property
    def current_key_id(self) -> str | None:
        """The id of the key new values are sealed with."""
        return self._keys[0][0] if self._keys else None

    def seal(self, plaintext: str, context: str) -> str:
        """Seal `plaintext` for the place named by `context`."""
        if not self._keys:
            raise SealError("no key configured to seal secrets with")
        key_id, aead = self._keys[0]
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{PREFIX}{key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, value: str, context: str) -> str:
        """The plaintext of a sealed `value` sealed for `context`; SealError if it does not open."""
        if not is_sealed(value):
            raise SealError("value is not sealed")
        key_id, _, encoded = value[len(PREFIX) :].partition(":")
        aead = next((a for k, a in self._keys if k == key_id), None)
        if aead is None:
            raise SealError(f"no key {key_id!r} configured to open this value")
        try:
            raw = base64.urlsafe_b64decode(encoded)
            return aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (binascii.Error, InvalidTag, ValueError):
            raise SealError("sealed value does not open (tampered, moved or wrong key)") from None

    def needs_reseal(self, value: str) -> bool:
        """Whether `value` is plaintext or sealed with a key other than the current one."""
        if not is_sealed(value):
            return True
        return value[len(PREFIX) :].partition(":")[0] != self.current_key_id

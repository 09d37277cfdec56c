"""Ids and API keys: how a key is generated, shown and stored."""

from __future__ import annotations

import hashlib
import secrets
import uuid

__all__ = ["KEY_PREFIX_LEN", "generate_api_key", "hash_api_key", "key_prefix", "new_id"]

KEY_PREFIX_LEN = 11  # "lt-" plus 8 random characters: enough to recognise a key, useless to guess it


def new_id() -> str:
    """A fresh uuid hex id."""
    return uuid.uuid4().hex


def generate_api_key() -> str:
    """A new secret API key `lt-<43 urlsafe chars>` (32 random bytes)."""
    return "lt-" + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    """Hex sha256 of the key: the only form stored or cached."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def key_prefix(api_key: str) -> str:
    """The visible part of a key shown in listings."""
    return api_key[:KEY_PREFIX_LEN]

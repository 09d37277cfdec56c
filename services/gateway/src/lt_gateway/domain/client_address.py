"""The address a request comes from, through the web console.

The console calls the public API from its own address, so without help every console user would share one
per-address budget (management rate, failed-authentication and login limits). The gateway therefore tells the
console, with each page request, the address it saw and a proof: an HMAC, under a key only gateways hold, of
that address and the current five-minute window. The console sends both back on the API calls it makes for
that page, and the gateway counts the call against the proven address. Nothing else is trusted: a forged,
altered or stale proof is ignored and the peer's own address counts.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Iterable

__all__ = ["ADDRESS_HEADER", "PROOF_HEADER", "AddressProof"]

ADDRESS_HEADER = "x-lt-client-address"
PROOF_HEADER = "x-lt-client-proof"
_WINDOW_S = 300


def _plain_address(value: str) -> str | None:
    """`value` if it is an IP address (canonical form), else None."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


class AddressProof:
    """Signs and checks client addresses; every gateway instance built from the same secret agrees."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_secrets(cls, secrets: Iterable[str | None]) -> AddressProof:
        """A key derived from the first secret configured (shared by the instances), else a random one (a
        single process: proofs it made are honoured by itself only)."""
        for secret in secrets:
            if secret:
                return cls(hashlib.sha256(b"lt-client-address\0" + secret.encode()).digest())
        return cls(os.urandom(32))

    def _mac(self, address: str, window: int) -> str:
        return hmac.new(self._key, f"{address}|{window}".encode(), hashlib.sha256).hexdigest()

    def sign(self, address: str, now_s: float) -> str:
        """The proof for `address` now."""
        return self._mac(address, int(now_s // _WINDOW_S))

    def verified(self, address: str | None, proof: str | None, now_s: float) -> str | None:
        """The address if `proof` was made for it in this window or the previous one; None otherwise."""
        if not address or not proof or len(proof) != 64:
            return None
        plain = _plain_address(address)
        if plain is None or plain != address:
            return None
        window = int(now_s // _WINDOW_S)
        for w in (window, window - 1):
            if hmac.compare_digest(self._mac(address, w), proof):
                return address
        return None

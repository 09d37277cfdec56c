"""Test support: waiting on conditions with a deadline, a clock tests move by hand, and the one way tests
build internal credentials (`InternalKeys`: signing keys, settings and `X-LT-Assertion` headers)."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from leaky_common.auth import (
    ASSERTION_HEADER,
    AssertionSigner,
    Principal,
    generate_signing_key,
    public_key_of,
)

__all__ = ["TEST_KEYS", "InternalKeys", "ManualClock", "eventually", "required_tool"]


def required_tool(name: str, package: str, brew: str | None = None) -> str:
    """The path of an external tool a test needs (promtool, prometheus, amtool). Missing, the test is skipped
    with how to install it on a developer's machine, and fails in CI (`CI` set: `.ci/run` installs it)."""
    found = shutil.which(name)
    if found:
        return found
    hint = f"{name} not on PATH: `apt-get install {package}` (Debian, Ubuntu) or `brew install {brew or package}`"
    if os.environ.get("CI"):
        pytest.fail(f"{hint}; CI must run this test (.ci/run installs it)")
    pytest.skip(hint)


async def eventually(
    check: Callable[[], Awaitable[Any] | Any],
    timeout: float = 30.0,
    what: str = "condition",
    *,
    interval: float = 0.05,
) -> Any:
    """Poll `check` (sync or async) until it returns a truthy value and return it; fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last value: {last!r})")
        await asyncio.sleep(interval)


class ManualClock:
    """An injectable clock in epoch milliseconds that moves only when a test sets or advances `now_ms`."""

    def __init__(self, now_ms: int | None = None) -> None:
        self.now_ms = now_ms if now_ms is not None else int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now_ms


@dataclass(frozen=True)
class InternalKeys:
    """A signing key pair for tests: the settings that trust it, and the headers an internal caller sends."""

    private: str
    kid: str = "test-1"

    @classmethod
    def generate(cls, kid: str = "test-1") -> InternalKeys:
        """A fresh key pair."""
        return cls(generate_signing_key()[0], kid)

    @property
    def public(self) -> str:
        """The public key (base64url)."""
        return public_key_of(self.private)

    def settings(self) -> dict[str, Any]:
        """Settings fields for a service that trusts these keys (and, for the gateway, signs with them)."""
        return {
            "internal_public_keys": {self.kid: self.public},
            "internal_signing_key": self.private,
            "internal_signing_kid": self.kid,
        }

    def env(self) -> dict[str, str]:
        """The same as `LT_*` environment variables, for processes a test starts."""
        return {
            "LT_INTERNAL_PUBLIC_KEYS": json.dumps({self.kid: self.public}),
            "LT_INTERNAL_SIGNING_KEY": self.private,
            "LT_INTERNAL_SIGNING_KID": self.kid,
        }

    def signer(self, ttl_s: int = 30) -> AssertionSigner:
        """A signer with these keys (issuer `test`)."""
        return AssertionSigner(self.private, self.kid, issuer="test", ttl_s=ttl_s)

    def headers(
        self, audience: str, principal: Principal | dict[str, Any] | None = None, **principal_fields: Any
    ) -> dict[str, str]:
        """`X-LT-Assertion` for `audience`: a user's (principal or its fields) or, with neither, a caller's."""
        if principal is None and principal_fields:
            principal = principal_fields
        if isinstance(principal, dict):
            principal = Principal.model_validate(principal)
        signer = self.signer()
        token = signer.sign(audience, principal) if principal is not None else signer.sign(audience)
        return {ASSERTION_HEADER: token}

    def forged_headers(self, audience: str, claims: dict[str, Any], kid: str | None = None) -> dict[str, str]:
        """An assertion with arbitrary claims (expired, too long-lived, ...) signed with these keys."""
        key = Ed25519PrivateKey.from_private_bytes(_unb64(self.private))
        token = jwt.encode(
            {"aud": audience, **claims}, key, algorithm="EdDSA", headers={"kid": kid or self.kid}
        )
        return {ASSERTION_HEADER: token}


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# One key pair per test session: settings built with `TEST_KEYS.settings()` trust `TEST_KEYS.headers(...)`.
TEST_KEYS = InternalKeys.generate()

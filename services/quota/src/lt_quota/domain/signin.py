"""Sign-in rules without I/O: access tokens (EdDSA JWTs with a `kid`), refresh tokens and password hashes.

Access tokens are short-lived and say only who signed in and in which sign-in session (`sub`, `sid`): quota
looks the user up on every use, so a role change, a suspension, a logout or a password change counts at once.
Several verification keys are accepted (by `kid`) and the newest signs, so rotating the key signs nobody out.
Refresh tokens are 256 random bits, kept only as SHA-256 (they are not guessable, so a fast hash suffices);
passwords are kept as argon2id hashes (`argon2-cffi`'s defaults, RFC 9106's second recommended setting).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from leaky_common.errors import Unauthorized

__all__ = [
    "ACCESS_AUDIENCE",
    "REFRESH_PREFIX",
    "AccessClaims",
    "AccessTokens",
    "Passwords",
    "hash_refresh_token",
    "new_refresh_token",
]

ACCESS_AUDIENCE = "leaky-tokens-api"
REFRESH_PREFIX = "lt_rt_"
_ALGORITHM = "EdDSA"
_INVALID = "invalid_access_token"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def new_refresh_token() -> str:
    """A fresh refresh token (shown to the client once; only its hash is kept)."""
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    """What is stored of a refresh token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """A verified access token: the user, their sign-in session and when the token expires (s)."""

    user_id: str
    session_id: str
    expires_at: int


class AccessTokens:
    """Signs access tokens with the newest key and verifies them against every published key.

    Time comes from the caller (seconds), so quota's injectable clock governs expiry as it does everything else.
    """

    def __init__(
        self,
        private_key: str | None,
        kid: str,
        public_keys: Mapping[str, str],
        *,
        issuer: str,
        ttl_s: int,
        leeway_s: int = 5,
    ) -> None:
        self._signing = Ed25519PrivateKey.from_private_bytes(_unb64(private_key)) if private_key else None
        self._kid = kid
        self._keys = {k: Ed25519PublicKey.from_public_bytes(_unb64(v)) for k, v in public_keys.items()}
        if self._signing is not None:
            self._keys[kid] = self._signing.public_key()
        self._issuer = issuer
        self.ttl_s = ttl_s
        self._leeway_s = leeway_s

    @property
    def enabled(self) -> bool:
        """Whether this process can sign access tokens (a signing key is configured)."""
        return self._signing is not None

    def sign(self, user_id: str, session_id: str, now_s: int) -> str:
        """A fresh access token for `user_id` in sign-in session `session_id`."""
        assert self._signing is not None, "no signing key"
        claims = {
            "iss": self._issuer,
            "aud": ACCESS_AUDIENCE,
            "sub": user_id,
            "sid": session_id,
            "iat": now_s,
            "exp": now_s + self.ttl_s,
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode(claims, self._signing, algorithm=_ALGORITHM, headers={"kid": self._kid})

    def verify(self, token: str, now_s: int) -> AccessClaims:
        """The claims of a valid token; 401 `invalid_access_token` for anything else (unknown kid, bad
        signature, another issuer or audience, expired, malformed)."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise Unauthorized("access token signed with an unknown key", code=_INVALID)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[_ALGORITHM],
                audience=ACCESS_AUDIENCE,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "sid"], "verify_exp": False, "verify_iat": False},
            )
            expires_at = int(claims["exp"])
            user_id, session_id = claims["sub"], claims["sid"]
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise Unauthorized("invalid access token", code=_INVALID) from exc
        if expires_at + self._leeway_s <= now_s:
            raise Unauthorized("access token expired", code="access_token_expired")
        if not (isinstance(user_id, str) and isinstance(session_id, str)):
            raise Unauthorized("invalid access token", code=_INVALID)
        return AccessClaims(user_id, session_id, expires_at)

    def jwks(self) -> dict[str, Any]:
        """Every accepted public key as a JSON Web Key Set (RFC 8037 OKP keys)."""
        keys = [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": _ALGORITHM,
                "use": "sig",
                "kid": kid,
                "x": _b64(key.public_bytes(Encoding.Raw, PublicFormat.Raw)),
            }
            for kid, key in self._keys.items()
        ]
        return {"keys": keys}


class Passwords:
    """argon2id hashing; `check` against a dummy hash for unknown accounts costs the same as a real one."""

    def __init__(self) -> None:
        self._hasher = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        """A new argon2id hash of `password` (CPU-bound: run it off the event loop)."""
        return self._hasher.hash(password)

    def check(self, stored: str | None, password: str) -> bool:
        """Whether `password` matches `stored`; without a stored hash, the same work against a dummy, False."""
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        """True when `stored` was made with weaker parameters than today's."""
        return self._hasher.check_needs_rehash(stored)

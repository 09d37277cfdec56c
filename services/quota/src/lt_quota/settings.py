"""Quota service settings (env prefix `LT_`), built at start-up."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from leaky_common.settings import ServiceSettings

__all__ = ["QuotaSettings"]


class QuotaSettings(ServiceSettings):
    """Settings of the quota service."""

    service_name: str = "quota"
    port: int = 8082
    # The internal link's port (leaky_common.link): the gateway's admissions and releases over a few persistent
    # connections without HTTP (the gateway's `LT_QUOTA_LINK_URL` names it). Unset: no link, the gateway calls
    # over HTTP; 0: any free port (tests). `make up`, compose and the Kubernetes manifests use 8092.
    link_port: int | None = Field(default=None, ge=0, le=65535)

    # When set, start-up ensures a default org, an admin user holding this key, and a large personal pool.
    bootstrap_admin_key: str | None = None
    bootstrap_admin_quota: int = Field(default=10**12, ge=0)

    default_personal_quota: int = Field(default=100_000, ge=0)

    # Leaky buckets: capacity per period; each bucket leaks continuously at capacity / period.
    bucket_period_s: float = Field(default=60.0, gt=0)
    key_requests_per_period: int = Field(default=600, ge=1)
    key_tokens_per_period: int = Field(default=200_000, ge=1)
    user_requests_per_period: int = Field(default=600, ge=1)
    user_tokens_per_period: int = Field(default=200_000, ge=1)
    # leaky_bucket (drains continuously), token_bucket (refills continuously and may hold `bucket_burst`
    # periods' worth) or fixed_window (counts per period window).
    bucket_strategy: Literal["leaky_bucket", "token_bucket", "fixed_window"] = "leaky_bucket"
    bucket_burst: float = Field(default=2.0, ge=1.0)
    # Tiers scale capacity (and so the leak rate) of a user's buckets; admins get a further multiplier.
    bucket_tiers: dict[str, float] = Field(
        default_factory=lambda: {"standard": 1.0, "pro": 2.0, "enterprise": 5.0}
    )
    admin_bucket_multiplier: float = Field(default=2.0, gt=0)
    # Without max_tokens a request reserves up to the model's maximum on its pools, but the token buckets are
    # charged this expected answer length (corrected to the actual usage at settlement).
    bucket_output_estimate_tokens: int = Field(default=1024, ge=1)

    # A reservation never settled is charged at its reserved amount after this long.
    reservation_ttl_s: int = Field(default=600, ge=1)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    # A release's update of the durable record of a reservation waits this long: the usage event usually
    # settles the reservation first, and the update is then never written (0: write at once).
    release_record_delay_s: float = Field(default=1.0, ge=0)
    # The writer of durable reservation records gathers admissions this long before each write: one statement
    # for every admission of that time instead of one per admission (0: write at once). A reservation settled
    # meanwhile is never written; one written while its settlement commits (the write cannot see that charge)
    # leaves a record that recovery, the counters' rebuild and the sweep find charged and drop. Recovery after
    # Redis lost its data writes what is gathered first; only a quota process killed together with Redis's
    # data loses the records of that time (their usage events still charge them).
    reservation_record_linger_s: float = Field(default=0.02, ge=0, le=1)

    # Self-service vacation (`PUT /v1/users/me/status`): it ends at most this many days ahead (the default end).
    vacation_max_days: int = Field(default=30, ge=1, le=366)
    # How many times in 24 hours a user may change their own status (each change is in the audit log).
    status_changes_per_day: int = Field(default=4, ge=1)
    # At most this many new sessions (session budgets) per org in any 24 hours; a request naming one more new
    # session id gets 429 `too_many_sessions` (sessions already seen keep working, admins may still set budgets).
    sessions_per_org_per_day: int = Field(default=10_000, ge=1)

    # Sign-in (docs/security.md, "Sign-in"): access tokens are EdDSA JWTs signed with this Ed25519 private key
    # (unpadded base64url of the raw key, as `leaky_common.auth.generate_signing_key` makes it) under this kid.
    # Unset: `POST /v1/auth/login` answers 503 and no access token is accepted (API keys still work).
    auth_signing_key: SecretStr | None = None
    auth_signing_kid: str = ""
    # Earlier public keys still accepted, by kid, as JSON: {"k1": "..."} (the signing key's own is added).
    # Keep a retired key here for one access-token lifetime after rotating, so nobody is signed out.
    auth_public_keys: dict[str, str] = Field(default_factory=dict)
    auth_issuer: str = "leaky-tokens"
    access_token_ttl_s: int = Field(default=900, ge=30, le=3600)
    # A sign-in session (the family of its rotating refresh tokens) ends this long after the login.
    refresh_session_ttl_s: int = Field(default=30 * 86400, ge=300)
    # Login attempts counted per account (the email) and per client address in a fixed window; one more is
    # answered 429 with Retry-After until the window ends. A successful login clears the account's count.
    login_attempts_per_account: int = Field(default=10, ge=1)
    login_attempts_per_address: int = Field(default=50, ge=1)
    login_window_s: int = Field(default=900, ge=1)
    password_min_length: int = Field(default=12, ge=8, le=128)
    # At most this many argon2 computations at once per quota process (each takes 64 MiB and a core for about
    # 0.1 s): a flood of logins waits for its turn instead of starving admission.
    password_hash_concurrency: int = Field(default=2, ge=1, le=16)

    # How long an API-key lookup is trusted from process memory.
    key_cache_ttl_s: float = Field(default=5.0, ge=0)

    redis_prefix: str = "lt:"
    redis_max_connections: int = Field(default=64, ge=1)
    # How long a Redis connect or command may take before quota treats Redis as unavailable (503, retried by
    # the caller) instead of waiting for ever on a server that stopped answering (a dropped network path).
    redis_timeout_s: float = Field(default=3.0, gt=0, le=60)
    # LT_REDIS_URL names one node of a Redis Cluster: the client discovers the others and sends each admission
    # to the node of its org's hash slot (every key of one admission carries the org's tag; see
    # adapters/redis_state.py). Commands are then not traced as client spans.
    redis_cluster: bool = False
    consumer_group: str = "quota"
    db_pool_size: int = Field(default=10, ge=2)

    @model_validator(mode="after")
    def _signing_key_needs_kid(self) -> QuotaSettings:
        if self.auth_signing_key is not None and not self.auth_signing_kid:
            raise ValueError("LT_AUTH_SIGNING_KID must name LT_AUTH_SIGNING_KEY")
        return self

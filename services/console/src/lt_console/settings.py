"""Console settings (env prefix LT_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    """Where the gateway is and how long a console session lives."""

    model_config = SettingsConfigDict(env_prefix="LT_", extra="ignore")

    service_name: str = "console"
    host: str = "127.0.0.1"
    port: int = 8088
    # Seconds an idle client connection is kept open (uvicorn's default is 5): above the gateway's 30 s for its
    # connections here (leaky_common.settings.CLIENT_KEEPALIVE_S), so the gateway always closes one first.
    keep_alive_s: int = Field(default=75, gt=30, le=3600)
    # The gateway's public address as this process reaches it: every page is made from its public API.
    gateway_url: str = "http://127.0.0.1:8080"
    # Timeout of one call to the gateway (seconds).
    gateway_timeout_s: float = Field(default=10.0, gt=0)
    # A session unused this long is dropped (seconds); the user signs in again.
    console_session_idle_s: int = Field(default=8 * 3600, ge=60)
    # Sessions kept in memory at most; beyond it the least recently used is dropped.
    console_max_sessions: int = Field(default=10_000, ge=1)
    # Mark the session cookie `Secure` (set it when the gateway is served over HTTPS).
    console_secure_cookie: bool = False

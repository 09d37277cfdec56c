"""The channel senders: one HTTP client (Slack, Teams, Telegram, WhatsApp, webhooks) and SMTP for email.

Each send answers None on success, else what went wrong, for the delivery log.
"""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

import aiohttp

from lt_notifier.domain.channels import HttpOut
from lt_notifier.domain.delivery import redact
from lt_notifier.settings import NotifierSettings

__all__ = ["ChannelSender"]


class ChannelSender:
    """POSTs rendered requests and mails rendered messages; `start()` before the first send."""

    def __init__(self, settings: NotifierSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP client."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.delivery_timeout_s),
            headers={"User-Agent": "leaky-tokens-notifier/0.1"},
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._session is not None:
            await self._session.close()

    async def post(self, out: HttpOut, delivery_id: str) -> str | None:
        """POST `out` once (no redirects followed): None on a 2xx, else the status and the start of the answer."""
        assert self._session is not None
        headers = {**out.headers, "X-LT-Delivery-Id": delivery_id}
        try:
            async with self._session.post(
                out.url, data=out.body, headers=headers, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    return None
                detail = (await resp.text())[:200]
                return f"HTTP {resp.status}: {detail}" if detail else f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"[:500]

    async def mail(self, message: EmailMessage) -> str | None:
        """Send `message` over the configured SMTP server (in a thread: smtplib blocks)."""
        s = self._settings
        host = s.smtp_host
        if not host:
            return "SMTP is not configured (LT_SMTP_HOST)"

        def send() -> None:
            with smtplib.SMTP(host, s.smtp_port, timeout=s.delivery_timeout_s) as smtp:
                if s.smtp_starttls:
                    smtp.starttls()
                if s.smtp_username and s.smtp_password:
                    smtp.login(s.smtp_username, s.smtp_password)
                smtp.send_message(message)

        try:
            await asyncio.to_thread(send)
        except (smtplib.SMTPException, OSError) as exc:
            return redact(f"{type(exc).__name__}: {exc}"[:500], (s.smtp_password,) if s.smtp_password else ())
        return None

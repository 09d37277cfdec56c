"""The channel senders: one HTTP client (Slack, Teams, Telegram, WhatsApp, webhooks) and SMTP for email.

Every HTTP request passes the outbound guard (`leaky_common.outbound`) at send time: the URL is checked again
and the client connects only to addresses the guard resolved and accepted (its resolver refuses the others),
so a DNS answer that changed since the channel was configured cannot reach an internal address. No redirect
is followed. Each send answers None on success, else a short, safe account of what went wrong for the
delivery log: the HTTP status or a category, never the receiver's answer or an upstream error text.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
from email.message import EmailMessage

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from leaky_common.client_spans import http_client_spans
from leaky_common.outbound import DestinationRefused, OutboundPolicy, parse_destination, resolve_checked
from lt_notifier.domain.channels import HttpOut
from lt_notifier.settings import NotifierSettings

__all__ = ["ChannelSender", "GuardedResolver"]


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that answers only addresses the outbound guard accepts (others: DestinationRefused)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The checked addresses of `host` (IP literals never get here: `ChannelSender.post` checks them)."""
        addresses = await resolve_checked(host, port, self._policy)
        return [
            ResolveResult(
                hostname=host,
                host=str(a),
                port=port,
                family=socket.AF_INET if a.version == 4 else socket.AF_INET6,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        """Nothing to release."""


class ChannelSender:
    """POSTs rendered requests and mails rendered messages; `start()` before the first send."""

    def __init__(self, settings: NotifierSettings) -> None:
        self._settings = settings
        self._policy = OutboundPolicy.from_strings(settings.outbound_allow_networks)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP client."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=GuardedResolver(self._policy), use_dns_cache=False),
            timeout=aiohttp.ClientTimeout(total=self._settings.delivery_timeout_s),
            headers={"User-Agent": "leaky-tokens-notifier/0.1"},
            trust_env=False,
            # A webhook's path is its secret (Slack, Teams, a Telegram bot token): the spans show the origin.
            middlewares=(http_client_spans(with_path=False),),
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._session is not None:
            await self._session.close()

    async def post(self, out: HttpOut, delivery_id: str) -> str | None:
        """POST `out` once (no redirects followed): None on a 2xx, else `HTTP <status>` or a category."""
        assert self._session is not None
        headers = {**out.headers, "X-LT-Delivery-Id": delivery_id}
        try:
            destination = parse_destination(out.url)
            # IP literals skip the resolver in aiohttp: check them here (names are checked by the resolver).
            await resolve_checked(destination.host, destination.port, self._policy)
            async with self._session.post(
                out.url, data=out.body, headers=headers, allow_redirects=False
            ) as resp:
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except DestinationRefused as exc:  # from the check above or from the resolver at connect time
            return str(exc)
        except aiohttp.ClientConnectorError:
            return "connection failed"
        except TimeoutError:
            return "timed out"
        except (aiohttp.ClientError, OSError) as exc:
            return f"request failed ({type(exc).__name__})"

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
        except smtplib.SMTPResponseException as exc:
            return f"SMTP {exc.smtp_code}"
        except (smtplib.SMTPException, OSError) as exc:
            return f"SMTP failed ({type(exc).__name__})"
        return None

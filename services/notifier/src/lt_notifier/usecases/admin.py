"""The admin API's use cases: channel subscriptions, the delivery log, retries and test sends, org-isolated.

An admin's subscriptions are scoped to their own org (they hear only its events) and they see, delete, test
and retry only those and their deliveries. Platform admins (`Principal.platform_admin`) run the whole
gateway: they may create unscoped (all-org) subscriptions or scope one to any org, and see everything,
including the channels configured by environment variables.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg

from leaky_common.auth import Principal
from leaky_common.errors import Forbidden, InvalidRequest, NotFound
from leaky_common.outbound import DestinationRefused, OutboundPolicy, parse_destination, resolve_checked
from leaky_common.sealing import SealError, SecretBox
from leaky_common.webhook_signing import new_secret
from lt_notifier.adapters import deliveries, subscriptions
from lt_notifier.domain.subscriptions import NewSubscription
from lt_notifier.settings import NotifierSettings
from lt_notifier.usecases.delivery import SEALED_SHUT, Deliverer

__all__ = ["SubscriptionAdmin", "scope_for_new", "visible_org"]


def visible_org(admin: Principal) -> str | None:
    """The org whose subscriptions and deliveries `admin` may see and manage; None (every one) for platform
    admins."""
    return None if admin.platform_admin else admin.org_id


def scope_for_new(admin: Principal, org_id: str | None) -> str | None:
    """The org scope stored for a new subscription: the admin's own org (naming another is a 403 `other_org`);
    platform admins keep what they asked for, None meaning every org."""
    if admin.platform_admin:
        return org_id
    if org_id is not None and org_id != admin.org_id:
        raise Forbidden("you may only subscribe to your own org's events", param="org_id", code="other_org")
    return admin.org_id


class SubscriptionAdmin:
    """What an admin may do with subscriptions and deliveries, always within what they may see."""

    def __init__(
        self, pool: asyncpg.Pool, deliverer: Deliverer, settings: NotifierSettings, box: SecretBox
    ) -> None:
        self._pool = pool
        self._deliverer = deliverer
        self._settings = settings
        self._box = box
        self._policy = OutboundPolicy.from_strings(settings.outbound_allow_networks)

    async def subscribe(self, admin: Principal, new: NewSubscription) -> dict[str, Any]:
        """Create a subscription scoped as `scope_for_new` says: its URL must pass the outbound guard, a
        webhook without a signing secret gets a fresh `whsec_` one (in the answer, once: `signing_secret`),
        and URLs and secrets are sealed, so a key must be configured; email needs an SMTP server."""
        org_id = scope_for_new(admin, new.org_id)
        if new.channel == "email" and not self._settings.smtp_host:
            raise InvalidRequest(
                "email needs an SMTP server (LT_SMTP_HOST)", param="channel", code="smtp_not_configured"
            )
        if new.url is not None:
            await self._check_destination(new.url)
        generated = None
        if new.channel == "webhook" and "secret" not in new.secrets:
            generated = new_secret()
            new = dataclasses.replace(new, secrets={**new.secrets, "secret": generated})
        if (new.url is not None or new.secrets) and not self._box.configured:
            raise InvalidRequest(
                "channel URLs and secrets are stored encrypted and no key is configured"
                " (LT_CHANNEL_SECRET_KEYS)",
                param="channel",
                code="secrets_not_configured",
            )
        row = await subscriptions.create_subscription(
            self._pool, self._box, dataclasses.replace(new, org_id=org_id)
        )
        return {**row, "signing_secret": generated}

    async def _check_destination(self, url: str) -> None:
        # A name that does not resolve (yet) is accepted: every send resolves and checks it again.
        try:
            destination = parse_destination(url)
            await resolve_checked(destination.host, destination.port, self._policy)
        except DestinationRefused as exc:
            if exc.category == "unresolvable":
                return
            raise InvalidRequest(
                f"url is not an allowed destination: {exc} (only public addresses, unless the operator"
                " allows a network in LT_OUTBOUND_ALLOW_NETWORKS)",
                param="url",
                code="destination_not_allowed",
            ) from None

    async def subscriptions(self, admin: Principal, channel: str | None) -> list[dict[str, Any]]:
        """Active subscriptions (of one channel, or all) the admin may see, oldest first."""
        return await subscriptions.list_subscriptions(self._pool, channel, visible_org(admin))

    async def unsubscribe(self, admin: Principal, subscription_id: str) -> bool:
        """Deactivate a visible subscription and give up its pending deliveries; False if there is none."""
        return await subscriptions.deactivate_subscription(self._pool, subscription_id, visible_org(admin))

    async def deliveries(
        self,
        admin: Principal,
        event_type: str | None,
        status: str | None,
        limit: int,
        channel: str | None,
    ) -> list[dict[str, Any]]:
        """Newest visible deliveries first, filtered by event type, status and channel."""
        return await deliveries.list_deliveries(
            self._pool, event_type, status, limit, channel, visible_org(admin)
        )

    async def retry(self, admin: Principal, delivery_id: str) -> dict[str, Any]:
        """Queue a visible dead delivery again with a fresh attempt budget (404 if there is none)."""
        row = await deliveries.retry_delivery(self._pool, delivery_id, visible_org(admin))
        if row is None:
            raise NotFound(
                f"no dead delivery {delivery_id!r} of an active channel",
                param="delivery_id",
                code="delivery_not_found",
            )
        self._deliverer.wake()
        return row

    async def send_test(self, admin: Principal, channel_id: str) -> str | None:
        """Send a test notification to a visible channel now (404 if there is none); None when it arrived."""
        try:
            subscription = await subscriptions.get_subscription(
                self._pool, self._box, channel_id, visible_org(admin)
            )
        except SealError:
            return SEALED_SHUT
        if subscription is None:
            raise NotFound(f"no channel {channel_id!r}", param="channel_id", code="channel_not_found")
        return await self._deliverer.send_test(subscription)

"""The composition root: every client, pool, publisher and use case of the gateway, built from settings.

The gateway consumes no topic (it only publishes usage events), so the HTTP app is its only user.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from leaky_common.auth import AssertionSigner, generate_signing_key
from leaky_common.kafka import EventPublisher
from leaky_common.link import LinkClient, parse_link_url
from lt_gateway.adapters.management_client import ManagementClient
from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.providers import Provider
from lt_gateway.adapters.providers.http import UpstreamHTTP
from lt_gateway.adapters.providers.registry import build_providers
from lt_gateway.adapters.quota_client import QuotaClient
from lt_gateway.adapters.usage_journal import UsageJournal
from lt_gateway.adapters.usage_sink import UsageSink
from lt_gateway.api.chat import ChatHandler
from lt_gateway.domain.fingerprint import Fingerprinter
from lt_gateway.domain.tokens import encoding
from lt_gateway.settings import GatewaySettings
from lt_gateway.usecases.completion.flow import CompletionFlow
from lt_gateway.usecases.completion.keycheck import KeyCheck
from lt_gateway.usecases.management import ManagementProxy
from lt_gateway.usecases.probe import Probe

logger = logging.getLogger(__name__)


@dataclass
class Gateway:
    """The gateway's collaborators; `start` opens their connections, `stop` closes them."""

    settings: GatewaySettings
    models: ModelTable
    quota: QuotaClient
    usage: UsageSink
    upstream: UpstreamHTTP
    management_client: ManagementClient
    chat: ChatHandler
    management: ManagementProxy
    probe: Probe

    async def start(self) -> None:
        """Load the tokenizer now rather than on the first request, then open every pool."""
        encoding()
        await self.quota.start()
        await self.management_client.start()
        await self.upstream.start()
        await self.usage.start()

    async def stop(self) -> None:
        """Flush usage events (spooling the rest), then close every pool."""
        await self.usage.stop()
        await self.upstream.close()
        await self.management_client.close()
        await self.quota.close()

    _quota_probe: tuple[float, bool] = field(default=(0.0, False), init=False)

    async def ready(self) -> dict[str, bool]:
        """Readiness checks: quota must be reachable; a broker outage is not fatal (events are spooled).
        `/ready` needs no login, so quota's answer is reused for a second: a flood of probes is one call a second."""
        at, reachable = self._quota_probe
        if time.monotonic() - at > 1.0:
            reachable = await self.quota.reachable()
            self._quota_probe = (time.monotonic(), reachable)
        return {
            "quota_reachable": reachable,
            "usage_backlog_ok": self.usage.in_memory < self.settings.usage_queue_max // 2,
        }


def _warn_missing_keys(models: ModelTable) -> None:
    for spec in models.all():
        if spec.api_key_env and not os.environ.get(spec.api_key_env):
            logger.warning(
                "model %s: %s is not set; %s will refuse the calls",
                spec.name,
                spec.api_key_env,
                spec.provider,
            )


def assertion_signer(settings: GatewaySettings) -> AssertionSigner:
    """The gateway's signer of internal assertions; without a configured key (development and unit tests
    only: the settings refuse that in production) an ephemeral one nobody trusts, so internal calls get 401."""
    if settings.internal_signing_key is None:
        logger.warning("LT_INTERNAL_SIGNING_KEY is not set: internal services will refuse this gateway")
        private, _ = generate_signing_key()
        return AssertionSigner(
            private, "ephemeral", issuer="gateway", ttl_s=settings.internal_assertion_ttl_s
        )
    return AssertionSigner(
        settings.internal_signing_key.get_secret_value(),
        settings.internal_signing_kid,
        issuer="gateway",
        ttl_s=settings.internal_assertion_ttl_s,
    )


def quota_link(settings: GatewaySettings) -> LinkClient | None:
    """The client of quota's internal link, when `LT_QUOTA_LINK_URL` names one."""
    if not settings.quota_link_url:
        return None
    host, port = parse_link_url(settings.quota_link_url)
    return LinkClient(
        host,
        port,
        connections=settings.quota_link_connections,
        max_age_s=settings.quota_connection_max_age_s,
    )


def build_gateway(settings: GatewaySettings, providers: dict[str, Provider] | None = None) -> Gateway:
    """Build (without connecting) everything the gateway needs; `providers` replaces the real adapters."""
    models = ModelTable.load(settings.models_file)
    _warn_missing_keys(models)
    signer = assertion_signer(settings)
    quota = QuotaClient(
        settings.quota_url,
        signer,
        settings.internal_timeout_s,
        settings.quota_connection_max_age_s,
        release_linger_s=settings.release_linger_s,
        release_timeout_s=settings.release_timeout_s,
        link=quota_link(settings),
    )
    usage = UsageSink(
        EventPublisher(settings),
        settings.usage_queue_max,
        spool_path=settings.spool_path(),
        linger_s=settings.usage_linger_s,
        journal=UsageJournal(settings.journal_dir()),
    )
    upstream = UpstreamHTTP(settings.upstream_timeout_s, settings.upstream_retry_backoff_s)
    providers = providers or build_providers(upstream)
    secret = settings.fingerprint_secret
    flow = CompletionFlow(
        models=models,
        providers=providers,
        quota=quota,
        usage=usage,
        release_timeout_s=settings.release_timeout_s,
        release_before_end=settings.release_before_end,
        fingerprints=Fingerprinter(secret.get_secret_value().encode()) if secret else None,
    )
    chat = ChatHandler(
        flow,
        KeyCheck(quota, settings.key_check_cache_s),
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
        offload_bytes=settings.offload_tokenizing_bytes,
    )
    management_client = ManagementClient(settings)
    management = ManagementProxy(quota, management_client, signer)
    probe = Probe(quota, models, providers)
    return Gateway(settings, models, quota, usage, upstream, management_client, chat, management, probe)

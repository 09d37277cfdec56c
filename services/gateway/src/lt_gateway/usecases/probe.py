"""The deep readiness probe: gateway -> quota -> provider, end to end, as no one.

`make up` (and any operator with a key the gateway trusts, signing a caller assertion) calls it to prove the
path a governed request takes works: the gateway reaches quota with its caller assertion, quota could admit (its Postgres answers and Redis
holds the admission script), and the model's provider answers. It is not a governed request: no API key, no
principal, no admission or reservation, no usage event. So no detector, usage report or budget ever sees it,
and a freeze (of the bootstrap admin key or anyone) cannot fail it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from leaky_common.errors import NotFound, ServiceError, UpstreamError
from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.providers import Provider
from lt_gateway.adapters.quota_client import QuotaClient
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.probe import probe_body
from lt_gateway.domain.usage import Completion

__all__ = ["Probe", "ProbeReport"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """What the probe proved, and how long each leg took."""

    model: str
    provider: str
    quota_ms: int
    provider_ms: int


class Probe:
    """Quota's zero-cost admission check, then one provider call of one output token; records nothing."""

    def __init__(self, quota: QuotaClient, models: ModelTable, providers: dict[str, Provider]) -> None:
        self.quota = quota
        self.models = models
        self.providers = providers

    async def run(self, model: str) -> ProbeReport:
        """Probe the path to `model` (404 if the gateway does not route it; quota's or the provider's error)."""
        spec = self.models.get(model)
        if spec is None:
            raise NotFound("the gateway routes no such model", param="model", code="model_not_found")
        started = time.perf_counter()
        await self.quota.probe()
        quota_done = time.perf_counter()
        await self._call(spec)
        done = time.perf_counter()
        return ProbeReport(
            spec.name, spec.provider, round((quota_done - started) * 1000), round((done - quota_done) * 1000)
        )

    async def _call(self, spec: ModelSpec) -> Completion:
        provider = self.providers[spec.provider]
        body = probe_body(spec)
        try:
            if spec.mode == "embedding":
                return await provider.embed(spec, body)
            if spec.mode == "completion":
                return await provider.text_complete(spec, body)
            return await provider.complete(spec, body)
        except ServiceError:
            raise
        except Exception as exc:
            logger.exception("probe: provider failure", extra={"provider": spec.provider, "model": spec.name})
            raise UpstreamError(f"upstream provider error: {type(exc).__name__}") from exc

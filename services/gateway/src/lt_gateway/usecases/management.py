"""The management proxy: authenticate the caller once, then forward to the owner with the principal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from opentelemetry import propagate

from leaky_common.auth import AssertionSigner
from lt_gateway.adapters.management_client import Forwarded, ManagementClient
from lt_gateway.adapters.quota_client import Denial, QuotaClient


@dataclass(frozen=True, slots=True)
class ManagementRequest:
    """A management call as the client sent it (the body is read only once the caller is authenticated)."""

    owner: str
    method: str
    path: str
    params: Sequence[tuple[str, str]]
    headers: dict[str, str]
    body: Callable[[], Awaitable[bytes]]


class ManagementProxy:
    """Forwards management requests to their owners on behalf of an authenticated key."""

    def __init__(self, quota: QuotaClient, client: ManagementClient, signer: AssertionSigner) -> None:
        self._quota = quota
        self._client = client
        self._signer = signer

    async def forward(self, api_key: str, request_id: str, req: ManagementRequest) -> Forwarded | Denial:
        """Authenticate `api_key` and forward `req`; quota's refusal comes back as a Denial."""
        principal = await self._quota.authenticate(api_key)
        if isinstance(principal, Denial):
            return principal
        headers = dict(req.headers)
        # Signed for this owner only (its audience), with the principal quota just vouched for.
        headers.update(self._signer.headers(req.owner, principal))
        headers["x-request-id"] = request_id
        propagate.inject(headers)
        return await self._client.send(req.owner, req.method, req.path, req.params, await req.body(), headers)

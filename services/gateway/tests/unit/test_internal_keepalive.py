"""The gateway's pools to quota and the other owners close an idle connection before those servers would: a
request sent on a connection the server is closing at that very moment fails ("server disconnected", a 503)."""

from __future__ import annotations

from leaky_common.settings import CLIENT_KEEPALIVE_S, ServiceSettings
from leaky_devinfra.testing import TEST_KEYS
from lt_gateway.adapters.management_client import ManagementClient
from lt_gateway.adapters.quota_client import QuotaClient
from lt_gateway.settings import GatewaySettings


async def test_internal_pools_close_idle_connections_before_the_servers_do() -> None:
    owners = ManagementClient(GatewaySettings(_env_file=None))
    quota = QuotaClient("http://127.0.0.1:1", TEST_KEYS.signer(), 5)
    await owners.start()
    await quota.start()
    try:
        pools = [owners._session, quota._pool]
        idle = [p.connector._keepalive_timeout for p in pools if p is not None and p.connector]
        assert idle == [CLIENT_KEEPALIVE_S, CLIENT_KEEPALIVE_S]
        # every server keeps an idle connection longer (75 s by default; settings below 31 s are refused)
        assert ServiceSettings.model_fields["keep_alive_s"].metadata[0].gt == CLIENT_KEEPALIVE_S
    finally:
        await owners.close()
        await quota.close()

"""Every channel end to end: events from the real broker reach the local fake platforms (which check the
payload formats) and a real SMTP server; routing, dedup, retries and dead deliveries; secrets never leak."""

import email
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import Message as EmailMsg
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from leaky_common.auth import Principal
from leaky_common.db import create_database
from leaky_common.events import AnomalyDetected, QuotaThresholdReached, VacationChanged
from leaky_common.sealing import new_key
from leaky_devinfra.fakes.chat import FakeChannels
from leaky_devinfra.infra import free_port
from leaky_devinfra.testing import eventually as wait_for
from lt_notifier.settings import NotifierSettings

pytestmark = pytest.mark.integration

TOKEN = "integration-internal-token"
MAX_ATTEMPTS = 3
TELEGRAM_TOKEN = "777000:telegram-secret-token"
WHATSAPP_TOKEN = "EAAG-whatsapp-secret-token"
ENV_CHANNELS = {"slack", "slack-alerts", "teams", "telegram", "whatsapp", "email"}


@dataclass
class Mailbox:
    messages: list[EmailMsg] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
async def fakes() -> AsyncIterator[FakeChannels]:
    fake = FakeChannels(telegram_token=TELEGRAM_TOKEN, whatsapp_token=WHATSAPP_TOKEN)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture(scope="module")
async def settings(
    postgres_url: str, kafka_bootstrap: str, fakes: FakeChannels, smtp: tuple[Mailbox, int]
) -> NotifierSettings:
    suffix = uuid.uuid4().hex[:8]
    base = fakes.base_url
    return NotifierSettings(
        database_url=await create_database(postgres_url, f"notifier_ch_{suffix}"),
        kafka_bootstrap=kafka_bootstrap,
        topics=[f"purchase.ch.{suffix}", f"alerts.ch.{suffix}", f"quota.ch.{suffix}"],
        consumer_group=f"notifier-ch-{suffix}",
        internal_token=TOKEN,
        environment="test",
        log_json=False,
        slack_webhook_url=f"{base}/slack/services/T000/B000/default",
        slack_alerts_webhook_url=f"{base}/slack/services/T000/B000/alerts",
        teams_webhook_url=f"{base}/teams/webhookb2/team-hook",
        telegram_bot_token=TELEGRAM_TOKEN,
        telegram_chat_id="-1001234567890",
        telegram_api_base=f"{base}/telegram",
        whatsapp_access_token=WHATSAPP_TOKEN,
        whatsapp_phone_number_id="106540352242922",
        whatsapp_to="+4915112345678",
        whatsapp_api_base=f"{base}/whatsapp",
        email_to=["oncall@example.com"],
        smtp_host="127.0.0.1",
        smtp_port=smtp[1],
        channel_secret_keys=f"t1:{new_key()}",
        outbound_allow_networks=["127.0.0.1/32"],  # the fake platforms and the SMTP sink
        delivery_max_attempts=MAX_ATTEMPTS,
        delivery_backoff_base_s=0.05,
        delivery_backoff_max_s=0.2,
        delivery_poll_interval_s=0.05,
        delivery_timeout_s=2.0,
    )


def admin() -> dict[str, str]:
    p = Principal(user_id="admin-1", org_id="org-1", role="admin", platform_admin=True)
    return {"X-LT-Principal": p.header_value(), "X-LT-Internal-Token": TOKEN}


async def of_event(api: httpx.AsyncClient, event_id: str) -> list[dict[str, Any]]:
    resp = await api.get("/v1/admin/notifications/deliveries", params={"limit": 500}, headers=admin())
    assert resp.status_code == 200, resp.text
    return [d for d in resp.json()["data"] if d["event_id"] == event_id]


async def settled(api: httpx.AsyncClient, event_id: str, count: int) -> list[dict[str, Any]]:
    """The event's deliveries once `count` exist and none is pending any more."""

    async def done() -> list[dict[str, Any]] | None:
        rows = await of_event(api, event_id)
        return rows if len(rows) == count and all(r["status"] != "pending" for r in rows) else None

    result: list[dict[str, Any]] = await wait_for(done, timeout=20, what=f"deliveries of {event_id}")
    return result


def anomaly(**kw: Any) -> AnomalyDetected:
    fields: dict[str, Any] = {
        "kind": "loop",
        "severity": "error",
        "org_id": "org-1",
        "session_id": "sess-1",
        "value": 4,
        "threshold": 4,
        "detail": "Loop detected: the same prompt 4 times in a row",
        "frozen": True,
    }
    return AnomalyDetected(**{**fields, **kw})


async def test_an_alert_reaches_every_channel_in_its_format(
    api: httpx.AsyncClient, publish: Any, fakes: FakeChannels, smtp: tuple[Mailbox, int]
) -> None:
    event = anomaly()
    await publish("alerts", event)
    rows = await settled(api, event.event_id, len(ENV_CHANNELS))
    assert {r["subscription_id"] for r in rows} == ENV_CHANNELS
    assert {r["status"] for r in rows} == {"delivered"}, rows
    assert {r["channel"] for r in rows} == {"slack", "teams", "telegram", "whatsapp", "email"}
    assert fakes.rejected == []

    slack = [r for r in fakes.of("slack") if event.event_id in str(r.body)]
    assert {r.path for r in slack} == {
        "/slack/services/T000/B000/default",
        "/slack/services/T000/B000/alerts",
    }
    assert slack[0].body["blocks"][0]["text"]["text"] == "Anomaly: loop (frozen)"
    [teams] = fakes.of("teams")
    card = teams.body["attachments"][0]["content"]
    assert (card["type"], card["body"][0]["text"]) == ("AdaptiveCard", "Anomaly: loop (frozen)")
    telegram = fakes.of("telegram")[-1]
    assert telegram.path == f"/telegram/bot{TELEGRAM_TOKEN}/sendMessage"
    assert telegram.body["chat_id"] == "-1001234567890" and telegram.body["parse_mode"] == "HTML"
    whatsapp = fakes.of("whatsapp")[-1]
    assert whatsapp.path == "/whatsapp/v21.0/106540352242922/messages"
    assert whatsapp.headers["Authorization"] == f"Bearer {WHATSAPP_TOKEN}"
    assert whatsapp.body["template"]["name"] == "leaky_tokens_alert"
    mail = smtp[0].messages[-1]
    assert mail["To"] == "oncall@example.com"
    assert mail["Subject"] == "[Leaky Tokens] error: Anomaly: loop (frozen)"
    assert "Loop detected" in mail.get_payload()


async def test_alerts_channel_takes_only_error_and_critical(api: httpx.AsyncClient, publish: Any) -> None:
    info = VacationChanged(user_id="u-vac", org_id="org-1", on_vacation=True)
    critical = anomaly(kind="spend_velocity", severity="critical")
    await publish("quota", info)
    await publish("alerts", critical)
    info_rows = await settled(api, info.event_id, len(ENV_CHANNELS) - 1)
    assert "slack-alerts" not in {r["subscription_id"] for r in info_rows}
    critical_rows = await settled(api, critical.event_id, len(ENV_CHANNELS))
    assert "slack-alerts" in {r["subscription_id"] for r in critical_rows}


async def test_api_subscriptions_route_by_type_severity_and_scope(
    api: httpx.AsyncClient, publish: Any, fakes: FakeChannels
) -> None:
    body = {
        "channel": "slack",
        "name": "org-2 quota",
        "url": f"{fakes.base_url}/slack/services/T2/B2/org2",
        "event_types": ["QuotaThresholdReached.v1"],
        "min_severity": "warning",
        "org_id": "org-2",
    }
    created = await api.post("/v1/admin/notifications/channels", json=body, headers=admin())
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["url"] == f"{fakes.base_url}/***"  # a Slack webhook URL is a credential
    mine = QuotaThresholdReached(
        pool_id="pool-o2", owner_type="org", owner_id="org-2", org_id="org-2", percent=90, limit=10, used=9
    )
    other_org = QuotaThresholdReached(
        pool_id="pool-o1", owner_type="org", owner_id="org-1", org_id="org-1", percent=90, limit=10, used=9
    )
    other_type = anomaly(org_id="org-2")
    for kind, event in (("quota", mine), ("quota", other_org), ("alerts", other_type)):
        await publish(kind, event)
    assert sub["id"] in {r["subscription_id"] for r in await settled(api, mine.event_id, len(ENV_CHANNELS))}
    for event in (other_org, other_type):
        rows = await settled(api, event.event_id, len(ENV_CHANNELS) - (event is other_org))
        assert sub["id"] not in {r["subscription_id"] for r in rows}
    assert [r.path for r in fakes.of("slack")].count("/slack/services/T2/B2/org2") == 1

    deleted = await api.delete(f"/v1/admin/notifications/channels/{sub['id']}", headers=admin())
    assert deleted.status_code == 204
    assert (
        await api.delete(f"/v1/admin/notifications/channels/{sub['id']}", headers=admin())
    ).status_code == 404


async def test_one_alert_per_threshold_per_period(api: httpx.AsyncClient, publish: Any) -> None:
    first = QuotaThresholdReached(
        pool_id="pool-d", owner_type="user", owner_id="u-d", percent=80, limit=10, used=8
    )
    repeat = first.model_copy(update={"event_id": uuid.uuid4().hex})
    higher = first.model_copy(update={"event_id": uuid.uuid4().hex, "percent": 90})
    for event in (first, repeat, higher):
        await publish("quota", event)
    await settled(api, higher.event_id, len(ENV_CHANNELS) - 1)
    assert len(await settled(api, first.event_id, len(ENV_CHANNELS) - 1)) == len(ENV_CHANNELS) - 1
    assert await of_event(api, repeat.event_id) == []


async def test_retries_then_dead_and_secrets_never_leak(
    api: httpx.AsyncClient, publish: Any, fakes: FakeChannels
) -> None:
    bad_bot = await api.post(
        "/v1/admin/notifications/channels",
        json={
            "channel": "telegram",
            "config": {"chat_id": "42"},
            "secrets": {"bot_token": "999:wrong-secret-token"},
            "event_types": ["AnomalyDetected.v1"],
            "org_id": "org-retry",
        },
        headers=admin(),
    )
    assert bad_bot.status_code == 201
    assert bad_bot.json()["secret_names"] == ["bot_token"]
    fakes.fail_next["teams"] = [500, 503]  # two failures, then accepted
    event = anomaly(org_id="org-retry")
    await publish("alerts", event)
    rows = {r["subscription_id"]: r for r in await settled(api, event.event_id, len(ENV_CHANNELS) + 1)}
    assert (rows["teams"]["status"], rows["teams"]["attempts"]) == ("delivered", 3)
    dead = rows[bad_bot.json()["id"]]
    assert (dead["status"], dead["attempts"]) == ("dead", MAX_ATTEMPTS)
    assert dead["last_error"].startswith("HTTP 401")
    listed = await api.get("/v1/admin/notifications/channels", headers=admin())
    log = await api.get("/v1/admin/notifications/deliveries?status=dead&channel=telegram", headers=admin())
    assert [d["id"] for d in log.json()["data"]] == [dead["id"]]
    for text in (listed.text, log.text, bad_bot.text):
        for secret in (TELEGRAM_TOKEN, WHATSAPP_TOKEN, "wrong-secret-token", "B000/default"):
            assert secret not in text


async def test_bad_channel_definitions_are_400(api: httpx.AsyncClient) -> None:
    cases = [
        {"channel": "slack"},
        {"channel": "slack", "url": "ftp://x"},
        {"channel": "telegram", "config": {"chat_id": "1"}},
        {"channel": "telegram", "config": {"chat_id": "1"}, "secrets": {"bot_token": "t"}, "url": "http://x"},
        {"channel": "whatsapp", "config": {"to": "+4912345678"}, "secrets": {"access_token": "t"}},
        {"channel": "email", "config": {"to": "not-a-list"}},
        {"channel": "pager", "url": "http://x"},
        {"channel": "slack", "url": "http://x", "min_severity": "fatal"},
        {"channel": "slack", "url": "http://x", "event_types": ["UsageRecorded.v1"]},
        {"channel": "teams", "url": "http://x", "secrets": {"secret": "s"}},
        {"channel": "slack", "url": "http://x", "name": "nul\u0000"},
        {"channel": "telegram", "config": {"chat_id": "1"}, "secrets": {"bot_token": "a\u0000b"}},
    ]
    for body in cases:
        resp = await api.post("/v1/admin/notifications/channels", json=body, headers=admin())
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"]["type"] == "invalid_request_error"
    nul_hook = await api.post(
        "/v1/admin/notifications/webhooks", json={"url": "http://x/\u0000"}, headers=admin()
    )
    assert nul_hook.status_code == 400
    user = Principal(user_id="u", org_id="org-1")
    as_user = {"X-LT-Principal": user.header_value(), "X-LT-Internal-Token": TOKEN}
    assert (await api.get("/v1/admin/notifications/channels", headers=as_user)).status_code == 403


async def test_a_dead_delivery_can_be_retried(
    api: httpx.AsyncClient, publish: Any, fakes: FakeChannels
) -> None:
    fakes.fail_next["teams"] = [502] * MAX_ATTEMPTS
    event = anomaly(org_id="org-dead")
    await publish("alerts", event)
    rows = {r["subscription_id"]: r for r in await settled(api, event.event_id, len(ENV_CHANNELS))}
    dead = rows["teams"]
    assert (dead["status"], dead["attempts"], dead["last_error"]) == ("dead", MAX_ATTEMPTS, "HTTP 502")
    retried = await api.post(f"/v1/admin/notifications/deliveries/{dead['id']}/retry", headers=admin())
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    again = {r["subscription_id"]: r for r in await settled(api, event.event_id, len(ENV_CHANNELS))}
    assert (again["teams"]["status"], again["teams"]["attempts"]) == ("delivered", 1)
    delivered = rows["slack"]["id"]
    for target in (delivered, "dlv_nope"):
        resp = await api.post(f"/v1/admin/notifications/deliveries/{target}/retry", headers=admin())
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "delivery_not_found"


async def test_channel_test_send(
    api: httpx.AsyncClient, fakes: FakeChannels, smtp: tuple[Mailbox, int]
) -> None:
    before = len(fakes.of("whatsapp"))
    for channel in ("whatsapp", "telegram", "teams", "slack", "email"):
        resp = await api.post(f"/v1/admin/notifications/channels/{channel}/test", headers=admin())
        assert resp.json() == {"ok": True, "error": None}, channel
    assert len(fakes.of("whatsapp")) == before + 1
    assert "Leaky Tokens test notification" in fakes.of("telegram")[-1].body["text"]
    assert smtp[0].messages[-1]["Subject"] == "[Leaky Tokens] info: Leaky Tokens test notification"
    assert fakes.rejected == []
    wrong = await api.post(
        "/v1/admin/notifications/channels",
        json={
            "channel": "telegram",
            "config": {"chat_id": "1"},
            "secrets": {"bot_token": "31337:leaked-if-shown"},
        },
        headers=admin(),
    )
    result = (
        await api.post(f"/v1/admin/notifications/channels/{wrong.json()['id']}/test", headers=admin())
    ).json()
    assert result["ok"] is False and result["error"].startswith("HTTP 401")
    assert "leaked-if-shown" not in result["error"]
    missing = await api.post("/v1/admin/notifications/channels/nope/test", headers=admin())
    assert missing.status_code == 404
    # The unscoped broken channel would otherwise hear (and fail) every later event of this module.
    deleted = await api.delete(f"/v1/admin/notifications/channels/{wrong.json()['id']}", headers=admin())
    assert deleted.status_code == 204


def org_admin(org: str) -> dict[str, str]:
    p = Principal(user_id=f"admin-{org}", org_id=org, role="admin")
    return {"X-LT-Principal": p.header_value(), "X-LT-Internal-Token": TOKEN}


async def test_org_admins_subscribe_see_and_manage_only_their_own_org(
    api: httpx.AsyncClient, publish: Any, fakes: FakeChannels
) -> None:
    org_b, org_c = f"org-b-{uuid.uuid4().hex[:6]}", f"org-c-{uuid.uuid4().hex[:6]}"
    as_b, as_c = org_admin(org_b), org_admin(org_c)
    channels = "/v1/admin/notifications/channels"
    hook_b = f"/slack/services/TB/BB/{org_b}"
    body = {"channel": "slack", "url": f"{fakes.base_url}{hook_b}", "event_types": ["AnomalyDetected.v1"]}

    # An org admin's subscription is scoped to their org; naming another org is refused.
    for other in ("org-1", org_c):
        refused = await api.post(channels, json={**body, "org_id": other}, headers=as_b)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "other_org", refused.text
    created = await api.post(channels, json=body, headers=as_b)
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["org_id"] == org_b
    explicit = await api.post(channels, json={**body, "org_id": org_b}, headers=as_b)
    assert explicit.status_code == 201 and explicit.json()["org_id"] == org_b
    assert (await api.delete(f"{channels}/{explicit.json()['id']}", headers=as_b)).status_code == 204
    hook = await api.post(
        "/v1/admin/notifications/webhooks",
        json={"url": f"{fakes.base_url}/hook/{org_b}", "event_types": ["PurchaseCompleted.v1"]},
        headers=as_b,
    )
    assert hook.status_code == 201 and hook.json()["org_id"] == org_b
    # A platform admin's subscription without org_id hears every org.
    everyone = await api.post(
        channels,
        json={**body, "url": f"{fakes.base_url}/slack/services/TP/BP/{org_b}-all"},
        headers=admin(),
    )
    assert everyone.status_code == 201 and everyone.json()["org_id"] is None

    # Lists: B sees only its own; C sees none of B's; the platform admin sees all, env channels included.
    async def ids(path: str, headers: dict[str, str]) -> set[str]:
        resp = await api.get(path, headers=headers)
        assert resp.status_code == 200, resp.text
        return {c["id"] for c in resp.json()["data"]}

    assert await ids(channels, as_b) == {sub["id"], hook.json()["id"]}
    assert await ids(f"{channels}?channel=slack", as_b) == {sub["id"]}
    assert await ids("/v1/admin/notifications/webhooks", as_b) == {hook.json()["id"]}
    assert await ids(channels, as_c) == set()
    assert {sub["id"], everyone.json()["id"], *ENV_CHANNELS} <= await ids(channels, admin())

    # Another org's (or an env-configured) channel cannot be deleted or test-sent: 404, and stays active.
    for target in (everyone.json()["id"], "teams"):
        assert (await api.delete(f"{channels}/{target}", headers=as_b)).status_code == 404
        assert (await api.post(f"{channels}/{target}/test", headers=as_b)).status_code == 404
    for path in (f"{channels}/{sub['id']}", f"/v1/admin/notifications/webhooks/{hook.json()['id']}"):
        assert (await api.delete(path, headers=as_c)).status_code == 404
    assert (await api.post(f"{channels}/{sub['id']}/test", headers=as_c)).status_code == 404
    assert {sub["id"], everyone.json()["id"], "teams"} <= await ids(channels, admin())

    # Routing: B's channel hears B's event only; the delivery log shows each org its own deliveries.
    fakes.fail_next["teams"] = [502] * MAX_ATTEMPTS
    event_b = anomaly(org_id=org_b)
    await publish("alerts", event_b)
    rows_b = {r["subscription_id"]: r for r in await settled(api, event_b.event_id, len(ENV_CHANNELS) + 2)}
    event_c = anomaly(org_id=org_c)
    await publish("alerts", event_c)
    rows_c = await settled(api, event_c.event_id, len(ENV_CHANNELS) + 1)
    assert sub["id"] not in {r["subscription_id"] for r in rows_c}
    assert [r.path for r in fakes.of("slack")].count(hook_b) == 1
    log_b = (await api.get("/v1/admin/notifications/deliveries?limit=500", headers=as_b)).json()["data"]
    assert [(d["event_id"], d["subscription_id"]) for d in log_b] == [(event_b.event_id, sub["id"])]
    log_c = (await api.get("/v1/admin/notifications/deliveries?limit=500", headers=as_c)).json()["data"]
    assert log_c == []
    # B cannot retry the dead delivery of an env channel, even for B's own event; the platform admin can.
    dead = rows_b["teams"]
    assert dead["status"] == "dead"
    retry = f"/v1/admin/notifications/deliveries/{dead['id']}/retry"
    assert (await api.post(retry, headers=as_b)).status_code == 404
    assert (await api.post(retry, headers=admin())).status_code == 200
    await settled(api, event_b.event_id, len(ENV_CHANNELS) + 2)

    for target, headers in ((sub["id"], as_b), (everyone.json()["id"], admin())):
        assert (await api.delete(f"{channels}/{target}", headers=headers)).status_code == 204

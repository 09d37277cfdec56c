"""Every event renders, on every channel, to a payload the platform's checks accept; bad payloads are refused."""

import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from leaky_common.events import (
    AnomalyDetected,
    ApprovalDecided,
    ApprovalRequested,
    FreezeChanged,
    Message,
    PurchaseCompensated,
    PurchaseCompleted,
    PurchaseFailed,
    QuotaThresholdReached,
    UsageRecorded,
    VacationChanged,
)
from leaky_common.webhook_signing import new_secret, verify
from leaky_devinfra.fakes.chat import slack_problems, teams_problems, telegram_problems, whatsapp_problems
from lt_notifier.domain.channels import (
    Endpoints,
    HttpOut,
    render,
    slack_body,
    teams_body,
    telegram_body,
    whatsapp_body,
)
from lt_notifier.domain.notification import describe
from lt_notifier.domain.webhook import message_from_payload, webhook_payload

PERIOD = datetime(2026, 5, 1, tzinfo=UTC)

EVENTS: list[Message] = [
    QuotaThresholdReached(
        pool_id="p1",
        owner_type="user",
        owner_id="u1",
        org_id="o1",
        percent=80,
        limit=1000,
        used=800,
        period_start=PERIOD,
    ),
    QuotaThresholdReached(pool_id="p1", owner_type="team", owner_id="t1", percent=100, limit=1000, used=1000),
    AnomalyDetected(
        kind="loop",
        severity="error",
        session_id="s1",
        value=4,
        threshold=4,
        detail="Loop <b>&</b>",
        frozen=True,
    ),
    FreezeChanged(
        target_type="session", target_id="s1", frozen=True, reason="loop", source="anomaly", expires_at=PERIOD
    ),
    FreezeChanged(target_type="key", target_id="k1", frozen=False),
    ApprovalRequested(
        approval_id="a1", requester_user_id="u1", amount=5000, reason="deadline\n\n\n\n     tomorrow"
    ),
    ApprovalDecided(
        approval_id="a1", requester_user_id="u1", approver_user_id="m1", decision="approved", amount=5000
    ),
    ApprovalDecided(
        approval_id="a1", requester_user_id="u1", approver_user_id="m1", decision="rejected", reason="no"
    ),
    VacationChanged(user_id="u1", on_vacation=True),
    VacationChanged(user_id="u1", on_vacation=False),
    PurchaseCompleted(purchase_id="pu1", user_id="u1", amount=10_000, price_usd_micros=1_500_000),
    PurchaseFailed(purchase_id="pu1", user_id="u1", amount=10_000, reason="card declined"),
    PurchaseCompensated(purchase_id="pu1", user_id="u1", amount=10_000),
]

ENDPOINTS = Endpoints("http://tg", "http://wa", "v21.0", "Leaky <a@b.c>")


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: str(e.type))
def test_every_event_renders_valid_payloads_on_every_channel(event: Message) -> None:
    note = describe(event)
    assert note is not None
    assert note.event_id == event.event_id
    assert slack_problems(slack_body(note)) == []
    assert teams_problems(teams_body(note)) == []
    assert telegram_problems(telegram_body(note, "-100123")) == []
    assert whatsapp_problems(whatsapp_body(note, "+4915112345678", "leaky_tokens_alert", "en_US")) == []
    # What is stored for a delivery turns back into the same event.
    assert message_from_payload(webhook_payload(event)) == event


def test_non_notifiable_events_are_skipped() -> None:
    assert describe(UsageRecorded(request_id="r", model="m", provider="p")) is None


def test_severities_and_dedup_keys() -> None:
    notes = [describe(e) for e in EVENTS]
    assert [n.severity for n in notes if n] == [
        "warning", "error", "error", "error", "info", "info", "info", "info", "info", "info", "info", "warning", "error",
    ]  # fmt: skip
    first = notes[0]
    assert first is not None and first.user_id == "u1" and first.org_id == "o1"
    assert first.dedup_key == f"threshold:p1:80:{PERIOD.isoformat()}"
    again = describe(EVENTS[0].model_copy(update={"event_id": "other"}))
    assert again is not None and again.dedup_key == first.dedup_key
    team_alert = describe(AnomalyDetected(kind="loop", org_id="o", team_id="t", user_id="u"))
    assert team_alert is not None and (team_alert.org_id, team_alert.team_id, team_alert.user_id) == (
        "o",
        "t",
        "u",
    )


def test_telegram_escapes_html_and_whatsapp_flattens_parameters() -> None:
    note = describe(EVENTS[2])
    assert note is not None
    text = telegram_body(note, "1")["text"]
    assert "Loop &lt;b&gt;&amp;&lt;/b&gt;" in text
    request = describe(EVENTS[5])
    assert request is not None
    params = whatsapp_body(request, "+100000000", "t", "en")["template"]["components"][0]["parameters"]
    assert all("\n" not in p["text"] and "     " not in p["text"] for p in params)


def test_render_puts_tokens_only_where_the_platform_wants_them() -> None:
    note = describe(EVENTS[0])
    assert note is not None
    tg = render("telegram", note, b"{}", None, {"chat_id": "42"}, {"bot_token": "T0K"}, ENDPOINTS)
    assert isinstance(tg, HttpOut)
    assert tg.url == "http://tg/botT0K/sendMessage" and tg.redact == ("T0K",)
    wa = render(
        "whatsapp",
        note,
        b"{}",
        None,
        {"phone_number_id": "555", "to": "+4912345678"},
        {"access_token": "AT"},
        ENDPOINTS,
    )
    assert isinstance(wa, HttpOut)
    assert wa.url == "http://wa/v21.0/555/messages"
    assert wa.headers["Authorization"] == "Bearer AT"
    assert b"AT" not in wa.body
    secret = new_secret()
    hook = render("webhook", note, b'{"id":"x"}', "http://h/x", {}, {"secret": secret}, ENDPOINTS, "dlv_1")
    assert isinstance(hook, HttpOut) and hook.body == b'{"id":"x"}'
    assert verify(secret, hook.headers, hook.body) == "dlv_1" == hook.headers["webhook-id"]
    assert hook.redact == (secret,)


BAD: list[tuple[Any, Any]] = [
    (slack_problems, {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}]}),  # no text
    (slack_problems, {"text": "x"}),  # no blocks
    (slack_problems, {"text": "x", "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}]}),
    (
        slack_problems,
        {"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]},
    ),
    (slack_problems, {"text": "x", "blocks": [{"type": "section"}]}),
    (slack_problems, {"text": "x", "blocks": [{"type": "sectoin", "text": {"type": "mrkdwn", "text": "x"}}]}),
    (
        teams_problems,
        {"type": "message", "attachments": [{"contentType": "application/json", "content": {}}]},
    ),
    (teams_problems, {"text": "legacy MessageCard"}),
    (
        teams_problems,
        {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "content": {
                        "type": "AdaptiveCard",
                        "version": "2.0",
                        "body": [{"type": "TextBlock", "text": "x"}],
                    },
                }
            ],
        },
    ),
    (telegram_problems, {"chat_id": 1, "text": "<b>unclosed", "parse_mode": "HTML"}),
    (telegram_problems, {"chat_id": 1, "text": "<div>x</div>", "parse_mode": "HTML"}),
    (telegram_problems, {"text": "x"}),
    (telegram_problems, {"chat_id": 1, "text": "x" * 4097}),
    (
        whatsapp_problems,
        {"messaging_product": "whatsapp", "to": "+4912345678", "type": "text", "text": {"body": "x"}},
    ),
    (
        whatsapp_problems,
        {"to": "+4912345678", "type": "template", "template": {"name": "t", "language": {"code": "en"}}},
    ),
    (
        whatsapp_problems,
        {
            "messaging_product": "whatsapp",
            "to": "+4912345678",
            "type": "template",
            "template": {
                "name": "Bad Name",
                "language": {"code": "en"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "a\nb"}]}],
            },
        },
    ),
]


@pytest.mark.parametrize(("check", "payload"), BAD)
def test_fakes_refuse_what_the_platforms_refuse(check: Any, payload: Any) -> None:
    assert check(payload) != []
    assert check(orjson.loads(orjson.dumps(payload))) != []


INJECTION = "<!channel> <https://evil.example|click> [click](https://evil.example) <b>x</b> & **y**"


def _texts(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [t for v in node.values() for t in _texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in _texts(v)]
    return [node] if isinstance(node, str) else []


def test_user_text_cannot_form_mentions_or_disguised_links() -> None:
    # An approval reason and a session id are user-supplied; rendered, they must stay inert text.
    requested = ApprovalRequested(
        approval_id="ap1", org_id="o1", requester_user_id="u1", amount=1, reason=INJECTION
    )
    anomaly = AnomalyDetected(kind="loop", value=9, threshold=5, session_id=INJECTION, detail=INJECTION)
    for event in (requested, anomaly):
        note = describe(event)
        assert note is not None
        slack = _texts(slack_body(note))
        assert not any("<!channel>" in t or "<https://" in t for t in slack)
        assert any("&lt;!channel&gt;" in t for t in slack)
        teams = [t for t in _texts(teams_body(note)) if "click" in t]
        # Every bracket, angle bracket and asterisk of the user's text is backslash-escaped: no link, tag or bold.
        assert teams and not any(re.search(r"(?<!\\)[\[\]<>*]", t) for t in teams)
        assert any(r"\[click\](https://evil.example)" in t for t in teams)
        telegram = telegram_body(note, "42")["text"]
        assert "<b>x</b>" not in telegram and "&lt;b&gt;x&lt;/b&gt;" in telegram

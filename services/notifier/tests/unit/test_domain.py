from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from leaky_common.events import PurchaseCompleted, UsageRecorded
from lt_notifier.api.schemas import ChannelCreate, WebhookCreate
from lt_notifier.domain.delivery import backoff_s
from lt_notifier.domain.notification import NOTIFIABLE_TYPES
from lt_notifier.domain.webhook import check_webhook_url, webhook_payload


def test_notifiable_types_are_the_announced_events() -> None:
    assert {
        "PurchaseCompleted.v1",
        "PurchaseFailed.v1",
        "PurchaseCompensated.v1",
        "QuotaThresholdReached.v1",
        "AnomalyDetected.v1",
        "ApprovalRequested.v1",
        "ApprovalDecided.v1",
        "VacationChanged.v1",
        "FreezeChanged.v1",
        "PlatformAlert.v1",
    } == NOTIFIABLE_TYPES
    assert UsageRecorded(request_id="r", model="m", provider="p").type not in NOTIFIABLE_TYPES


def test_payload_shape() -> None:
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    event = PurchaseCompleted(event_id="e1", occurred_at=at, purchase_id="p1", user_id="u1", amount=1000)
    body = orjson.loads(webhook_payload(event))
    assert body["id"] == "e1"
    assert body["type"] == "PurchaseCompleted.v1"
    assert body["occurred_at"] == "2026-05-01T12:00:00Z"
    assert body["data"]["purchase_id"] == "p1"
    assert body["data"]["amount"] == 1000
    assert not {"event_id", "type", "occurred_at"} & set(body["data"])


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_s(n, 1.0, 5.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_s(0, 1.0, 5.0) == 1.0


@pytest.mark.parametrize("url", ["http://example.com/hook", "https://h:8443/x?y=1"])
def test_accepts_http_urls(url: str) -> None:
    assert check_webhook_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com",
        "example.com/hook",
        "http://",
        "javascript:alert(1)",
        "http://evil@127.0.0.1/",
        "http://user:pw@example.com/",
        "http://example.com:99999/",
    ],
)
def test_rejects_other_urls(url: str) -> None:
    with pytest.raises(ValueError):
        check_webhook_url(url)


def test_webhook_create_validation() -> None:
    ok = WebhookCreate(url="https://x.test/h", event_types=["PurchaseFailed.v1", "PurchaseCompleted.v1"])
    assert ok.event_types == ["PurchaseCompleted.v1", "PurchaseFailed.v1"]
    assert WebhookCreate(url="https://x.test/h").event_types is None
    for bad in (
        {"url": "https://x.test/h", "event_types": ["NoSuchEvent.v1"]},
        {"url": "https://x.test/h", "event_types": []},
        {"url": "mailto:a@b.c"},
        {"url": "https://x.test/h", "secret": ""},
        {"url": "https://x.test/h", "secret": "not-a-whsec-secret"},
        {"url": "https://x.test/h", "secret": "whsec_c2hvcnQ="},  # 5 bytes of key: too short
        {"url": "https://x.test/h", "surprise": 1},
    ):
        with pytest.raises(ValidationError):
            WebhookCreate.model_validate(bad)


@pytest.mark.parametrize(
    "extra",
    [
        {"config": {"to": [2**70]}},
        {"secrets": {"secret": 10**30}},
        {"name": "a\x00b"},
        {"config": {"x\x00": "y"}},
    ],
)
def test_a_channel_body_with_a_huge_integer_or_a_nul_is_a_validation_error_not_a_crash(
    extra: dict[str, object],
) -> None:
    # The NUL check once serialised the body with orjson, which raises TypeError on integers beyond 64 bits: a
    # 500 found by the OpenAPI fuzzing.
    with pytest.raises(ValidationError):
        ChannelCreate.model_validate({"channel": "webhook", "url": "https://hooks.example/x", **extra})

"""The shared metrics' pure parts: label folding, the deny-list walk, the worker server's answers and the
consumer's lag arithmetic."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from leaky_common.kafka import EventConsumer, EventPublisher
from leaky_common.metrics import DENIED_LABELS, denied_labels, fold
from leaky_common.metrics_server import answer
from leaky_common.settings import ServiceSettings


def test_fold_keeps_known_values_and_folds_the_rest() -> None:
    assert fold("gpt-4o", {"gpt-4o", "claude"}) == "gpt-4o"
    assert fold("user-chosen-name", {"gpt-4o"}) == "other"
    assert fold(None, {"gpt-4o"}) == "other"


def test_denied_labels_finds_id_labels() -> None:
    registry = CollectorRegistry()
    Counter("t_ok_total", "fine", ["model", "status"], registry=registry).labels("m", "200").inc()
    Counter("t_bad_total", "per user", ["user_id", "model"], registry=registry).labels("u1", "m").inc()
    Counter("t_unused_total", "no series yet", ["session_id"], registry=registry)
    assert denied_labels(registry) == [("t_bad", "user_id"), ("t_unused", "session_id")]
    assert {
        "user_id",
        "key_id",
        "session_id",
        "org_id",
        "request_id",
        "purchase_id",
        "email",
    } <= DENIED_LABELS


def test_the_shared_metrics_carry_no_id_labels() -> None:
    assert denied_labels(REGISTRY) == []


def _head(path: str, token: str | None = None, method: str = "GET") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()


def test_the_worker_metrics_answer_needs_the_token() -> None:
    ok = answer(_head("/metrics", "t0k"), "t0k")
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"lt_kafka_dead_letters_total" in ok
    assert answer(_head("/metrics"), "t0k").startswith(b"HTTP/1.1 404")
    assert answer(_head("/metrics", "wrong"), "t0k").startswith(b"HTTP/1.1 404")
    assert answer(_head("/metrics", "t0k"), None).startswith(b"HTTP/1.1 404")  # no token configured: nobody
    assert answer(_head("/health"), None).startswith(b"HTTP/1.1 200")
    assert answer(_head("/metrics", "t0k", "DELETE"), "t0k").startswith(b"HTTP/1.1 405")
    assert answer(b"garbage\r\n\r\n", "t0k").startswith(b"HTTP/1.1 405")


class _Highwaters:
    """aiokafka's consumer as far as the lag sampling reads it."""

    def __init__(self, marks: dict[TopicPartition, int]) -> None:
        self.marks = marks

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.marks.get(tp)


def test_consumer_lag_is_the_high_watermark_minus_the_position_summed_per_topic() -> None:
    settings = ServiceSettings(service_name="t")

    async def handler(*_: Any) -> None:
        return None

    consumer = EventConsumer(
        settings, group_id="g-lag", topics=["t.lag"], handler=handler, publisher=EventPublisher(settings)
    )
    p0, p1 = TopicPartition("t.lag", 0), TopicPartition("t.lag", 1)
    consumer._consumer = _Highwaters({p0: 100, p1: 50})
    consumer._sample_lag(p0, 90)
    assert (
        REGISTRY.get_sample_value("lt_kafka_consumer_lag_messages", {"group": "g-lag", "topic": "t.lag"})
        == 10
    )
    consumer._sample_lag(p1, 45)
    assert (
        REGISTRY.get_sample_value("lt_kafka_consumer_lag_messages", {"group": "g-lag", "topic": "t.lag"})
        == 15
    )
    consumer._sample_lag(TopicPartition("t.lag", 2), 7)  # not fetched yet: no high watermark, no change
    consumer._sample_lag(p0, 100)
    assert (
        REGISTRY.get_sample_value("lt_kafka_consumer_lag_messages", {"group": "g-lag", "topic": "t.lag"}) == 5
    )

"""Quota handles each command only from its own topic: whoever may write `usage.recorded` (the gateway) or
`quota.freeze-requests` (analytics) cannot slip a CreditTokens in there."""

from typing import Any, cast

from aiokafka import ConsumerRecord

from leaky_common.events import AnyMessage, CreditTokens, RequestFreeze, Topics, UsageRecorded
from lt_quota.handlers import make_handler
from lt_quota.usecases.freezes import Freezes
from lt_quota.usecases.settlement import Settlement
from lt_quota.usecases.topups import TopUps


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def settle_usage(self, m: Any) -> None:
        self.seen.append(type(m).__name__)

    credit = debit = freeze = settle_usage


def record(topic: str) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, 0, 0, 0, None, b"", 0, 0, 0, [])


async def deliver(pairs: list[tuple[AnyMessage, str]]) -> list[str]:
    rec = Recorder()
    handle = make_handler(cast(Settlement, rec), cast(TopUps, rec), cast(Freezes, rec))
    for message, topic in pairs:
        await handle(message, record(topic))
    return rec.seen


CREDIT = CreditTokens(saga_id="s", step="credit", purchase_id="p", user_id="u", amount=10**9)
FREEZE = RequestFreeze(target_type="user", target_id="u", reason="loop", duration_s=60)
USAGE = UsageRecorded(request_id="r", model="m", provider="mock")


async def test_each_type_is_handled_from_its_own_topic() -> None:
    assert await deliver(
        [(CREDIT, Topics.QUOTA_COMMANDS), (FREEZE, Topics.FREEZE_REQUESTS), (USAGE, Topics.USAGE)]
    ) == ["CreditTokens", "RequestFreeze", "UsageRecorded"]


async def test_a_command_on_another_producers_topic_is_skipped() -> None:
    assert (
        await deliver(
            [
                (CREDIT, Topics.USAGE),
                (CREDIT, Topics.FREEZE_REQUESTS),
                (FREEZE, Topics.QUOTA_COMMANDS),
                (USAGE, Topics.QUOTA_COMMANDS),
            ]
        )
        == []
    )

"""The generic webhook (no I/O): its `{id, type, occurred_at, data}` body and URL rule (signing:
`leaky_common.webhook_signing`)."""

from __future__ import annotations

from typing import Any

import orjson

from leaky_common.events import AnyMessage, Message, parse_message
from leaky_common.outbound import parse_destination
from lt_notifier.domain.notification import event_type

__all__ = ["check_webhook_url", "message_from_payload", "webhook_payload"]

_ENVELOPE = {"event_id", "occurred_at", "type"}


def webhook_payload(message: Message) -> bytes:
    """`{id, type, occurred_at, data}`: the body POSTed to every subscriber of this event."""
    fields = message.model_dump(mode="json")
    body: dict[str, Any] = {
        "id": message.event_id,
        "type": event_type(message),
        "occurred_at": fields["occurred_at"],
        "data": {k: v for k, v in fields.items() if k not in _ENVELOPE},
    }
    return orjson.dumps(body)


def message_from_payload(body: bytes) -> AnyMessage:
    """The event back from its stored webhook payload (the inverse of `webhook_payload`)."""
    envelope = orjson.loads(body)
    fields = {**envelope["data"], "event_id": envelope["id"], "type": envelope["type"]}
    fields["occurred_at"] = envelope["occurred_at"]
    return parse_message(orjson.dumps(fields))


def check_webhook_url(url: str) -> str:
    """Accept absolute http(s) URLs with a host and no userinfo; raise ValueError otherwise (where the host
    resolves to is checked by the use case: `leaky_common.outbound.resolve_checked`)."""
    parse_destination(url)
    return url

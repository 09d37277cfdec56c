"""aiokafka under uvloop: a write on a connection the broker (or a proxy) has closed raises `RuntimeError`
("unable to perform operation on <TCPTransport closed=True ...>; the handler is closed") where asyncio's own
loop raises `OSError` or nothing. aiokafka catches only `OSError` there (aio-libs/aiokafka#1038), so the
`RuntimeError` escapes: when it escapes the client's metadata task, that task dies, and every later wait for
metadata (finding the group coordinator, a commit, a heartbeat) hangs for ever. A consumer then stays in its
group, looks alive, and consumes nothing: after a 2 s broker outage, quota took no saga command again.

`install()` makes both of aiokafka's connection writers turn that error into the `KafkaConnectionError` of a
broken connection, which aiokafka handles: the connection is closed and re-opened by the next request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka.conn import AIOKafkaConnection, CloseReason
from aiokafka.errors import KafkaConnectionError

__all__ = ["install"]

_INSTALLED = "_lt_closed_transport_guard"


def _guarded(write: Callable[..., Any]) -> Callable[..., Any]:
    def send(self: AIOKafkaConnection, *args: Any, **kwargs: Any) -> Any:
        try:
            return write(self, *args, **kwargs)
        except RuntimeError as err:
            self.close(reason=CloseReason.CONNECTION_BROKEN)
            raise KafkaConnectionError(f"Connection at {self.host}:{self.port} broken: {err}") from err

    setattr(send, _INSTALLED, True)
    return send


def install() -> None:
    """Guard `AIOKafkaConnection.send` and its SASL counterpart (idempotent)."""
    for name in ("send", "_send_sasl_token"):
        write = getattr(AIOKafkaConnection, name)
        if not getattr(write, _INSTALLED, False):
            setattr(AIOKafkaConnection, name, _guarded(write))

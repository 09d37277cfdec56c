"""Fixtures shared by the notifier's integration tests; each module supplies its own `settings` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from leaky_common.events import Message
from leaky_common.kafka import EventPublisher
from lt_notifier.main import create_app
from lt_notifier.settings import NotifierSettings


@pytest.fixture(scope="module")
async def api(settings: NotifierSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The notifier app, started (consumers, deliverer) and reachable over ASGI."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notifier") as client,
    ):
        yield client


@pytest.fixture(scope="module")
async def publish(settings: NotifierSettings) -> AsyncIterator[Callable[[str, Message], Awaitable[None]]]:
    """`await publish("purchase" | "alerts" | "quota", message)` onto the module's topics."""
    publisher = EventPublisher(settings)
    await publisher.start()
    topics = {"purchase": settings.topics[0], "alerts": settings.topics[1], "quota": settings.topics[2]}

    async def send(kind: str, message: Message) -> None:
        # One key: the topics have several partitions, and the tests rely on the order of what they send.
        await publisher.publish(topics[kind], message, key="test")

    try:
        yield send
    finally:
        await publisher.stop()

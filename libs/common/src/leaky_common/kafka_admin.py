"""Connection options of every Kafka client, and the topics a service needs, created at start-up with the
configured partitions."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from leaky_common.events import Topics
from leaky_common.settings import ServiceSettings

__all__ = ["client_options", "ensure_topics"]

logger = logging.getLogger(__name__)


def client_options(settings: ServiceSettings) -> dict[str, Any]:
    """The connection options of every aiokafka client: bootstrap servers and, when set, SASL."""
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap}
    if settings.kafka_security_protocol == "PLAINTEXT":
        return options
    assert settings.kafka_sasl_password is not None  # the settings validator requires it with SASL
    options |= {
        "security_protocol": settings.kafka_security_protocol,
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
    }
    if settings.kafka_security_protocol == "SASL_SSL":
        options["ssl_context"] = create_ssl_context()
    return options


async def ensure_topics(
    settings: ServiceSettings, topics: Iterable[str], partitions: int | None = None
) -> None:
    """Create topics (and their DLQs) if missing, with the settings' partitions and replication; safe to call
    from every service at start-up. A topic that exists keeps its partitions (adding some would move keys to
    other partitions while messages are in flight): one with fewer than configured is logged."""
    count = partitions or settings.kafka_partitions
    names = sorted({t for topic in topics for t in (topic, Topics.dlq(topic))})
    configs = (
        {"min.insync.replicas": str(settings.kafka_min_insync_replicas)}
        if settings.kafka_min_insync_replicas
        else {}
    )
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=count,
                replication_factor=settings.kafka_replication_factor,
                topic_configs=configs,
            )
            for name in names
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        present = sorted(existing & set(names))
        if present:
            for described in await admin.describe_topics(present):
                have = len(described.get("partitions") or ())
                if 0 < have < count:
                    logger.warning(
                        "topic %s has %d partitions, fewer than the %d configured; "
                        "add partitions with the broker's tools if more consumers should share it",
                        described.get("topic"),
                        have,
                        count,
                    )
    finally:
        await admin.close()

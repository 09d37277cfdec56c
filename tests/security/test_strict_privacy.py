"""Finding 10: under strict privacy no prompt text, and no unkeyed derivative of it, leaves the gateway.

A canary prompt goes through the whole local stack with `X-Privacy-Mode: strict` (plain and streamed), then
the canary and its plain hashes (sha256, sha1, md5 and the gateway's old blake2b fingerprint, of the canary
and of the JSON the gateway fingerprints) are searched for in every table of every Postgres database, every
Redis key, every log file, the gateway's usage spool, every Kafka topic and every exported span. Positive
controls (the request ids are found in the logs, a topic and a table; spans arrived) keep the search honest.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from leaky_common.db import database_url_for
from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.e2e

MODEL = "mock-gpt"


def _digests(data: bytes) -> dict[str, str]:
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "sha1": hashlib.sha1(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
        "blake2b-96": hashlib.blake2b(data, digest_size=12).hexdigest(),
        "blake2b": hashlib.blake2b(data).hexdigest(),
    }


def needles(canary: str, messages: list[dict[str, Any]]) -> dict[str, bytes]:
    """The canary and every plain derivative an attacker could look up, by name."""
    out = {"canary": canary.encode(), "canary-hex": canary.encode().hex().encode()}
    sources = {
        "canary": canary.encode(),
        "messages": orjson.dumps(messages),
        "fingerprint-input": orjson.dumps([MODEL, messages[-3:]]),
    }
    for source, data in sources.items():
        for algo, digest in _digests(data).items():
            out[f"{algo}({source})"] = digest.encode()
    return out


def hits(place: str, haystack: bytes, found: dict[str, bytes]) -> list[str]:
    """`place: needle` for each needle in `haystack` (case-insensitive)."""
    low = haystack.lower()
    return [f"{place}: {name}" for name, needle in found.items() if needle.lower() in low]


async def postgres_text(server_url: str) -> list[tuple[str, bytes]]:
    """(database.table, every row as text) for every table of every database on the server."""
    out: list[tuple[str, bytes]] = []
    conn = await asyncpg.connect(server_url)
    try:
        names = await conn.fetch("SELECT datname FROM pg_database WHERE NOT datistemplate")
    finally:
        await conn.close()
    for (db,) in names:
        conn = await asyncpg.connect(database_url_for(server_url, db))
        try:
            tables = await conn.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables"
                " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
            )
            for schema, table in tables:
                text = await conn.fetchval(
                    f"SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM \"{schema}\".\"{table}\" t"
                )
                out.append((f"{db}.{schema}.{table}", str(text).encode()))
        finally:
            await conn.close()
    return out


async def redis_text(url: str) -> bytes:
    """Every key and every value in Redis, as bytes."""
    client: Redis[bytes] = Redis.from_url(url)
    parts: list[bytes] = []
    try:
        async for key in client.scan_iter(count=1000):
            kind = (await client.type(key)).decode()  # type: ignore[no-untyped-call]
            readers: dict[str, Callable[[bytes], Awaitable[Any]]] = {
                "string": client.get,
                "hash": client.hgetall,
                "list": lambda k: client.lrange(k, 0, -1),
                "set": client.smembers,
                "zset": lambda k: client.zrange(k, 0, -1),
                "stream": client.xrange,
            }
            value = await readers[kind](key) if kind in readers else None
            parts += [key, repr(value).encode()]
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # the stubs predate aclose
    return b"\n".join(parts)


async def kafka_records(bootstrap: str) -> dict[str, bytes]:
    """Every record (key, value, headers) of every topic, read from the beginning."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if not t.startswith("__")]
        # Every partition of every topic (a consumer without a subscription has no metadata to ask).
        partitions = {
            d["topic"]: {p["partition"] for p in d["partitions"]} for d in await admin.describe_topics(topics)
        }
    finally:
        await admin.close()
    out: dict[str, bytes] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        for topic in topics:
            parts = partitions.get(topic) or {0}
            consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
            chunks: list[bytes] = []
            empty = 0
            while empty < 2:  # a topic is read out when two fetches in a row bring nothing
                batch = await consumer.getmany(timeout_ms=400)
                records = [r for rs in batch.values() for r in rs]
                empty = 0 if records else empty + 1
                for r in records:
                    chunks += [r.key or b"", r.value or b"", repr(r.headers).encode()]
            out[topic] = b"\n".join(chunks)
    finally:
        await consumer.stop()
    return out


def files_under(run_dir: Path) -> dict[str, bytes]:
    """Every log file and every spool file (raw bytes: deleted SQLite rows linger in free pages)."""
    paths = [*sorted((run_dir / "logs").glob("*")), *sorted(run_dir.glob("*spool*"))]
    return {p.name: p.read_bytes() for p in paths if p.is_file()}


async def _send_canary(
    client: httpx.AsyncClient, canary: str, headers: dict[str, str]
) -> tuple[list[str], list[Any]]:
    """The canary in a plain and a streamed chat completion; their request ids and the messages sent."""
    messages = [{"role": "user", "content": f"Please keep this secret: {canary}"}]
    request_ids = []
    body = {"model": MODEL, "messages": messages, "max_tokens": 16}
    plain = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert plain.status_code == 200, plain.text
    request_ids.append(plain.headers["x-request-id"])
    async with client.stream(
        "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers
    ) as streamed:
        assert streamed.status_code == 200
        await streamed.aread()
        request_ids.append(streamed.headers["x-request-id"])
    return request_ids, messages


async def send_canaries(stack: Any) -> tuple[list[str], dict[str, bytes]]:
    """One canary under `X-Privacy-Mode: strict`, one under the user's strict default; ids and needles."""
    session = f"privacy-{uuid.uuid4().hex[:8]}"
    search: dict[str, bytes] = {}
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {stack.admin_key}"}, timeout=30
    ) as client:
        canary = f"CANARY-{uuid.uuid4().hex}"
        ids, messages = await _send_canary(
            client, canary, {"X-Privacy-Mode": "strict", "X-Session-ID": session}
        )
        search |= {f"header {k}": v for k, v in needles(canary, messages).items()}
        default = await client.put("/v1/users/me/privacy", json={"privacy": "strict"})
        assert default.status_code == 200, default.text
        canary = f"CANARY-{uuid.uuid4().hex}"
        more, messages = await _send_canary(client, canary, {"X-Session-ID": session})
        search |= {f"user default {k}": v for k, v in needles(canary, messages).items()}
    return ids + more, search


def strict_flags(usage_topic: bytes, request_ids: list[str]) -> dict[str, bool]:
    """request id -> `privacy_strict` of its UsageRecorded event."""
    events = [orjson.loads(line) for line in usage_topic.split(b"\n") if line.startswith(b"{")]
    return {e["request_id"]: e["privacy_strict"] for e in events if e.get("request_id") in request_ids}


@pytest.mark.timeout(300)  # starts a whole stack
async def test_strict_privacy_leaves_no_text_and_no_plain_hash_anywhere(
    traced_stack: Any, otlp_sink: Any
) -> None:
    request_ids, search = await send_canaries(traced_stack)
    state = traced_stack.state
    control = {"request": request_ids[-1].encode()}

    async def analytics_has_it() -> bool:
        return any(hits(n, t, control) for n, t in await postgres_text(str(state["postgres"])))

    await eventually(analytics_has_it, timeout=30, what="the usage event reached a table")
    await eventually(lambda: b"gateway" in otlp_sink.received(), timeout=30, what="gateway spans exported")

    found: list[str] = []
    controls: list[str] = []
    for name, text in await postgres_text(str(state["postgres"])):
        found += hits(f"table {name}", text, search)
        controls += hits("table", text, control)
    found += hits("redis", await redis_text(str(state["redis"])), search)
    topics = await kafka_records(str(state["kafka"]))
    for topic, text in topics.items():
        found += hits(f"topic {topic}", text, search)
        controls += hits("topic", text, control)
    for name, data in files_under(traced_stack.run_dir).items():
        found += hits(f"file {name}", data, search)
        controls += hits("log", data, control)
    found += hits("spans", otlp_sink.received(), search)

    assert {c.split(":")[0] for c in controls} == {"table", "topic", "log"}, controls
    assert strict_flags(topics["usage.recorded"], request_ids) == dict.fromkeys(request_ids, True)
    assert not found, f"strict privacy leaked: {sorted(set(found))}"

"""The durable spool of usage events the broker has not acknowledged yet (SQLite, WAL)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson
from prometheus_client import Gauge

from leaky_common.events import UsageRecorded

# An event and the trace headers (`traceparent`, `tracestate`) of the request that recorded it.
Traced = tuple[UsageRecorded, dict[str, str]]

USAGE_SPOOLED = Gauge("lt_gateway_usage_events_spooled", "Usage events waiting in the durable spool")


def _private(path: Path) -> None:
    """Create `path` readable by its owner only (the spool holds user and org ids), or make it so."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if part.exists():
            part.chmod(0o600)


class UsageSpool:
    """An append-only SQLite file of events the broker has not acknowledged yet."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # SQLite gives its -wal and -shm files the database file's mode.
        _private(path)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (the case that matters here), not a power cut.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS usage_spool (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " event_id TEXT NOT NULL UNIQUE, body BLOB NOT NULL, trace TEXT NOT NULL DEFAULT '')"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(usage_spool)")}
        if "trace" not in columns:  # a spool written before events kept their trace context
            self._db.execute("ALTER TABLE usage_spool ADD COLUMN trace TEXT NOT NULL DEFAULT ''")
        self.count = int(self._db.execute("SELECT count(*) FROM usage_spool").fetchone()[0])
        USAGE_SPOOLED.set(self.count)

    def append(self, events: list[Traced]) -> None:
        """Store events with their trace headers durably (an event already spooled is kept once)."""
        with self._db:
            cur = self._db.executemany(
                "INSERT OR IGNORE INTO usage_spool (event_id, body, trace) VALUES (?, ?, ?)",
                [(e.event_id, e.model_dump_json(), orjson.dumps(t).decode() if t else "") for e, t in events],
            )
        self.count += max(cur.rowcount, 0)
        USAGE_SPOOLED.set(self.count)

    def oldest(self, limit: int) -> list[tuple[int, Traced]]:
        """Up to `limit` spooled events with their trace headers, oldest first, with their sequence numbers."""
        rows = self._db.execute(
            "SELECT seq, body, trace FROM usage_spool ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [
            (int(seq), (UsageRecorded.model_validate_json(body), orjson.loads(trace) if trace else {}))
            for seq, body, trace in rows
        ]

    def remove(self, seqs: list[int]) -> None:
        """Forget events the broker acknowledged."""
        if not seqs:
            return
        with self._db:
            cur = self._db.executemany("DELETE FROM usage_spool WHERE seq = ?", [(s,) for s in seqs])
        self.count = max(self.count - max(cur.rowcount, 0), 0)
        USAGE_SPOOLED.set(self.count)

    def close(self) -> None:
        """Close the file."""
        self._db.close()

"""The gateway's crash journal: what a killed gateway owed quota, settled by the next one to start.

Three things live only in a gateway's memory: admissions asked of quota and not yet answered, usage events
waiting (a few milliseconds) for the background publisher, and streams being relayed, whose usage is known only
at their end. A gateway killed at that moment (SIGKILL, OOM) would leave their reservations to be charged in
full at expiry, and analytics without a row. The journal writes them down as they happen, in an append-only
file of this process. Plain writes, no fsync: the kernel keeps them when the process dies (not when the
machine does). One line per record:

    R <n> <json>                        admission n asked for (the request, its reservation id, its org)
    D <n>                               admission n answered: its outcome recorded, or the request on its way
                                        to the provider
    U <event json>                      a usage event queued in memory
    A <event id> <event id> ...         events the broker acknowledged, or the durable spool took over
    O <n> <json>                        stream n opened: its usage event so far, and the serving prices
    P <n> <prompt> <completion> <cached> <cache_write>   stream n's usage so far (the tokens relayed)
    C <n>                               stream n settled (its usage event was recorded)

A file is live while its writer holds an exclusive `flock` on it. A gateway starting up takes over every file
of the journal's folder that no process holds: it records again each usage event without its acknowledgement
(consumers dedupe on `event_id`); for each admission asked for and never answered, a usage event of nothing
used for its reservation (quota releases it at zero if it was made: nothing went to the provider); and for
each stream opened and never settled, a usage event for what was relayed. Both have status `error`, code
`gateway_interrupted`, and one `event_id` per reservation, so a takeover that is itself interrupted does not
charge twice. Then it deletes the files. Segments roll over at `segment_bytes`; a
closed segment is deleted once nothing in it is outstanding.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from leaky_common.events import UsageRecorded
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.usage import Usage

logger = logging.getLogger(__name__)

INTERRUPTED = "gateway_interrupted"
_PRICES = (
    "input_usd_micros_per_mtok",
    "output_usd_micros_per_mtok",
    "cached_input_usd_micros_per_mtok",
    "cache_write_usd_micros_per_mtok",
)
# Interrupted streams' event ids: the same for the same reservation, whoever takes the journal over.
_NAMESPACE = uuid.UUID("6f1d8f52-3c55-4d0e-9a57-0c1f5b7e2a41")


@dataclass(slots=True)
class _Segment:
    path: Path
    fd: int
    outstanding: int = 0
    size: int = 0


@dataclass(slots=True)
class JournalEntry:
    """An admission or a stream of this process: its number and the segment its `R` or `O` line is in."""

    number: int
    segment: _Segment
    last: tuple[int, int, int, int] = (-1, -1, -1, -1)


class UsageJournal:
    """This process's journal segments in `directory`, and the takeover of dead processes' segments."""

    def __init__(self, directory: Path, *, segment_bytes: int = 8 << 20) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._prefix = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._seq = 0
        self._entries = 0
        self._current: _Segment | None = None
        self._pending: dict[str, _Segment] = {}  # event id -> the segment of its `U` line
        self._taken: list[int] = []  # descriptors of segments taken over (locked until `forget`)

    # -- this process's records ---------------------------------------------------------------------------

    def open(self) -> None:
        """Create the folder and this process's first segment (locked while this process lives)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._roll()

    def close(self) -> None:
        """Close this process's segments; those with nothing outstanding are deleted, the others stay for the
        next gateway to take over."""
        segments = {s.path: s for s in self._pending.values()}
        if self._current is not None:
            segments[self._current.path] = self._current
        for seg in segments.values():
            self._release(seg, delete=seg.outstanding <= 0)
        self._current = None
        self._pending.clear()

    def event(self, event: UsageRecorded) -> None:
        """A usage event now waiting in memory for the broker."""
        seg = self._write(b"U " + event.model_dump_json().encode() + b"\n")
        if seg is not None:
            seg.outstanding += 1
            self._pending[event.event_id] = seg

    def acked(self, event_ids: list[str]) -> None:
        """Events that are safe elsewhere: acknowledged by the broker, or in the durable spool."""
        done = [i for i in event_ids if i in self._pending]
        if not done:
            return
        self._write(b"A " + " ".join(done).encode() + b"\n")
        for event_id in done:
            self._settle(self._pending.pop(event_id))

    def admitting(self, record: dict[str, Any]) -> JournalEntry | None:
        """An admission about to be asked of quota: `record` names the request (`request_id`, `reservation_id`,
        `org_id`, `session_id`, `model`, `provider`, `stream`)."""
        self._entries += 1
        number = self._entries
        seg = self._write(b"R %d " % number + orjson.dumps(record) + b"\n")
        if seg is None:
            return None
        seg.outstanding += 1
        return JournalEntry(number, seg)

    def admitted(self, entry: JournalEntry | None) -> None:
        """The admission was answered (or given up on) and its outcome recorded, or the request goes upstream."""
        if entry is None:
            return
        self._write(b"D %d\n" % entry.number)
        self._settle(entry.segment)

    def stream_opened(self, event: UsageRecorded, spec: ModelSpec) -> JournalEntry | None:
        """A stream starts relaying; `event` is its usage event with the prompt side only."""
        self._entries += 1
        number = self._entries
        prices = {name: getattr(spec, name) for name in _PRICES}
        record = {"event": event.model_dump(mode="json"), "prices": prices, "name": spec.name,
                  "provider": spec.provider, "upstream_model": spec.upstream_model}  # fmt: skip
        seg = self._write(b"O %d " % number + orjson.dumps(record) + b"\n")
        if seg is None:
            return None
        seg.outstanding += 1
        return JournalEntry(number, seg)

    def stream_progress(self, entry: JournalEntry | None, usage: Usage) -> None:
        """The usage of stream `entry` so far (written only when it changed)."""
        if entry is None:
            return
        now = (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens)
        if now != entry.last:
            entry.last = now
            self._write(b"P %d %d %d %d %d\n" % (entry.number, *now))

    def stream_closed(self, entry: JournalEntry | None) -> None:
        """Stream `entry` ended and its usage event was recorded."""
        if entry is None:
            return
        self._write(b"C %d\n" % entry.number)
        self._settle(entry.segment)

    def _write(self, line: bytes) -> _Segment | None:
        seg = self._current
        if seg is None:
            return None
        try:
            os.write(seg.fd, line)
        except OSError:
            logger.exception("usage journal write failed")
            return None
        seg.size += len(line)
        if seg.size >= self.segment_bytes:
            self._roll()
        return seg

    def _settle(self, seg: _Segment) -> None:
        seg.outstanding -= 1
        if seg.outstanding <= 0 and seg is not self._current:
            self._release(seg, delete=True)

    def _roll(self) -> None:
        old = self._current
        self._seq += 1
        path = self.directory / f"{self._prefix}-{self._seq:06d}.journal"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._current = _Segment(path, fd)
        if old is not None and old.outstanding <= 0:
            self._release(old, delete=True)

    @staticmethod
    def _release(seg: _Segment, *, delete: bool) -> None:
        if seg.fd < 0:
            return
        if delete:
            with contextlib.suppress(FileNotFoundError):
                seg.path.unlink()
        os.close(seg.fd)
        seg.fd = -1

    # -- taking over from dead processes ------------------------------------------------------------------

    def take_over(self) -> tuple[list[UsageRecorded], list[Path]]:
        """The usage events the dead writers of this folder's other segments still owed, and those segments
        (locked by this process until `forget`). Call before this process writes its own records."""
        own = {s.path for s in self._pending.values()} | ({self._current.path} if self._current else set())
        taken: list[Path] = []
        fds: list[int] = []
        for path in sorted(self.directory.glob("*.journal")):
            if path in own:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its writer is alive
                os.close(fd)
                continue
            taken.append(path)
            fds.append(fd)
        self._taken = fds
        return owed([(p.name.rsplit("-", 1)[0], p.read_bytes()) for p in taken]), taken

    def forget(self, paths: list[Path]) -> None:
        """Delete segments taken over once what they owed is recorded again."""
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for fd in self._taken:
            os.close(fd)
        self._taken = []


@dataclass(slots=True)
class _Records:
    """What a folder's dead segments say, line by line."""

    events: dict[str, UsageRecorded] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    opened: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    progress: dict[tuple[str, int], tuple[int, ...]] = field(default_factory=dict)
    closed: set[tuple[str, int]] = field(default_factory=set)
    admitting: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    answered: set[tuple[str, int]] = field(default_factory=set)

    def read(self, writer: str, line: bytes) -> None:
        kind, _, rest = line.partition(b" ")
        if kind == b"R":
            head, _, body = rest.partition(b" ")
            self.admitting[(writer, int(head))] = orjson.loads(body)
        elif kind == b"D":
            self.answered.add((writer, int(rest)))
        elif kind == b"U":
            event = UsageRecorded.model_validate_json(rest)
            self.events[event.event_id] = event
        elif kind == b"A":
            self.acked.update(rest.decode().split())
        elif kind == b"O":
            head, _, body = rest.partition(b" ")
            self.opened[(writer, int(head))] = orjson.loads(body)
        elif kind == b"P":
            number, *fields = (int(x) for x in rest.split())
            if len(fields) == 4:
                self.progress[(writer, number)] = tuple(fields)
        elif kind == b"C":
            self.closed.add((writer, int(rest)))


def owed(segments: list[tuple[str, bytes]]) -> list[UsageRecorded]:
    """What dead segments still owe, given as (writer, contents) in order: unacknowledged events, one event of
    nothing used per admission never answered, and one event per stream opened and never settled (admissions
    and streams are numbered per writer; their lines can span their writer's segments). Torn or unreadable lines are skipped (a killed process's last write can be cut
    short)."""
    records = _Records()
    for writer, data in segments:
        for line in data.split(b"\n"):
            try:
                records.read(writer, line)
            except (ValueError, ValidationError, orjson.JSONDecodeError):
                continue
    out = [e for i, e in records.events.items() if i not in records.acked]
    recorded = {e.request_id for e in records.events.values()}
    reserved = {e.reservation_id for e in records.events.values() if e.reservation_id}
    for key, record in records.admitting.items():
        if key in records.answered:
            continue
        lost = _unanswered(record)
        if lost is not None and lost.reservation_id not in reserved:
            out.append(lost)
    for key, record in records.opened.items():
        if key in records.closed:
            continue
        event = _interrupted(record, records.progress.get(key))
        if event is not None and event.request_id not in recorded:
            out.append(event)
    return out


def _unanswered(record: dict[str, Any]) -> UsageRecorded | None:
    """The usage event of an admission its gateway never saw answered: nothing went to the provider, so
    nothing was used; quota releases the reservation at zero if it made it."""
    try:
        reservation_id = str(record["reservation_id"])
        return UsageRecorded(
            producer="gateway",
            event_id=uuid.uuid5(_NAMESPACE, "admission:" + reservation_id).hex,
            correlation_id=str(record["request_id"]),
            request_id=str(record["request_id"]),
            reservation_id=reservation_id,
            org_id=record.get("org_id"),
            session_id=record.get("session_id"),
            model=str(record.get("model") or ""),
            provider=str(record.get("provider") or ""),
            status="error",
            http_status=502,
            error_code=INTERRUPTED,
            stream=bool(record.get("stream")),
        )
    except (KeyError, TypeError, ValidationError):
        return None


def _interrupted(record: dict[str, Any], usage: tuple[int, ...] | None) -> UsageRecorded | None:
    """The usage event of a stream its gateway never settled: what was relayed, at the serving prices."""
    try:
        base = UsageRecorded.model_validate(record["event"])
        spec = ModelSpec(name=record["name"], provider=record["provider"],
                         upstream_model=record["upstream_model"], **record["prices"])  # fmt: skip
    except (KeyError, TypeError, ValidationError):
        return None
    prompt, completion, cached, cache_write = usage or (base.prompt_tokens, 0, base.cached_tokens, 0)
    seed = base.reservation_id or base.request_id
    return base.model_copy(
        update={
            "event_id": uuid.uuid5(_NAMESPACE, seed).hex,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cached_tokens": cached,
            "cost_usd_micros": spec.cost_usd_micros(prompt, completion, cached, cache_write),
            "status": "error",
            "http_status": 502,
            "error_code": INTERRUPTED,
        }
    )

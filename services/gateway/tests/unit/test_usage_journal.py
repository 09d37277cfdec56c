"""The gateway's crash journal: what a SIGKILLed gateway owed is found and recorded by the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from leaky_common.events import UsageRecorded
from lt_gateway.adapters.usage_journal import INTERRUPTED, UsageJournal, owed
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.usage import Usage

SPEC = ModelSpec(
    name="gpt-x",
    provider="openai",
    upstream_model="gpt-x",
    input_usd_micros_per_mtok=2_500_000,
    output_usd_micros_per_mtok=10_000_000,
)


def event(request_id: str, prompt: int = 12, completion: int = 0) -> UsageRecorded:
    return UsageRecorded(
        producer="gateway", request_id=request_id, reservation_id=f"res-{request_id}", org_id="o1",
        user_id="u1", pool_id="p1", model="gpt-x", provider="openai", prompt_tokens=prompt,
        completion_tokens=completion, total_tokens=prompt + completion, stream=True,
    )  # fmt: skip


def admission(request_id: str) -> dict[str, object]:
    return {"request_id": request_id, "reservation_id": f"res-{request_id}", "org_id": "o1",
            "session_id": "s-1", "model": "gpt-x", "provider": "openai", "stream": False}  # fmt: skip


# A gateway's last moments: two events in memory (one acknowledged), a stream that relayed 7 tokens, a stream
# that ended and was recorded, an admission answered and one still waiting for quota, then SIGKILL.
_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {here!r})
    from test_usage_journal import SPEC, admission, event
    from lt_gateway.adapters.usage_journal import UsageJournal
    from lt_gateway.domain.usage import Usage

    journal = UsageJournal(Path({folder!r}))
    journal.open()
    journal.event(event("plain-1", 10, 5))
    acked = event("plain-2", 10, 6)
    journal.event(acked)
    journal.acked([acked.event_id])
    cut = journal.stream_opened(event("stream-1"), SPEC)
    for n in range(1, 8):
        journal.stream_progress(cut, Usage(12, n))
    done = journal.stream_opened(event("stream-2"), SPEC)
    journal.stream_progress(done, Usage(12, 3))
    journal.event(event("stream-2", 12, 3))
    journal.stream_closed(done)
    journal.admitted(journal.admitting(admission("answered-1")))
    journal.admitting(admission("waiting-1"))
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_what_a_killed_gateway_owed_is_taken_over_once(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    code = _KILLED.format(here=str(Path(__file__).parent), folder=str(folder))
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert len(list(folder.glob("*.journal"))) == 1

    heir = UsageJournal(folder)
    heir.open()
    found, segments = heir.take_over()
    by_request = {e.request_id: e for e in found}
    # Unacknowledged events come back as they were (same event id: consumers dedupe them), the acknowledged
    # one does not; the stream that ended comes back once, as recorded; the stream being relayed is charged
    # what was relayed.
    assert sorted(by_request) == ["plain-1", "stream-1", "stream-2", "waiting-1"]
    assert by_request["plain-1"].completion_tokens == 5
    assert (by_request["stream-2"].completion_tokens, by_request["stream-2"].error_code) == (3, None)
    interrupted = by_request["stream-1"]
    assert (interrupted.prompt_tokens, interrupted.completion_tokens, interrupted.total_tokens) == (12, 7, 19)
    assert interrupted.cost_usd_micros == SPEC.cost_usd_micros(12, 7)
    assert (interrupted.status, interrupted.http_status, interrupted.error_code) == (
        "error",
        502,
        INTERRUPTED,
    )
    assert interrupted.reservation_id == "res-stream-1" and interrupted.pool_id == "p1"
    # The admission still waiting for quota: nothing went to the provider, the reservation is released at zero.
    waiting = by_request["waiting-1"]
    assert (waiting.reservation_id, waiting.org_id, waiting.session_id) == ("res-waiting-1", "o1", "s-1")
    assert (waiting.total_tokens, waiting.cost_usd_micros, waiting.error_code) == (0, 0, INTERRUPTED)
    heir.forget(segments)
    assert not any(p.exists() for p in segments)
    # Taking over the same records twice names the interrupted stream's event the same: charged once.
    again = owed([("w", b"O 1 " + _record(event("stream-1"))), ("w", b"P 1 12 7 0 0\n")])
    assert again[0].event_id == interrupted.event_id
    heir.close()
    assert list(folder.glob("*.journal")) == []


def _record(e: UsageRecorded) -> bytes:
    import orjson

    prices = {
        "input_usd_micros_per_mtok": SPEC.input_usd_micros_per_mtok,
        "output_usd_micros_per_mtok": SPEC.output_usd_micros_per_mtok,
        "cached_input_usd_micros_per_mtok": None,
        "cache_write_usd_micros_per_mtok": None,
    }
    body = {"event": e.model_dump(mode="json"), "prices": prices, "name": SPEC.name,
            "provider": SPEC.provider, "upstream_model": SPEC.upstream_model}  # fmt: skip
    return orjson.dumps(body) + b"\n"


def test_a_live_gateways_journal_is_left_alone(tmp_path: Path) -> None:
    alive = UsageJournal(tmp_path)
    alive.open()
    alive.event(event("r1", 10, 1))
    other = UsageJournal(tmp_path)
    other.open()
    found, segments = other.take_over()
    assert (found, segments) == ([], [])
    assert len(list(tmp_path.glob("*.journal"))) == 2
    other.close()
    alive.close()  # r1 was never acknowledged: its segment stays for the next gateway
    left = list(tmp_path.glob("*.journal"))
    assert len(left) == 1
    heir = UsageJournal(tmp_path)
    heir.open()
    found, segments = heir.take_over()
    assert [e.request_id for e in found] == ["r1"] and segments == left


def test_a_clean_stop_with_everything_settled_leaves_no_file(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path)
    journal.open()
    e = event("r1", 10, 2)
    journal.event(e)
    journal.admitted(journal.admitting(admission("s1")))
    entry = journal.stream_opened(event("s1"), SPEC)
    journal.stream_progress(entry, Usage(12, 1))
    journal.acked([e.event_id])
    journal.stream_closed(entry)
    journal.close()
    assert list(tmp_path.glob("*")) == []


def test_segments_roll_over_and_settled_ones_are_deleted(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path, segment_bytes=2_000)
    journal.open()
    events = [event(f"r{i}", 10, i) for i in range(40)]
    for e in events:
        journal.event(e)
    assert len(list(tmp_path.glob("*.journal"))) > 5
    journal.acked([e.event_id for e in events[:-1]])
    # Every segment but the one holding the last unacknowledged event, and the one being written, is gone.
    assert len(list(tmp_path.glob("*.journal"))) <= 2
    journal.acked([events[-1].event_id])
    assert len(list(tmp_path.glob("*.journal"))) == 1
    journal.close()
    assert list(tmp_path.glob("*.journal")) == []


def test_torn_lines_are_skipped_and_a_stream_recorded_but_not_closed_is_not_charged_twice() -> None:
    recorded = event("s1", 12, 4)
    segment = (
        b"O 1 " + _record(event("s1"))
        + b"P 1 12 4 0 0\n"
        + b"U " + recorded.model_dump_json().encode() + b"\n"
        + b"U {\"event_id\": \"torn"
    )  # fmt: skip
    found = owed([("w", segment)])
    assert [(e.request_id, e.event_id) for e in found] == [("s1", recorded.event_id)]


def test_an_unanswered_admission_is_released_once_unless_its_outcome_was_recorded() -> None:
    import orjson

    line = b"R 1 " + orjson.dumps(admission("r1")) + b"\n"
    (first,) = owed([("w", line)])
    (again,) = owed([("w", line)])
    assert first.event_id == again.event_id  # a takeover interrupted and redone releases it once
    assert first.reservation_id == "res-r1" and first.total_tokens == 0
    # Answered (`D`): nothing owed. Its outcome recorded but not yet acknowledged: that event, not a second one.
    assert owed([("w", line + b"D 1\n")]) == []
    failed = event("r1", 0, 0).model_copy(update={"status": "error", "http_status": 503})
    found = owed([("w", line + b"U " + failed.model_dump_json().encode() + b"\n")])
    assert [e.event_id for e in found] == [failed.event_id]
    # Another writer's admission number 1 is another admission.
    assert len(owed([("w", line + b"D 1\n"), ("x", line.replace(b"r1", b"r2"))])) == 1


def test_a_stream_opened_before_any_token_is_charged_its_prompt() -> None:
    found = owed([("w", b"O 1 " + _record(event("s1", 12)))])
    assert [(e.prompt_tokens, e.completion_tokens) for e in found] == [(12, 0)]
    assert found[0].cost_usd_micros == SPEC.cost_usd_micros(12, 0) > 0


def test_journal_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path / "j")
    journal.open()
    journal.event(event("r1"))
    (path,) = (tmp_path / "j").glob("*.journal")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "j").st_mode & 0o777 == 0o700
    journal.close()

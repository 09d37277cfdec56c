"""What the gateway's crash journal costs per request: an admission journalled until answered (with the
reservation id the gateway names), a usage event journalled until acknowledged, a streamed chunk's progress.

    uv run python bench/journal.py [--n 50000] [--runs 5]

Prints the median over runs of the wall time per operation, in microseconds (one process, one thread, the
journal on the local disk as the gateway writes it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from leaky_common.contracts import new_reservation_id
from leaky_common.events import UsageRecorded
from lt_gateway.adapters.usage_journal import UsageJournal
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.usage import Usage

SPEC = ModelSpec(name="gpt-x", provider="openai", upstream_model="gpt-x",
                 input_usd_micros_per_mtok=2_500_000, output_usd_micros_per_mtok=10_000_000)  # fmt: skip


def _event(i: int) -> UsageRecorded:
    return UsageRecorded(
        producer="gateway", request_id=f"r{i}", reservation_id=new_reservation_id("o1"), org_id="o1",
        user_id="u1", key_id="k1", pool_id="p1", model="gpt-x", provider="openai", prompt_tokens=12,
        completion_tokens=20, total_tokens=32, cost_usd_micros=230,
    )  # fmt: skip


def admissions(journal: UsageJournal, n: int) -> float:
    """Name a reservation, journal its admission, mark it answered."""
    started = time.perf_counter()
    for i in range(n):
        record = {"request_id": f"r{i}", "reservation_id": new_reservation_id("o1"), "org_id": "o1",
                  "session_id": None, "model": "gpt-x", "provider": "openai", "stream": False}  # fmt: skip
        journal.admitted(journal.admitting(record))
    return time.perf_counter() - started


def events(journal: UsageJournal, n: int) -> float:
    """Journal a usage event, then its acknowledgement (one event per acknowledgement: the worst case)."""
    batch = [_event(i) for i in range(n)]
    started = time.perf_counter()
    for e in batch:
        journal.event(e)
        journal.acked([e.event_id])
    return time.perf_counter() - started


def chunks(journal: UsageJournal, n: int) -> float:
    """One stream's progress, one token per chunk."""
    entry = journal.stream_opened(_event(0), SPEC)
    started = time.perf_counter()
    for i in range(n):
        journal.stream_progress(entry, Usage(12, i + 1))
    elapsed = time.perf_counter() - started
    journal.stream_closed(entry)
    return elapsed


def _time(op: Callable[[UsageJournal, int], float], n: int) -> float:
    """Microseconds per operation, in a fresh journal."""
    with tempfile.TemporaryDirectory() as folder:
        journal = UsageJournal(Path(folder))
        journal.open()
        elapsed = op(journal, n)
        journal.close()
    return elapsed / n * 1e6


def main() -> None:
    """Run each operation `--runs` times and print the medians."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for name, op in (("admission (R + D)", admissions), ("usage event (U + A)", events),
                     ("streamed chunk (P)", chunks)):  # fmt: skip
        runs = [_time(op, args.n) for _ in range(args.runs)]
        print(f"{name:22} {statistics.median(runs):6.2f} us  (runs: {', '.join(f'{r:.2f}' for r in runs)})")


if __name__ == "__main__":
    main()

"""The consecutive-loop rule: a session's run counts every repeat, a key's only those within the loop window."""

from datetime import UTC, datetime, timedelta

from leaky_common.events import UsageRecorded
from lt_analytics.domain.detection import Streak, Target, extend_run, follow_loops
from lt_analytics.domain.thresholds import Thresholds

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LIMITS = Thresholds(loop_consecutive=4, loop_window_s=60)


def request(after_s: float, *, session: str | None = None, fp: str = "fp-a") -> UsageRecorded:
    return UsageRecorded(
        request_id=f"r-{after_s}",
        model="mock-gpt",
        provider="mock",
        org_id="o1",
        key_id="k1",
        session_id=session,
        prompt_fingerprint=fp,
        occurred_at=START + timedelta(seconds=after_s),
    )


def loops(*events: UsageRecorded, streaks: dict[Target, Streak] | None = None) -> list[float]:
    runs: list[tuple[UsageRecorded, Target]] = [
        (e, ("session", "o1", e.session_id) if e.session_id else ("key", "o1", "k1")) for e in events
    ]
    found = follow_loops(runs, {} if streaks is None else streaks, {"o1": LIMITS})
    return [(e.occurred_at - START).total_seconds() for e, _ in found]


def test_four_within_the_window_are_a_loop_without_a_session() -> None:
    assert loops(*(request(s) for s in (0, 10, 20, 30))) == [30]


def test_four_spread_wider_than_the_window_are_not() -> None:
    # Each pair closer than the window, but the four span 90 s: at most three ever fall within 60 s.
    assert loops(*(request(s) for s in (0, 30, 60, 90))) == []
    # One a day, as `make up`'s old start-up ping was: never.
    assert loops(*(request(day * 86_400) for day in range(10))) == []


def test_the_window_slides_over_the_run() -> None:
    # 0 and 5 have left the window by 70 (three within it at most so far); 40, 70, 90 and 95 are four.
    assert loops(*(request(s) for s in (0, 5, 40, 70, 90, 95))) == [95]


def test_the_window_is_strict_at_its_edge() -> None:
    assert loops(*(request(s) for s in (0, 20, 40, 60))) == []
    assert loops(*(request(s) for s in (0, 20, 40, 59.9))) == [59.9]


def test_a_session_counts_every_consecutive_repeat_however_slow() -> None:
    assert loops(*(request(h * 3_600, session="s1") for h in range(4))) == [3 * 3_600]


def test_a_different_prompt_restarts_the_run_and_a_detection_rearms_it() -> None:
    assert loops(*(request(s) for s in (0, 1, 2)), request(3, fp="fp-b"), request(4)) == []
    assert loops(*(request(s) for s in range(9))) == [3, 7]


def test_a_run_continues_across_batches_from_its_stored_times() -> None:
    streaks: dict[Target, Streak] = {}
    assert loops(request(0), request(10), streaks=streaks) == []
    stored = streaks[("key", "o1", "k1")]
    assert (stored.count, stored.times) == (2, [START, START + timedelta(seconds=10)])
    # Stored, then loaded as a new Streak (as the adapter does): the run goes on where it stopped.
    loaded: dict[Target, Streak] = {
        ("key", "o1", "k1"): Streak(stored.fingerprint, stored.count, times=list(stored.times))
    }
    assert loops(request(20), request(30), streaks=loaded) == [30]


def test_the_stored_times_stay_bounded() -> None:
    streak = Streak(None, 0)
    for s in range(3):
        extend_run(streak, "session", request(s * 1_000, session="s1"), LIMITS)
    extend_run(streak, "session", request(3_000, session="s1", fp="fp-b"), LIMITS)
    for s in range(3):
        extend_run(streak, "session", request(4_000 + s, session="s1", fp="fp-b"), LIMITS)
    assert streak.count == 4 and len(streak.times) == LIMITS.loop_consecutive


def test_a_naive_time_is_taken_as_utc() -> None:
    naive = request(20).model_copy(
        update={"occurred_at": (START + timedelta(seconds=20)).replace(tzinfo=None)}
    )
    assert loops(request(0), request(10), naive, request(30)) == [30]

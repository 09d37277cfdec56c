"""Token buckets per client address: cheap, in memory, per gateway process."""

from __future__ import annotations

import math


class AddressBuckets:
    """`rate_per_min` requests a minute per key, in bursts of up to that many; `rate_per_min=0`: unlimited."""

    _MAX_KEYS = 100_000

    def __init__(self, rate_per_min: int) -> None:
        self.capacity = float(rate_per_min)
        self.refill_per_s = rate_per_min / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.refill_per_s)

    def retry_after(self, key: str, now: float) -> int | None:
        """Seconds until `key` has a token again, or None if it has one now (nothing is taken)."""
        if self.capacity <= 0:
            return None
        level = self._level(key, now)
        if level >= 1.0:
            return None
        return max(1, math.ceil((1.0 - level) / self.refill_per_s))

    def take(self, key: str, now: float) -> int | None:
        """Take a token for `key`: None if there was one, else the seconds until there is."""
        wait = self.retry_after(key, now)
        if wait is None and self.capacity > 0:
            self.charge(key, now)
        return wait

    def charge(self, key: str, now: float) -> None:
        """Take a token for `key` whatever the level (a failed authentication, already answered)."""
        if self.capacity <= 0:
            return
        if len(self._buckets) >= self._MAX_KEYS and key not in self._buckets:
            self._buckets.clear()  # a flood of addresses: forget everyone rather than grow without bound
        self._buckets[key] = (max(0.0, self._level(key, now) - 1.0), now)

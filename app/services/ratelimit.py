"""Per-user request rate limit (RATE_LIMIT_PER_MINUTE), in process, by the generic cell rate algorithm.

GCRA is a token bucket kept as one number per user, the "theoretical arrival time": a user may
send `per_minute` requests at once (the burst), then one every `60 / per_minute` seconds.
It is per instance: with N tasks a user's burst is at most N times the limit, which is what a
burst limit is for (the daily quota, which guards the bill, is counted in the database).
"""

from __future__ import annotations

import time
from collections.abc import Callable

_PRUNE_EVERY = 1024


class RateLimiter:
    """`acquire(user)` returns 0 when the request may go, else the seconds until it may."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self._interval = 60.0 / per_minute
        self._tolerance = self._interval * (per_minute - 1)
        self._clock = clock
        self._arrival: dict[str, float] = {}
        self._calls = 0

    def acquire(self, key: str) -> float:
        now = self._clock()
        self._calls += 1
        if self._calls % _PRUNE_EVERY == 0:
            self._prune(now)
        arrival = max(self._arrival.get(key, now), now)
        wait = arrival - now - self._tolerance
        if wait > 0:
            return wait
        self._arrival[key] = arrival + self._interval
        return 0.0

    def __len__(self) -> int:
        return len(self._arrival)

    def _prune(self, now: float) -> None:
        # A user whose arrival time has passed has a full bucket: forgetting them changes nothing.
        self._arrival = {key: at for key, at in self._arrival.items() if at > now}

"""The account's sliding-window rate limits and the seeded fault draw, both in memory (a restart starts them afresh)."""

from __future__ import annotations

import bisect
import math
import random
import time
from dataclasses import dataclass
from typing import Literal

Fault = Literal["5xx", "429", "slow", "drop"]


class RateLimiter:
    """Sliding windows over accepted requests: at most ``limit`` requests in any ``seconds``-long window.

    ``windows`` pairs each window length with its limit, e.g. ``((1, 5), (60, 120), (3600, 2000))``.
    """

    def __init__(self, windows: tuple[tuple[float, int], ...]):
        self._windows = windows
        self._longest = max(seconds for seconds, _ in windows)
        self._accepted: list[float] = []

    def admit(self, arrived: float | None = None) -> int | None:
        """Count a request that arrived at ``arrived`` (``time.monotonic()``, default now) and return None if every
        window had room; else the whole seconds to wait (≥ 1).

        Requests are admitted in the order their bodies finish arriving, which is not quite arrival order: an
        arrival earlier than the last admitted one counts as at that one, so the windows stay ordered.
        """
        now = time.monotonic() if arrived is None else arrived
        if self._accepted and now < self._accepted[-1]:
            now = self._accepted[-1]
        del self._accepted[: bisect.bisect_right(self._accepted, now - self._longest)]
        waits = []
        for seconds, limit in self._windows:
            in_window = len(self._accepted) - bisect.bisect_right(self._accepted, now - seconds)
            if in_window >= limit:
                # Room opens when the request `limit` places from the newest ages out of the window.
                waits.append(self._accepted[-limit] + seconds - now)
        if waits:
            return max(1, math.ceil(max(waits)))
        self._accepted.append(now)
        return None


@dataclass(frozen=True)
class FaultOdds:
    """Probability of each injected fault per API request; together at most 1."""

    error_5xx: float = 0.0
    throttle_429: float = 0.0
    slow: float = 0.0
    drop: float = 0.0

    def __post_init__(self) -> None:
        if self.error_5xx + self.throttle_429 + self.slow + self.drop > 1 + 1e-9:  # float sums such as 0.1 + 0.2
            raise ValueError("the fault probabilities add up to more than 1")


class FaultDraw:
    """One draw per request from ``random.Random(seed)``, so a seed and a request order give the same faults."""

    def __init__(self, odds: FaultOdds, seed: int):
        self._odds = odds
        self._random = random.Random(seed)

    def next(self) -> Fault | None:
        point = self._random.random()
        for fault, odds in (
            ("5xx", self._odds.error_5xx),
            ("429", self._odds.throttle_429),
            ("slow", self._odds.slow),
            ("drop", self._odds.drop),
        ):
            if point < odds:
                return fault
            point -= odds
        return None

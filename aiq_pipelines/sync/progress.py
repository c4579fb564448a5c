"""Progress of long work (a year-long backfill), logged at a steady cadence rather than per chunk or batch."""

from __future__ import annotations

import time
from collections.abc import Callable

PROGRESS_SECONDS = 15.0


class Progress:
    """Logs records done, the rate and, when the total is known, the estimated time left, at most every ``every``
    seconds. ``log`` is a one-argument callable such as ``context.log.info``."""

    def __init__(self, log: Callable[[str], None], label: str, total: int | None = None,
                 every: float = PROGRESS_SECONDS) -> None:
        self.log = log
        self.label = label
        self.total = total
        self.every = every
        self.started = self.last = time.monotonic()

    def update(self, done: int, detail: str = "") -> None:
        """Log ``done`` (records finished so far) if ``every`` seconds passed since the last line."""
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        text = f"{self.label}: {done:,} records"
        if self.total:
            text += f" of {self.total:,} ({done / self.total:.0%})"
        text += f", {rate:,.0f} records/s"
        if self.total and rate > 0:
            text += f", about {_duration((self.total - done) / rate)} left"
        self.log(text + (f"; {detail}" if detail else ""))


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"

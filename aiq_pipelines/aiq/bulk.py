"""Bulk sends: batches kept in flight on a small thread pool, outcomes yielded strictly in input order.

httpx's client is thread-safe and every attempt still passes the account's rate limiter, so up to ``max_in_flight``
batches can be at AIQ at once while the caller keeps reading its input and settling outcomes on its own thread. A
batch AIQ refuses is bisected until each refused record stands alone, so the rest are delivered.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiq_pipelines.aiq.errors import AiqRefusedError

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 16
# While batches are in flight the interpreter hands over between threads every 0.5 ms instead of every 5 ms, so a
# sender waking for its rate-limit slot does not wait for the thread building the next batches (bench/RESULTS.md,
# "thread switch interval").
SENDING_SWITCH_INTERVAL = 0.0005

K = TypeVar("K")
P = TypeVar("P")
A = TypeVar("A")


@dataclass
class BatchOutcome(Generic[K, P, A]):
    """What AIQ did with one batch: ``(key, payload, ack)`` accepted, ``(key, payload, AIQ's message)`` refused."""

    accepted: list[tuple[K, P, A]] = field(default_factory=list)
    refused: list[tuple[K, P, str]] = field(default_factory=list)


class BulkSender:
    """Sends batches through ``post`` callables, at most ``max_in_flight`` at AIQ at once across every stream.

    One pool serves every stream of the sender, so nested sends (personas inside a sales stream) share it.
    ``on_refused`` is told each record AIQ refused (the client counts them).
    """

    def __init__(self, max_in_flight: int, on_refused: Callable[[], None]) -> None:
        self.max_in_flight = max_in_flight
        self._on_refused = on_refused
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="aiq-send")

    def close(self) -> None:
        """Wait for the batches in flight, then stop the pool."""
        self._pool.shutdown(wait=True)

    def _deliver(
        self, batch: list[tuple[K, P]], post: Callable[[list[P]], list[A]], outcome: BatchOutcome[K, P, A]
    ) -> None:
        """Send ``batch``; if AIQ refuses it, bisect until each refused record stands alone."""
        try:
            acks = post([payload for _, payload in batch])
        except AiqRefusedError as exc:
            if len(batch) == 1:
                key, payload = batch[0]
                outcome.refused.append((key, payload, exc.message))
                self._on_refused()
                return
            middle = len(batch) // 2
            self._deliver(batch[:middle], post, outcome)
            self._deliver(batch[middle:], post, outcome)
            return
        outcome.accepted.extend((key, payload, ack) for (key, payload), ack in zip(batch, acks, strict=True))

    def _answer(self, batch: list[tuple[K, P]], post: Callable[[list[P]], list[A]]) -> BatchOutcome[K, P, A]:
        """One batch delivered (on a pool thread), with any bisection of a refused batch."""
        outcome: BatchOutcome[K, P, A] = BatchOutcome()
        self._deliver(batch, post, outcome)
        if outcome.refused:
            logger.info("AIQ refused %d of %d records in a batch", len(outcome.refused), len(batch))
        return outcome

    def send(
        self, items: Iterable[tuple[K, P]], size: int, post: Callable[[list[P]], list[A]]
    ) -> Iterator[BatchOutcome[K, P, A]]:
        """Batches of ``size`` from ``items``, up to ``max_in_flight`` at AIQ at once, outcomes yielded in order.

        The input is read, and the outcomes consumed, on the caller's thread only. When a batch fails, no further
        batch is submitted, the ones in flight are waited for, the outcomes before the failed batch are yielded, and
        its error is raised. Batches after it may have reached AIQ unacknowledged by the caller; re-sending them is
        harmless (AIQ's upserts are keyed).
        """
        if size < 1:
            raise ValueError(f"a batch holds at least one record, not {size}")
        with _prompt_thread_switches():
            iterator = iter(items)
            in_flight: deque[Future[BatchOutcome[K, P, A]]] = deque()
            exhausted = False
            try:
                while True:
                    while not exhausted and len(in_flight) < self.max_in_flight and not _any_failed(in_flight):
                        batch = list(itertools.islice(iterator, size))
                        if batch:
                            in_flight.append(self._pool.submit(self._answer, batch, post))
                        exhausted = len(batch) < size
                    if not in_flight:
                        return
                    yield in_flight.popleft().result()
            finally:
                # Also reached when the caller stops early or a batch failed: nothing stays in flight behind its back.
                for future in in_flight:
                    future.cancel()
                for future in in_flight:
                    if not future.cancelled() and future.exception() is not None:
                        logger.info("a later AIQ batch failed as well: %s", future.exception())


@contextlib.contextmanager
def _prompt_thread_switches() -> Iterator[None]:
    """``SENDING_SWITCH_INTERVAL`` for the duration (never a longer interval than the one set), then the previous
    interval again. The interval is process-wide: it is shortened only while a bulk send runs."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, SENDING_SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _any_failed(futures: Iterable[Future[Any]]) -> bool:
    return any(f.done() and not f.cancelled() and f.exception() is not None for f in futures)

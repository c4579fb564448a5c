"""AIQ's account-wide rate limits, shared by every process and run through a table in the sync database.

AIQ counts requests per account over sliding windows of one second, one minute and one hour. Each ``acquire()`` takes
a database lock, finds in one query the send that blocks each window, and either records a new send or sleeps until
the oldest blocking send leaves its window. A send is counted for its window plus a margin, so the spread of delays
between our stamp and AIQ's arrival time cannot make AIQ see one request too many: ``margin_seconds``
(AIQ_RATE_LIMIT_MARGIN_SECONDS, 0.1 s by default), or 1% of the window when that is longer (a fixed 0.1 s on the
minute drew 429s in a minute-bound backfill: bench/RESULTS.md, "rate-limit margin"). The margin costs throughput only
while the window it pads is the one that binds: margin / (window + margin) of it. A send that leaves well after it was
stamped (a new connection, a thread waiting for the interpreter) is re-stamped with the moment it left (``restamp``),
so the margin need only cover the network's share of the delay. Sends older than the longest window are deleted at
most once per ``PURGE_INTERVAL`` seconds: they no longer count. It is safe to call from several threads at once (each
acquire runs on its own pooled connection).

The only dialect-specific statement is the lock (``db.locks``): SQLite ``BEGIN IMMEDIATE`` (one writer per database
file), PostgreSQL ``pg_advisory_xact_lock`` on a key derived from the account (released at commit).

A limiter may spend only a ``BudgetShare`` of the budget (the delivery audit's reads): its sends are tagged with the
share's purpose, count against the account's windows like any other, and never take more than the share of any
window, so the rest of the budget (the pushes) never loses more than that share to them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for, serialized_engine, sqlalchemy_url
from aiq_pipelines.db.locks import advisory_lock
from aiq_pipelines.db.schema import create_tables

metadata = sa.MetaData()
SEND_LOG = sa.Table(
    "aiq_rate_limit_sends",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account", sa.String(512), nullable=False),
    sa.Column("sent_at", sa.Float, nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False, server_default=""),  # a BudgetShare's, else ""
    sa.Index("ix_aiq_rate_limit_sends_account_sent_at", "account", "sent_at"),
)

STANDARD_WINDOWS = (1.0, 60.0, 3600.0)
MARGIN_FRACTION = 0.01  # of a window: the least margin a long window gets
PURGE_INTERVAL = 60.0


@dataclass(frozen=True)
class Send:
    """One send recorded in the log: its row, when it was stamped (``time.time()``) and how long it waited."""

    id: int
    at: float
    waited: float


@dataclass(frozen=True)
class _Window:
    seconds: float
    limit: int


@dataclass(frozen=True)
class BudgetShare:
    """The part of the account's budget one purpose may use: at most ``fraction`` of each window's limit.

    A window whose share is less than one request is stretched until it holds one: 5% of 5 requests a second is one
    request in any 4 seconds, which is 5% of those 4 seconds' 20.
    """

    purpose: str
    fraction: float

    def __post_init__(self) -> None:
        if not self.purpose or not 0 < self.fraction <= 1:
            raise ValueError("a budget share needs a purpose and a fraction above 0 and at most 1")

    def windows(self, windows: Sequence[tuple[float, int]]) -> tuple[tuple[float, int], ...]:
        """The share's own ``(seconds, limit)`` windows: ``fraction`` of each of ``windows``."""
        shared = []
        for seconds, limit in windows:
            quota = self.fraction * limit
            shared.append((seconds, int(quota + 1e-9)) if quota >= 1 - 1e-9 else (seconds / quota, 1))
        return tuple(shared)


class AccountRateLimiter:
    """Blocks until a request may be sent without exceeding the account's per-second, -minute and -hour limits.

    ``database_url`` is a SQLAlchemy URL (SQLite or PostgreSQL); ``account`` names the budget, conventionally
    ``f"{base_url}|{uid}"``. ``window_seconds`` exists so tests can shorten the minute and hour windows. With
    ``share``, the limiter's sends also stay within that share of every window.
    """

    def __init__(
        self,
        database_url: str,
        account: str,
        per_second: int,
        per_minute: int,
        per_hour: int,
        margin_seconds: float = 0.1,
        *,
        window_seconds: Sequence[float] = STANDARD_WINDOWS,
        share: BudgetShare | None = None,
    ) -> None:
        limits = (per_second, per_minute, per_hour)
        if any(limit < 1 for limit in limits):
            raise ValueError("rate limits must be at least 1 request per window (AIQ_REQUESTS_PER_SECOND/MINUTE/HOUR)")
        if len(window_seconds) != 3 or any(w <= 0 for w in window_seconds) or margin_seconds < 0:
            raise ValueError("window_seconds needs three positive lengths and margin_seconds must not be negative")
        self.account = account
        self.margin_seconds = margin_seconds
        self.share = share
        self._windows = tuple(_Window(w, n) for w, n in zip(window_seconds, limits, strict=True))
        self._shared = tuple(_Window(*w) for w in share.windows([(w.seconds, w.limit) for w in self._windows])
                             ) if share else ()
        self._spans = tuple(self._span(w) for w in self._windows)
        self._shared_spans = tuple(self._span(w) for w in self._shared)
        self._horizon = max(self._spans + self._shared_spans)
        self._blocking = self._blocking_query(self._windows)
        self._blocking_shared = self._blocking_query(self._shared, SEND_LOG.c.purpose == sa.bindparam("purpose"))
        self._next_purge = 0.0
        backend = sqlalchemy_url(database_url).get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(
                f"the AIQ rate limiter supports SQLite and PostgreSQL, not {backend!r}: check SYNC_DATABASE_URL"
            )
        create_tables(engine_for(database_url), metadata)
        self._engine = serialized_engine(database_url)

    def _span(self, window: _Window) -> float:
        return window.seconds + max(self.margin_seconds, MARGIN_FRACTION * window.seconds)

    @staticmethod
    def _blocking_query(windows: Sequence[_Window], *conditions: sa.ColumnElement[bool]) -> sa.Select | None:
        """One row: per window, the send that must leave it before another may go (NULL when there is room)."""

        def blocking(index: int, window: _Window) -> sa.ScalarSelect:
            # The send that must leave the window is the limit-th most recent one.
            return (
                sa.select(SEND_LOG.c.sent_at)
                .where(SEND_LOG.c.account == sa.bindparam("account"),
                       SEND_LOG.c.sent_at > sa.bindparam(f"since_{index}", type_=sa.Float), *conditions)
                .order_by(SEND_LOG.c.sent_at.desc())
                .offset(window.limit - 1)
                .limit(1)
                .scalar_subquery()
            )

        return sa.select(*(blocking(i, w) for i, w in enumerate(windows))) if windows else None

    def _wait_needed(self, conn: sa.Connection, now: float) -> float:
        """Seconds until every window (and every window of the share) has room for one more send (0: go now)."""
        wait = 0.0
        for query, spans in ((self._blocking, self._spans), (self._blocking_shared, self._shared_spans)):
            if query is None:
                continue
            params = {"account": self.account, "purpose": self.share.purpose if self.share else "",
                      **{f"since_{i}": now - span for i, span in enumerate(spans)}}
            row = conn.execute(query, params).one()
            wait = max([wait, *(sent + span - now for sent, span in zip(row, spans, strict=True) if sent is not None)])
        return wait

    def acquire(self) -> Send:
        """Block until a request may be sent, record it as sent now, and return the send."""
        started = time.monotonic()
        while True:
            with self._engine.begin() as conn:
                advisory_lock(conn, self.account)
                now = time.time()
                if time.monotonic() >= self._next_purge:
                    self._next_purge = time.monotonic() + PURGE_INTERVAL
                    expired = SEND_LOG.c.sent_at < now - self._horizon
                    conn.execute(sa.delete(SEND_LOG).where(SEND_LOG.c.account == self.account, expired))
                wait = self._wait_needed(conn, now)
                if wait <= 0:
                    row = conn.execute(SEND_LOG.insert(), {"account": self.account, "sent_at": now,
                                                           "purpose": self.share.purpose if self.share else ""})
                    return Send(row.inserted_primary_key[0], now, time.monotonic() - started)
            # Waiting outside the transaction lets other processes record their sends meanwhile.
            time.sleep(wait)

    def restamp(self, send: Send, left_at: float) -> None:
        """Count ``send`` from ``left_at`` (``time.time()``), the moment it actually left, if that is later."""
        with self._engine.begin() as conn:
            advisory_lock(conn, self.account)
            conn.execute(
                SEND_LOG.update().where(SEND_LOG.c.id == send.id, SEND_LOG.c.sent_at < left_at).values(sent_at=left_at)
            )

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def __enter__(self) -> AccountRateLimiter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        limits = ", ".join(f"{w.limit}/{w.seconds:g}s" for w in self._windows)
        share = f", {self.share.purpose}: {self.share.fraction:g} of it" if self.share else ""
        return f"AccountRateLimiter(account={self.account!r}, {limits}{share})"

"""What the rate limiter's SQLite and PostgreSQL tests share: a window count, the cross-process worker and its limits,
and the body of a test both backends run."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from aiq_pipelines.aiq.client import AiqClient
from aiq_pipelines.aiq.payloads import Visit, VisitLine
from aiq_pipelines.aiq.ratelimit import AccountRateLimiter

PER_SECOND, PER_MINUTE, SHORT_MINUTE = 5, 20, 6.0


def most_in_any_window(times: list[float], seconds: float) -> int:
    """The largest number of ``times`` inside any half-open interval of length ``seconds``."""
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t - start < seconds) for i, start in enumerate(times)), default=0)


def assert_a_restamped_send_counts_from_when_it_left(database_url: str) -> None:
    """Shared with the PostgreSQL tests."""
    with AccountRateLimiter(database_url, "acct", 1, 10, 10, margin_seconds=0.0) as limiter:
        first = limiter.acquire()
        limiter.restamp(first, first.at + 0.4)
        limiter.restamp(first, first.at)  # an earlier moment never moves a send back
        second = limiter.acquire()
    assert second.at - first.at >= 1.4, "the second send waited for the window from the restamped moment"


def _send_sales(base_url: str, api_key: str, uid: str, database_url: str, worker: int, count: int, start) -> None:  # type: ignore[no-untyped-def]
    """One OS process of the cross-process test: its own limiter and client on the shared database."""
    limiter = AccountRateLimiter(
        database_url, f"{base_url}|{uid}", PER_SECOND, PER_MINUTE, 10_000, window_seconds=(1.0, SHORT_MINUTE, 3600.0)
    )
    client = AiqClient(
        base_url, api_key, uid, limiter, batch_size_sales=1, batch_size_members=1, batch_size_inventory=1,
        timeout=10, max_attempts=1, max_retry_seconds=30,
    )
    start.wait(30)
    with limiter, client:
        for n in range(count):
            client.upsert_sale(
                Visit(
                    pos_id=f"W{worker}-{n}", transaction_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                    transaction_total=Decimal(1), location="Store",
                    visit_details_attributes=(VisitLine(sku="s", price=Decimal(1), quantity=Decimal(1)),),
                )
            )

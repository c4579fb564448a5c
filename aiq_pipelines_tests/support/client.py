"""A client for a running sandbox, and what the client tests send and read back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiq_pipelines.aiq.client import AiqClient
from aiq_pipelines.aiq.payloads import Visit, VisitLine
from aiq_pipelines.aiq.ratelimit import AccountRateLimiter
from aiq_pipelines_tests.support.sandbox import Sandbox

GENEROUS = {"per_second": 1000, "per_minute": 100_000, "per_hour": 1_000_000}
T0 = dt.datetime(2026, 2, 1, 17, 30, tzinfo=dt.UTC)


@contextmanager
def open_client(
    sandbox: Sandbox, tmp_path: Path, *, limits: tuple[int, int, int] = (1000, 100_000, 1_000_000), **overrides: Any
) -> Iterator[AiqClient]:
    """A client for ``sandbox`` with its own limiter database and quick backoff (tests never wait minutes)."""
    options: dict[str, Any] = dict(
        batch_size_sales=100, batch_size_members=100, batch_size_inventory=100, timeout=5.0, max_attempts=8,
        max_retry_seconds=30.0, backoff_initial=0.05, backoff_max=0.5, seed=1,
    )
    options.update(overrides)
    account = f"{sandbox.base_url}|{sandbox.uid}"
    with AccountRateLimiter(f"sqlite:///{tmp_path / 'ratelimit.db'}", account, *limits) as limiter, AiqClient(
        sandbox.base_url, sandbox.api_key, sandbox.uid, limiter, **options
    ) as client:
        yield client


def visit(n: int, *, pos_user: str | None = None) -> Visit:
    return Visit(
        pos_id=f"R-{n}", pos_user=pos_user, transaction_date=T0 + dt.timedelta(minutes=n),
        transaction_total=Decimal("21.50"), location="Muffins Miami",
        visit_details_attributes=(VisitLine(sku="SKU1", price=Decimal("21.50"), quantity=Decimal("1")),),
    )


def api_requests(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["path"].startswith("/api/")]

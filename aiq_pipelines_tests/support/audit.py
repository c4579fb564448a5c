"""The delivery audit's tests share: a crowd of shoppers on one day, and an audit of it through a client whose limiter
holds the audit to its share of the account's budget, on the sync database the pushes use."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from aiq_pipelines.aiq.client import AiqClient
from aiq_pipelines.aiq.ratelimit import AccountRateLimiter, BudgetShare
from aiq_pipelines.sync.audit import Auditor, AuditResult
from aiq_pipelines.sync.schema import aiq_ledger, quarantine
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.pos_factory import PosFactory

DAY = "2026-06-10"
SHARE = BudgetShare("audit", 0.05)


def crowd(pos: PosFactory, shoppers: int, *, modified_that_day: int = 20) -> list[str]:
    """``shoppers`` customers with a valid phone and email, one sale each on June 10, 2026; the first
    ``modified_that_day`` were modified that day (staged as its personas), the others long before (its sales'
    customers). Returns the customer keys."""
    keys = [f"C{n:03d}" for n in range(shoppers)]
    customers, sales, lines = [], [], []
    for n, key in enumerate(keys):
        modified = local(2026, 6, 10, 9) if n < modified_that_day else dt.datetime(2025, 1, 1)
        customers.append({"customer_id": key, "first_name": f"Name{n}", "last_name": "Shopper",
                          "phone": f"720482{n:04d}", "email": f"c{n}@example.com", "is_loyalty_member": False,
                          "created_at": min(modified, dt.datetime(2025, 1, 1)), "last_modified_at": modified})
        at = local(2026, 6, 10, 10) + dt.timedelta(seconds=n)
        sales.append({"transaction_id": f"S-{key}", "location_id": "STORE-01", "customer_id": key,
                      "transaction_at": at, "subtotal": "45.00", "discount_total": "0", "tax_total": "6.75",
                      "total": "51.75", "last_modified_at": at})
        lines.append({"transaction_id": f"S-{key}", "line_number": 1, "product_id": "P1", "quantity": "1",
                      "unit_price": "45.00"})
    for table, rows in (("customers", customers), ("transactions", sales), ("transaction_items", lines)):
        rows = [{k: f"{v:%Y-%m-%d %H:%M:%S}" if isinstance(v, dt.datetime) else v for k, v in row.items()}
                for row in rows]
        with pos.engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {table} ({', '.join(rows[0])}) VALUES "
                                 f"({', '.join(':' + k for k in rows[0])})"), rows)
    return keys


@contextmanager
def auditor(sandbox: Any, sync_url: str, *, limits: tuple[int, int, int] = (1000, 60_000, 1_000_000),
            share: BudgetShare = SHARE, **options: Any) -> Iterator[Auditor]:
    """An ``Auditor`` of the sandbox's account (its ledger name as the push resources give it), acknowledgements
    readable at once unless ``after`` says otherwise."""
    account = f"{sandbox.base_url}|{sandbox.uid}"
    settings = {"after": dt.timedelta(0), "page_size": 100, "max_requests_per_day": 1000, "seed": 1, **options}
    with AccountRateLimiter(sync_url, account, *limits, share=share) as limiter, AiqClient(
        sandbox.base_url, sandbox.api_key, sandbox.uid, limiter, batch_size_sales=100, batch_size_members=100,
        batch_size_inventory=100, timeout=5, max_attempts=4, max_retry_seconds=30,
    ) as client:
        yield Auditor(sa.create_engine(sync_url), client, account, "audit-run", **settings)


def audit(sandbox: Any, sync_url: str, day: str = DAY, **options: Any) -> AuditResult:
    first = dt.date.fromisoformat(day)
    with auditor(sandbox, sync_url, **options) as running:
        return running.audit(first, first + dt.timedelta(days=1))


def ledger_hashes(sync_url: str, entity: str) -> dict[str, str]:
    with sa.create_engine(sync_url).connect() as conn:
        return dict(conn.execute(sa.select(aiq_ledger.c.record_key, aiq_ledger.c.payload_hash)
                                 .where(aiq_ledger.c.entity == entity)).all())


def held(sync_url: str) -> dict[str, str]:
    """The audit's quarantine: persona key -> reason."""
    with sa.create_engine(sync_url).connect() as conn:
        return dict(conn.execute(sa.select(quarantine.c.record_key, quarantine.c.reason)
                                 .where(quarantine.c.stage == "audit")).all())


def keys_sent(sandbox: Any, call: str, since_id: int) -> list[str]:
    """The record keys of the accepted ``call`` requests after ``since_id``, in order."""
    return [key for r in sandbox.requests(since_id) if r["path"].split("/")[3] == call and r["status"] == 200
            for key in r["keys"]]

"""The push with batches in flight: a failure mid-stream leaves in the ledger exactly the batches before it."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from aiq_pipelines_tests.support.reliability import (
    API_KEY,
    aiq_resource,
    assert_aiq_holds,
    assert_ledger_true,
    expected_members,
    expected_sales,
    ledger_hashes,
    stock_week,
    sync_once,
)
from aiq_pipelines_tests.support.sandbox import GENEROUS_LIMITS, Sandbox
from aiq_sandbox.limits import FaultDraw, FaultOdds

SALES_BATCH = 5
ODDS = FaultOdds(error_5xx=0.15)


def seed_failing_at(index: int) -> int:
    """A fault seed whose first injected 5xx hits the ``index``-th request to arrive (the sandbox draws per request)."""

    def first_fault(seed: int) -> int:
        draw = FaultDraw(ODDS, seed)
        return next(i for i in itertools.count() if draw.next() is not None)

    return next(seed for seed in itertools.count() if first_fault(seed) == index)


def sales_requests(sandbox: Sandbox) -> list[dict]:
    return [r for r in sandbox.requests() if "/createUpdateSales/" in r["path"]]


def test_a_failed_sales_batch_leaves_exactly_the_batches_before_it_in_the_ledger(
    pos, sync_url: str, sandbox_factory: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIQ_API_KEY", API_KEY)
    stock_week(pos)  # 77 sales, 56 shoppers: one persona request, then 16 sales batches
    sandbox = sandbox_factory(api_key=API_KEY, fault_5xx=ODDS.error_5xx, fault_seed=seed_failing_at(6), **GENEROUS_LIMITS)
    aiq = aiq_resource(sandbox.base_url, sandbox.uid, sync_url, batch_size_sales=SALES_BATCH, batch_size_members=100,
                       max_in_flight=3, max_attempts=1)
    account = f"{sandbox.base_url}|{sandbox.uid}"

    result = sync_once(pos.url, sync_url, aiq)

    assert not result.success
    logged = sales_requests(sandbox)
    failed = min(r["keys"][0] for r in logged if r["fault"] == "5xx")
    before = sorted(key for r in logged if r["status"] == 200 and r["keys"][0] < failed for key in r["keys"])
    in_ledger = sorted(key for entity, key in ledger_hashes(sync_url, account) if entity == "transaction")
    assert before and in_ledger == before
    assert_ledger_true(sandbox, sync_url, account, complete=False)

    sandbox.restart(fault_5xx=0.0)
    assert sync_once(pos.url, sync_url, aiq).success
    assert_ledger_true(sandbox, sync_url, account, complete=True)


def test_the_window_arrives_whole_with_batches_in_flight(
    pos, sync_url: str, sandbox_factory: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIQ_API_KEY", API_KEY)
    shoppers = stock_week(pos)
    sandbox = sandbox_factory(api_key=API_KEY, fault_slow=0.3, slow_seconds=0.3, fault_seed=2, **GENEROUS_LIMITS)
    aiq = aiq_resource(sandbox.base_url, sandbox.uid, sync_url, batch_size_sales=SALES_BATCH, max_in_flight=4)

    assert sync_once(pos.url, sync_url, aiq).success

    assert max(r["in_flight"] for r in sales_requests(sandbox)) > 1
    assert_aiq_holds(sandbox, expected_sales(pos.url), expected_members(shoppers))
    assert all(sale["persona_known_at_arrival"] is not False for sale in sandbox.state()["sales"])
    assert_ledger_true(sandbox, sync_url, f"{sandbox.base_url}|{sandbox.uid}", complete=True)

"""AIQ misbehaving (every fault at once) and AIQ down: nothing lost, retries bounded and counted, clear failures."""

import itertools
import time

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.sync.schema import aiq_ledger
from aiq_pipelines.sync.store import SyncStore
from aiq_pipelines_tests.support.reliability import (
    aiq_resource,
    assert_aiq_holds,
    assert_ledger_true,
    expected_members,
    expected_sales,
    stock_week,
    sync_once,
)
from aiq_pipelines_tests.support.runs import materializations, metadata

# All at once, drawn per request: 30% 503, 10% 429 with Retry-After, 10% applied but answered after the client gave up
# waiting, 10% applied and then the connection dropped mid-response. The seed's first 200 draws hold every fault and
# never more than 4 failures in a row, so whether a request exhausts its retries never hangs on backoff jitter (an
# exhausted request is the outage test's subject).
FAULTS = dict(fault_5xx=0.3, fault_429=0.1, fault_slow=0.1, fault_drop=0.1, slow_seconds=1, retry_after=1,
              fault_seed=20260666)
# One batch at a time: the draws follow arrival order, so only a sequential client meets the seed's draws in the
# order that keeps every request within its attempts. Batches in flight under faults: sync/test_push_in_flight.py.
PATIENT_CLIENT = dict(timeout_seconds=0.5, max_attempts=6, max_retry_seconds=30, max_in_flight=1)
# The retry budget leaves out time spent in our own rate limiter (a database round trip per attempt) by design.
LIMITER_BOOKKEEPING_SECONDS = 1.0


def attempts_per_request(log: list[dict]) -> list[list[dict]]:
    """The sandbox's request log cut into logical requests: a retry repeats its predecessor's path and keys (with
    batches in flight, the attempts of different requests interleave; each record is sent in one request here)."""
    groups: dict[tuple[str, tuple[str, ...]], list[dict]] = {}
    for request in log:
        groups.setdefault((request["path"], tuple(request["keys"])), []).append(request)
    return list(groups.values())


@pytest.mark.slow
def test_a_week_backfill_through_every_fault_at_once_delivers_exactly_the_pos(pos, sync_url, start_sandbox):
    shoppers = stock_week(pos)
    sandbox = start_sandbox(**FAULTS)
    aiq = aiq_resource(sandbox.base_url, sandbox.uid, sync_url, **PATIENT_CLIENT)

    result = sync_once(pos.url, sync_url, aiq)

    assert result.success
    assert_aiq_holds(sandbox, expected_sales(pos.url), expected_members(shoppers))
    assert_ledger_true(sandbox, sync_url, aiq.account, complete=True)
    log = sandbox.requests()
    assert {r["fault"] for r in log} >= {"5xx", "429", "slow", "drop"}, "the seed drew every kind of fault"
    requests = attempts_per_request(log)
    assert max(len(attempts) for attempts in requests) <= PATIENT_CLIENT["max_attempts"]
    longest = max(a[-1]["received_at"] - a[0]["received_at"] for a in requests)
    assert longest <= PATIENT_CLIENT["max_retry_seconds"] + LIMITER_BOOKKEEPING_SECONDS
    assert all(a[-1]["status"] == 200 for a in requests), "each request ended accepted"
    for attempts in requests:
        for throttled, retry in itertools.pairwise(attempts):
            if throttled["status"] == 429:
                assert retry["received_at"] - throttled["received_at"] >= FAULTS["retry_after"] - 0.05, "Retry-After"
    counted = [metadata(result, asset) for asset in ("aiq_personas", "aiq_sales")]
    assert sum(m["aiq_requests"] for m in counted) == len(log), "every attempt is counted"
    assert sum(m["aiq_retries"] for m in counted) == len(log) - len(requests) > 0
    assert sum(m["aiq_429s"] for m in counted) == sum(r["status"] == 429 for r in log) > 0


def step_failure(result: dg.ExecuteInProcessResult, step: str):
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE and e.step_key == step]
    return failure.step_failure_data.error


def ledger_rows(sync_url: str) -> dict[str, int]:
    query = sa.select(aiq_ledger.c.entity, sa.func.count()).group_by(aiq_ledger.c.entity)
    with sa.create_engine(sync_url).connect() as conn:
        return dict(conn.execute(query).all())


# Stopped: nothing listens, from the first request on. 503s: the personas reached AIQ in an earlier run, then AIQ
# answers 503 to everything, so the sales are the run's first requests. Both assets push in the step aiq_push.
@pytest.mark.slow
@pytest.mark.parametrize("outage, personas_done", [("stopped", False), ("503s", True)])
def test_aiq_down_for_the_whole_run_fails_soon_saying_so_and_the_next_run_completes(outage, personas_done, pos,
                                                                                       sync_url, start_sandbox):
    shoppers = stock_week(pos, sales_per_day=5)
    sandbox = start_sandbox()
    aiq = aiq_resource(sandbox.base_url, sandbox.uid, sync_url, max_attempts=4, max_retry_seconds=5,
                       timeout_seconds=1)
    SyncStore(sync_url, "America/Denver")
    if outage == "stopped":
        sandbox.stop()
    else:
        assert sync_once(pos.url, sync_url, aiq, assets=["pos_personas", "aiq_personas"]).success
        sandbox.restart(fault_5xx=1.0)
    marked_sent, seen = ledger_rows(sync_url), sandbox.requests()[-1]["id"] if outage == "503s" else 0

    started = time.monotonic()
    down = sync_once(pos.url, sync_url, aiq)
    elapsed = time.monotonic() - started

    assert not down.success
    assert elapsed < 60, "bounded by the retry bound (5 s here), not by patience"
    error = step_failure(down, "aiq_push")
    assert error.cause is not None and error.cause.cause is None and error.cause.context is None, "one error, no chain"
    message = error.cause.message
    assert message.startswith("aiq_pipelines.aiq.errors.AiqUnavailableError: AIQ is unreachable"), message
    assert sandbox.base_url in message and "failed 4 attempts" in message and "AIQ_BASE_URL" in message
    assert "RetryError" not in message and "tenacity" not in "".join(error.cause.stack)
    assert ledger_rows(sync_url) == marked_sent, "nothing more is marked sent"
    assert "transaction" not in marked_sent
    if outage == "503s":
        requests = attempts_per_request(sandbox.requests(since_id=seen))
        assert 1 <= len(requests) <= aiq.max_in_flight, "no batch is sent once one has failed"
        assert all([r["status"] for r in attempts] == [503] * 4 for attempts in requests), "each retried 3 times"
    assert bool(materializations(down, "aiq_personas")) == personas_done, "recorded once pushed"
    assert not materializations(down, "aiq_sales"), "no sale is pushed ahead of its persona"

    sandbox.restart(fault_5xx=0.0)
    recovered = sync_once(pos.url, sync_url, aiq)

    assert recovered.success
    assert_aiq_holds(sandbox, expected_sales(pos.url), expected_members(shoppers))
    assert_ledger_true(sandbox, sync_url, aiq.account, complete=True)

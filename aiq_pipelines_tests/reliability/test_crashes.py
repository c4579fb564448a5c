"""SIGKILL a week's sync at seeded random points, five times in a row, then run it to the end: nothing lost, no lie."""

import os
import random
import signal
import time

import pytest
import sqlalchemy as sa

from aiq_pipelines.sync.schema import staged_transactions
from aiq_pipelines.sync.store import SyncStore
from aiq_pipelines_tests.support.reliability import (
    aiq_hashes,
    aiq_resource,
    assert_aiq_holds,
    assert_ledger_true,
    expected_members,
    expected_sales,
    ledger_hashes,
    start_sync_process,
    stock_week,
    sync_once,
)
from aiq_pipelines_tests.support.runs import metadata

KILLS = 5
SEED = 6  # draws every kind of kill point, in the personas' push and in the sales'
SMALL_BATCHES = dict(batch_size_sales=5, batch_size_members=5)
# Every request is refused with 503 (30%) or applied and answered 0.6 s later (70%): a kill "in flight" lands either in
# the retry's backoff, when AIQ has not applied the batch, or between AIQ applying it and the ledger recording it, the
# moment a crash is most dangerous. The seed never draws more than two 503s in a row.
SLOW_AND_FAILING = dict(fault_5xx=0.3, fault_slow=0.7, slow_seconds=0.6, fault_seed=188)
POLL_SECONDS = 0.02
DEADLINE_SECONDS = 120


def wait_until(what: str, condition, process) -> None:
    """Poll ``condition`` while the sync process lives; fail if it ends first or the deadline passes."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"{what} did not happen within {DEADLINE_SECONDS} s"
        time.sleep(POLL_SECONDS)


def kill_points(rng: random.Random) -> list[tuple[str, str | None, int]]:
    """Where each run dies: during the extract, once the k-th new request to a call arrived at AIQ (kill in flight), or
    once the ledger holds n more rows of an entity (kill between acknowledged batches)."""
    points = []
    for _ in range(KILLS):
        kind = rng.choice(["during extract", "in flight", "after an acknowledgement"])
        if kind == "in flight":
            points.append((kind, rng.choice(["createUpdateMembers", "createUpdateSales"]), rng.randint(1, 3)))
        elif kind == "after an acknowledgement":
            points.append((kind, rng.choice(["persona", "transaction"]), rng.randint(1, 12)))
        else:
            points.append((kind, None, 0))
    return points


def ledger_rows(sync_url: str, account: str, entity: str) -> int:
    return sum(e == entity for e, _ in ledger_hashes(sync_url, account))


def staging_runs(sync_url: str) -> set[str]:
    with sa.create_engine(sync_url).connect() as conn:
        return set(conn.scalars(sa.select(staged_transactions.c.run_id).distinct()))


@pytest.mark.slow
def test_five_kills_at_random_points_then_a_full_run_leave_aiq_and_the_ledger_exactly_the_pos(
    pos, sync_url, start_sandbox, tmp_path
):
    shoppers = stock_week(pos, sales_per_day=10)
    sandbox = start_sandbox(**SLOW_AND_FAILING)
    account = aiq_resource(sandbox.base_url, sandbox.uid, sync_url).account
    SyncStore(sync_url, "America/Denver")  # its tables exist before the first run, for the test to watch
    points = kill_points(random.Random(SEED))
    assert {(kind, where) for kind, where, _ in points} >= {
        ("during extract", None), ("in flight", "createUpdateMembers"), ("in flight", "createUpdateSales"),
        ("after an acknowledgement", "persona"), ("after an acknowledgement", "transaction")}, points
    for kill, (kind, where, count) in enumerate(points):
        seen_requests = max((r["id"] for r in sandbox.requests()), default=0)
        seen_ledger, seen_runs = ledger_rows(sync_url, account, where), staging_runs(sync_url)

        def reached() -> bool:
            if kind == "during extract":
                return bool(staging_runs(sync_url) - seen_runs)
            if kind == "in flight":
                return sum(f"/{where}/" in r["path"] for r in sandbox.requests(since_id=seen_requests)) >= count
            return ledger_rows(sync_url, account, where) >= seen_ledger + count

        process = start_sync_process(tmp_path / f"killed-{kill}", pos.url, sync_url, sandbox, **SMALL_BATCHES)
        wait_until(f"{kind} {where or ''} {count}", reached, process)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while any(r["status"] is None for r in sandbox.requests()) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)  # the sandbox finishes answering the dead client

        assert_ledger_true(sandbox, sync_url, account, complete=False)
        if kind == "in flight" and sandbox.requests()[-1]["status"] == 200:
            aiq_ahead = set(aiq_hashes(sandbox)) - set(ledger_hashes(sync_url, account))
            assert aiq_ahead, "the kill landed after AIQ applied a batch and before the ledger recorded it"

    sandbox.restart(fault_5xx=0.0, fault_slow=0.0)
    missing_before = len(expected_sales(pos.url)) + len(shoppers) - len(ledger_hashes(sync_url, account))
    aiq = aiq_resource(sandbox.base_url, sandbox.uid, sync_url, **SMALL_BATCHES)
    result = sync_once(pos.url, sync_url, aiq)

    assert result.success
    assert_aiq_holds(sandbox, expected_sales(pos.url), expected_members(shoppers))
    assert_ledger_true(sandbox, sync_url, account, complete=True)
    sent = metadata(result, "aiq_personas")["sent"] + metadata(result, "aiq_sales")["sent"]
    assert sent == missing_before, "the last run sent exactly what the ledger lacked"
    # A kill can cut a request's body short (batches are in flight): the sandbox logs it as "client_gone", unapplied.
    ended = [r for r in sandbox.requests() if r["fault"] not in ("5xx", "client_gone")]
    assert all(r["status"] == 200 for r in ended), "AIQ refused nothing"

"""The account-wide rate limiter on PostgreSQL: two OS processes share one budget through the sync database, and a
restamped send moves its window."""

import multiprocessing

import sqlalchemy as sa

from aiq_pipelines.aiq.ratelimit import SEND_LOG
from aiq_pipelines.db.engines import engine_for
from aiq_pipelines_tests.support.ratelimit import (
    PER_MINUTE,
    PER_SECOND,
    SHORT_MINUTE,
    _send_sales,
    assert_a_restamped_send_counts_from_when_it_left,
    most_in_any_window,
)
from aiq_pipelines_tests.support.sandbox import run_sandbox


def test_two_processes_share_the_account_budget_on_postgresql(pg_database, tmp_path):
    database_url = pg_database("sync", driver="postgresql")  # the plain URL users paste
    # Both processes create the send log on a fresh database at the same moment: the limiter's lock must hold there.
    with run_sandbox(tmp_path / "sandbox.db", per_second=PER_SECOND, per_minute=10_000, per_hour=100_000) as sandbox:
        spawn = multiprocessing.get_context("spawn")
        start = spawn.Event()
        workers = [
            spawn.Process(target=_send_sales,
                          args=(sandbox.base_url, sandbox.api_key, sandbox.uid, database_url, worker, 15, start))
            for worker in (1, 2)
        ]
        for process in workers:
            process.start()
        start.set()
        for process in workers:
            process.join(timeout=120)
        assert [p.exitcode for p in workers] == [0, 0]
        log = [r for r in sandbox.requests() if r["path"].startswith("/api/")]
    assert len(log) == 30 and all(r["status"] == 200 and r["fault"] is None for r in log)
    assert {key.split("-")[0] for r in log for key in r["keys"]} == {"W1", "W2"}
    arrivals = [r["received_at"] for r in log]
    assert most_in_any_window(arrivals, 1.0) <= PER_SECOND
    assert most_in_any_window(arrivals, SHORT_MINUTE) <= PER_MINUTE
    assert max(arrivals) - min(arrivals) >= SHORT_MINUTE  # the "minute" limit really held some sends back
    with engine_for(database_url).connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(SEND_LOG)) == 30, "every send was recorded in PostgreSQL"


def test_a_restamped_send_counts_from_when_it_left_on_postgresql(pg_database):
    assert_a_restamped_send_counts_from_when_it_left(pg_database("sync", driver="postgresql"))

"""Two runs of the same days at once (a backfill and the sensor's run), outside Dagster's pools: nothing sent twice."""

import time

import pytest

from aiq_pipelines_tests.support.reliability import (
    WEEK,
    aiq_resource,
    assert_aiq_holds,
    assert_ledger_true,
    expected_members,
    expected_sales,
    process_summary,
    sends_per_key,
    start_sync_process,
    stock_week,
)

RUN_TIMEOUT_SECONDS = 180
# One batch at a time keeps each push long enough (0.3 s an answer) that the two runs' pushes overlap.
SMALL_BATCHES = dict(batch_size_sales=5, batch_size_members=5, max_in_flight=1)


def start_together(processes, homes, go) -> None:
    """Let the processes start their runs at the same moment, once every one of them is loaded."""
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while not all((home / "ready").exists() for home in homes):
        assert all(p.poll() is None for p in processes), "a sync process ended before it was ready"
        assert time.monotonic() < deadline, "the sync processes did not get ready"
        time.sleep(0.01)
    go.touch()


@pytest.mark.slow
def test_a_backfill_and_a_sensor_run_of_the_same_day_at_once_send_each_record_once(pos, sync_url, start_sandbox,
                                                                                   tmp_path):
    shoppers = stock_week(pos, sales_per_day=8)
    # Every answer takes 0.3 s, so the runs, started together, are pushing the same day at the same time.
    sandbox = start_sandbox(fault_slow=1.0, slow_seconds=0.3)
    homes, go = [tmp_path / "backfill", tmp_path / "sensor"], tmp_path / "go"
    processes = [
        start_sync_process(homes[0], pos.url, sync_url, sandbox, *WEEK, go=go, **SMALL_BATCHES),
        start_sync_process(homes[1], pos.url, sync_url, sandbox, "2026-06-04", "2026-06-04", go=go, **SMALL_BATCHES),
    ]
    start_together(processes, homes, go)
    runs = [process_summary(process, RUN_TIMEOUT_SECONDS) for process in processes]

    assert [run["success"] for run in runs] == [True, True]
    assert_aiq_holds(sandbox, expected_sales(pos.url), expected_members(shoppers))
    assert_ledger_true(sandbox, sync_url, aiq_resource(sandbox.base_url, sandbox.uid, sync_url).account, complete=True)
    for call in ("createUpdateMembers", "createUpdateSales"):
        sent_twice = sorted(key for key, sends in sends_per_key(sandbox, call).items() if sends > 1)
        assert sent_twice == [], f"{call}: records sent more than once"
    assert sum(run["metadata"]["aiq_sales"]["sent"] for run in runs) == len(expected_sales(pos.url))
    waits = [(home / "stderr.log").read_text().count("is pushing to it; waiting for it to finish") for home in homes]
    assert sum(waits) >= 1, "one run waited for the other's push: they really ran at once"

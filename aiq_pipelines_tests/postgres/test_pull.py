"""The pull API over a PostgreSQL sync database: the same pages as on SQLite, in read-only transactions."""

from __future__ import annotations

import datetime as dt

import pytest

from aiq_pipelines_tests.support.pull import DAY, local_midnight, stage_days, start_pull_server, z

pytestmark = pytest.mark.slow


def test_a_backfill_and_an_incremental_pull_page_through_a_postgresql_sync_database(pos, sync_url, tmp_path):
    noon = local_midnight(DAY) + dt.timedelta(hours=12)
    for n in range(12):
        pos.add_sale(f"S{n:02d}", noon + dt.timedelta(minutes=n))
    pos.add_sale("bad-total", noon, total_adjustment="5.00")
    stage_days(pos.url, sync_url, DAY, DAY, "r1")
    server = start_pull_server(sync_url, tmp_path / "pull.log")
    try:
        backfill, last = server.pages("/v1/transactions", occurred_from=z(local_midnight(DAY)),
                                      occurred_to=z(local_midnight(DAY + dt.timedelta(days=1))), limit=5)
        incremental, _ = server.pages("/v1/transactions", limit=5)
        inventory = server.get("/v1/inventory")
    finally:
        server.stop()

    expected = [f"S{n:02d}" for n in range(12)]
    assert [tx["transaction_id"] for page in backfill for tx in page] == expected, "in the order they were rung"
    assert sorted(tx["transaction_id"] for page in incremental for tx in page) == expected
    assert [len(page) for page in backfill] == [5, 5, 2] and last["held_back"] == 1
    assert inventory.status_code == 200 and inventory.headers["etag"]

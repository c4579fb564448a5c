"""Dagster's own storage on PostgreSQL, configured by the shipped production dagster.yaml, running a real backfill."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.pos import demo
from aiq_pipelines.sync.schema import aiq_ledger
from aiq_pipelines_tests.support.runs import sales_by_id
from aiq_pipelines_tests.support.sandbox import GENEROUS_LIMITS

DAILY_ASSETS = "pos_transactions,pos_personas,aiq_personas,aiq_sales"
FIRST_DAY, LAST_DAY = "2026-05-01", "2026-05-03"


def test_the_production_instance_keeps_everything_in_postgresql(dagster_home, monkeypatch):
    home, env = dagster_home
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        storages = [type(s).__name__ for s in (instance.run_storage, instance.event_log_storage,
                                               instance.schedule_storage)]
        assert storages == ["PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"]
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert [(limit["key"], limit["limit"]) for limit in concurrency.run_queue_config.tag_concurrency_limits] == [
            ("dagster/partition", 1)]
        assert instance.run_monitoring_enabled
        instance.event_log_storage.initialize_concurrency_limit_to_default("aiq_api")
        assert instance.event_log_storage.get_concurrency_info("aiq_api").slot_count == 1

    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    with pytest.raises(dg.DagsterInvalidConfigError, match="DAGSTER_PG_PASSWORD"):
        dg.DagsterInstance.from_config(str(home))


@pytest.mark.slow
def test_a_backfill_runs_end_to_end_on_a_postgresql_instance(dagster_home, pg_server, pg_database, sandbox, monkeypatch):
    home, dagster_env = dagster_home
    pos_url = pg_database("pos", driver="postgresql")  # plain URLs, as an operator pastes them
    sync_url = pg_database("sync", driver="postgresql")
    demo.generate(pos_url, demo.DemoOptions(days=4, stores=1, min_sales=6, max_sales=10, end_date=dt.date(2026, 5, 4),
                                            products=20),
                  now=dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    env = {**os.environ, **dagster_env, "POS_DATABASE_URL": pos_url, "SYNC_DATABASE_URL": sync_url,
           "AIQ_BASE_URL": sandbox.base_url, "AIQ_API_KEY": sandbox.api_key, "AIQ_UID": sandbox.uid,
           "AIQ_REQUESTS_PER_SECOND": str(GENEROUS_LIMITS["per_second"]),
           "AIQ_REQUESTS_PER_MINUTE": str(GENEROUS_LIMITS["per_minute"]),
           "AIQ_REQUESTS_PER_HOUR": str(GENEROUS_LIMITS["per_hour"])}

    result = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "aiq_pipelines.definitions",
         "--select", DAILY_ASSETS, "--partition-range", f"{FIRST_DAY}...{LAST_DAY}"],
        env=env, cwd=home, capture_output=True, text=True, timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    window = {"s": dt.datetime(2026, 5, 1, 6), "e": dt.datetime(2026, 5, 4, 6)}  # Denver midnights in UTC (MDT)
    with engine_for(pos_url).connect() as conn:
        valid = conn.scalars(sa.text("SELECT transaction_id FROM transactions WHERE NOT is_void "
                                     "AND transaction_at >= :s AND transaction_at < :e"), window).all()
        later = conn.scalar(sa.text("SELECT count(*) FROM transactions WHERE transaction_at >= :e"), window)
    assert len(valid) > 10 and later > 0, "the demo has sales outside the backfilled days too"
    assert sorted(sales_by_id(sandbox)) == sorted(valid)
    with engine_for(sync_url).connect() as conn:
        ledger = conn.scalars(sa.select(aiq_ledger.c.record_key).where(aiq_ledger.c.entity == "transaction")).all()
    assert sorted(ledger) == sorted(valid)

    with engine_for(pg_server.url(dagster_env["DAGSTER_PG_DB"])).connect() as conn:
        runs = conn.execute(sa.text("SELECT run_id, status FROM runs")).all()
        events = conn.scalars(sa.text("SELECT dagster_event_type FROM event_logs WHERE run_id = :r"),
                              {"r": runs[0][0]}).all()
    assert [status for _, status in runs] == ["SUCCESS"], "one single-run backfill, recorded in PostgreSQL"
    assert dg.DagsterEventType.RUN_SUCCESS.value in events  # stored under its legacy name, PIPELINE_SUCCESS
    assert events.count(dg.DagsterEventType.ASSET_MATERIALIZATION.value) == 4 * 3, "4 assets x 3 days"
    for name, value in dagster_env.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("aiq_sales")) == {"2026-05-01", "2026-05-02",
                                                                                  "2026-05-03"}

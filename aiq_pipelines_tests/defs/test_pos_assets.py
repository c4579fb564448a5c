"""The extract assets as Dagster runs them: partitions, single-run ranges, metadata and blocking checks."""

import datetime as dt
import os
import subprocess
import sys
import zoneinfo

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.definitions import defs
from aiq_pipelines.defs.partitions import daily_partitions
from aiq_pipelines.defs.pos_assets import pos_inventory, pos_personas, pos_transactions
from aiq_pipelines.defs.resources import PosDatabase, SyncDatabase
from aiq_pipelines.pos.queries import TRANSACTIONS_SQL
from aiq_pipelines.settings import load_settings
from aiq_pipelines.sync.schema import quarantine, staged_transactions


def resources(pos_url: str, sync_url: str) -> dict:
    return {"pos": PosDatabase.from_settings(load_settings(), url=pos_url, chunk_size=500),
            "sync": SyncDatabase.from_settings(load_settings(), url=sync_url)}


def pos_receipts_in_local_day(pos_url: str, day: str) -> list[str]:
    w = daily_partitions.time_window_for_partition_key(day)
    bounds = [f"{t.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}" for t in (w.start, w.end)]
    with sa.create_engine(pos_url).connect() as conn:
        return sorted(conn.scalars(sa.text(
            "SELECT transaction_id FROM transactions WHERE transaction_at >= :s AND transaction_at < :e"),
            {"s": bounds[0], "e": bounds[1]}))


def staged(sync_url: str) -> dict[str, dt.date]:
    with sa.create_engine(sync_url).connect() as conn:
        query = sa.select(staged_transactions.c.transaction_id, staged_transactions.c.business_date)
        return {k: v for k, v in conn.execute(query)}


def test_definitions_load_with_descriptions_groups_and_kinds():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for key in ["pos_transactions", "pos_personas", "pos_inventory"]:
        node = graph.get(dg.AssetKey(key))
        assert node.group_name == "pos"
        assert node.description and len(node.description) > 40
        assert {"sql", "python"} <= set(node.kinds)
    assert graph.get(dg.AssetKey("pos_transactions")).partitions_def == daily_partitions
    assert graph.get(dg.AssetKey("pos_inventory")).partitions_def is None
    today = dt.datetime.now(zoneinfo.ZoneInfo("America/Denver")).date()
    assert daily_partitions.get_last_partition_key() == today.isoformat(), "today is a partition (end_offset=1)"


def test_a_demo_day_stages_exactly_that_local_days_receipts(demo_pos_url, sync_url):
    with dg.instance_for_test() as instance:
        result = dg.materialize([pos_transactions], resources=resources(demo_pos_url, sync_url),
                                partition_key="2026-03-09", instance=instance)
    assert result.success
    expected = pos_receipts_in_local_day(demo_pos_url, "2026-03-09")
    assert sorted(staged(sync_url)) == expected and len(expected) > 40
    assert set(staged(sync_url).values()) == {dt.date(2026, 3, 9)}
    [materialization] = result.asset_materializations_for_node("pos_transactions")
    metadata = materialization.metadata
    assert metadata["dagster/row_count"].value == len(expected)
    assert metadata["quarantined"].value == 0
    assert metadata["window_start"] == dg.MetadataValue.timestamp(dt.datetime.fromisoformat("2026-03-09T00:00:00-06:00"))
    assert metadata["window_end"] == dg.MetadataValue.timestamp(dt.datetime.fromisoformat("2026-03-10T00:00:00-06:00"))
    assert metadata["quarantine_reasons"].value == "No records quarantined."
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"unique_keys": True, "within_window": True, "quarantine_rate": True, "none_outside_partitions": True}


def test_a_partition_range_is_one_run(demo_pos_url, sync_url):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [pos_transactions, pos_personas], resources=resources(demo_pos_url, sync_url), instance=instance,
            tags={"dagster/asset_partition_range_start": "2026-03-04", "dagster/asset_partition_range_end": "2026-03-10"},
        )
        assert result.success
        assert len(instance.get_runs()) == 1
    days = [f"2026-03-{d:02d}" for d in range(4, 11)]
    assert sorted(staged(sync_url)) == sorted(t for d in days for t in pos_receipts_in_local_day(demo_pos_url, d))


def test_inventory_snapshot_replaces_the_previous_one(demo_pos_url, sync_url):
    with dg.instance_for_test() as instance:
        first = dg.materialize([pos_inventory], resources=resources(demo_pos_url, sync_url), instance=instance)
        second = dg.materialize([pos_inventory], resources=resources(demo_pos_url, sync_url), instance=instance)
    counts = [r.asset_materializations_for_node("pos_inventory")[0].metadata["dagster/row_count"].value
              for r in (first, second)]
    with sa.create_engine(sync_url).connect() as conn:
        rows = conn.exec_driver_sql("SELECT COUNT(*) FROM staged_inventory").scalar()
    assert counts == [60, 60] and rows == 60


@dg.asset(deps=[pos_transactions], partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run())
def downstream_push() -> None:
    """Stands for the push assets: it must not run when a blocking check of the extract fails."""


def test_quarantine_rate_check_fails_and_blocks_downstream(pos, sync_url):
    at = dt.datetime(2026, 6, 10, 18)
    pos.add_sale("good", at)
    for n in range(12):
        pos.add_sale(f"bad-{n:02d}", at, total_adjustment="2.00")
    with dg.instance_for_test() as instance:
        result = dg.materialize([pos_transactions, downstream_push], resources=resources(pos.url, sync_url),
                                partition_key="2026-06-10", instance=instance, raise_on_error=False)
    assert not result.success
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["quarantine_rate"]
    assert not evaluation.passed
    assert "12 of 13 records quarantined (92.3%)" in evaluation.description
    assert evaluation.metadata["quarantined"].value == 12
    assert not result.asset_materializations_for_node("downstream_push"), "the blocking check stops the push"
    [materialization] = result.asset_materializations_for_node("pos_transactions")
    table = materialization.metadata["quarantine_reasons"].value
    assert "| lines do not reconcile" in table and "| 12 |" in table


def test_a_few_bad_sales_on_a_quiet_day_do_not_hold_it_back(pos, sync_url):
    at = dt.datetime(2026, 6, 10, 18)
    pos.add_sale("good", at)
    for n in range(9):
        pos.add_sale(f"bad-{n}", at, total_adjustment="2.00")
    with dg.instance_for_test() as instance:
        result = dg.materialize([pos_transactions, downstream_push], resources=resources(pos.url, sync_url),
                                partition_key="2026-06-10", instance=instance)
    assert result.success and result.asset_materializations_for_node("downstream_push")
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["quarantine_rate"]
    assert evaluation.passed and evaluation.metadata["quarantined"].value == 9


def run_with_transactions_query(tmp_path, pos_url: str, sync_url: str, sql: str) -> dg.ExecuteInProcessResult:
    """pos_transactions for 2026-06-10 with ``sql`` as the POS_QUERIES_FILE's transactions query."""
    queries = tmp_path / "q.yaml"
    queries.write_text("transactions: |\n" + "".join(f"  {line}\n" for line in sql.splitlines()))
    res = {"pos": PosDatabase.from_settings(load_settings(), url=pos_url, queries_file=str(queries)),
           "sync": SyncDatabase.from_settings(load_settings(), url=sync_url)}
    with dg.instance_for_test() as instance:
        return dg.materialize([pos_transactions], resources=res, partition_key="2026-06-10", instance=instance,
                              raise_on_error=False)


def test_window_check_catches_a_query_that_ignores_the_window(tmp_path, pos, sync_url):
    pos.add_sale("in-day", dt.datetime(2026, 6, 10, 18))
    pos.add_sale("next-week", dt.datetime(2026, 6, 17, 18))
    sql = TRANSACTIONS_SQL.replace(
        "WHERE t.transaction_at >= :window_start AND t.transaction_at < :window_end",
        "WHERE :window_start IS NOT NULL AND :window_end IS NOT NULL")
    result = run_with_transactions_query(tmp_path, pos.url, sync_url, sql)
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["within_window"]
    assert not evaluation.passed and evaluation.metadata["outside_window"].value == 1
    assert "must filter on :window_start/:window_end" in evaluation.description


def test_unique_keys_fails_when_the_query_returns_a_receipt_twice(tmp_path, pos, sync_url):
    pos.add_sale("S1", dt.datetime(2026, 6, 10, 18))
    pos.add_sale("S2", dt.datetime(2026, 6, 10, 19))
    body = TRANSACTIONS_SQL.split("ORDER BY")[0]
    sql = f"SELECT * FROM ({body}) AS first_pass UNION ALL SELECT * FROM ({body}) AS second_pass"  # S1, S2, S1, S2
    result = run_with_transactions_query(tmp_path, pos.url, sync_url, sql)
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["unique_keys"]
    assert not evaluation.passed
    assert (evaluation.metadata["records_written"].value, evaluation.metadata["distinct_keys_staged"].value) == (4, 2)
    assert "returns a key more than once" in evaluation.description


def stray_quarantine(sync_url: str) -> dict[str, tuple[dt.date | None, str]]:
    with sa.create_engine(sync_url).connect() as conn:
        rows = conn.execute(sa.select(quarantine.c.record_key, quarantine.c.business_date, quarantine.c.reason))
        return {key: (day, reason) for key, day, reason in rows}


def test_records_dated_outside_every_partition_are_quarantined_with_a_warning_not_lost(pos, sync_url):
    day = dt.datetime(2026, 6, 10, 18)
    pos.add_customer("C-2099", modified=dt.datetime(2099, 1, 1))
    pos.add_sale("in-day", day)
    pos.add_sale("clock-reset-1900", dt.datetime(1900, 1, 1), modified=day)
    pos.add_sale("dated-2099", dt.datetime(2099, 1, 1, 12))
    pos.add_sale("history-before-start", dt.datetime(2025, 6, 1, 18))  # written then too: history left out by choice

    def run(key: str) -> dg.ExecuteInProcessResult:
        with dg.instance_for_test() as instance:
            return dg.materialize([pos_transactions, pos_personas], resources=resources(pos.url, sync_url),
                                  partition_key=key, instance=instance)

    result = run("2026-06-10")

    assert result.success, "strays warn; they do not stop the day's sync"
    assert sorted(staged(sync_url)) == ["in-day"]
    held_back = stray_quarantine(sync_url)
    assert set(held_back) == {"clock-reset-1900", "dated-2099", "C-2099"}
    assert held_back["clock-reset-1900"][0] == dt.date(1899, 12, 31), "its own business day, in POS_TIMEZONE"
    assert "before POS_START_DATE although the record was modified since" in held_back["clock-reset-1900"][1]
    assert held_back["dated-2099"] == (dt.date(2099, 1, 1), held_back["C-2099"][1].replace("last_modified_at", "transaction_at"))
    assert "later than today in POS_TIMEZONE" in held_back["dated-2099"][1]
    evaluations = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    for asset, count in (("pos_transactions", 2), ("pos_personas", 1)):
        evaluation = evaluations[(asset, "none_outside_partitions")]
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert evaluation.metadata["outside_partitions"].value == count
        assert result.asset_materializations_for_node(asset)[0].metadata["outside_partitions"].value == count

    pos.execute("UPDATE transactions SET transaction_at = :at WHERE transaction_id = 'dated-2099'",
                at=dt.datetime(2026, 6, 11, 18))
    pos.execute("UPDATE customers SET last_modified_at = :at WHERE customer_id = 'C-2099'", at=day)
    run("2026-06-10")
    assert set(stray_quarantine(sync_url)) == {"clock-reset-1900"}, "a stray fixed at the source leaves quarantine"
    run("2026-06-11")
    assert sorted(staged(sync_url)) == ["dated-2099", "in-day"], "and its day's extract stages it"


def test_a_custom_transactions_query_without_a_stray_query_warns_that_strays_cannot_be_found(tmp_path, pos, sync_url):
    pos.add_sale("in-day", dt.datetime(2026, 6, 10, 18))
    result = run_with_transactions_query(tmp_path, pos.url, sync_url, TRANSACTIONS_SQL)
    assert result.success and sorted(staged(sync_url)) == ["in-day"]
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["none_outside_partitions"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "has no stray_transactions query" in evaluation.description


@pytest.mark.slow
def test_cli_materializes_a_month_in_one_run(tmp_path):
    pos_url = f"sqlite:///{tmp_path / 'pos.db'}"
    sync_url = f"sqlite:///{tmp_path / 'sync.db'}"
    subprocess.run([sys.executable, "-m", "aiq_pipelines.cli", "demo-data", "--database-url", pos_url, "--days", "31",
                    "--stores", "1", "--min-sales", "5", "--max-sales", "10", "--end-date", "2026-05-31"], check=True,
                   capture_output=True)
    (tmp_path / "home").mkdir()
    env = {**os.environ, "POS_DATABASE_URL": pos_url, "SYNC_DATABASE_URL": sync_url, "DAGSTER_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "dagster"), "asset", "materialize", "-m", "aiq_pipelines.definitions",
         "--select", "pos_transactions", "--partition-range", "2026-05-01...2026-05-31"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("RUN_SUCCESS") == 1 or result.stdout.count("RUN_SUCCESS") == 1
    with sa.create_engine(pos_url).connect() as conn:
        total = conn.exec_driver_sql("SELECT COUNT(*) FROM transactions").scalar()
    assert len(staged(sync_url)) == total
    assert {d.month for d in staged(sync_url).values()} == {5}


def test_the_extract_logs_a_sync_progress_line_per_chunk_with_its_total(demo_pos_url, sync_url):
    settings = load_settings()
    small_chunks = {"pos": PosDatabase.from_settings(settings, url=demo_pos_url, chunk_size=10),
                    "sync": SyncDatabase.from_settings(settings, url=sync_url)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([pos_transactions], resources=small_chunks, partition_key="2026-03-09",
                                instance=instance)
        lines = [entry.user_message for entry in instance.all_logs(result.run_id)
                 if entry.user_message.startswith("sync_progress pos_transactions: ")]
    total = len(pos_receipts_in_local_day(demo_pos_url, "2026-03-09"))  # one store zone: the window is the day

    assert len(lines) == -(-total // 10), "one line per chunk"
    assert lines[0].startswith(f"sync_progress pos_transactions: 10 records of {total:,} (")
    assert lines[-1].startswith(f"sync_progress pos_transactions: {total:,} records of {total:,} (100%)")
    assert all("records/s" in line for line in lines) and "left" in lines[0]

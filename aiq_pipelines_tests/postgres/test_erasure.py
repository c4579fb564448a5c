"""Erasing a shopper with the POS and the sync database on PostgreSQL: none of their personal data is left in any
column of any table of the sync database (whatever its type), nor in any answer of the pull API; the erasure is
recorded with their key only; the command and the job say whether the POS still holds them. The same on SQLite with a
drop folder: ``sync/test_erasure.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.defs.erasure import build_forget_job
from aiq_pipelines.defs.resources import PosDatabase, SyncDatabase
from aiq_pipelines.settings import load_settings
from aiq_pipelines.sync.schema import shopper_stores
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.erasure import DAY, SHOPPERS, SYNCED_COPIES, add_shoppers, erasures
from aiq_pipelines_tests.support.personal import found, shopper_found, stored_values
from aiq_pipelines_tests.support.pull import everything_served
from aiq_pipelines_tests.support.runs import aiq_resource, materialize


def stores_looked_up(sync_url: str) -> list[tuple[str, str]]:
    with engine_for(sync_url).connect() as conn:
        return sorted(tuple(row) for row in conn.execute(sa.select(shopper_stores.c.customer_id,
                                                                   shopper_stores.c.location_id)))


def sync_day(resources: dict, instance: dg.DagsterInstance, day: str, assets: list[str] | None = None) -> None:
    tags = {"dagster/asset_partition_range_start": day, "dagster/asset_partition_range_end": day}
    assert materialize(assets, resources=resources, instance=instance, tags=tags).success


@pytest.fixture
def key_type() -> str:
    """The type of the POS's customer and store keys: the reference schema's TEXT unless a test says otherwise."""
    return "text"


@pytest.fixture
def synced(pos, sync_url, sandbox, key_type):
    """E1 and K1 with their sales synced to the sandbox (their stores looked up, as with several accounts), then E1
    edited in the POS with a birthday before 1900, which quarantines the edit with the POS row: the resources."""
    keys = [("customers", "customer_id"), ("transactions", "customer_id"), ("locations", "location_id"),
            ("transactions", "location_id"), ("inventory", "location_id")]
    for table, column in keys if key_type != "text" else ():
        pos.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {key_type}")
    add_shoppers(pos)
    settings = load_settings()
    resources = {"pos": PosDatabase.from_settings(settings, url=pos.url),
                 "sync": SyncDatabase.from_settings(settings, url=sync_url, look_up_shopper_stores=True),
                 "aiq": aiq_resource(sandbox, sync_url)}
    with dg.instance_for_test() as instance:
        sync_day(resources, instance, DAY)
        pos.execute("UPDATE customers SET birthday = '1858-09-23', last_modified_at = :at WHERE customer_id = 'E1'",
                    at=local(2026, 6, 11, 9))
        sync_day(resources, instance, "2026-06-11", ["pos_personas"])
    return resources


# Many PostgreSQL POS schemas key their rows as CHAR(n), which PostgreSQL returns padded with blanks to n characters.
@pytest.mark.parametrize("key_type", ["char(12)"])
def test_an_erased_shopper_leaves_no_personal_data_in_a_postgresql_sync_database_or_the_pull_api(synced, pos, sync_url):
    before = [*stored_values(sync_url), ("pull API", everything_served(sync_url))]
    assert {where for where, _ in shopper_found(before, SHOPPERS["E1"])} >= {
        *SYNCED_COPIES, "quarantine.source", "pull API"}, "the scan finds E1 where the sync keeps them"
    assert stores_looked_up(sync_url) == [("E1", "STORE-01"), ("K1", "STORE-01")], "looked up under the staged keys"
    # The URLs as users paste them (plain postgresql://), through the settings, as in production.
    env = {**os.environ, "SYNC_DATABASE_URL": sync_url.replace("+psycopg", ""),
           "POS_DATABASE_URL": pos.url.replace("+psycopg", "")}

    done = subprocess.run([sys.executable, "-m", "aiq_pipelines.cli", "forget-shopper", "E1", "--by", "dpo@example"],
                          env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 3, done.stderr
    assert "WARNING: the POS still holds shopper E1" in done.stderr
    assert "AIQ publishes no delete call: delete the persona (pos_user E1) in AIQ's own UI" in done.stdout
    after = stored_values(sync_url)
    assert shopper_found(after, SHOPPERS["E1"]) == [], "E1's personal data is left in a table"
    assert shopper_found([("pull API", everything_served(sync_url))], SHOPPERS["E1"]) == [], "the pull API serves E1"
    assert shopper_found(after, SHOPPERS["K1"]), "only E1 was erased"
    assert erasures(sync_url) == [("E1", "dpo@example", True)]
    assert stores_looked_up(sync_url) == [("K1", "STORE-01")]
    assert ("staged_transactions.transaction_id", "SALE-E1") in after, "the sale stays, without personal data"


def test_the_job_erases_a_shopper_the_postgresql_pos_no_longer_holds_without_a_warning(synced, pos, sync_url):
    pos.execute("UPDATE transactions SET customer_id = NULL WHERE customer_id = 'K1'")  # erased in the POS first
    pos.execute("DELETE FROM customers WHERE customer_id = 'K1'")
    with dg.instance_for_test() as instance:
        result = build_forget_job(with_drop_folder=False).execute_in_process(
            instance=instance, resources={"sync": synced["sync"], "pos": synced["pos"]},
            run_config={"ops": {"forget_shopper_data": {"config": {"customer_id": "K1"}}}})
        messages = "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(result.run_id))

    assert result.success
    after = stored_values(sync_url)
    assert shopper_found(after, SHOPPERS["K1"]) == [], "K1's personal data is left in a table"
    assert shopper_found(after, SHOPPERS["E1"]), "only K1 was erased"
    assert shopper_found([("event log", messages)], SHOPPERS["K1"]) == [], "the job's events name the key only"
    assert "shopper K1: " in messages and "WARNING" not in messages
    assert erasures(sync_url) == [("K1", f"dagster run {result.run_id}", False)]


# Columns a scan of String, Text and LargeBinary columns would skip (JSON, arrays, XML, composite types, text search
# vectors) or must decode (BYTEA) or find padded (CHAR(n)): a value of each type holding a name, as SQL.
EXOTIC_COLUMNS = {
    "jsonb": """'{"shopper": {"last": "%s"}}'""",
    "json": """'["%s"]'""",
    "text_array": "ARRAY['x', '%s']",
    "bytea": "convert_to('%s', 'UTF8')",
    "xml": "'<last>%s</last>'",
    "char": "'%s'",
    "address": "ROW('1 Road', '%s')",
    "tsvector": "'%s'",
}
TYPES = {"text_array": "text[]", "char": "character(40)", "address": "address"}


def test_the_scan_reads_every_column_of_every_table_and_materialized_view_whatever_its_type(
    pg_database: Callable[..., str]
):
    url, name = pg_database("scan"), SHOPPERS["E1"]["last_name"]
    columns = ", ".join(f"{column} {TYPES.get(column, column)}" for column in EXOTIC_COLUMNS)
    values = ", ".join(value % name for value in EXOTIC_COLUMNS.values())
    with engine_for(url).begin() as conn:
        conn.exec_driver_sql("CREATE TYPE address AS (line text, city text)")
        conn.exec_driver_sql(f"CREATE TABLE documents ({columns})")
        conn.exec_driver_sql(f"INSERT INTO documents VALUES ({values})")
        conn.exec_driver_sql("CREATE SCHEMA elsewhere")
        conn.exec_driver_sql(f"CREATE TABLE elsewhere.notes AS SELECT '{name}'::varchar AS note")
        conn.exec_driver_sql("CREATE MATERIALIZED VIEW copied AS SELECT jsonb FROM documents")

    assert {where for where, _ in found(stored_values(url), [name])} == {
        *(f"documents.{column}" for column in EXOTIC_COLUMNS), "elsewhere.notes.note", "copied.jsonb"}

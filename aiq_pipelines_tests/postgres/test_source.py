"""The POS source and staging on PostgreSQL: the reference schema, demo data, business days across DST, quarantine."""

import contextlib
import datetime as dt
import threading
import zoneinfo
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.pos import demo
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.queries import PosQueryError
from aiq_pipelines.pos.records import InventoryItem, Persona, Transaction
from aiq_pipelines.pos.source import PosSource
from aiq_pipelines.sync import mapping
from aiq_pipelines.sync.schema import quarantine, staged_inventory, staged_personas, staged_transactions
from aiq_pipelines.sync.store import SyncStore
from aiq_pipelines_tests.conftest import DEMO_OPTIONS
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.extract import (
    assert_a_kept_table_gets_the_indexes_it_lacks,
    assert_a_staging_table_without_an_index_is_rebuilt,
    assert_an_older_staging_layout_is_rebuilt,
    assert_statements_with_key_lists_run_as_sqlalchemy_runs_them,
    assert_upsert_stores_every_type_and_replaces_by_key,
    staged_ids,
    window,
)
from aiq_pipelines_tests.support.pos_factory import PosFactory
from aiq_pipelines_tests.support.postgres import PostgresServer

DENVER = zoneinfo.ZoneInfo("America/Denver")


@pytest.fixture(scope="module")
def demo_pg_url(pg_server: PostgresServer):
    """The conftest's demo POS (same options, same clock), generated into PostgreSQL once for this module."""
    name = pg_server.create_database("demo")
    url = pg_server.url(name)
    demo.generate(url, DEMO_OPTIONS, now=dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    yield url
    pg_server.drop_database(name)


def test_the_reference_schema_on_postgresql_has_real_types(pos):
    columns = {c["name"]: c["type"] for c in sa.inspect(pos.engine).get_columns("transactions")}
    assert pos.engine.dialect.name == "postgresql" and pos.engine.dialect.driver == "psycopg"
    assert isinstance(columns["transaction_at"], sa.TIMESTAMP) and isinstance(columns["total"], sa.NUMERIC)
    assert isinstance(columns["is_void"], sa.BOOLEAN)
    with pytest.raises(sa.exc.IntegrityError):  # unlike SQLite, PostgreSQL enforces the schema's foreign keys
        pos.add_sale("orphan", local(2026, 6, 10, 12), customer_id="C-GONE")


def test_sale_late_in_the_evening_lands_in_its_local_day(pos, sync_url):
    pos.add_sale("late", local(2026, 6, 10, 23, 30))  # 05:30 UTC on June 11
    pos.add_sale("early", local(2026, 6, 11, 0, 0, 0))
    pos.add_sale("before-midnight", local(2026, 6, 10, 23, 59, 59))
    store = SyncStore(sync_url, "America/Denver")
    source = PosSource(pos.url)

    store.stage_transactions(source, *window("2026-06-10"), run_id="r1")
    store.stage_transactions(source, *window("2026-06-11"), run_id="r2")

    assert staged_ids(store, "2026-06-10") == ["before-midnight", "late"]
    assert staged_ids(store, "2026-06-11") == ["early"]


@pytest.mark.parametrize("days", [("2026-03-07", "2026-03-08", "2026-03-09"), ("2026-10-31", "2026-11-01", "2026-11-02")])
def test_dst_changes_put_every_sale_in_exactly_one_partition(pos, sync_url, days):
    first = dt.datetime.fromisoformat(days[0]).replace(tzinfo=DENVER)
    end = (dt.datetime.fromisoformat(days[-1]) + dt.timedelta(days=1)).replace(tzinfo=DENVER)
    moments = []
    moment = first.astimezone(dt.UTC)
    while moment < end.astimezone(dt.UTC):  # a sale every 10 minutes of real (UTC) time, across the change
        moments.append(moment.replace(tzinfo=None))
        moment += dt.timedelta(minutes=10)
    with pos.engine.begin() as conn:  # one transaction: ~430 receipts one by one would cost a round trip each
        conn.execute(sa.text("INSERT INTO transactions (transaction_id, location_id, transaction_at, subtotal, total, "
                             "last_modified_at) VALUES (:id, 'STORE-01', :at, 45, 45, :at)"),
                     [{"id": f"S{n:04d}", "at": at} for n, at in enumerate(moments)])
        conn.execute(sa.text("INSERT INTO transaction_items (transaction_id, line_number, product_id, quantity, "
                             "unit_price) VALUES (:id, 1, 'P1', 1, 45)"),
                     [{"id": f"S{n:04d}"} for n in range(len(moments))])
    store = SyncStore(sync_url, "America/Denver")
    source = PosSource(pos.url)

    seen: list[str] = []
    for day in days:
        report = store.stage_transactions(source, *window(day), run_id=f"run-{day}")
        ids = staged_ids(store, day)
        assert report.staged == len(ids) and report.quarantined == 0
        seen += ids
        hours = {"2026-03-08": 23, "2026-11-01": 25}.get(day, 24)
        assert len(ids) == hours * 6, f"{day} should hold {hours} hours of sales"
    assert sorted(seen) == [f"S{i:04d}" for i in range(len(moments))], "every sale in exactly one partition"


def test_broken_receipts_are_quarantined_with_reason_and_the_rest_staged(pos, sync_url):
    at = local(2026, 6, 10, 12)
    pos.add_customer("C1", phone="(303) 555-0142", email="ada@example.com")
    pos.add_sale("good", at, customer_id="C1")
    pos.add_sale("off-by-a-dollar", at, total_adjustment="1.00")
    pos.add_sale("not-a-number", at)
    pos.execute("UPDATE transactions SET tax_total = 'NaN' WHERE transaction_id = 'not-a-number'")  # NUMERIC allows it
    pos.add_sale("no-lines", at, [])
    store = SyncStore(sync_url, "America/Denver")

    report = store.stage_transactions(PosSource(pos.url), *window("2026-06-10"), run_id="r1")

    assert staged_ids(store) == ["good"] and (report.staged, report.quarantined) == (1, 3)
    reasons = {row["record_key"]: row["reason"] for row in store.quarantined("transaction")}
    assert "do not reconcile" in reasons["off-by-a-dollar"]
    assert reasons["not-a-number"].startswith("invalid value: tax_total")
    assert "without lines" in reasons["no-lines"]
    assert all(row["business_date"] == dt.date(2026, 6, 10) for row in store.quarantined("transaction"))


def test_a_rerun_replaces_the_window_and_a_fixed_row_leaves_quarantine(pos, sync_url):
    at = local(2026, 6, 10, 12)
    pos.add_sale("A", at)
    pos.add_sale("B", at, total_adjustment="5.00")
    store = SyncStore(sync_url, "America/Denver")
    source = PosSource(pos.url)
    store.stage_transactions(source, *window("2026-06-10"), run_id="r1")
    assert staged_ids(store) == ["A"] and len(store.quarantined("transaction")) == 1

    pos.execute("UPDATE transactions SET total = total - 5 WHERE transaction_id = 'B'")
    pos.execute("DELETE FROM transaction_items WHERE transaction_id = 'A'")
    pos.execute("DELETE FROM transactions WHERE transaction_id = 'A'")
    report = store.stage_transactions(source, *window("2026-06-10"), run_id="r2")

    assert staged_ids(store) == ["B"] and store.quarantined("transaction") == [] and report.quarantined == 0


def test_a_staging_table_of_an_older_layout_is_rebuilt_and_other_tables_kept(pos, sync_url):
    assert_an_older_staging_layout_is_rebuilt(pos, sync_url)


def test_a_staging_table_without_an_index_of_this_version_is_rebuilt(sync_url):
    assert_a_staging_table_without_an_index_is_rebuilt(sync_url)


def test_a_kept_table_of_an_older_version_gets_the_indexes_it_lacks(sync_url):
    assert_a_kept_table_gets_the_indexes_it_lacks(sync_url)


def test_opening_the_sync_database_does_not_wait_for_a_write_in_progress(sync_url):
    # On PostgreSQL even CREATE INDEX IF NOT EXISTS locks its table against writes first: issued at every start, it made
    # a run, a sensor tick or the UI's check wait for a running extract's transaction to commit.
    store = SyncStore(sync_url, "America/Denver")
    opened = threading.Event()
    with store.engine.connect() as extract:
        extract.execute(sa.insert(quarantine).values(entity="transaction", record_key="T1", stage="extract",
                                                     reason="why", run_id="r0", quarantined_at=dt.datetime(2026, 6, 1)))
        opener = threading.Thread(target=lambda: (SyncStore(sync_url, "America/Denver"), opened.set()))
        opener.start()
        try:
            assert opened.wait(timeout=30), "opening the sync database waited for the uncommitted write"
        finally:
            extract.rollback()  # lets a blocked opener finish either way
            opener.join()


def test_statements_with_key_lists_run_as_sqlalchemy_runs_them(sync_url):
    assert_statements_with_key_lists_run_as_sqlalchemy_runs_them(sync_url)


def test_personas_are_those_modified_in_the_window(pos, sync_url):
    pos.add_customer("OLD", modified=local(2026, 6, 9, 23, 59))
    pos.add_customer("NEW", modified=local(2026, 6, 10, 0, 1), birthday="1985-05-16", is_loyalty_member=True)
    pos.add_customer("EDITED", modified=local(2026, 6, 10, 22, 0))
    store = SyncStore(sync_url, "America/Denver")

    report = store.stage_personas(PosSource(pos.url), *window("2026-06-10"), run_id="r1")

    assert report.staged == 2
    personas = {p.customer_id: p for p in store.staged_records(staged_personas, Persona)}
    assert sorted(personas) == ["EDITED", "NEW"]
    assert personas["NEW"].birthday == dt.date(1985, 5, 16) and personas["NEW"].is_loyalty_member is True


def test_the_extract_streams_through_a_server_side_cursor(pos, sync_url):
    for n in range(120):
        pos.add_sale(f"T{n:04d}", local(2026, 6, 10, 8) + dt.timedelta(minutes=n))
    source = PosSource(pos.url, chunk_size=25)
    cursors: list[str | None] = []
    sa.event.listen(source.engine, "before_cursor_execute",
                    lambda conn, cursor, *_: cursors.append(getattr(cursor, "name", None)))
    store = SyncStore(sync_url, "America/Denver")

    report = store.stage_transactions(source, *window("2026-06-10"), run_id="r1", chunk_size=50)

    assert report.staged == 120 and report.chunks == 3
    assert any(name for name in cursors), "psycopg reads the window through a named (server-side) cursor"


def test_sales_and_customers_dated_outside_every_partition_are_quarantined(pos, sync_url):
    now = dt.datetime(2026, 6, 10, 18)
    pos.add_customer("C-2099", modified=dt.datetime(2099, 1, 1))
    pos.add_sale("in-range", now)
    pos.add_sale("clock-reset", dt.datetime(1970, 1, 1), modified=now)
    pos.add_sale("dated-2099", dt.datetime(2099, 1, 1, 12))
    pos.add_sale("history", dt.datetime(2025, 6, 1, 18))
    store, source = SyncStore(sync_url, "America/Denver"), PosSource(pos.url)
    first_start, last_end = local(2026, 1, 1), local(2026, 11, 27)

    reports = {entity: store.quarantine_strays(source, entity, first_start.replace(tzinfo=dt.UTC),
                                               last_end.replace(tzinfo=dt.UTC), run_id="r1")
               for entity in (Entity.TRANSACTION, Entity.PERSONA)}

    assert {e: sorted(k for ks in r.example_keys.values() for k in ks) for e, r in reports.items()} == {
        Entity.TRANSACTION: ["clock-reset", "dated-2099"], Entity.PERSONA: ["C-2099"]}
    assert {row["record_key"]: row["business_date"] for row in store.quarantined("transaction")} == {
        "clock-reset": dt.date(1969, 12, 31), "dated-2099": dt.date(2099, 1, 1)}


def test_changes_are_grouped_by_business_hour(pos):
    pos.add_customer("C1", modified=dt.datetime(2026, 6, 10, 18, 40))
    pos.add_sale("A", dt.datetime(2026, 6, 10, 18, 5), customer_id="C1", modified=dt.datetime(2026, 6, 10, 18, 50))
    pos.add_sale("B", dt.datetime(2026, 6, 10, 18, 55), modified=dt.datetime(2026, 6, 10, 18, 56))
    pos.add_sale("C", dt.datetime(2026, 6, 9, 12, 0), modified=dt.datetime(2026, 6, 10, 19, 0))  # a late edit
    pos.add_sale("D", dt.datetime(2026, 6, 10, 20, 0), modified=dt.datetime(2026, 6, 10, 20, 0))  # after :until

    changes = PosSource(pos.url).changes(dt.datetime(2026, 6, 10, 18, tzinfo=dt.UTC),
                                         dt.datetime(2026, 6, 10, 19, 30, tzinfo=dt.UTC))

    utc = dt.UTC
    assert [(c.first_business_at, c.last_business_at, c.last_modified_at, c.rows) for c in changes] == [
        (dt.datetime(2026, 6, 9, 12, tzinfo=utc), dt.datetime(2026, 6, 9, 12, tzinfo=utc),
         dt.datetime(2026, 6, 10, 19, tzinfo=utc), 1),
        (dt.datetime(2026, 6, 10, 18, 5, tzinfo=utc), dt.datetime(2026, 6, 10, 18, 55, tzinfo=utc),
         dt.datetime(2026, 6, 10, 18, 56, tzinfo=utc), 2),
        (dt.datetime(2026, 6, 10, 18, 40, tzinfo=utc), dt.datetime(2026, 6, 10, 18, 40, tzinfo=utc),
         dt.datetime(2026, 6, 10, 18, 40, tzinfo=utc), 1),
    ]


def test_an_unreadable_pos_fails_clearly_keeps_staging_and_hides_the_password(pg_server, pg_database, sync_url):
    url = pg_database("pos").replace("postgres@", "postgres:s3cret-pw@")  # trust auth ignores the password
    pos = PosFactory(url)
    pos.add_sale("A", local(2026, 6, 10, 12))
    store = SyncStore(sync_url, "America/Denver")
    store.stage_transactions(PosSource(url), *window("2026-06-10"), run_id="r1")
    pos.execute("ALTER TABLE transactions RENAME TO transactions_gone")

    with pytest.raises(PosQueryError, match=r"cannot read transactions from the POS database.*does not exist") as error:
        store.stage_transactions(PosSource(url), *window("2026-06-10"), run_id="r2")
    assert "s3cret-pw" not in str(error.value) and "***" in str(error.value)
    assert staged_ids(store) == ["A"], "a failed extract leaves the previous staging in place"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_plain_postgresql_url_uses_psycopg(pg_database: Callable[..., str], scheme: str):
    url = pg_database("plain", driver=scheme)
    assert url.startswith(f"{scheme}://")

    store = SyncStore(url, "America/Denver")

    assert store.engine.dialect.driver == "psycopg"
    assert "staged_transactions" in sa.inspect(engine_for(url)).get_table_names()


def _as_numbers(value: Any) -> Any:
    """A payload with number-like strings as Decimals: "88" (SQLite's REAL) and "88.00" (NUMERIC(12,2)) are equal."""
    if isinstance(value, dict):
        return {k: _as_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_numbers(v) for v in value]
    if isinstance(value, str):
        with contextlib.suppress(InvalidOperation):
            return Decimal(value)
    return value


def _staged_payloads(pos_url: str, sync_url: str, start: dt.datetime, end: dt.datetime) -> dict[str, dict]:
    store = SyncStore(sync_url, "America/Denver")
    source = PosSource(pos_url)
    every_persona = (dt.datetime(2000, 1, 1, tzinfo=dt.UTC), dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    reports = [store.stage_transactions(source, start, end, run_id="r"),
               store.stage_personas(source, *every_persona, run_id="r"), store.stage_inventory(source, run_id="r")]
    assert [report.quarantined for report in reports] == [0, 0, 0]
    payloads = {f"sale:{tx.transaction_id}": mapping.sale_payload(tx).to_json()
                for tx in store.staged_records(staged_transactions, Transaction)}
    payloads |= {f"member:{p.customer_id}": mapping.member_payload(p).member.to_json()
                 for p in store.staged_records(staged_personas, Persona)}
    payloads |= {f"item:{i.product_id}": mapping.inventory_payload(i).to_json()
                 for i in store.staged_records(staged_inventory, InventoryItem)}
    return payloads


def test_the_same_demo_pos_gives_aiq_the_same_payloads_from_sqlite_and_postgresql(
    demo_pos_url, demo_pg_url, pg_database, tmp_path
):
    start, end = window("2026-03-04")[0], window("2026-03-10")[1]  # the whole demo week, spring DST change included

    from_sqlite = _staged_payloads(demo_pos_url, f"sqlite:///{tmp_path / 'sync.db'}", start, end)
    from_postgresql = _staged_payloads(demo_pg_url, pg_database("sync"), start, end)

    kinds = {kind: sum(k.startswith(kind) for k in from_sqlite) for kind in ("sale:", "member:", "item:")}
    assert kinds["sale:"] > 200 and kinds["member:"] > 50 and kinds["item:"] == DEMO_OPTIONS.products, kinds
    assert sorted(from_postgresql) == sorted(from_sqlite)
    differing = [key for key in from_sqlite if _as_numbers(from_sqlite[key]) != _as_numbers(from_postgresql[key])]
    assert differing == [], f"{len(differing)} payloads differ, e.g. {differing[:1]}"


def test_upsert_stores_every_type_and_replaces_by_key(sync_url):
    assert_upsert_stores_every_type_and_replaces_by_key(sync_url)

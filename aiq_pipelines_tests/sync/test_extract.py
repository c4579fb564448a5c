"""Extract and staging: business days, DST, quarantine, chunked reads, idempotent re-runs, custom queries."""

import datetime as dt
import json
import re
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from aiq_pipelines.aiq.payloads import payload_hash
from aiq_pipelines.db.statements import upsert
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.queries import QUERIES, PosQueryError, load_queries
from aiq_pipelines.pos.records import Persona
from aiq_pipelines.pos.source import PosSource
from aiq_pipelines.sync import mapping
from aiq_pipelines.sync.payload import PersonaPayload
from aiq_pipelines.sync.schema import CHANGED_AT, NO_SALE, shopper_stores, staged_personas, staged_transactions
from aiq_pipelines.sync.store import SyncStore
from aiq_pipelines_tests.support.days import DENVER, local
from aiq_pipelines_tests.support.extract import (
    assert_a_kept_table_gets_the_indexes_it_lacks,
    assert_a_staging_table_without_an_index_is_rebuilt,
    assert_an_older_staging_layout_is_rebuilt,
    assert_statements_with_key_lists_run_as_sqlalchemy_runs_them,
    assert_upsert_stores_every_type_and_replaces_by_key,
    staged_ids,
    window,
)


def test_sale_late_in_the_evening_lands_in_its_local_day(pos, sync_url):
    pos.add_sale("late", local(2026, 6, 10, 23, 30))  # 05:30 UTC on June 11
    pos.add_sale("early", local(2026, 6, 11, 0, 0, 0))  # exactly local midnight belongs to the new day
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
    moment, n = first.astimezone(dt.UTC), 0
    while moment < end.astimezone(dt.UTC):  # a sale every 10 minutes of real (UTC) time, across the change
        pos.add_sale(f"S{n:04d}", moment.replace(tzinfo=None))
        moment += dt.timedelta(minutes=10)
        n += 1
    store = SyncStore(sync_url, "America/Denver")
    source = PosSource(pos.url)

    seen: list[str] = []
    for day in days:
        report = store.stage_transactions(source, *window(day), run_id=f"run-{day}")
        ids = staged_ids(store, day)
        assert report.staged == len(ids)
        seen += ids
        hours = {"2026-03-08": 23, "2026-11-01": 25}.get(day, 24)
        assert len(ids) == hours * 6, f"{day} should hold {hours} hours of sales"
    assert sorted(seen) == [f"S{i:04d}" for i in range(n)], "every sale in exactly one partition"


def test_malformed_rows_are_quarantined_with_reason_and_the_rest_staged(pos, sync_url):
    at = local(2026, 6, 10, 12)
    pos.add_customer("C1", phone="(303) 555-0142", email="ada@example.com")
    pos.add_sale("good-1", at, customer_id="C1")
    pos.add_sale("good-2", at + dt.timedelta(minutes=1))
    pos.add_sale("no-customer", at, customer_id="C-GONE")
    pos.add_sale("no-store", at, location_id="STORE-99")
    pos.add_sale("unknown-product", at, [("P404", "1", "10.00")])
    pos.add_sale("off-by-a-dollar", at, total_adjustment="1.00")
    pos.add_sale("bad-number", at)
    pos.execute("UPDATE transactions SET tax_total = 'abc' WHERE transaction_id = 'bad-number'")
    pos.add_sale("no-lines", at, [])
    store = SyncStore(sync_url, "America/Denver")

    report = store.stage_transactions(PosSource(pos.url), *window("2026-06-10"), run_id="r1")

    assert staged_ids(store) == ["good-1", "good-2"]
    assert (report.staged, report.quarantined) == (2, 6)
    reasons = {row["record_key"]: row["reason"] for row in store.quarantined("transaction")}
    assert "customer missing" in reasons["no-customer"]
    assert "store missing" in reasons["no-store"]
    assert "unknown product" in reasons["unknown-product"]
    assert "do not reconcile" in reasons["off-by-a-dollar"]
    assert reasons["bad-number"].startswith("invalid value: tax_total")
    assert "without lines" in reasons["no-lines"]
    assert all(row["business_date"] == dt.date(2026, 6, 10) for row in store.quarantined("transaction"))
    table = report.reasons_markdown()
    assert "| reason | records | example keys |" in table and "`off-by-a-dollar`" in table


def test_persona_reasons_carry_no_personal_data(pos, sync_url):
    pos.add_customer("C1", modified=local(2026, 6, 10, 9), phone="3035550142", email="ada@example.com",
                     birthday="1850-02-30")
    pos.add_customer("C2", modified=local(2026, 6, 10, 9), phone="3035550143", email="bob@example.com")
    store = SyncStore(sync_url, "America/Denver")

    report = store.stage_personas(PosSource(pos.url), *window("2026-06-10"), run_id="r1")

    assert (report.staged, report.quarantined) == (1, 1)
    [row] = store.quarantined("persona")
    assert row["record_key"] == "C1" and row["reason"].startswith("invalid value: birthday")
    shown = row["reason"] + report.reasons_markdown()
    for personal in ("3035550142", "ada@example.com", "1850"):
        assert personal not in shown
    assert "ada@example.com" in row["source"], "the raw row is kept in the sync database for the operator"


def test_rerun_replaces_the_window_and_a_fixed_row_leaves_quarantine(pos, sync_url):
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

    assert staged_ids(store) == ["B"], "the window's staging is replaced, deleted receipts go"
    assert store.quarantined("transaction") == [] and report.quarantined == 0
    with store.engine.connect() as conn:
        record = json.loads(conn.scalar(sa.select(staged_transactions.c.record)))
    assert record["transaction_id"] == "B" and len(record["lines"]) == 1


def changed_at(store: SyncStore, table: sa.Table = staged_transactions) -> dict[str, dt.datetime]:
    key = next(iter(table.primary_key.columns))
    with store.engine.connect() as conn:
        return {k: v for k, v in conn.execute(sa.select(key, table.c.changed_at))}


def test_a_restaged_record_keeps_its_change_time_unless_its_content_changed(pos, sync_url):
    pos.add_sale("same", local(2026, 6, 10, 12))
    pos.add_sale("edited", local(2026, 6, 10, 13))
    pos.add_customer("C1", modified=local(2026, 6, 10, 9))
    pos.add_customer("C2", modified=local(2026, 6, 10, 9))
    store, source = SyncStore(sync_url, "America/Denver"), PosSource(pos.url)
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    store.stage_transactions(source, *window("2026-06-10"), run_id="r1")
    store.stage_personas(source, *window("2026-06-10"), run_id="r1")
    first, first_personas = changed_at(store), changed_at(store, staged_personas)
    assert all(before <= moment <= dt.datetime.now(dt.UTC).replace(tzinfo=None) for moment in first.values())

    pos.execute("UPDATE transactions SET is_void = 1 WHERE transaction_id = 'edited'")
    pos.execute("UPDATE customers SET city = 'Boulder' WHERE customer_id = 'C2'")
    store.stage_transactions(source, *window("2026-06-10"), run_id="r2")
    store.stage_personas(source, *window("2026-06-10"), run_id="r2")
    second, second_personas = changed_at(store), changed_at(store, staged_personas)

    assert second["same"] == first["same"] and second_personas["C1"] == first_personas["C1"]
    assert second["edited"] > first["edited"] and second_personas["C2"] > first_personas["C2"]
    assert max(second.values()) <= dt.datetime.now(dt.UTC).replace(tzinfo=None)


def test_the_change_time_moves_when_only_the_payload_changes(sync_url):
    """A new mapping (a phone now known to be a placeholder) changes what the pull API serves without changing the POS
    record: the record's change time moves with its payload hash too, NULLs compared as equal."""
    store = SyncStore(sync_url, "America/Denver")

    def row(payload_digest: str | None, changed: dt.datetime) -> dict:
        return {"customer_id": "C1", "business_date": dt.date(2026, 6, 10), "last_modified_at": dt.datetime(2026, 6, 10),
                "record": "{}", "content_hash": "c" * 64, "payload": None, "payload_hash": payload_digest,
                "payload_issues": None, "payload_error": None, "run_id": "r1", "staged_at": changed,
                "changed_at": changed}

    stamps = []
    for payload_digest, changed in ((None, dt.datetime(2026, 7, 1)), (None, dt.datetime(2026, 7, 2)),
                                    ("p" * 64, dt.datetime(2026, 7, 3)), ("p" * 64, dt.datetime(2026, 7, 4))):
        with store.engine.begin() as conn:
            upsert(conn, staged_personas, [row(payload_digest, changed)], keep_unless=CHANGED_AT)
        stamps.append(changed_at(store, staged_personas)["C1"])

    assert stamps == [dt.datetime(2026, 7, 1), dt.datetime(2026, 7, 1), dt.datetime(2026, 7, 3),
                      dt.datetime(2026, 7, 3)]


def test_a_runs_check_counts_survive_another_run_restaging_the_same_days(pos, sync_url):
    pos.add_sale("in-day", local(2026, 6, 10, 12))
    store, source = SyncStore(sync_url, "America/Denver"), PosSource(pos.url)

    first = store.stage_transactions(source, *window("2026-06-10"), run_id="backfill")
    store.stage_transactions(source, *window("2026-06-10"), run_id="sensor")  # restages the row under its run id

    # Counted inside the first run's transaction; counting after commit found 0 of the run's keys and failed the
    # blocking unique_keys check of a run that did nothing wrong.
    assert (first.staged, first.keys_staged, first.outside_window) == (1, 1, 0)


def test_a_staging_table_of_an_older_layout_is_rebuilt_and_other_tables_kept(pos, sync_url):
    assert_an_older_staging_layout_is_rebuilt(pos, sync_url)


def test_a_staging_table_without_an_index_of_this_version_is_rebuilt(sync_url):
    assert_a_staging_table_without_an_index_is_rebuilt(sync_url)


def test_a_kept_table_of_an_older_version_gets_the_indexes_it_lacks(sync_url):
    assert_a_kept_table_gets_the_indexes_it_lacks(sync_url)


def test_statements_with_key_lists_run_as_sqlalchemy_runs_them(sync_url):
    assert_statements_with_key_lists_run_as_sqlalchemy_runs_them(sync_url)


def test_upsert_stores_every_type_and_replaces_by_key(sync_url):
    assert_upsert_stores_every_type_and_replaces_by_key(sync_url)


def test_upsert_writes_sqlite_dates_and_times_as_sqlalchemy_does(tmp_path):
    """The upsert's date and time conversion on SQLite stores the very text SQLAlchemy's would, for every kind of value
    a DateTime or Date column may be handed, so reads and comparisons in SQL are unchanged."""
    store = SyncStore(f"sqlite:///{tmp_path / 'sync.db'}", "America/Denver")
    moments = [dt.datetime(2026, 6, 9, 14, 0, 5, 120000), dt.datetime(2026, 6, 9, 14, 0, 5),
               dt.datetime(999, 1, 2, 3, 4, 5, 6), dt.datetime(2026, 6, 9, 14, 0, 5, 7, tzinfo=DENVER), dt.date(2026, 6, 9)]
    days = [dt.date(2026, 6, 9), dt.date(999, 1, 2), dt.date(2026, 6, 9), dt.date(2026, 6, 9), dt.date(2026, 6, 9)]
    rows = [{"transaction_id": f"T{n}", "business_date": day, "transaction_at": moment, "customer_id": None,
             "is_void": False, "last_modified_at": moment, "record": "{}", "content_hash": "c" * 64, "payload": None,
             "payload_hash": None, "payload_error": "why", "run_id": "r1", "staged_at": moment,
             "location_id": "STORE-01", "location_name": "Muffins Denver", "changed_at": moment}
            for n, (moment, day) in enumerate(zip(moments, days, strict=True))]
    with store.engine.begin() as conn:
        upsert(conn, staged_transactions, rows)
    sqlite_types = store.engine.dialect
    as_datetime = sa.DateTime().dialect_impl(sqlite_types).bind_processor(sqlite_types)
    as_date = sa.Date().dialect_impl(sqlite_types).bind_processor(sqlite_types)

    stored = sqlite3.connect(tmp_path / "sync.db").execute(
        "SELECT business_date, transaction_at, last_modified_at, staged_at FROM staged_transactions ORDER BY rowid"
    ).fetchall()

    assert stored == [(as_date(day), as_datetime(moment), as_datetime(moment), as_datetime(moment))
                      for moment, day in zip(moments, days, strict=True)]
    assert stored[0][:2] == ("2026-06-09", "2026-06-09 14:00:05.120000")


def test_extract_reads_its_window_in_chunks(pos, sync_url):
    for n in range(230):
        pos.add_sale(f"T{n:04d}", local(2026, 6, 10, 8) + dt.timedelta(minutes=n), [("P1", "1", "45.00"), ("P2", "2", "18.00")])
    source = PosSource(pos.url, chunk_size=40)
    options: list[dict] = []
    sa.event.listen(source.engine, "before_cursor_execute",
                    lambda conn, cursor, stmt, params, context, many: options.append(dict(context.execution_options)))
    store = SyncStore(sync_url, "America/Denver")
    sizes: list[int] = []

    report = store.stage_transactions(source, *window("2026-06-10"), run_id="r1", chunk_size=50,
                                      on_chunk=lambda r: sizes.append(r.staged))

    assert report.staged == 230 and report.chunks == 5
    assert sizes == [50, 100, 150, 200, 230], "records are written as they stream, 50 at a time"
    pos_reads = [o for o in options if "yield_per" in o]
    assert pos_reads and all(o["yield_per"] == 40 and o["stream_results"] for o in pos_reads)


def test_personas_are_those_modified_in_the_window(pos, sync_url):
    pos.add_customer("OLD", modified=local(2026, 6, 9, 23, 59))
    pos.add_customer("NEW", modified=local(2026, 6, 10, 0, 1))
    pos.add_customer("EDITED", modified=local(2026, 6, 10, 22, 0))
    store = SyncStore(sync_url, "America/Denver")

    report = store.stage_personas(PosSource(pos.url), *window("2026-06-10"), run_id="r1")

    with store.engine.connect() as conn:
        assert sorted(conn.scalars(sa.select(staged_personas.c.customer_id))) == ["EDITED", "NEW"]
    assert report.staged == 2


def test_the_stores_of_each_staged_shopper_are_looked_up_only_with_several_accounts(pos, sync_url):
    pos.add_location("STORE-02", "Muffins Boulder")
    pos.add_customer("REGULAR", modified=local(2026, 6, 10, 9))
    pos.add_customer("NEWCOMER", modified=local(2026, 6, 10, 9))
    pos.add_sale("years-ago", dt.datetime(2020, 1, 2, 18), customer_id="REGULAR")  # long before any partition
    pos.add_sale("next-week", local(2026, 6, 17, 12), customer_id="REGULAR", location_id="STORE-02", is_void=True)
    several = SyncStore(sync_url, "America/Denver", look_up_stores=True)

    several.stage_personas(PosSource(pos.url), *window("2026-06-10"), run_id="r1")

    with several.engine.connect() as conn:
        stores = sorted(conn.execute(sa.select(shopper_stores.c.customer_id, shopper_stores.c.location_id)))
    assert stores == [("NEWCOMER", NO_SALE), ("REGULAR", "STORE-01"), ("REGULAR", "STORE-02")], "the whole history"

    SyncStore(sync_url, "America/Denver").stage_personas(PosSource(pos.url), *window("2026-06-10"), run_id="r2")

    with several.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(shopper_stores)) == 0, "one account: would go stale"


def test_a_staged_persona_carries_its_payload_and_what_was_left_out(pos, sync_url):
    pos.add_customer("C1", phone="1234567890", email="Ada@Example.com", birthday="1985-05-16",
                     modified=local(2026, 6, 10, 8))
    store = SyncStore(sync_url, "America/Denver")

    store.stage_personas(PosSource(pos.url), *window("2026-06-10"), run_id="r1")

    columns = [staged_personas.c[name] for name in ("record", "payload", "payload_hash", "payload_issues",
                                                      "payload_error")]
    with store.engine.connect() as conn:
        record, payload, digest, issues, error = conn.execute(sa.select(*columns)).one()
    expected = mapping.member_payload(Persona.model_validate_json(record)).member
    assert bytes(payload) == expected.encoded and digest == payload_hash(expected) and error is None
    assert issues == "phone_placeholder", "the placeholder phone was left out, and the staging row says so"
    staged = PersonaPayload.staged(payload, digest, issues, error)
    assert staged.member() == expected and staged.issues == {"phone_placeholder"}
    assert staged.member().encoded is staged.encoded, "the push sends the staged bytes, the ones the ledger hashes"
    assert "ada@example.com" not in repr(staged).lower()


def test_custom_queries_read_a_pos_with_another_schema(tmp_path, sync_url):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE sales (id TEXT, shop TEXT, sold_at TEXT, amount REAL, changed TEXT)")
        conn.exec_driver_sql("CREATE TABLE sale_lines (sale_id TEXT, n INT, item TEXT, qty REAL, price REAL)")
        conn.exec_driver_sql("INSERT INTO sales VALUES ('X1', 'Main St', '2026-06-10 18:00:00', 10.0, '2026-06-10 18:00:00')")
        conn.exec_driver_sql("INSERT INTO sale_lines VALUES ('X1', 1, 'Gummies', 2, 5.0)")
    queries = tmp_path / "queries.yaml"
    queries.write_text(
        "transactions: |\n"
        "  SELECT s.id AS transaction_id, 'S1' AS location_id, s.shop AS location_name, 1 AS location_exists,\n"
        "         NULL AS customer_id, 0 AS customer_exists, s.sold_at AS transaction_at, s.amount AS subtotal,\n"
        "         s.amount AS total, s.changed AS last_modified_at, l.n AS line_line_number,\n"
        "         l.item AS line_product_id, 1 AS line_product_exists, l.item AS line_sku, l.item AS line_name,\n"
        "         l.qty AS line_quantity, l.price AS line_unit_price\n"
        "  FROM sales s JOIN sale_lines l ON l.sale_id = s.id\n"
        "  WHERE s.sold_at >= :window_start AND s.sold_at < :window_end\n"
        "  ORDER BY s.id, l.n\n"
    )
    store = SyncStore(sync_url, "America/Denver")

    report = store.stage_transactions(PosSource(url, queries_file=queries), *window("2026-06-10"), run_id="r1")

    assert (report.staged, report.quarantined) == (1, 0)
    assert staged_ids(store, "2026-06-10") == ["X1"]
    several_accounts = SyncStore(sync_url, "America/Denver", look_up_stores=True)
    with pytest.raises(PosQueryError, match="replaces the transactions query but gives no shopper_stores query"):
        several_accounts.stage_transactions(PosSource(url, queries_file=queries), *window("2026-06-10"), run_id="r2")
    with pytest.raises(PosQueryError, match="gives no shopper_stores query"):
        several_accounts.stage_personas(PosSource(url, queries_file=queries), *window("2026-06-10"), run_id="r2")


def test_custom_queries_are_checked(tmp_path, pos, sync_url):
    unwindowed = tmp_path / "unwindowed.yaml"
    unwindowed.write_text("personas: SELECT * FROM customers\n")
    with pytest.raises(PosQueryError, match=":window_start and :window_end"):
        PosSource(pos.url, queries_file=unwindowed)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("orders: SELECT 1\n")
    with pytest.raises(PosQueryError, match="unknown entities \\['orders'\\]"):
        PosSource(pos.url, queries_file=unknown)
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text("personas: SELECT customer_id FROM customers WHERE :window_start < :window_end\n")
    store = SyncStore(sync_url, "America/Denver")
    with pytest.raises(PosQueryError, match="does not return the columns \\['created_at', 'last_modified_at'\\]"):
        store.stage_personas(PosSource(pos.url, queries_file=narrow), *window("2026-06-10"), run_id="r1")


def test_unreadable_pos_fails_with_a_clear_error_and_keeps_staging(tmp_path, pos, sync_url):
    pos.add_sale("A", local(2026, 6, 10, 12))
    store = SyncStore(sync_url, "America/Denver")
    store.stage_transactions(PosSource(pos.url), *window("2026-06-10"), run_id="r1")
    pos.execute("ALTER TABLE transactions RENAME TO transactions_gone")

    with pytest.raises(PosQueryError, match=r"cannot read transactions from the POS database.*no such table"):
        store.stage_transactions(PosSource(pos.url), *window("2026-06-10"), run_id="r2")
    assert staged_ids(store) == ["A"], "a failed extract leaves the previous staging in place"


def test_a_sqlite_pos_is_read_without_being_changed(tmp_path, sync_url):
    path = tmp_path / "pos-in-rollback-mode.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE customers (customer_id TEXT, last_modified_at TIMESTAMP);"
                           "INSERT INTO customers VALUES ('C1', '2099-01-01 00:00:00');")
    source = PosSource(f"sqlite:///{path}")

    assert [key for key, _ in source.strays(Entity.PERSONA, local(2026, 1, 1), local(2026, 11, 27))] == ["C1"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",), "the POS's journal mode is its own"
    with pytest.raises(sa.exc.OperationalError, match="readonly"), source.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM customers")


def test_a_missing_sqlite_pos_is_an_error_not_a_new_empty_database(tmp_path, sync_url):
    missing = tmp_path / "not-mounted" / "pos.db"

    with pytest.raises(PosQueryError, match=r"cannot read transactions from the POS database.*unable to open"):
        SyncStore(sync_url, "America/Denver").stage_transactions(
            PosSource(f"sqlite:///{missing}"), *window("2026-06-10"), run_id="r1")
    assert not missing.parent.exists()


def test_demo_pos_stages_without_quarantine(demo_pos_url, sync_url):
    store = SyncStore(sync_url, "America/Denver")
    engine = sa.create_engine(demo_pos_url)
    start, end = window("2026-03-08")
    with engine.connect() as conn:
        expected = sorted(conn.scalars(sa.text(
            "SELECT transaction_id FROM transactions WHERE transaction_at >= :s AND transaction_at < :e"),
            {"s": f"{start.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}", "e": f"{end.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"}))

    report = store.stage_transactions(PosSource(demo_pos_url), start, end, run_id="r1")

    assert report.quarantined == 0
    assert staged_ids(store, "2026-03-08") == expected and len(expected) > 40


def test_the_documented_example_of_custom_queries_loads(tmp_path):
    section = (Path(__file__).resolve().parents[2] / "docs" / "custom-schema.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    queries = tmp_path / "queries.yaml"
    queries.write_text("".join(blocks))

    loaded = load_queries(queries)

    assert {"transactions", "personas", "stray_transactions", "stray_personas", "shopper_stores"} <= {
        entity for entity, query in loaded.items() if query.sql is not QUERIES[entity].sql
    }

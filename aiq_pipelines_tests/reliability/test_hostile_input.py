"""Hostile and broken POS input: every record is sent normalized or quarantined with its reason, and the counts add up.

The POS here is the reference schema without its constraints (no NOT NULL, no keys), as a POS of the user's own may
be, and SQLite stores whatever it is given: text in numeric columns, infinities, impossible dates, duplicate ids.
Each case below is one record, named by its key, with what must become of it.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
import yaml

from aiq_pipelines.pos.queries import PERSONAS_BY_ID_SQL, PERSONAS_SQL, TRANSACTIONS_SQL
from aiq_pipelines.sync.schema import quarantine, staged_transactions
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.pos_factory import PosFactory
from aiq_pipelines_tests.support.reliability import (
    aiq_resource,
    assert_aiq_holds,
    assert_ledger_true,
    expected_members,
    expected_sales,
    held_sales,
    run_sync,
    stock_week,
    sync_once,
)
from aiq_pipelines_tests.support.runs import checks, metadata

DAY = "2026-06-10"
AT = local(2026, 6, 10, 12)
GOOD_SALES = 500
GOOD_CUSTOMERS = 420
LOCK_HELD_SECONDS = 1.0
POS_TABLES = ("locations", "customers", "products", "inventory", "transactions", "transaction_items")


@dataclass(frozen=True)
class Case:
    """One hostile record: its kind, its key, and either the fields AIQ must hold or the reason it is quarantined."""

    kind: str
    key: str
    rows: dict[str, Any] = field(default_factory=dict)
    sent: dict[str, Any] | None = None
    quarantined: str | None = None


def loose_pos(path: Path) -> PosFactory:
    """The reference schema with every NOT NULL, key and foreign key dropped (column types, hence SQLite's
    conversions, stay), holding the factory's store and products plus an emoji-named store."""
    pos = PosFactory(f"sqlite:///{path}")
    with pos.engine.begin() as conn:
        for table in POS_TABLES:
            conn.exec_driver_sql(f"CREATE TABLE loose AS SELECT * FROM {table}")
            conn.exec_driver_sql(f"DROP TABLE {table}")
            conn.exec_driver_sql(f"ALTER TABLE loose RENAME TO {table}")
    pos.add_location("STORE-🌿", "Muffins 🌿 ‏دنفر‏")
    return pos


def receipt(pos: PosFactory, key: str, *, lines=(("P1", "1", "45.00"),), **columns: Any) -> None:
    """A receipt that reconciles (one 45.00 line, 15% tax) unless ``columns`` or ``lines`` say otherwise."""
    row = dict(transaction_id=key, location_id="STORE-01", customer_id=None, transaction_at=AT,
               subtotal="45.00", discount_total="0", tax_total="6.75", total="51.75", is_return=False, is_void=False,
               last_modified_at=AT)
    row.update(columns)
    pos.insert("transactions", **row)
    for number, (product, quantity, price) in enumerate(lines, start=1):
        pos.insert("transaction_items", transaction_id=row["transaction_id"], line_number=number, product_id=product,
                   quantity=quantity, unit_price=price, discount="0")


def customer(pos: PosFactory, key: str, **columns: Any) -> None:
    row = dict(customer_id=key, first_name="Ada", last_name="Lovelace", is_loyalty_member=False,
               created_at=dt.datetime(2025, 1, 1), last_modified_at=AT)
    pos.insert("customers", **{**row, **columns})


REFUND = dict(lines=(("P1", "-1", "45.00"),), subtotal="-45.00", tax_total="-6.75", total="-51.75")
SALE_CASES = [
    Case("null in a required column (total)", "t-null-total", dict(total=None), quarantined="total"),
    Case("null store", "t-null-store", dict(location_id=None), quarantined="store missing from the POS"),
    # Key "None" is a NULL id. Its lines cannot join a NULL id, so it is quarantined as a receipt without lines.
    Case("null receipt id", "None", dict(transaction_id=None), quarantined="receipt without lines"),
    Case("text in a numeric column", "t-text-total", dict(total="fifty-one"), quarantined="total"),
    Case("NaN total", "t-nan-total", dict(total="NaN"), quarantined="total: Input should be a finite number"),
    Case("infinite total", "t-inf-total", dict(total=float("inf")), quarantined="total: Input should be a finite number"),
    Case("negative total on a sale", "t-negative-total", dict(total="-51.75"), quarantined="do not reconcile"),
    Case("text quantity", "t-text-quantity", dict(lines=(("P1", "two", "45.00"),)), quarantined="lines.0.quantity"),
    Case("infinite unit price", "t-inf-price", dict(lines=(("P1", "1", float("inf")),)),
         quarantined="lines.0.unit_price: Input should be a finite number"),
    Case("impossible timestamp", "t-25-oclock", dict(transaction_at="2026-06-10 25:61:00"),
         quarantined="transaction_at"),
    Case("text in a boolean column", "t-void-maybe", dict(is_void="maybe"), quarantined="is_void"),
    Case("line for an unknown product", "t-unknown-product", dict(lines=(("NO-SUCH-PRODUCT", "1", "45.00"),)),
         quarantined="line for an unknown product"),
    Case("receipt without lines", "t-no-lines", dict(lines=()), quarantined="receipt without lines"),
    Case("sale pointing at a missing customer", "t-missing-customer", dict(customer_id="C-GONE"),
         quarantined="customer missing from the POS"),
    Case("duplicate receipt id", "t-duplicate", quarantined="duplicate line_number on the receipt"),
    Case("return pointing at an unknown sale", "t-return-of-nothing",
         dict(REFUND, is_return=True, return_of_transaction_id="NO-SUCH-SALE"),
         sent={"transaction_total": -51.75, "lines": [("SKU-1", 45.0, -1.0)]}),
    Case("refund not flagged as a return", "t-unflagged-refund", REFUND,
         sent={"transaction_total": -51.75, "lines": [("SKU-1", 45.0, -1.0)]}),
    Case("ISO timestamp with T and Z", "t-iso-timestamp", dict(transaction_at="2026-06-10T18:30:00Z"),
         sent={"transaction_date": "2026-06-10 18:30:00 +0000"}),
    Case("sale dated 1900 by a reset clock", "t-dated-1900", dict(transaction_at="1900-01-01 00:00:00"),
         quarantined="transaction_at is before POS_START_DATE although the record was modified since"),
    Case("sale dated in the future", "t-dated-2099", dict(transaction_at="2099-01-01 00:00:00"),
         quarantined="transaction_at is later than today"),
    Case("null sale timestamp", "t-null-at", dict(transaction_at=None), quarantined="transaction_at is missing"),
    Case("text in the sale timestamp", "t-at-tuesday", dict(transaction_at="last tuesday"),
         quarantined="transaction_at is missing or not a timestamp"),
    Case("last modified in the future", "t-modified-2099", dict(last_modified_at="2099-01-01 00:00:00"),
         sent={"transaction_total": 51.75}),
    Case("SQL in the receipt id", "x'); DROP TABLE transactions; --", {}, sent={"transaction_total": 51.75}),
    Case("emoji and right-to-left store name", "t-emoji-store", dict(location_id="STORE-🌿"),
         sent={"location": "Muffins 🌿 ‏دنفر‏"}),
]
PERSONA_CASES = [
    Case("null created_at", "p-null-created", dict(created_at=None), quarantined="created_at"),
    Case("null customer id", "None", dict(customer_id=None), quarantined="customer_id"),
    Case("null last modified", "p-null-modified", dict(last_modified_at=None), quarantined="last_modified_at is missing"),
    Case("modified in 2099", "p-modified-2099", dict(last_modified_at="2099-01-01 00:00:00"),
         quarantined="last_modified_at is later than today"),
    Case("duplicate customer id", "p-duplicate", quarantined="duplicate customer_id"),
    Case("10,000-character name", "p-long-name", dict(first_name="A" * 10_000), sent={"first_name": "A" * 255}),
    Case("emoji, right-to-left and bidi-override text", "p-unicode",
         dict(first_name="Zoë 🌿", last_name="مريم ‮evil"), sent={"first_name": "Zoë 🌿", "last_name": "مريم ‮evil"}),
    Case("SQL in a name", "p-sql", dict(last_name="Robert'); DROP TABLE customers; --"),
         sent={"last_name": "Robert'); DROP TABLE customers; --"}),
    Case("placeholder phone 0000000000", "p-phone-zeros", dict(phone="0000000000"), sent={"phone_number": None}),
    Case("placeholder phone 123-456-7890", "p-phone-1234", dict(phone="123-456-7890"), sent={"phone_number": None}),
    Case("too short a phone", "p-phone-short", dict(phone="555-01"), sent={"phone_number": None}),
    Case("words for a phone", "p-phone-words", dict(phone="call me maybe"), sent={"phone_number": None}),
    Case("foreign phone", "p-phone-uk", dict(phone="+44 20 7946 0958"), sent={"phone_number": None}),
    Case("formatted phone", "p-phone-formatted", dict(phone="+1 (720) 482-1234"), sent={"phone_number": "7204821234"}),
    Case("email without @", "p-email-no-at", dict(email="ada.example.com"), sent={"email": None}),
    Case("email padded and upper case", "p-email-shouting", dict(email="  ADA.L@EXAMPLE.COM "),
         sent={"email": "ada.l@example.com"}),
    Case("birthday in the future", "p-born-2090", dict(birthday="2090-01-01"), quarantined="birthday: must be between"),
    Case("impossible birthday", "p-born-feb-30", dict(birthday="1990-02-30"), quarantined="birthday"),
    Case("birthday before 1900", "p-born-1899", dict(birthday="1899-12-31"), quarantined="birthday: must be between"),
    Case("birthday in 1900", "p-born-1900", dict(birthday="1900-01-01"), sent={"birthday": "01/01/1900"}),
    Case("text in a date column", "p-born-tuesday", dict(birthday="last tuesday"), quarantined="birthday"),
    Case("text in the loyalty flag", "p-loyal-maybe", dict(is_loyalty_member="maybe"), quarantined="is_loyalty_member"),
    Case("undecodable bytes in a text column", "p-bytes", dict(first_name=b"\xff\xfe"), quarantined="first_name"),
    Case("whitespace-only names", "p-blank", dict(first_name="   ", last_name="\t"),
         sent={"first_name": None, "last_name": None}),
]


def plant(pos: PosFactory) -> None:
    """The hostile records among a day of ordinary sales and customers (enough to stay under the quarantine rate)."""
    for n in range(GOOD_CUSTOMERS):
        customer(pos, f"GC-{n:03d}", phone=f"303482{n:04d}", email=f"good.{n}@example.com")
    for n in range(GOOD_SALES):
        receipt(pos, f"G-{n:03d}", customer_id=f"GC-{n // 4:03d}" if n % 4 == 0 else None,
                transaction_at=AT + dt.timedelta(seconds=n))
    for case in SALE_CASES:
        receipt(pos, case.key, **case.rows)
    receipt(pos, "t-duplicate")
    receipt(pos, "t-duplicate", location_id="STORE-🌿")
    pos.insert("transaction_items", transaction_id="NO-SUCH-RECEIPT", line_number=1, product_id="P1", quantity=1,
               unit_price="45.00", discount="0")  # a line without a receipt: no record at all, so nothing to send
    for case in PERSONA_CASES:
        customer(pos, case.key, **case.rows)
    customer(pos, "p-duplicate")
    customer(pos, "p-duplicate", first_name="Grace")


def quarantined(sync_url: str) -> dict[tuple[str, str], str]:
    with sa.create_engine(sync_url).connect() as conn:
        rows = conn.execute(sa.select(quarantine.c.entity, quarantine.c.record_key, quarantine.c.reason)).all()
    return {(entity, str(key)): reason for entity, key, reason in rows}


def distinct_keys(pos_url: str, sql: str) -> int:
    with sa.create_engine(pos_url).connect() as conn:
        return conn.scalar(sa.text(f"SELECT COUNT(*) FROM (SELECT DISTINCT {sql})"))


def test_hostile_records_are_each_sent_normalized_or_quarantined_with_a_reason(tmp_path, sync_url, start_sandbox):
    pos = loose_pos(tmp_path / "pos.db")
    plant(pos)
    sandbox = start_sandbox()
    aiq = aiq_resource(sandbox.base_url, sandbox.uid, sync_url, batch_size_sales=100, batch_size_members=100)

    result = sync_once(pos.url, sync_url, aiq, DAY, DAY)

    assert result.success, "no record crashes the run"
    held, held_back = held_sales(sandbox), quarantined(sync_url)
    people = {member["pos_user"]: member for member in sandbox.state()["members"]}
    for entity, cases, aiq_holds in (("transaction", SALE_CASES, held), ("persona", PERSONA_CASES, people)):
        for case in cases:
            if case.quarantined:
                assert case.key not in aiq_holds, case.kind
                assert case.quarantined in held_back.get((entity, case.key), ""), (case.kind, held_back.get((entity, case.key)))
            else:
                assert (entity, case.key) not in held_back, (case.kind, held_back[(entity, case.key)])
                got = aiq_holds[case.key]
                assert {k: got.get(k) for k in case.sent} == case.sent, case.kind
    good_sales, good_customers = {f"G-{n:03d}" for n in range(GOOD_SALES)}, {f"GC-{n:03d}" for n in range(GOOD_CUSTOMERS)}
    assert set(held) == good_sales | {c.key for c in SALE_CASES if c.sent is not None}, "nothing else, no orphan line"
    assert set(people) == good_customers | {c.key for c in PERSONA_CASES if c.sent is not None}
    assert {k: held[k] for k in good_sales} == expected_sales(pos.url, DAY, DAY, ids=good_sales)
    with pos.engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) >= set(POS_TABLES), "SQL in the data stayed data"

    start, end = "2026-06-10 06:00:00", "2026-06-11 06:00:00"
    receipts = distinct_keys(pos.url, f"transaction_id FROM transactions WHERE transaction_at >= '{start}' "
                                      f"AND transaction_at < '{end}'")
    customers = distinct_keys(pos.url, f"customer_id FROM customers WHERE last_modified_at >= '{start}' "
                                       f"AND last_modified_at < '{end}'")
    for extract, rows, push, holds in (("pos_transactions", receipts, "aiq_sales", held),
                                       ("pos_personas", customers, "aiq_personas", people)):
        staged, pushed = metadata(result, extract), metadata(result, push)
        assert staged["extracted"] == staged["dagster/row_count"] + staged["quarantined"] == rows, extract
        assert pushed["staged"] == staged["dagster/row_count"] == pushed["sent"] == len(holds), push
    assert metadata(result, "aiq_personas")["left_out_text_truncated"] == 1
    strays = {"pos_transactions": 4, "pos_personas": 2}  # the cases dated where no partition reads them
    for extract, count in strays.items():
        assert metadata(result, extract)["outside_partitions"] == count, extract
    outcomes = checks(result)
    for extract in strays:
        assert not outcomes.pop(f"{extract}.none_outside_partitions"), "strays are reported as a warning"
    assert all(outcomes.values()), outcomes


def product(pos: PosFactory, key: str, *, stock: Any = 5, **columns: Any) -> None:
    """A product with ``stock`` on hand in the factory's store (no stock row when None)."""
    row = dict(product_id=key, sku=f"SKU-{key}", name="Gelato 3.5g", unit_price="45.00", unit_cost="20.00",
               is_saleable=True, is_archived=False, created_at=dt.datetime(2025, 1, 1),
               last_modified_at=dt.datetime(2025, 1, 1))
    row.update(columns)
    pos.insert("products", **row)
    if stock is not None:
        pos.insert("inventory", product_id=key, location_id="STORE-01", quantity_available=stock,
                   last_modified_at=dt.datetime(2025, 1, 1))


INVENTORY_CASES = [
    Case("null SKU", "i-null-sku", dict(sku=None), quarantined="sku"),
    Case("NaN price", "i-nan-price", dict(unit_price="NaN"), quarantined="unit_price"),
    Case("negative stock", "i-oversold", dict(stock=-3), sent={"quantity": "-3", "inStock": False}),
    Case("infinite THC", "i-inf-thc", dict(thc_percent=float("inf")), quarantined="thc"),
    Case("emoji and right-to-left name", "i-unicode", dict(name="Gelato 🍨 ‏جيلاتو‏"),
         sent={"name": "Gelato 🍨 ‏جيلاتو‏"}),
    Case("created in 1900", "i-created-1900", dict(created_at="1900-01-01 00:00:00"), sent={"dateAdded": None}),
    Case("modified in 2099", "i-modified-2099", dict(last_modified_at="2099-01-01 00:00:00"),
         sent={"dateUpdated": "4070908800"}),
]


def test_hostile_products_are_each_sent_normalized_or_quarantined_with_a_reason(tmp_path, sync_url, start_sandbox):
    pos = loose_pos(tmp_path / "pos.db")
    for n in range(200):
        product(pos, f"G-{n:03d}")
    for case in INVENTORY_CASES:
        product(pos, case.key, **case.rows)
    sandbox = start_sandbox()
    aiq = aiq_resource(sandbox.base_url, sandbox.uid, sync_url)

    result = sync_once(pos.url, sync_url, aiq, DAY, DAY, assets=["pos_inventory", "aiq_inventory"])

    assert result.success
    items, held_back = {i["productId"]: i for i in sandbox.state()["inventory"]}, quarantined(sync_url)
    for case in INVENTORY_CASES:
        if case.quarantined:
            assert case.key not in items, case.kind
            assert case.quarantined in held_back.get(("inventory", case.key), ""), (case.kind, held_back)
        else:
            assert ("inventory", case.key) not in held_back, (case.kind, held_back[("inventory", case.key)])
            assert {k: items[case.key].get(k) for k in case.sent} == case.sent, case.kind
    assert {f"G-{n:03d}" for n in range(200)} | {"P1", "P2"} <= set(items), "every ordinary product"
    extract, push = metadata(result, "pos_inventory"), metadata(result, "aiq_inventory")
    assert extract["extracted"] == extract["dagster/row_count"] + extract["quarantined"] == 2 + 200 + len(INVENTORY_CASES)
    assert push["sent"] + push["quarantined"] == push["staged"] == extract["dagster/row_count"]
    assert all(checks(result).values()), checks(result)


def test_a_pos_whose_queries_return_numbers_for_ids_and_phones_is_read_as_text(tmp_path, pos, sync_url, start_sandbox):
    """A POS with integer keys (PostgreSQL's serial ids, a custom query's CAST) is ordinary, not broken input."""
    pos.add_customer("1001", phone="3034821234", modified=AT)
    pos.add_sale("5001", AT, customer_id="1001")
    numbers = {"SELECT t.transaction_id,": "SELECT CAST(t.transaction_id AS INTEGER) AS transaction_id,",
               "t.customer_id, c.customer_type": "CAST(t.customer_id AS INTEGER) AS customer_id, c.customer_type",
               "SELECT customer_id,": "SELECT CAST(customer_id AS INTEGER) AS customer_id,",
               "email, phone,": "email, CAST(phone AS INTEGER) AS phone,"}
    queries = {"transactions": TRANSACTIONS_SQL, "personas": PERSONAS_SQL, "personas_by_id": PERSONAS_BY_ID_SQL}
    for entity, sql in queries.items():
        for text, number in numbers.items():
            sql = sql.replace(text, number)
        queries[entity] = sql
    queries_file = tmp_path / "queries.yaml"
    queries_file.write_text(yaml.safe_dump(queries))
    sandbox = start_sandbox()
    aiq = aiq_resource(sandbox.base_url, sandbox.uid, sync_url)

    result = sync_once(pos.url, sync_url, aiq, DAY, DAY, queries_file=queries_file)

    assert result.success and quarantined(sync_url) == {}
    assert held_sales(sandbox)["5001"]["pos_user"] == "1001"
    assert [(m["pos_user"], m["phone_number"]) for m in sandbox.state()["members"]] == [("1001", "3034821234")]


def staged_sale_ids(sync_url: str) -> list[str]:
    with sa.create_engine(sync_url).connect() as conn:
        return sorted(conn.scalars(sa.select(staged_transactions.c.transaction_id)))


def test_a_pos_gone_fails_the_run_saying_so_keeps_the_staging_and_the_next_run_completes(tmp_path, pos, sync_url,
                                                                                        start_sandbox):
    stock_week(pos, sales_per_day=3)
    sandbox = start_sandbox()
    aiq = aiq_resource(sandbox.base_url, sandbox.uid, sync_url)
    assert sync_once(pos.url, sync_url, aiq).success
    staged, requests = staged_sale_ids(sync_url), len(sandbox.requests())
    gone = tmp_path / "unmounted" / "pos.db"

    failed = sync_once(f"sqlite:///{gone}", sync_url, aiq)

    assert not failed.success
    [error] = [e.step_failure_data.error for e in failed.all_events
               if e.event_type == dg.DagsterEventType.STEP_FAILURE and e.step_key == "pos_transactions"]
    assert error.cause.message.startswith(
        f"aiq_pipelines.pos.queries.PosQueryError: cannot read transactions from the POS database (sqlite:///{gone})")
    assert staged_sale_ids(sync_url) == staged, "a failed extract replaces nothing"
    assert len(sandbox.requests()) == requests, "nothing was pushed"
    again = sync_once(pos.url, sync_url, aiq)
    assert again.success and metadata(again, "aiq_sales")["unchanged"] == len(staged)


def test_a_pos_locked_while_the_run_reads_it_is_waited_out(pos, sync_url, start_sandbox):
    shoppers = stock_week(pos, sales_per_day=5)
    sandbox = start_sandbox()
    aiq = aiq_resource(sandbox.base_url, sandbox.uid, sync_url)
    pos.engine.dispose()  # the factory's idle connections would keep the lock below from being taken
    locker = sqlite3.connect(pos.engine.url.database, isolation_level=None)
    locker.execute("PRAGMA locking_mode=EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")  # as a POS doing maintenance holds it: no reader gets in until it is done

    with dg.instance_for_test() as instance:
        outcome: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: outcome.update(result=run_sync(instance, pos.url, sync_url, aiq)))
        worker.start()
        deadline = time.monotonic() + 60
        while not (started := [e for r in instance.get_runs() for e in instance.all_logs(r.run_id)
                                if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"]):
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.05)
        time.sleep(LOCK_HELD_SECONDS)  # the POS stays locked a while after the run began reading it
        run_id = started[0].run_id
        finished = [e for e in instance.all_logs(run_id)
                    if e.dagster_event and e.dagster_event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE")]
        assert finished == [], "the extract was blocked by the lock"
        locker.execute("COMMIT")
        locker.close()
        worker.join(timeout=120)

    assert outcome["result"].success
    assert_aiq_holds(sandbox, expected_sales(pos.url), expected_members(shoppers))
    assert_ledger_true(sandbox, sync_url, aiq.account, complete=True)

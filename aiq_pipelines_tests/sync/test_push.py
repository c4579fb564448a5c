"""The push assets against the AIQ sandbox over loopback: exactly what changed, personas first, a true ledger."""

import datetime as dt
import gc
import os
import signal
import subprocess
import sys
import threading
import time

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.defs.resources import SyncDatabase
from aiq_pipelines.settings import load_settings
from aiq_pipelines.sync.push import CUSTOMER_NOT_STAGED, WAITING_FOR_PERSONA
from aiq_pipelines.sync.schema import aiq_ledger, quarantine, staged_personas, staged_sale_customers
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.runs import (
    CRASH_SCRIPT,
    checks,
    materializations,
    members_by_user,
    metadata,
    sales_by_id,
    sync,
)


def expected_sales(pos_url: str) -> dict[str, dict]:
    """What AIQ should hold, computed from the POS with plain SQL (independently of the mapping code)."""
    engine = sa.create_engine(pos_url)
    with engine.connect() as conn:
        sales = conn.execute(sa.text("""
            SELECT t.transaction_id, t.customer_id, c.customer_type, t.transaction_at, t.total, l.name
            FROM transactions t JOIN locations l USING (location_id) LEFT JOIN customers c USING (customer_id)
            WHERE t.transaction_at >= :s AND t.transaction_at < :e AND NOT t.is_void
              AND t.transaction_id != 'broken'"""), {"s": "2026-06-09 06:00:00", "e": "2026-06-12 06:00:00"}).all()
        lines = conn.execute(sa.text("""
            SELECT i.transaction_id, p.sku, i.unit_price, i.quantity FROM transaction_items i
            JOIN products p USING (product_id) ORDER BY i.transaction_id, i.line_number""")).all()
    expected = {}
    for tx_id, customer, customer_type, at, total, location in sales:
        visit = {"pos_id": tx_id, "sendNotification": 0, "location": location,
                 "transaction_date": dt.datetime.fromisoformat(at).strftime("%Y-%m-%d %H:%M:%S +0000"),
                 "transaction_total": float(total),
                 "lines": [(sku, float(price), float(qty)) for t, sku, price, qty in lines if t == tx_id]}
        if customer:
            visit["pos_user"] = customer
        if customer_type:
            visit["pos_type"] = customer_type
        expected[tx_id] = visit
    return expected


def test_a_three_day_backfill_delivers_exactly_the_valid_records(shop, sync_url, sandbox):
    result = sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11")

    assert result.success, result.all_events
    received = sales_by_id(sandbox)
    expected = expected_sales(shop.url)
    assert sorted(received) == sorted(expected) == sorted(
        ["first-second", "walk-in", "regular", "old-friend", "refund", "last-second"])
    for tx_id, want in expected.items():
        got = received[tx_id]
        lines = [(line["sku"], line["price"], line["quantity"]) for line in got["visit_details_attributes"]]
        assert lines == want.pop("lines"), tx_id
        assert {k: got.get(k) for k in want} == want, tx_id
        assert ("pos_user" in got) == ("pos_user" in want), "walk-ins carry no pos_user at all"
    assert received["refund"]["visit_details_attributes"][0]["quantity"] == -1
    members = members_by_user(sandbox)
    assert set(members) == {"C1", "C2", "C3"}, "C3 was modified long ago but a sale needs her"
    assert members["C1"]["phone_number"] == "3035550142" and members["C1"]["email"] == "ada@example.com"
    assert members["C1"]["birthday"] == "05/16/1985" and members["C1"]["loyalty"] is True
    assert "phone_number" not in members["C2"] and "email" not in members["C2"], "placeholders are never sent"
    assert members["C3"]["first_name"] == "Zoë"
    sales_meta, persona_meta = metadata(result, "aiq_sales"), metadata(result, "aiq_personas")
    assert (sales_meta["sent"], sales_meta["unchanged"], sales_meta["quarantined"]) == (6, 0, 0)
    assert sales_meta["voided_unsent"] == 1 and sales_meta["personas_sent_first"] == 0
    assert sales_meta["aiq_account"] == sandbox.uid
    # Every persona the push sent counts: C1 and C2 (staged for the days) and C3, whom a sale needed.
    assert persona_meta["sent"] == 3 and persona_meta["personas_for_sales_sent"] == 1, "C3 went with the personas"
    assert persona_meta["staged"] == persona_meta["sent"] + persona_meta["unchanged"] + persona_meta["quarantined"]
    assert persona_meta["aiq_requests"] == 1, "the staged personas and the one the sales need share a batch"
    assert sales_meta["aiq_requests"] == 1
    assert persona_meta["left_out_phone_placeholder"] == 1 and persona_meta["left_out_email_invalid"] == 1
    assert all(checks(result).values()), checks(result)


def test_each_sales_persona_arrives_before_the_sale(shop, sync_url, sandbox):
    sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11")

    seen_personas: set[str] = set()
    sales_requests = 0
    for request in sandbox.requests():
        if "createUpdateMember" in request["path"] and request["status"] == 200:
            seen_personas |= set(request["keys"])
        if "createUpdateSale" in request["path"]:
            sales_requests += 1
            for pos_id in request["keys"]:
                customer = expected_sales(shop.url)[pos_id].get("pos_user")
                assert customer is None or customer in seen_personas, f"{pos_id} arrived before {customer}"
    assert sales_requests == 1
    assert all(s["persona_known_at_arrival"] for s in sandbox.state()["sales"] if "pos_user" in s)


def test_sales_pushed_without_the_personas_step_still_send_their_personas_first(shop, sync_url, sandbox):
    result = sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11", assets=["pos_transactions", "aiq_sales"])

    assert result.success
    meta = metadata(result, "aiq_sales")
    assert (meta["personas_sent_first"], meta["sent"], meta["aiq_requests"]) == (3, 6, 2)
    assert set(members_by_user(sandbox)) == {"C1", "C2", "C3"}
    assert all(s["persona_known_at_arrival"] for s in sandbox.state()["sales"] if "pos_user" in s)


def test_a_persona_restaged_while_its_push_is_at_aiq_holds_back_the_sales(shop, sync_url, sandbox_factory):
    # aiq_personas and aiq_sales push in one step; the personas' blocking `delivered` check must still stop the sales,
    # as it stopped a separate downstream step. AIQ holds each answer 2 s; meanwhile an extract re-stages C1.
    sandbox, days = sandbox_factory(fault_slow=1.0, slow_seconds=2), ("2026-06-09", "2026-06-11")
    sync(shop.url, sync_url, sandbox, *days, assets=["pos_transactions", "pos_personas"])
    runs: list[dg.ExecuteInProcessResult] = []
    pushing = threading.Thread(target=lambda: runs.append(sync(shop.url, sync_url, sandbox, *days)))
    pushing.start()
    deadline = time.monotonic() + 30
    while not any("createUpdateMembers" in r["path"] and r["status"] == 200 for r in sandbox.requests()):
        assert time.monotonic() < deadline, "the personas never reached AIQ"
        time.sleep(0.01)
    with sa.create_engine(sync_url).begin() as conn:
        conn.execute(staged_personas.update().where(staged_personas.c.customer_id == "C1").values(content_hash="new"))
    pushing.join(timeout=60)

    [result] = runs
    assert not result.success and not checks(result)["aiq_personas.delivered"]
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "aiq_push"
    assert "blocking asset check failed" in failure.step_failure_data.error.message
    assert "aiq_personas: delivered" in failure.step_failure_data.error.message
    assert materializations(result, "aiq_personas") and not materializations(result, "aiq_sales")
    assert not any("createUpdateSales" in r["path"] for r in sandbox.requests()), "no sale went out"

    again = sync(shop.url, sync_url, sandbox, *days)
    assert again.success and all(checks(again).values())
    assert set(sales_by_id(sandbox)) == set(expected_sales(shop.url))


def test_the_push_sends_the_sales_customers_as_the_extract_staged_them_without_reading_the_pos(
        shop, sync_url, sandbox, tmp_path):
    extract = sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11", assets=["pos_transactions", "pos_personas"])
    assert metadata(extract, "pos_transactions")["sale_customers_staged"] == 3, "C1, C2, C3: the void needs none"
    # After the extract, C3 changes without a new modification time: the push must send what was staged.
    shop.execute("UPDATE customers SET first_name = 'Changed' WHERE customer_id = 'C3'")
    gone = f"sqlite:///{tmp_path / 'unmounted' / 'pos.db'}"  # and the POS is out of reach

    result = sync(gone, sync_url, sandbox, "2026-06-09", "2026-06-11", assets=["aiq_personas", "aiq_sales"])

    assert result.success, result.all_events
    assert metadata(result, "aiq_personas")["personas_for_sales_sent"] == 1
    assert members_by_user(sandbox)["C3"]["first_name"] == "Zoë", "as staged, not as the POS holds it now"
    assert sales_by_id(sandbox)["old-friend"]["pos_user"] == "C3"
    assert all(s["persona_known_at_arrival"] for s in sandbox.state()["sales"] if "pos_user" in s)
    assert all(checks(result).values()), checks(result)


def test_a_sales_customer_that_cannot_be_staged_holds_its_sales_until_the_pos_is_fixed(shop, sync_url, sandbox):
    shop.add_customer("C4", birthday="1990-02-30", modified=dt.datetime(2025, 1, 1))  # a sale needs her
    shop.add_sale("impossible-birthday", local(2026, 6, 10, 17), customer_id="C4")

    result = sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11")

    assert result.success, result.all_events
    assert metadata(result, "pos_transactions")["sale_customers_without_payload"] == 1
    held = {(row["entity"], row["record_key"]): (row["stage"], row["reason"]) for row in quarantined_rows(sync_url)}
    assert held[("persona", "C4")][0] == "payload" and "birthday" in held[("persona", "C4")][1]
    assert held[("transaction", "impossible-birthday")] == ("payload", WAITING_FOR_PERSONA)
    assert "C4" not in members_by_user(sandbox) and "impossible-birthday" not in sales_by_id(sandbox)
    assert metadata(result, "aiq_personas")["personas_for_sales_quarantined"] == 1

    shop.execute("UPDATE customers SET birthday = '1990-02-28' WHERE customer_id = 'C4'")  # no new modification time
    fixed = sync(shop.url, sync_url, sandbox, "2026-06-10", "2026-06-10")

    assert fixed.success
    assert [row["record_key"] for row in quarantined_rows(sync_url)] == ["broken"], "the day's extract read C4 again"
    assert members_by_user(sandbox)["C4"]["birthday"] == "02/28/1990"
    assert sales_by_id(sandbox)["impossible-birthday"]["pos_user"] == "C4"


def test_a_sale_whose_customer_no_extract_staged_waits_and_says_to_extract_again(shop, sync_url, sandbox):
    # As after an upgrade: sales staged by a version that did not stage their customers.
    sync(shop.url, sync_url, sandbox, "2026-06-10", "2026-06-10", assets=["pos_transactions"])
    with sa.create_engine(sync_url).begin() as conn:
        conn.execute(staged_sale_customers.delete())

    result = sync(shop.url, sync_url, sandbox, "2026-06-10", "2026-06-10", assets=["aiq_sales"])

    held = {(row["entity"], row["record_key"]): (row["stage"], row["reason"]) for row in quarantined_rows(sync_url)}
    assert held == {("persona", "C2"): ("payload", CUSTOMER_NOT_STAGED),
                    ("persona", "C3"): ("payload", CUSTOMER_NOT_STAGED),
                    ("transaction", "regular"): ("payload", WAITING_FOR_PERSONA),
                    ("transaction", "old-friend"): ("payload", WAITING_FOR_PERSONA)}
    assert sandbox.state()["sales"] == [] and checks(result)["aiq_sales.delivered"]
    again = sync(shop.url, sync_url, sandbox, "2026-06-10", "2026-06-10", assets=["pos_transactions", "aiq_sales"])
    assert again.success and set(sales_by_id(sandbox)) == {"regular", "old-friend"}
    assert quarantined_rows(sync_url) == []


def quarantined_rows(sync_url: str) -> list[dict]:
    with sa.create_engine(sync_url).connect() as conn:
        return [dict(row) for row in conn.execute(sa.select(quarantine)).mappings()]


def test_a_second_run_sends_nothing(shop, sync_url, sandbox):
    sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11")
    before = len(sandbox.requests())

    again = sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11")

    assert again.success and len(sandbox.requests()) == before
    for asset in ("aiq_personas", "aiq_sales"):
        meta = metadata(again, asset)
        assert (meta["sent"], meta["aiq_requests"]) == (0, 0)
        assert meta["unchanged"] + meta.get("voided_unsent", 0) == meta["staged"] > 0
    assert all(checks(again).values())


def statements_of_a_sync(shop, sync_url: str, sandbox) -> tuple[sa.Engine, list[tuple[str, object]]]:
    """The sync database's engine and every statement (with its parameters) a sync of three days ran on it."""
    statements: list[tuple[str, object]] = []
    engine = SyncDatabase.from_settings(load_settings(), url=sync_url).store().engine
    record = lambda conn, cursor, statement, parameters, context, many: statements.append((statement, parameters))  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        assert sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11").success
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return engine, statements


def query_plan(conn: sa.Connection, statement: str, parameters: object) -> str:
    """SQLite's plan for a statement, its steps joined with " | "."""
    return " | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))


def test_the_push_streams_staged_sales_and_personas_without_sorting_them_first(shop, sync_url, sandbox):
    # A sort of the wide staged rows (payloads included) must finish before the first row comes back: at 100k sales
    # that held the first request back by half a second. The push reads them in an index's order instead.
    engine, statements = statements_of_a_sync(shop, sync_url, sandbox)

    streams = [(statement, parameters) for statement, parameters in statements
               if "payload_hash" in statement and statement.lstrip().upper().startswith("SELECT")]
    read_tables = {table for table in ("staged_transactions", "staged_personas")
                   if any(f"FROM {table}" in statement for statement, _ in streams)}
    assert read_tables == {"staged_transactions", "staged_personas"}
    with engine.connect() as conn:
        for statement, parameters in streams:
            plan = query_plan(conn, statement, parameters)
            assert "TEMP B-TREE" not in plan, f"{plan}\n{statement}"


def test_the_delivered_check_and_the_push_find_quarantined_records_by_key(shop, sync_url, sandbox):
    # With only the (entity, stage, business_date) index, every staged sale scanned every quarantined one: the
    # delivered check of 100k sales took 63 s beside 4,000 quarantined sales. And the check reads the staged records'
    # keys and hashes from an index, not the wide rows with their payloads.
    engine, statements = statements_of_a_sync(shop, sync_url, sandbox)

    by_key = [(statement, parameters) for statement, parameters in statements
              if "quarantine.record_key" in statement and "FROM quarantine" in statement]
    kinds = {kind for kind in ("SELECT count", "DELETE", "SELECT quarantine.record_key")
             if any(statement.lstrip().startswith(kind) for statement, _ in by_key)}
    assert kinds == {"SELECT count", "DELETE", "SELECT quarantine.record_key"}, "the delivered check, clear, refusals"
    with engine.connect() as conn:
        for statement, parameters in by_key:
            plan = query_plan(conn, statement, parameters)
            assert "quarantine USING INDEX quarantine_key (entity=? AND record_key=?" in plan, f"{plan}\n{statement}"
            if statement.lstrip().startswith("SELECT count"):
                assert "staged_transactions USING COVERING INDEX" in plan or \
                    "staged_personas USING COVERING INDEX" in plan, f"the delivered check reads no wide row: {plan}"


def test_old_objects_sit_out_full_garbage_collections_in_extracts_and_pushes_only(shop, sync_url, sandbox):
    # A full collection over Dagster's and SQLAlchemy's objects stopped the senders for 0.15 s at a time, and took
    # 0.86 s of the 100k extract.
    frozen_while: dict[str, set[bool]] = {}
    between: list[bool] = []
    engine = SyncDatabase.from_settings(load_settings(), url=sync_url).store().engine

    def record(conn, cursor, statement, parameters, context, many):
        table = "aiq_ledger" if "INTO aiq_ledger" in statement else "staged" if "INTO staged_" in statement else None
        if table:
            frozen_while.setdefault(table, set()).add(gc.get_freeze_count() > 0)
        elif "JOIN aiq_ledger AS ledger" in statement or "business_date IS NULL" in statement:
            between.append(gc.get_freeze_count() > 0)  # the delivered check, the strays' quarantine: neither

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        assert sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11").success
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)

    assert frozen_while == {"staged": {True}, "aiq_ledger": {True}}, "frozen while extracting and while pushing"
    assert len(between) >= 4 and not any(between), "not in between (the strays of two extracts, two delivered checks)"
    assert gc.get_freeze_count() == 0, "and unfrozen once the push is done"


def test_a_changed_phone_arrives_as_an_override_on_the_right_contact(shop, sync_url, sandbox):
    sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11")
    contact = members_by_user(sandbox)["C1"]["contactID"]
    since = sandbox.requests()[-1]["id"]
    shop.execute("UPDATE customers SET phone = '720-555-0199', last_modified_at = :m WHERE customer_id = 'C1'",
                 m="2026-06-11 18:00:00")

    result = sync(shop.url, sync_url, sandbox, "2026-06-11", "2026-06-11")

    new = sandbox.requests(since_id=since)
    assert [r["path"] for r in new] == [f"/api/v2/loyaltyContact/override/{sandbox.uid}/{contact}"]
    assert members_by_user(sandbox)["C1"]["phone_number"] == "7205550199"
    assert metadata(result, "aiq_personas")["overrides"] == 1
    assert sync(shop.url, sync_url, sandbox, "2026-06-11", "2026-06-11").success
    assert sandbox.requests(since_id=new[-1]["id"]) == [], "the ledger remembers the new phone"


def test_a_changed_line_item_resends_only_that_sale(shop, sync_url, sandbox):
    sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11")
    since = sandbox.requests()[-1]["id"]
    shop.execute("UPDATE transaction_items SET quantity = 3 WHERE transaction_id = 'regular' AND line_number = 2")
    shop.execute("UPDATE transactions SET subtotal = 99, tax_total = 14.85, total = 113.85, last_modified_at = :m "
                 "WHERE transaction_id = 'regular'", m="2026-06-11 20:00:00")

    sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11")

    new = sandbox.requests(since_id=since)
    assert [(r["path"].split("/")[3], r["keys"]) for r in new] == [("createUpdateSales", ["regular"])]
    assert sales_by_id(sandbox)["regular"]["transaction_total"] == 113.85


def test_a_sale_voided_after_it_was_sent_stops_counting(shop, sync_url, sandbox):
    sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11")
    shop.execute("UPDATE transactions SET is_void = 1, last_modified_at = :m WHERE transaction_id = 'regular'",
                 m="2026-06-11 20:00:00")

    result = sync(shop.url, sync_url, sandbox, "2026-06-10", "2026-06-10")

    voided = sales_by_id(sandbox)["regular"]
    assert voided["transaction_total"] == 0
    assert [line["quantity"] for line in voided["visit_details_attributes"]] == [0, 0]
    assert [line["sku"] for line in voided["visit_details_attributes"]] == ["SKU-1", "SKU-2"]
    assert metadata(result, "aiq_sales")["sent"] == 1 and all(checks(result).values())


def test_a_refused_record_is_quarantined_and_the_rest_of_its_batch_delivered(shop, sync_url, sandbox_factory):
    sandbox = sandbox_factory(refuse_keys="regular", per_second=1000, per_minute=60000, per_hour=1000000)

    result = sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11")

    assert set(sales_by_id(sandbox)) == {"first-second", "walk-in", "old-friend", "refund", "last-second"}
    meta = metadata(result, "aiq_sales")
    assert (meta["sent"], meta["quarantined"]) == (5, 1)
    assert "refused by AIQ" in meta["quarantine_reasons"] and "`regular`" in meta["quarantine_reasons"]
    assert checks(result)["aiq_sales.delivered"] and not checks(result)["aiq_sales.quarantine_not_growing"]
    engine = sa.create_engine(sync_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(quarantine.c.record_key, quarantine.c.stage).where(quarantine.c.stage == "aiq")).all()
    assert rows == [("regular", "aiq")]
    since = sandbox.requests()[-1]["id"]
    sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11")
    assert sandbox.requests(since_id=since) == [], "an unchanged refused record is not re-sent"


def test_a_sale_whose_payload_cannot_be_built_is_quarantined_with_its_reason_not_sent(shop, sync_url, sandbox):
    # 5e13 is a valid POS amount, but a JSON float cannot carry it to the cent (past float range it would be null).
    shop.add_product("P-HUGE", sku="SKU-HUGE", name="Typo in the price", unit_price="50000000000000.00")
    shop.add_sale("huge", local(2026, 6, 10, 17), [("P-HUGE", "1", "50000000000000.00")], customer_id="C1")

    result = sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-11")

    assert "huge" not in sales_by_id(sandbox) and "regular" in sales_by_id(sandbox)
    with sa.create_engine(sync_url).connect() as conn:
        stage, reason = conn.execute(sa.select(quarantine.c.stage, quarantine.c.reason).where(
            quarantine.c.record_key == "huge")).one()
    assert stage == "payload"
    assert reason.startswith("payload invalid for AIQ: transaction_total, ")
    assert "visit_details_attributes.0.price" in reason
    assert metadata(result, "aiq_sales")["quarantined"] >= 1


def test_inventory_is_sent_once_per_product_and_only_when_it_changes(shop, sync_url, sandbox):
    shop.insert("inventory", product_id="P1", location_id="STORE-01", quantity_available=12,
                last_modified_at=dt.datetime(2026, 6, 1))
    first = sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-09", assets=["pos_inventory", "aiq_inventory"])
    items = {item["productId"]: item for item in sandbox.state()["inventory"]}
    assert set(items) == {"P1", "P2", "P3"} and items["P1"]["quantity"] == "12"
    assert metadata(first, "aiq_inventory")["aiq_requests"] == 1

    shop.execute("UPDATE inventory SET quantity_available = 7 WHERE product_id = 'P1'")
    second = sync(shop.url, sync_url, sandbox, "2026-06-09", "2026-06-09", assets=["pos_inventory", "aiq_inventory"])

    meta = metadata(second, "aiq_inventory")
    assert (meta["sent"], meta["unchanged"]) == (1, 2)
    assert {i["productId"]: i for i in sandbox.state()["inventory"]}["P1"]["quantity"] == "7"


def test_killing_the_run_mid_send_and_rerunning_ends_with_aiq_and_ledger_agreeing(pos, sync_url, sandbox_factory, tmp_path):
    for day in range(1, 8):
        for n in range(12):
            customer = f"K{day}{n:02d}"
            pos.add_customer(customer, phone=f"303482{day}{n:03d}", modified=local(2026, 6, day, 7))
            pos.add_sale(f"S{day}-{n:02d}", local(2026, 6, day, 9 + n % 10, n), customer_id=customer)
    sandbox = sandbox_factory(per_second=1000, per_minute=60000, per_hour=1000000, fault_slow=0.3, slow_seconds=0.3)
    script = tmp_path / "crash_run.py"
    script.write_text(CRASH_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen([sys.executable, str(script), pos.url, sync_url, sandbox.base_url, sandbox.api_key,
                                sandbox.uid], env=env, start_new_session=True)
    deadline = dt.datetime.now() + dt.timedelta(seconds=120)
    while not any("createUpdateSales" in r["path"] for r in sandbox.requests()):  # kill it once sales are flowing
        assert process.poll() is None and dt.datetime.now() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)  # poll interval
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert len(sales_by_id(sandbox)) < 84, "the kill came mid-send"

    result = sync(pos.url, sync_url, sandbox.restart(fault_slow=0.0), "2026-06-01", "2026-06-07")

    assert result.success
    held = sales_by_id(sandbox)
    assert sorted(held) == sorted(f"S{d}-{n:02d}" for d in range(1, 8) for n in range(12))
    assert all(s["persona_known_at_arrival"] for s in held.values())
    with sa.create_engine(sync_url).connect() as conn:
        ledger = conn.execute(sa.select(aiq_ledger.c.entity, aiq_ledger.c.record_key)).all()
    assert sorted(k for e, k in ledger if e == "transaction") == sorted(held)
    assert sorted(k for e, k in ledger if e == "persona") == sorted(members_by_user(sandbox))
    assert all(r["status"] in (200,) for r in sandbox.requests() if r["fault"] is None), "nothing was refused"


@pytest.mark.slow
def test_a_31_day_single_run_backfill_from_the_cli(tmp_path, sandbox):
    pos_url = f"sqlite:///{tmp_path / 'pos.db'}"
    sync_url = f"sqlite:///{tmp_path / 'sync.db'}"
    subprocess.run([sys.executable, "-m", "aiq_pipelines.cli", "demo-data", "--database-url", pos_url, "--days", "31",
                    "--stores", "1", "--min-sales", "5", "--max-sales", "8", "--end-date", "2026-05-31"],
                   check=True, capture_output=True)
    (tmp_path / "home").mkdir()
    env = {**os.environ, "POS_DATABASE_URL": pos_url, "SYNC_DATABASE_URL": sync_url, "DAGSTER_HOME": str(tmp_path / "home"),
           "AIQ_BASE_URL": sandbox.base_url, "AIQ_API_KEY": sandbox.api_key, "AIQ_UID": sandbox.uid,
           "AIQ_REQUESTS_PER_SECOND": "1000", "AIQ_REQUESTS_PER_MINUTE": "60000", "AIQ_REQUESTS_PER_HOUR": "1000000"}
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "dagster"), "asset", "materialize", "-m",
         "aiq_pipelines.definitions", "--select", "pos_transactions,pos_personas,aiq_personas,aiq_sales",
         "--partition-range", "2026-05-01...2026-05-31"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with sa.create_engine(pos_url).connect() as conn:
        valid = conn.exec_driver_sql("SELECT transaction_id FROM transactions WHERE NOT is_void").scalars().all()
    assert sorted(sales_by_id(sandbox)) == sorted(valid)

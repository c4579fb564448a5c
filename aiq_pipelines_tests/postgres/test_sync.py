"""The sync database on PostgreSQL: a backfill against the sandbox, a re-run that sends nothing, a kill mid-send."""

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.sync.schema import aiq_ledger, quarantine
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.runs import (
    CRASH_SCRIPT,
    checks,
    members_by_user,
    metadata,
    sales_by_id,
    sync,
)

VALID_SALES = ["first-second", "walk-in", "regular", "old-friend", "refund", "last-second"]


def build_shop(pos) -> None:
    """Three business days (June 9-11, 2026) with the cases that matter, plus sales just outside them."""
    pos.add_product("P3", sku="SKU-3", name="Bulk OG (per gram)", unit_price="10.00", unit_cost="4.00", strain="OG Kush")
    pos.add_customer("C1", phone="(303) 555-0142", email="Ada@Example.com", is_loyalty_member=True,
                     customer_type="Medical", birthday="1985-05-16", modified=local(2026, 6, 9, 8))
    pos.add_customer("C2", phone="1234567890", email="not-an-email", modified=local(2026, 6, 10, 8))
    pos.add_customer("C3", first_name="Zoë", phone="+1 720 482 1234", modified=dt.datetime(2025, 1, 1))
    pos.add_sale("first-second", local(2026, 6, 9, 0, 0, 0), customer_id="C1")
    pos.add_sale("walk-in", local(2026, 6, 9, 12), [("P3", "2.5", "10.00")])
    pos.add_sale("regular", local(2026, 6, 10, 15), [("P1", "1", "45.00"), ("P2", "2", "18.00")], customer_id="C2")
    pos.add_sale("old-friend", local(2026, 6, 10, 16), customer_id="C3")
    pos.add_sale("refund", local(2026, 6, 11, 10), [("P1", "-1", "45.00")], customer_id="C1", is_return=True,
                 return_of_transaction_id="first-second")
    pos.add_sale("voided-early", local(2026, 6, 11, 11), customer_id="C2", is_void=True)
    pos.add_sale("broken", local(2026, 6, 11, 12), customer_id="C1", total_adjustment="3.00")
    pos.add_sale("last-second", local(2026, 6, 11, 23, 59, 59), customer_id="C1")
    pos.add_sale("day-before", local(2026, 6, 8, 23, 59, 59), customer_id="C1")
    pos.add_sale("day-after", local(2026, 6, 12, 0, 0, 0), customer_id="C1")


def ledger_keys(sync_url: str, entity: str) -> list[str]:
    with engine_for(sync_url).connect() as conn:
        return sorted(conn.scalars(sa.select(aiq_ledger.c.record_key).where(aiq_ledger.c.entity == entity)))


def test_a_backfill_on_postgresql_delivers_the_valid_records_and_a_rerun_sends_nothing(pos, sync_url, sandbox):
    build_shop(pos)

    result = sync(pos.url, sync_url, sandbox, "2026-06-09", "2026-06-11")

    assert result.success, result.all_events
    received = sales_by_id(sandbox)
    assert sorted(received) == sorted(VALID_SALES)
    assert received["walk-in"]["visit_details_attributes"][0]["quantity"] == 2.5
    assert received["refund"]["visit_details_attributes"][0]["quantity"] == -1
    assert received["regular"]["transaction_total"] == 93.15
    assert received["first-second"]["transaction_date"] == "2026-06-09 06:00:00 +0000"
    assert all(s["persona_known_at_arrival"] for s in received.values() if "pos_user" in s)
    members = members_by_user(sandbox)
    assert set(members) == {"C1", "C2", "C3"}
    assert members["C1"]["birthday"] == "05/16/1985" and members["C1"]["loyalty"] is True
    assert "phone_number" not in members["C2"], "placeholders are never sent"
    assert ledger_keys(sync_url, "transaction") == sorted(VALID_SALES)
    assert ledger_keys(sync_url, "persona") == ["C1", "C2", "C3"]
    with engine_for(sync_url).connect() as conn:
        quarantined = conn.execute(sa.select(quarantine.c.record_key, quarantine.c.stage)).all()
    assert quarantined == [("broken", "extract")]
    sales_meta = metadata(result, "aiq_sales")
    assert (sales_meta["sent"], sales_meta["voided_unsent"], sales_meta["personas_sent_first"]) == (6, 1, 0)
    assert metadata(result, "aiq_personas")["personas_for_sales_sent"] == 1, "C3 went out with the personas"
    assert all(checks(result).values()), checks(result)
    before = len(sandbox.requests())

    again = sync(pos.url, sync_url, sandbox, "2026-06-09", "2026-06-11")

    assert again.success and len(sandbox.requests()) == before, "an unchanged window costs no request"
    for asset in ("aiq_personas", "aiq_sales"):
        meta = metadata(again, asset)
        assert (meta["sent"], meta["aiq_requests"]) == (0, 0)
        assert meta["unchanged"] + meta.get("voided_unsent", 0) == meta["staged"] > 0
    assert all(checks(again).values())


def test_killing_the_run_mid_send_and_rerunning_ends_with_aiq_and_ledger_agreeing(pos, sync_url, sandbox_factory,
                                                                                    tmp_path):
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
    deadline = time.monotonic() + 120
    while not any("createUpdateSales" in r["path"] for r in sandbox.requests()):  # kill it once sales are flowing
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)  # poll interval
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert len(sales_by_id(sandbox)) < 84, "the kill came mid-send"
    assert len(ledger_keys(sync_url, "transaction")) <= len(sales_by_id(sandbox)), "the ledger never runs ahead of AIQ"

    result = sync(pos.url, sync_url, sandbox.restart(fault_slow=0.0), "2026-06-01", "2026-06-07")

    assert result.success
    held = sales_by_id(sandbox)
    assert sorted(held) == sorted(f"S{d}-{n:02d}" for d in range(1, 8) for n in range(12))
    assert all(s["persona_known_at_arrival"] for s in held.values())
    assert ledger_keys(sync_url, "transaction") == sorted(held)
    assert ledger_keys(sync_url, "persona") == sorted(members_by_user(sandbox))
    assert all(r["status"] == 200 for r in sandbox.requests() if r["fault"] is None), "nothing was refused"

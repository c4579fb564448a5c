"""The demo dispensary: deterministic, realistic, and refusing to overwrite a POS by accident."""

import datetime as dt
import re
import subprocess
import sys
import zoneinfo
from collections import Counter

import pytest
import sqlalchemy as sa

from aiq_pipelines.pos import demo
from aiq_pipelines.settings import read_accounts_file
from aiq_pipelines_tests.conftest import DEMO_OPTIONS

NOW = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)


def rows(url: str, sql: str) -> list[tuple]:
    with sa.create_engine(url).connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql)]


def test_same_seed_same_data_other_seed_other_data(tmp_path, demo_pos_url):
    again = f"sqlite:///{tmp_path / 'again.db'}"
    other = f"sqlite:///{tmp_path / 'other.db'}"
    demo.generate(again, DEMO_OPTIONS, now=NOW)
    demo.generate(other, demo.DemoOptions(**{**DEMO_OPTIONS.__dict__, "seed": 8}), now=NOW)
    for table in ["customers", "products", "inventory", "transactions", "transaction_items"]:
        assert rows(again, f"SELECT * FROM {table} ORDER BY 1, 2") == rows(demo_pos_url, f"SELECT * FROM {table} ORDER BY 1, 2")
    assert rows(other, "SELECT * FROM transactions ORDER BY 1") != rows(demo_pos_url, "SELECT * FROM transactions ORDER BY 1")


def test_sales_follow_the_volume_and_shape_asked_for(demo_pos_url):
    tz = zoneinfo.ZoneInfo("America/Denver")
    sales = rows(demo_pos_url, "SELECT transaction_id, location_id, transaction_at, customer_id, is_return, is_void "
                               "FROM transactions")
    per_day_store = Counter()
    hours = Counter()
    for _, store, at, *_ in sales:
        moment = dt.datetime.fromisoformat(at).replace(tzinfo=dt.UTC).astimezone(tz)
        per_day_store[(moment.date(), store)] += 1
        hours[moment.hour] += 1
    assert len(per_day_store) == DEMO_OPTIONS.days * DEMO_OPTIONS.stores
    # Returns add to the day's count on top of the target; every day and store is within the asked range + returns.
    assert all(DEMO_OPTIONS.min_sales <= n <= DEMO_OPTIONS.max_sales * 1.1 for n in per_day_store.values())
    assert set(hours) <= set(range(8, 24)) and 23 in hours, "stores open 8-22 and 9-24 local"
    assert hours[17] > hours[9], "the evening rush outsells the morning"
    walk_ins = sum(1 for s in sales if s[3] is None) / len(sales)
    assert 0.08 < walk_ins < 0.25
    line_counts = Counter(n for (n,) in rows(demo_pos_url, "SELECT COUNT(*) FROM transaction_items GROUP BY transaction_id"))
    assert set(line_counts) <= set(range(1, 7)) and len(line_counts) >= 5


def test_returns_voids_and_late_edits_are_present_and_consistent(demo_pos_url):
    returns = rows(demo_pos_url, """
        SELECT r.transaction_id, r.total, o.transaction_id, r.customer_id IS o.customer_id
        FROM transactions r LEFT JOIN transactions o ON o.transaction_id = r.return_of_transaction_id
        WHERE r.is_return""")
    assert returns, "the demo has returns"
    assert all(original is not None and total < 0 and same_customer for _, total, original, same_customer in returns)
    assert rows(demo_pos_url, "SELECT COUNT(*) FROM transaction_items i JOIN transactions t USING (transaction_id) "
                              "WHERE t.is_return AND i.quantity >= 0") == [(0,)]
    voids = rows(demo_pos_url, "SELECT COUNT(*) FROM transactions WHERE is_void AND last_modified_at > transaction_at")
    assert voids[0][0] > 0
    late = rows(demo_pos_url, "SELECT COUNT(*) FROM transactions "
                              "WHERE julianday(last_modified_at) - julianday(transaction_at) > 1.0 / 24")
    assert late[0][0] > 0, "some receipts are edited hours or days after the sale"
    fractional = rows(demo_pos_url, "SELECT COUNT(*) FROM transaction_items WHERE quantity != CAST(quantity AS INT)")
    assert fractional[0][0] > 0, "bulk flower sells fractional grams"


def test_customers_are_typed_the_way_people_type_them(demo_pos_url):
    phones = [p for (p,) in rows(demo_pos_url, "SELECT phone FROM customers")]
    assert any(p is None for p in phones)
    assert {"1234567890", "0000000000"} & set(phones), "placeholder numbers"
    typed = [p for p in phones if p]
    assert any(re.fullmatch(r"\(\d{3}\) \d{3}-\d{4}", p) for p in typed)
    assert any(re.fullmatch(r"\+1 \d{3} \d{3} \d{4}", p) for p in typed)
    assert any(re.fullmatch(r"\d{3}\.\d{3}\.\d{4}", p) for p in typed)
    emails = [e for (e,) in rows(demo_pos_url, "SELECT email FROM customers") if e]
    assert any("@" not in e for e in emails) and sum("@" in e for e in emails) > len(emails) * 0.8
    loyalty = rows(demo_pos_url, "SELECT AVG(is_loyalty_member) FROM customers")[0][0]
    assert 0.3 < loyalty < 0.8
    assert rows(demo_pos_url, "SELECT COUNT(*) FROM customers WHERE first_name GLOB '*[^ -~]*'")[0][0] > 0, "unicode names"


def test_products_and_inventory_carry_what_aiq_needs(demo_pos_url):
    products = rows(demo_pos_url, "SELECT category, parent_category, brand, strain, species, size, unit_cost, unit_price "
                                  "FROM products")
    assert all(c.startswith(p + " > ") for c, p, *_ in products)
    assert all(0 < cost < price for *_, cost, price in products)
    assert {p[4] for p in products} >= {"indica", "sativa", "hybrid"}
    stock = rows(demo_pos_url, "SELECT COUNT(DISTINCT location_id), SUM(quantity_available = 0) FROM inventory")
    assert stock[0][0] == DEMO_OPTIONS.stores and stock[0][1] > 0


def test_sales_after_now_are_not_written(tmp_path):
    url = f"sqlite:///{tmp_path / 'pos.db'}"
    now = dt.datetime(2026, 6, 10, 18, 0, tzinfo=dt.UTC)  # noon in Denver
    demo.generate(url, demo.DemoOptions(days=1, stores=1, min_sales=50, max_sales=50), now=now)
    latest = rows(url, "SELECT MAX(transaction_at), MAX(last_modified_at) FROM transactions")[0]
    assert all(dt.datetime.fromisoformat(v) <= now.replace(tzinfo=None) for v in latest)


def test_cli_refuses_to_overwrite_and_if_absent_is_a_no_op(tmp_path):
    url = f"sqlite:///{tmp_path / 'pos.db'}"
    args = [sys.executable, "-m", "aiq_pipelines.cli", "demo-data", "--database-url", url, "--days", "2",
            "--stores", "1", "--min-sales", "5", "--max-sales", "10", "--end-date", "2026-06-10"]
    first = subprocess.run(args, capture_output=True, text=True, check=True)
    assert re.search(r"wrote \d+ transactions", first.stdout)
    count = rows(url, "SELECT COUNT(*) FROM transactions")[0][0]

    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 1 and "--replace" in again.stderr
    skipped = subprocess.run([*args, "--if-absent"], capture_output=True, text=True, check=True)
    assert "already present" in skipped.stdout
    assert rows(url, "SELECT COUNT(*) FROM transactions")[0][0] == count
    replaced = subprocess.run([*args, "--replace", "--seed", "99"], capture_output=True, text=True, check=True)
    assert replaced.returncode == 0


@pytest.mark.parametrize("bad", [["--stores", "0"], ["--min-sales", "10", "--max-sales", "5"]])
def test_cli_rejects_impossible_options(tmp_path, bad):
    result = subprocess.run([sys.executable, "-m", "aiq_pipelines.cli", "demo-data", "--database-url",
                             f"sqlite:///{tmp_path / 'p.db'}", *bad], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: ")


def test_a_chain_across_time_zones_sells_in_each_stores_own_hours(tmp_path):
    url = f"sqlite:///{tmp_path / 'chain.db'}"
    options = demo.DemoOptions(days=3, stores=2, end_date=dt.date(2026, 7, 16), min_sales=30, max_sales=40,
                               timezones=("America/Phoenix", "America/New_York"))
    demo.generate(url, options, now=dt.datetime(2026, 11, 25, tzinfo=dt.UTC))

    zones = dict(rows(url, "SELECT location_id, timezone FROM locations"))
    assert zones == {"STORE-01": "America/Phoenix", "STORE-02": "America/New_York"}
    for location_id, at in rows(url, "SELECT location_id, transaction_at FROM transactions"):
        local = dt.datetime.fromisoformat(at).replace(tzinfo=dt.UTC).astimezone(zoneinfo.ZoneInfo(zones[location_id]))
        assert 8 <= local.hour <= 23 and dt.date(2026, 7, 14) <= local.date() <= dt.date(2026, 7, 16), (location_id, at)


def test_cli_deals_the_stores_out_to_several_accounts(tmp_path):
    url, accounts_file = f"sqlite:///{tmp_path / 'pos.db'}", tmp_path / "accounts.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "aiq_pipelines.cli", "demo-data", "--database-url", url, "--days", "1", "--stores", "3",
         "--min-sales", "5", "--max-sales", "5", "--end-date", "2026-06-10", "--accounts", "2",
         "--accounts-file", str(accounts_file)], capture_output=True, text=True, check=True)

    assert f"AIQ_ACCOUNTS_FILE={accounts_file}" in result.stdout
    first, second = read_accounts_file(accounts_file)
    assert (first.name, first.uid, first.base_url, first.api_key_env, first.locations) == (
        "account_1", "sandbox", "http://127.0.0.1:8765", "AIQ_API_KEY", ("STORE-01", "STORE-03"))
    assert (second.uid, second.base_url, second.api_key_env, second.locations) == (
        "sandbox-2", "http://127.0.0.1:8775", "AIQ_API_KEY_2", ("STORE-02",))
    stores = {location for (location,) in rows(url, "SELECT location_id FROM locations")}
    assert stores == set(first.locations) | set(second.locations), "every demo store has an account"

    too_many = subprocess.run([sys.executable, "-m", "aiq_pipelines.cli", "demo-data", "--database-url", url,
                               "--stores", "3", "--accounts", "4", "--accounts-file", str(accounts_file)],
                              capture_output=True, text=True)
    assert too_many.returncode == 2
    assert "--accounts must be between 1 and the number of stores (3), got 4" in too_many.stderr

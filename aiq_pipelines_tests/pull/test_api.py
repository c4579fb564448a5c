"""The pull API over loopback HTTP, against a real uvicorn process reading a sync database the extract staged.

Records come back field-exact against the POS, paging survives the POS changing between pages, and bad requests get
400, 401 and 429 with messages that name the parameter and never the key.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import zoneinfo
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from aiq_pipelines.sync.mapping import normalize_email, normalize_phone
from aiq_pipelines.sync.store import SyncStore
from aiq_pipelines_tests.support.days import DENVER
from aiq_pipelines_tests.support.pos_factory import PosFactory
from aiq_pipelines_tests.support.pull import DAY, KEY, OTHER_KEY, local_midnight, stage_days, z

pytestmark = pytest.mark.slow

DAY_NOON = dt.datetime(2026, 3, 9, 19)  # UTC


def pos_rows(pos_url: str, sql: str, **params) -> list[dict]:
    with sa.create_engine(pos_url).connect() as conn:
        return [dict(row) for row in conn.execute(sa.text(sql), params).mappings()]


def money(value) -> Decimal:
    return Decimal(str(value))


def test_a_days_transactions_come_back_field_exact_with_cost_and_margin(demo_pos_url, demo_day, pull_server_factory):
    server = pull_server_factory(demo_day)
    start, end = local_midnight(DAY), local_midnight(DAY + dt.timedelta(days=1))

    pages, last = server.pages("/v1/transactions", occurred_from=z(start), occurred_to=z(end), limit=50)

    served = {tx["transaction_id"]: tx for page in pages for tx in page}
    assert sum(len(page) for page in pages) == len(served), "no transaction is served twice"
    heads = pos_rows(demo_pos_url, "SELECT * FROM transactions WHERE transaction_at >= :a AND transaction_at < :b",
                     a=start.strftime("%Y-%m-%d %H:%M:%S"), b=end.strftime("%Y-%m-%d %H:%M:%S"))
    assert sorted(served) == sorted(row["transaction_id"] for row in heads) and len(heads) > 40
    lines = pos_rows(demo_pos_url, "SELECT i.*, p.sku, p.name, p.category, p.brand FROM transaction_items i "
                                   "JOIN products p ON p.product_id = i.product_id ORDER BY i.line_number")
    by_receipt: dict[str, list[dict]] = {}
    for line in lines:
        by_receipt.setdefault(line["transaction_id"], []).append(line)
    for head in heads:
        tx = served[head["transaction_id"]]
        at = dt.datetime.fromisoformat(head["transaction_at"]).replace(tzinfo=dt.UTC)
        assert tx["location_id"] == head["location_id"] and tx["customer_id"] == head["customer_id"]
        assert tx["type"] == ("return" if head["is_return"] else "sale")
        assert tx["status"] == ("voided" if head["is_void"] else "completed")
        assert tx["return_of_transaction_id"] == head["return_of_transaction_id"]
        assert dt.datetime.fromisoformat(tx["occurred_at"]) == at and tx["occurred_at"].endswith("Z")
        assert dt.datetime.fromisoformat(tx["occurred_at_local"]) == at
        assert tx["occurred_at_local"].endswith(at.astimezone(DENVER).strftime("%z")[:3] + ":00")
        assert tx["business_date"] == DAY.isoformat() == at.astimezone(DENVER).date().isoformat()
        totals = {"subtotal": "subtotal", "discount": "discount_total", "tax": "tax_total", "total": "total"}
        assert {k: money(tx["totals"][k]) for k in totals} == {k: money(head[c]) for k, c in totals.items()}
        expected_lines = []
        for line in by_receipt[head["transaction_id"]]:
            cost = None if line["unit_cost"] is None else money(line["unit_cost"])
            quantity, price, discount = money(line["quantity"]), money(line["unit_price"]), money(line["discount"])
            expected_lines.append({
                "line_number": line["line_number"], "sku": line["sku"], "product_id": line["product_id"],
                "name": line["name"], "category": line["category"], "brand": line["brand"], "quantity": quantity,
                "unit_price": price, "discount": discount, "unit_cost": cost,
                "margin": None if cost is None else quantity * (price - cost) - discount,
            })
        served_lines = [{k: (money(v) if k in ("quantity", "unit_price", "discount", "unit_cost", "margin")
                             and v is not None else v) for k, v in line.items()} for line in tx["lines"]]
        assert served_lines == expected_lines
    assert any(line["unit_cost"] is not None for tx in served.values() for line in tx["lines"])
    returns = [tx for tx in served.values() if tx["type"] == "return"]
    assert all(money(line["quantity"]) < 0 for tx in returns for line in tx["lines"]), "a return's lines are negative"
    assert last["held_back"] == 0 and last["next_cursor"] is None


def test_customers_come_back_normalized_as_the_push_sends_them(demo_pos_url, demo_day, pull_server_factory):
    server = pull_server_factory(demo_day)

    pages, last = server.pages("/v1/customers", limit=30)

    served = {c["customer_id"]: c for page in pages for c in page}
    rows = pos_rows(demo_pos_url, "SELECT * FROM customers")
    assert sorted(served) == sorted(row["customer_id"] for row in rows) and len(pages) > 1
    assert last["held_back"] == 0
    def text(value: str | None) -> str | None:  # as the POS record reads it: trimmed, empty means none
        return value.strip() or None if value else None

    for row in rows:
        got = served[row["customer_id"]]
        phone = normalize_phone(text(row["phone"]))[0] if text(row["phone"]) else None
        email = normalize_email(text(row["email"])) if text(row["email"]) else None
        assert (got["phone"], got["email"]) == (phone, email)
        assert got["phone"] not in ("1234567890", "0000000000")
        for field in ("first_name", "last_name", "city", "state", "zip", "gender", "address1", "address2"):
            assert got[field] == text(row[field]), field
        assert got["customer_type"] == text(row["customer_type"]) and got["loyalty"] == bool(row["is_loyalty_member"])
        assert got["birthday"] == row["birthday"]
        assert dt.datetime.fromisoformat(got["created_at"]) == dt.datetime.fromisoformat(row["created_at"]).replace(
            tzinfo=dt.UTC)
    assert any(c["phone"] is None for c in served.values()) and any(c["phone"] for c in served.values())


def test_inventory_is_the_snapshot_per_product_and_store_with_an_etag(demo_pos_url, demo_day, pull_server_factory):
    server = pull_server_factory(demo_day)

    first = server.get("/v1/inventory", limit=1000)

    assert first.status_code == 200
    items = {(i["product_id"], i["location_id"]): i for i in first.json()["data"]}
    rows = pos_rows(demo_pos_url, "SELECT s.product_id, s.location_id, s.quantity_available, p.unit_price, "
                                  "COALESCE(s.unit_cost, p.unit_cost) AS cost FROM inventory s "
                                  "JOIN products p ON p.product_id = s.product_id")
    assert sorted(items) == sorted((r["product_id"], r["location_id"]) for r in rows)
    assert any(row["cost"] is not None for row in rows)
    for row in rows:
        item = items[(row["product_id"], row["location_id"])]
        price = money(row["unit_price"])
        assert money(item["stock"]) == money(row["quantity_available"]) and money(item["price"]) == price
        if row["cost"] is None:
            assert item["unit_cost"] is None and item["margin"] is None and item["margin_percent"] is None
            continue
        cost = money(row["cost"])
        assert (money(item["unit_cost"]), money(item["margin"])) == (cost, price - cost)
        assert money(item["margin_percent"]) == ((price - cost) / price * 100).quantize(Decimal("0.01"))
    etag = first.headers["etag"]
    unchanged = server.get("/v1/inventory", limit=1000, headers={"if-none-match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    one_store = server.get("/v1/inventory", location_id=rows[0]["location_id"], limit=1000)
    assert {i["location_id"] for i in one_store.json()["data"]} == {rows[0]["location_id"]}
    assert one_store.headers["etag"] != etag


def test_locations_name_each_store_and_its_time_zone(demo_day, pull_server_factory):
    server = pull_server_factory(demo_day)
    stores = server.get("/v1/locations").json()["data"]
    assert len(stores) == 2 and all(s["timezone"] == "America/Denver" and s["name"] for s in stores)


def sale_state(pos: PosFactory) -> dict[str, tuple[str, bool]]:
    rows = pos_rows(pos.url, "SELECT transaction_id, total, is_void FROM transactions")
    return {r["transaction_id"]: (str(money(r["total"]).normalize()), bool(r["is_void"])) for r in rows}


def served_state(tx: dict) -> tuple[str, bool]:
    return str(money(tx["totals"]["total"]).normalize()), tx["status"] == "voided"


def test_paging_while_the_pos_changes_ends_with_every_record_once_in_its_latest_version(pos, sync_url,
                                                                                      pull_server_factory):
    noon = local_midnight(DAY) + dt.timedelta(hours=12)
    for n in range(30):
        pos.add_sale(f"S{n:02d}", noon + dt.timedelta(minutes=n))
    stage_days(pos.url, sync_url, DAY, DAY, "r1")
    server = pull_server_factory(sync_url)

    first = server.get("/v1/transactions", limit=7).raise_for_status().json()
    seen_first = [tx["transaction_id"] for tx in first["data"]]
    # Between pages the POS changes: a sale already served is edited, one not served yet is voided, one is new.
    edited, voided = seen_first[2], "S29"
    assert voided not in seen_first
    later = noon + dt.timedelta(hours=2)
    pos.execute("UPDATE transaction_items SET quantity = 2 WHERE transaction_id = :t", t=edited)
    pos.execute("UPDATE transactions SET subtotal = 90, tax_total = 13.5, total = 103.5, last_modified_at = :m "
                "WHERE transaction_id = :t", t=edited, m=later.strftime("%Y-%m-%d %H:%M:%S"))
    pos.execute("UPDATE transactions SET is_void = 1, last_modified_at = :m WHERE transaction_id = :t",
                t=voided, m=later.strftime("%Y-%m-%d %H:%M:%S"))
    pos.add_sale("S-new", noon + dt.timedelta(hours=3))
    stage_days(pos.url, sync_url, DAY, DAY, "r2")

    window = [first["data"]]
    body = first
    while body["next_cursor"]:
        body = server.get("/v1/transactions", cursor=body["next_cursor"], limit=7).raise_for_status().json()
        window.append(body["data"])
        assert all(len(page) <= 7 for page in window)
    assert body["high_watermark"] == first["high_watermark"], "the cursor keeps the window's upper bound"
    first_window = [tx["transaction_id"] for page in window for tx in page]
    assert len(first_window) == len(set(first_window)), "no page repeats a row"
    assert voided not in first_window and "S-new" not in first_window, "changed after the bound: the next pull's"

    next_pages, _ = server.pages("/v1/transactions", updated_since=first["high_watermark"], limit=7)
    second_window = [tx for page in next_pages for tx in page]
    assert sorted(tx["transaction_id"] for tx in second_window) == sorted([edited, voided, "S-new"])

    latest: dict[str, tuple[str, bool]] = {}
    servings: dict[tuple[str, tuple[str, bool]], int] = {}
    for tx in [tx for page in window for tx in page] + second_window:
        latest[tx["transaction_id"]] = served_state(tx)
        servings[(tx["transaction_id"], served_state(tx))] = servings.get((tx["transaction_id"], served_state(tx)),
                                                                          0) + 1
    assert latest == sale_state(pos), "every record ends in its latest version"
    assert all(servings[(key, state)] == 1 for key, state in latest.items()), "each latest version served once"
    assert latest[voided][1] and latest[edited][0] == "103.5"


def test_each_sale_is_served_with_its_own_stores_day_and_local_time(pos, sync_url, pull_server_factory):
    pos.add_location("STORE-PHX", "Muffins Phoenix", timezone="America/Phoenix")
    late = dt.datetime(2026, 7, 15, 23, 30, tzinfo=zoneinfo.ZoneInfo("America/Phoenix"))
    pos.add_sale("PHX-late", late.astimezone(dt.UTC).replace(tzinfo=None), location_id="STORE-PHX")
    stage_days(pos.url, sync_url, dt.date(2026, 7, 15), dt.date(2026, 7, 15), "r1")
    server = pull_server_factory(sync_url)

    [tx] = server.get("/v1/transactions").json()["data"]
    stores = {s["location_id"]: s["timezone"] for s in server.get("/v1/locations").json()["data"]}

    assert (tx["business_date"], tx["occurred_at_local"]) == ("2026-07-15", "2026-07-15T23:30:00-07:00")
    assert stores == {"STORE-PHX": "America/Phoenix"}


def test_quarantined_receipts_are_held_back_and_counted(pos, sync_url, pull_server_factory):
    noon = local_midnight(DAY) + dt.timedelta(hours=12)
    pos.add_sale("good", noon)
    pos.add_sale("bad-total", noon + dt.timedelta(minutes=1), total_adjustment="5.00")
    stage_days(pos.url, sync_url, DAY, DAY, "r1")
    server = pull_server_factory(sync_url)

    body = server.get("/v1/transactions", occurred_from=z(local_midnight(DAY)),
                      occurred_to=z(local_midnight(DAY + dt.timedelta(days=1)))).json()

    assert [tx["transaction_id"] for tx in body["data"]] == ["good"] and body["held_back"] == 1


def test_the_settle_lag_holds_back_what_just_changed(pos, sync_url, pull_server_factory):
    pos.add_sale("fresh", local_midnight(DAY) + dt.timedelta(hours=12))
    stage_days(pos.url, sync_url, DAY, DAY, "r1")
    server = pull_server_factory(sync_url, settle_seconds=3600)

    body = server.get("/v1/transactions").json()

    assert body["data"] == []
    bound = dt.datetime.fromisoformat(body["high_watermark"])
    assert dt.datetime.now(dt.UTC) - bound >= dt.timedelta(seconds=3590), "the window ends an hour ago"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"since": "2026-01-01T00:00:00Z"}, "since"),
        ({"updated_since": "yesterday"}, "updated_since"),
        ({"updated_since": "2026-03-09T00:00:00"}, "updated_since"),
        ({"updated_since": "2026-03-09T00:00:00Z", "updated_before": "2026-03-08T00:00:00Z"}, "updated_since"),
        ({"occurred_from": "2026-03-09T00:00:00Z", "occurred_to": "2026-03-08T00:00:00Z"}, "occurred_to"),
        ({"occurred_from": "2026-01-01T00:00:00Z", "occurred_to": "2026-03-01T00:00:00Z"}, "occurred_to"),
        ({"occurred_from": "2026-03-09T00:00:00Z"}, "occurred_to"),
        ({"updated_since": "2026-03-09T00:00:00Z", "occurred_from": "2026-03-09T00:00:00Z",
          "occurred_to": "2026-03-10T00:00:00Z"}, "occurred_from"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "²"}, "limit"),
        ({"updated_since": "0001-01-01T00:00:00+01:00"}, "updated_since"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_a_bad_request_is_400_naming_the_parameter(demo_day, pull_server_factory, params, named):
    server = pull_server_factory(demo_day)
    response = server.get("/v1/transactions", **params)
    assert response.status_code == 400 and response.json()["error"].startswith(f"{named}:"), response.text


def test_a_tampered_cursor_is_refused(demo_day, pull_server_factory):
    server = pull_server_factory(demo_day)
    cursor = server.get("/v1/transactions", limit=5).json()["next_cursor"]
    body, tag = cursor.split(".")
    decoded = base64.urlsafe_b64decode(body.encode()).replace(b'"transactions"', b'"customers"')
    forged = base64.urlsafe_b64encode(decoded).decode() + "." + tag

    assert server.get("/v1/transactions", cursor=forged).status_code == 400
    assert server.get("/v1/customers", cursor=cursor).json()["error"].startswith("cursor:")
    assert server.get("/v1/transactions", cursor=cursor).status_code == 200


def test_a_cursor_may_come_with_its_own_window_again_but_not_with_another(demo_day, pull_server_factory):
    server = pull_server_factory(demo_day)
    start, end = local_midnight(DAY), local_midnight(DAY + dt.timedelta(days=1))
    first = server.get("/v1/transactions", occurred_from=z(start), occurred_to=z(end), limit=5).json()
    same = {"occurred_from": start.isoformat(), "occurred_to": end.isoformat()}  # +00:00 rather than Z

    again = server.get("/v1/transactions", cursor=first["next_cursor"], limit=5, **same)
    other = server.get("/v1/transactions", cursor=first["next_cursor"], limit=5,
                       occurred_from=z(start - dt.timedelta(days=1)), occurred_to=z(end))

    assert again.status_code == 200 and again.json()["data"][0]["transaction_id"] > first["data"][-1]["transaction_id"]
    assert other.status_code == 400 and other.json()["error"].startswith("cursor:")


def test_an_inventory_cursor_from_an_older_snapshot_is_refused(pos, sync_url, pull_server_factory):
    pos.insert("inventory", product_id="P1", location_id="STORE-01", quantity_available=5, last_modified_at=DAY_NOON)
    pos.insert("inventory", product_id="P2", location_id="STORE-01", quantity_available=9, last_modified_at=DAY_NOON)
    stage_days(pos.url, sync_url, DAY, DAY, "r1")
    server = pull_server_factory(sync_url)
    first = server.get("/v1/inventory", limit=1)
    pos.execute("UPDATE inventory SET quantity_available = 4 WHERE product_id = 'P1'")
    stage_days(pos.url, sync_url, DAY, DAY, "r2")

    later = server.get("/v1/inventory", limit=1, cursor=first.json()["next_cursor"])

    assert later.status_code == 409 and later.json()["error"].startswith("cursor:")
    assert server.get("/v1/inventory", limit=1, headers={"if-none-match": first.headers["etag"]}).status_code == 200


def test_every_path_but_the_documents_needs_a_key_wherever_the_app_is_mounted(sync_url):
    from aiq_pipelines.pull.server import build_app
    from aiq_pipelines.settings import load_settings

    SyncStore(sync_url, "America/Denver")
    app = build_app(load_settings(sync_database_url=sync_url, pull_api_keys=KEY))

    async def statuses() -> list[int]:
        transport = httpx.ASGITransport(app=app, root_path="/pull")  # as behind a proxy that mounts it at /pull
        async with httpx.AsyncClient(transport=transport, base_url="http://pull.test") as client:
            return [(await client.get(path, headers=headers)).status_code for path, headers in [
                ("/pull/v1/locations", {}), ("/pull/v1/locations", {"authorization": f"Bearer {KEY}"}),
                ("/pull/openapi.json", {}), ("/pull/anything-else", {}),
            ]]

    assert asyncio.run(statuses()) == [401, 200, 200, 401]


def test_a_sync_database_with_nothing_staged_yet_is_503_saying_so(tmp_path, pull_server_factory):
    server = pull_server_factory(f"sqlite:///{tmp_path / 'never-extracted.db'}")
    response = server.get("/v1/transactions")
    assert response.status_code == 503 and "run an extract" in response.json()["error"]
    assert not (tmp_path / "never-extracted.db").exists(), "the service opens the database read-only"


def test_without_a_valid_key_it_is_401_with_no_hint(demo_day, pull_server_factory):
    server = pull_server_factory(demo_day)
    refusals = [
        server.get("/v1/transactions", key=None),
        server.get("/v1/transactions", key="wrong-key"),
        server.get("/v1/transactions", key=None, headers={"authorization": f"Token {KEY}"}),
        server.get("/v1/transactions", key=None, headers={"authorization": "Basic " + base64.b64encode(
            b"wrong:" + KEY.encode()).decode()}),
    ]
    assert {r.status_code for r in refusals} == {401} and len({r.text for r in refusals}) == 1
    basic = base64.b64encode(f"{OTHER_KEY}:".encode()).decode()
    assert server.get("/v1/locations", key=None, headers={"authorization": f"Basic {basic}"}).status_code == 200
    assert server.get("/v1/locations", key=OTHER_KEY).status_code == 200
    assert server.client.get(server.base_url + "/openapi.json").json()["openapi"].startswith("3.1")
    assert KEY not in server.log() and OTHER_KEY not in server.log() and "wrong-key" not in server.log()


def test_a_key_over_its_budget_gets_429_with_retry_after_and_others_go_on(demo_day, pull_server_factory):
    server = pull_server_factory(demo_day, requests_per_minute=3)
    answers = [server.get("/v1/locations").status_code for _ in range(3)]
    over = server.get("/v1/locations")

    assert answers == [200, 200, 200] and over.status_code == 429
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert server.get("/v1/locations", key=OTHER_KEY).status_code == 200, "each key has its own budget"

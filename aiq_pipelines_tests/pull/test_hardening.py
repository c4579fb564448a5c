"""The pull API as a security review and AIQ's puller see it: keys only in headers and never in a log or a body, bad
keys throttled per client, strict timestamps, the window's buyers with its sales, cursors that page to the end, one
error body, and the inventory's 503 before its first extract."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from aiq_pipelines_tests.support.pos_factory import PosFactory
from aiq_pipelines_tests.support.pull import DAY, KEY, OTHER_KEY, local_midnight, stage_days, z

pytestmark = pytest.mark.slow

NOON = local_midnight(DAY) + dt.timedelta(hours=12)


def test_a_key_in_the_url_is_refused_and_reaches_no_log_and_no_body(demo_day, pull_server_factory):
    server = pull_server_factory(demo_day)
    url = server.base_url
    answers = [
        server.client.get(f"{url}/v1/transactions?api_key={KEY}"),
        server.client.get(f"{url}/v1/transactions?token={KEY}", headers={"authorization": f"Bearer {KEY}"}),
        server.client.get(f"{url}/v1/transactions?{KEY}"),
        server.client.get(f"{url}/v1/transactions?colour={KEY}"),
        server.client.get(f"{url}/v1/transactions?location_id={KEY}"),
        server.client.get(f"{url}/v1/transactions?cursor={KEY}"),
        server.client.get(f"{url}/openapi.json?apikey=anything"),
    ]
    assert {a.status_code for a in answers} == {401}
    assert all("Authorization header" in a.json()["error"] for a in answers)
    elsewhere = [server.client.get(f"{url}/v1/{KEY}", headers={"authorization": f"Bearer {KEY}"}),
                 server.client.get(f"{url}/v1/transactions", headers={"x-api-key": KEY})]
    assert [a.status_code for a in elsewhere] == [404, 401]
    good = server.get("/v1/transactions", updated_since="2026-03-01T00:00:00Z", limit=3, location_id="STORE-01")
    assert good.status_code == 200

    for answer in [*answers, *elsewhere, good]:
        assert KEY not in answer.text and KEY not in str(answer.headers)
    log = server.log()
    assert KEY not in log
    assert "/v1/transactions?*** 401" in log.replace('"', "").replace(" - ", " ")  # the bare key: a name redacted
    assert "/v1/transactions?updated_since=2026-03-01T00:00:00Z&limit=3&location_id=STORE-01" in log, \
        "values in their documented shapes are still written"


def test_an_unknown_parameter_is_named_and_its_value_is_not(demo_day, pull_server_factory):
    server = pull_server_factory(demo_day)
    answer = server.get("/v1/transactions", colour="555-0100-secret")
    assert answer.status_code == 400 and answer.json()["error"].startswith("colour: unknown parameter")
    assert "555-0100-secret" not in answer.text


@pytest.mark.parametrize("value", [
    "2026-03-09T00:00:00Z\x00junk",  # NUL-truncated
    "2026-W11-1",  # ISO week date
    "2026-W11-1T00:00:00Z",
    "20260309T000000Z",  # basic format
    "2026-068T00:00:00Z",  # ordinal date
    "2026-03-09 00:00:00Z",  # a space for T
    "2026-03-09T00:00:00",  # no offset
    "2026-03-09T00:00Z",  # no seconds
    "2026-03-09T00:00:00.1234567Z",  # more than microseconds
    "2026-03-09T00:00:00+0100",  # offset without colon
    "2026-03-09",
    " 2026-03-09T00:00:00Z",
    "2026-03-09T00:00:00 01:00",  # an unencoded + read as a space
])
def test_every_timestamp_form_but_rfc_3339_is_400_naming_the_parameter(demo_day, pull_server_factory, value):
    server = pull_server_factory(demo_day)
    for name in ("updated_since", "occurred_from"):
        query = {name: value, **({"occurred_to": "2026-03-10T00:00:00Z"} if name == "occurred_from" else {})}
        answer = server.get("/v1/transactions", **query)
        assert answer.status_code == 400 and answer.json()["error"].startswith(f"{name}: expected an RFC 3339"), \
            answer.text


def test_repeated_wrong_keys_from_one_client_are_throttled_without_slowing_good_keys(demo_day, pull_server_factory):
    server = pull_server_factory(demo_day, failed_keys_per_minute=5)
    guesser = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=30)
    try:
        wrong = [guesser.get(f"{server.base_url}/v1/locations", headers={"authorization": f"Bearer guess-{n}"})
                 for n in range(5)]
        throttled = guesser.get(f"{server.base_url}/v1/locations", headers={"authorization": "Bearer guess-5"})
        still = guesser.get(f"{server.base_url}/v1/locations", headers={"authorization": f"Bearer {KEY}"})
    finally:
        guesser.close()

    assert [a.status_code for a in wrong] == [401] * 5
    assert throttled.status_code == 429 and 1 <= int(throttled.headers["retry-after"]) <= 60
    assert still.status_code == 429, "a throttled client's guesses are not checked, so a right one tells nothing"
    started = dt.datetime.now()
    assert [server.get("/v1/locations", key=k).status_code for k in (KEY, OTHER_KEY) * 3] == [200] * 6, \
        "other clients' good keys go on"
    assert (dt.datetime.now() - started).total_seconds() < 10
    assert server.get("/v1/locations", key="wrong-here").status_code == 401, "each client has its own allowance"


def test_a_windows_transactions_with_their_customers_name_every_shopper_of_those_sales(pos, sync_url,
                                                                                      pull_server_factory):
    for n in range(6):
        pos.add_customer(f"OLD{n}", email=f"old{n}@example.com")  # modified long before the window
    pos.add_customer("NEW", modified=NOON.replace(tzinfo=None), email="new@example.com")
    pos.add_customer("VOIDER", email="voider@example.com")
    for n, customer in enumerate(["OLD0", "OLD1", "NEW", "OLD2", None, "OLD0", "OLD3", "OLD4", "OLD1", "VOIDER"]):
        pos.add_sale(f"S{n}", (NOON + dt.timedelta(minutes=n)).replace(tzinfo=None), customer_id=customer)
    # A void is never sent, so its extract stages no customer: VOIDER, with no other sale, is served with no one.
    pos.execute("UPDATE transactions SET is_void = 1 WHERE transaction_id = 'S9'")
    stage_days(pos.url, sync_url, DAY, DAY, "r1")
    server = pull_server_factory(sync_url)

    sales, _ = server.pages("/v1/transactions", limit=2)
    changed, _ = server.pages("/v1/customers", limit=2)
    named = {tx["customer_id"] for page in sales for tx in page if tx["customer_id"] and tx["status"] != "voided"}
    assert [tx["customer_id"] for page in sales for tx in page if tx["status"] == "voided"] == ["VOIDER"]
    assert {c["customer_id"] for page in changed for c in page} == {"NEW"}, "the customers endpoint: changed only"

    carried: dict[str, dict] = {}
    body = server.get("/v1/transactions", limit=2, include="customers").json()
    while True:
        page_named = {tx["customer_id"] for tx in body["data"] if tx["customer_id"] and tx["status"] != "voided"}
        assert {c["customer_id"] for c in body["customers"]} == page_named, "each page carries its sales' shoppers"
        carried.update({c["customer_id"]: c for c in body["customers"]})
        if not body["next_cursor"]:
            break
        body = server.get("/v1/transactions", cursor=body["next_cursor"], limit=2, include="customers").json()
    assert set(carried) == named == {"OLD0", "OLD1", "OLD2", "OLD3", "OLD4", "NEW"}
    assert carried["OLD3"]["email"] == "old3@example.com" and carried["OLD3"]["created_at"] is None
    assert carried["NEW"]["created_at"] is not None and carried["NEW"]["updated_at"] is not None


def test_an_inventory_cursor_with_a_store_filter_pages_to_the_end(demo_day, pull_server_factory):
    server = pull_server_factory(demo_day)
    everything = server.get("/v1/inventory", limit=1000).json()["data"]
    store = everything[0]["location_id"]
    expected = sorted(i["product_id"] for i in everything if i["location_id"] == store)

    pages, body = [], server.get("/v1/inventory", location_id=store, limit=2)
    while True:
        assert body.status_code == 200, body.text
        pages.append(body.json()["data"])
        cursor = body.json()["next_cursor"]
        if cursor is None:
            break
        body = server.get("/v1/inventory", cursor=cursor, limit=2)

    served = [i["product_id"] for page in pages for i in page]
    assert served == expected and len(pages) > 2
    assert {i["location_id"] for page in pages for i in page} == {store}


def test_an_inventory_cursor_is_409_only_when_what_it_serves_changed(pos: PosFactory, sync_url, pull_server_factory):
    pos.add_location("STORE-02", "Muffins Boulder")
    for product in ("P1", "P2"):
        for store in ("STORE-01", "STORE-02"):
            pos.insert("inventory", product_id=product, location_id=store, quantity_available=5,
                       last_modified_at=NOON.replace(tzinfo=None))
    stage_days(pos.url, sync_url, DAY, DAY, "r1")
    server = pull_server_factory(sync_url)
    first = server.get("/v1/inventory", location_id="STORE-01", limit=1)

    pos.execute("UPDATE inventory SET quantity_available = 1 WHERE location_id = 'STORE-02'")
    stage_days(pos.url, sync_url, DAY, DAY, "r2")
    other_store_moved = server.get("/v1/inventory", cursor=first.json()["next_cursor"], limit=1)
    unchanged = server.get("/v1/inventory", location_id="STORE-01", headers={"if-none-match": first.headers["etag"]})
    pos.execute("UPDATE inventory SET quantity_available = 2 WHERE location_id = 'STORE-01' AND product_id = 'P2'")
    stage_days(pos.url, sync_url, DAY, DAY, "r3")
    own_store_moved = server.get("/v1/inventory", cursor=first.json()["next_cursor"], limit=1)

    assert other_store_moved.status_code == 200 and other_store_moved.json()["data"][0]["product_id"] == "P2"
    assert unchanged.status_code == 304
    assert own_store_moved.status_code == 409 and "start again" in own_store_moved.json()["error"]


def test_inventory_before_its_first_extract_is_503_like_the_others(pos, sync_url, pull_server_factory):
    from aiq_pipelines.pos.source import PosSource
    from aiq_pipelines.sync.store import SyncStore

    pos.add_sale("S1", NOON.replace(tzinfo=None))
    SyncStore(sync_url, "America/Denver").stage_transactions(PosSource(pos.url), local_midnight(DAY),
                                                           local_midnight(DAY + dt.timedelta(days=1)), run_id="r1")
    server = pull_server_factory(sync_url)
    answer = server.get("/v1/inventory")
    assert answer.status_code == 503 and "inventory" in answer.json()["error"]
    assert server.get("/v1/transactions").status_code == 200


def test_unknown_paths_and_methods_answer_the_one_error_body(demo_day, pull_server_factory):
    server = pull_server_factory(demo_day)
    missing = server.get("/v1/nothing-here")
    posted = server.client.post(f"{server.base_url}/v1/transactions", json={})
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    assert posted.status_code == 405 and set(posted.json()) == {"error"} and posted.headers["allow"] == "GET"
    assert server.get("/v1/transactions", occurred_from=z(NOON), occurred_to=z(NOON + dt.timedelta(hours=1))).is_success


def test_the_docs_page_loads_its_assets_from_the_service_itself(demo_day, pull_server_factory):
    server = pull_server_factory(demo_day)
    for page in ("/docs", "/redoc"):
        html = server.client.get(server.base_url + page).text
        assert "cdn." not in html and "googleapis" not in html
        for asset in [part.split('"')[0] for part in html.split('src="')[1:] + html.split('href="')[1:]]:
            if asset.startswith("/"):
                assert server.client.get(server.base_url + asset).status_code == 200, asset
    document = server.client.get(server.base_url + "/openapi.json").json()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "basic"}
    for operation in (ops["get"] for ops in document["paths"].values()):
        assert operation["security"] == [{"bearer": []}, {"basic": []}] and "422" not in operation["responses"]
        assert {"200", "400", "401", "429", "503"} <= set(operation["responses"])

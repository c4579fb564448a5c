"""Pull keys per account: with AIQ_ACCOUNTS_FILE each account's key reads its own stores, their sales and stock, and
its own shoppers, through every endpoint, filter and cursor, and nothing of the other account; the service refuses to
start on a key set-up that would let one key read another account's records.

The chain: colorado holds STORE-01 (Denver), arizona STORE-PHX (Phoenix) and is the default. Shoppers D* buy only in
Denver, A* only in Phoenix, B1 in both, N1 buys nothing (the default's), and X1 buys in Denver but was last modified
long ago, so only the sales' staging holds them (include=customers).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import zoneinfo

import pytest

from aiq_pipelines.pull.server import build_app
from aiq_pipelines.settings import SettingsError, load_settings
from aiq_pipelines_tests.support.pos_factory import PosFactory
from aiq_pipelines_tests.support.pull import (
    ACCOUNT_KEYS,
    DAY,
    PullServer,
    account_settings,
    local_midnight,
    stage_days,
    write_accounts_file,
    z,
)

pytestmark = pytest.mark.slow

PHOENIX = zoneinfo.ZoneInfo("America/Phoenix")
OWN = {
    "colorado": {"stores": {"STORE-01"}, "sales": {f"DEN-{n}" for n in range(7)}, "personas": {"D1", "D2", "B1"},
                 "buyers": {"D1", "D2", "B1", "X1"}, "products": {"P1", "P3"}},
    "arizona": {"stores": {"STORE-PHX"}, "sales": {f"PHX-{n}" for n in range(7)}, "personas": {"A1", "A2", "B1", "N1"},
                "buyers": {"A1", "A2", "B1"}, "products": {"P1", "P2"}},
}
# What only the other account holds, as JSON strings: none of it may appear anywhere in an answer to this account's key.
FOREIGN = {"colorado": ['"STORE-PHX"', '"Muffins Phoenix"', '"PHX-', '"A1"', '"A2"', '"N1"', '"P2"', "arizona"],
           "arizona": ['"STORE-01"', '"Muffins Denver"', '"DEN-', '"D1"', '"D2"', '"X1"', '"P3"', "colorado"]}


@pytest.fixture
def chain(pos: PosFactory, sync_url: str) -> str:
    pos.add_location("STORE-PHX", "Muffins Phoenix", timezone="America/Phoenix")
    pos.add_product("P3", sku="SKU-3", name="Pre-roll 1g", unit_price="9.00", unit_cost="3.00")
    noon = local_midnight(DAY) + dt.timedelta(hours=12)
    for customer in ("D1", "D2", "A1", "A2", "B1", "N1"):
        pos.add_customer(customer, modified=noon.replace(tzinfo=None), email=f"{customer.lower()}@example.com")
    pos.add_customer("X1", email="x1@example.com")  # modified long before the day: no persona staged
    for n, customer in enumerate(["D1", "D2", "B1", "X1", None, "D1", "B1"]):
        pos.add_sale(f"DEN-{n}", (noon + dt.timedelta(minutes=n)).replace(tzinfo=None), customer_id=customer)
    for n, customer in enumerate(["A1", "A2", "B1", None, "A1", "A2", "B1"]):
        at = dt.datetime.combine(DAY, dt.time(10, n), tzinfo=PHOENIX).astimezone(dt.UTC).replace(tzinfo=None)
        pos.add_sale(f"PHX-{n}", at, customer_id=customer, location_id="STORE-PHX")
    for product, location, stock in (("P1", "STORE-01", 5), ("P1", "STORE-PHX", 7), ("P2", "STORE-PHX", 3),
                                     ("P3", "STORE-01", 11)):
        pos.insert("inventory", product_id=product, location_id=location, quantity_available=stock,
                   last_modified_at=noon.replace(tzinfo=None))
    stage_days(pos.url, sync_url, DAY, DAY, "r1", look_up_stores=True)  # as the extracts do with two accounts
    return sync_url


def paged(server: PullServer, key: str, path: str, texts: list[str], **query) -> list[dict]:
    """Every page of ``path`` for ``key`` followed to the end by cursor alone; each answer's text kept in ``texts``."""
    pages = []
    while True:
        response = server.get(path, key=key, **query)
        assert response.status_code == 200, response.text
        texts.append(response.text)
        body = response.json()
        pages.append(body)
        if not body["next_cursor"]:
            return pages
        query = {"cursor": body["next_cursor"], "limit": query.get("limit"), "include": query.get("include")}


def test_each_accounts_key_reads_only_its_own_records_through_every_endpoint_filter_and_cursor(
        chain, pull_server_factory, tmp_path):
    server = pull_server_factory(chain, **account_settings(write_accounts_file(tmp_path / "accounts.yaml")))
    day = {"occurred_from": z(local_midnight(DAY)), "occurred_to": z(local_midnight(DAY + dt.timedelta(days=1)))}
    cursors = {}
    for account, own in OWN.items():
        key, store = ACCOUNT_KEYS[account][-1], next(iter(own["stores"]))
        texts: list[str] = []
        locations = server.get("/v1/locations", key=key)
        texts.append(locations.text)
        assert {s["location_id"] for s in locations.json()["data"]} == own["stores"]

        for query in ({}, day, {"location_id": store}, {**day, "location_id": store}, {"include": "customers"},
                      {**day, "include": "customers"}):
            pages = paged(server, key, "/v1/transactions", texts, limit=2, **query)
            served = [tx["transaction_id"] for page in pages for tx in page["data"]]
            assert sorted(served) == sorted(own["sales"]), query
            if "include" in query:
                carried = {c["customer_id"] for page in pages for c in page["customers"]}
                assert carried == own["buyers"], "every shopper its sales name, and no one else"
        cursors[account] = server.get("/v1/transactions", key=key, limit=2).json()["next_cursor"]

        customers = paged(server, key, "/v1/customers", texts, limit=2)
        assert {c["customer_id"] for page in customers for c in page["data"]} == own["personas"]

        for query in ({}, {"location_id": store}):
            pages = paged(server, key, "/v1/inventory", texts, limit=1, **query)
            items = [item for page in pages for item in page["data"]]
            assert {i["location_id"] for i in items} == own["stores"]
            assert {i["product_id"] for i in items} == own["products"]

        for text in texts:
            for foreign in FOREIGN[account]:
                assert foreign not in text, f"{account}'s key was answered {foreign!r}"

    for account, other in (("colorado", "arizona"), ("arizona", "colorado")):
        key, foreign_store = ACCOUNT_KEYS[account][0], next(iter(OWN[other]["stores"]))
        for path in ("/v1/transactions", "/v1/inventory"):
            refused = server.get(path, key=key, location_id=foreign_store)
            assert refused.status_code == 403 and refused.json()["error"].startswith("location_id:")
            assert foreign_store not in refused.text and other not in refused.text
        replayed = server.get("/v1/transactions", key=key, cursor=cursors[other], limit=2)
        assert replayed.status_code == 400 and replayed.json()["error"].startswith("cursor:"), \
            "a cursor is good only with its own account's keys"
        assert server.get("/v1/transactions", key=ACCOUNT_KEYS[other][0], cursor=cursors[other], limit=2).is_success


def test_pull_api_keys_beside_the_accounts_file_is_refused_at_start_up(tmp_path):
    accounts = write_accounts_file(tmp_path / "accounts.yaml")
    settings = load_settings(aiq_accounts_file=accounts, pull_api_keys="an-operator-key")
    with pytest.raises(SettingsError, match="PULL_API_KEYS"):
        build_app(settings, {"PULL_KEYS_COLORADO": "a", "PULL_KEYS_ARIZONA": "b"})


@pytest.mark.parametrize(
    ("environ", "extra", "named"),
    [
        ({"PULL_KEYS_COLORADO": "pull-colorado-key-1"}, {}, "PULL_KEYS_ARIZONA"),
        ({"PULL_KEYS_COLORADO": "pull-colorado-key-1", "PULL_KEYS_ARIZONA": " , "}, {}, "PULL_KEYS_ARIZONA"),
        ({"PULL_KEYS_COLORADO": "shared-key-1,k2", "PULL_KEYS_ARIZONA": "shared-key-1"}, {}, "'colorado' and 'arizona'"),
        ({"PULL_KEYS_COLORADO": "k1"}, {"arizona": {"pull_api_keys_env": "PULL_KEYS_COLORADO"}}, "PULL_KEYS_COLORADO"),
    ],
    ids=["unset", "empty", "one-key-two-accounts", "one-variable-two-accounts"],
)
def test_a_key_set_up_that_could_cross_accounts_is_refused_naming_the_variable(tmp_path, environ, extra, named):
    settings = load_settings(aiq_accounts_file=write_accounts_file(tmp_path / "accounts.yaml", **extra))
    with pytest.raises(SettingsError) as refused:
        build_app(settings, environ)
    assert named in str(refused.value)
    assert "shared-key-1" not in str(refused.value), "the message names the variables, never a key"


def test_the_service_refuses_to_start_when_an_accounts_key_variable_is_unset(tmp_path, sync_url):
    accounts = write_accounts_file(tmp_path / "accounts.yaml")
    env = {"PATH": "/usr/bin:/bin", "SYNC_DATABASE_URL": sync_url, "AIQ_ACCOUNTS_FILE": str(accounts),
           "PULL_KEYS_COLORADO": "pull-colorado-key-1"}
    done = subprocess.run([sys.executable, "-m", "aiq_pipelines.cli", "pull-api", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "PULL_KEYS_ARIZONA" in done.stderr, done.stderr
    assert "pull-colorado-key-1" not in done.stderr + done.stdout

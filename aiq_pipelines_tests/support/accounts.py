"""Several AIQ accounts against two sandboxes, shared by the SQLite and PostgreSQL tests: the ``chain`` of two stores
and the ``two_sandboxes`` (fixtures, registered as a plugin in the top conftest.py), a run of the daily assets with
these accounts, what each sandbox received, and the bodies of the tests both backends run (``assert_*``).

A Denver store belongs to account ``colorado``, a Phoenix store to ``arizona``. Shoppers ``D*`` buy only in Denver,
``A*`` only in Phoenix, ``B*`` in both; ``N1`` was modified on the day and has bought nothing. The ``wider_chain`` adds
two shoppers modified on the day whose only sale is at the Phoenix store on a day no run extracts: ``H1``'s in 2025,
before POS_START_DATE, ``L1``'s on July 20.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.defs.aiq_assets import build_push_assets
from aiq_pipelines.defs.pos_assets import pos_inventory, pos_personas, pos_transactions
from aiq_pipelines.defs.resources import AiqResource, PosDatabase, SyncDatabase
from aiq_pipelines.settings import AccountSettings, load_settings
from aiq_pipelines.sync.accounts import UNLISTED_STORE, UNPLACED_SHOPPER
from aiq_pipelines.sync.schema import ensure_schema, quarantine, shopper_stores
from aiq_pipelines_tests.support.pos_factory import PosFactory

DENVER, PHOENIX = zoneinfo.ZoneInfo("America/Denver"), zoneinfo.ZoneInfo("America/Phoenix")
DAY = "2026-07-15"
LIMIT_PER_SECOND = 4
SANDBOX_LIMITS = {"per_second": LIMIT_PER_SECOND, "per_minute": 1000, "per_hour": 100_000}
LOGS: dict[str, list[str]] = {}  # run id -> the run's log messages


def at(zone: zoneinfo.ZoneInfo, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 7, 15, hour, minute, tzinfo=zone).astimezone(dt.UTC).replace(tzinfo=None)


@pytest.fixture
def chain(pos: PosFactory) -> PosFactory:
    """Two stores of two accounts, twelve sales each on July 15, and stock in both."""
    pos.add_location("STORE-PHX", "Muffins Phoenix", timezone="America/Phoenix")
    for customer in ("D1", "D2", "D3", "A1", "A2", "A3", "B1", "B2"):
        pos.add_customer(customer, phone=None, email=f"{customer.lower()}@example.com")
    pos.add_customer("N1", email="n1@example.com", modified=at(DENVER, 9))
    denver, phoenix = ["D1", "D2", "D3", "B1", "B2", None], ["A1", "A2", "A3", "B1", "B2", None]
    for n in range(12):
        pos.add_sale(f"DEN-{n:02}", at(DENVER, 9 + n % 12, n), customer_id=denver[n % 6])
        # The last Phoenix sale is rung at 23:30 local, already July 16 in Denver.
        pos.add_sale(f"PHX-{n:02}", at(PHOENIX, 23 if n == 11 else 9 + n, 30), customer_id=phoenix[n % 6],
                     location_id="STORE-PHX")
    for product, location, stock in (("P1", "STORE-01", 5), ("P1", "STORE-PHX", 7), ("P2", "STORE-PHX", 3)):
        pos.insert("inventory", product_id=product, location_id=location, quantity_available=stock,
                   last_modified_at=at(DENVER, 8))
    return pos


@pytest.fixture
def wider_chain(chain: PosFactory) -> PosFactory:
    """The chain, plus H1 and L1: modified on July 15, each with one Phoenix sale on a day no run of July 15 reads."""
    long_ago = dt.datetime(2025, 6, 1, 18)
    for customer in ("H1", "L1"):
        chain.add_customer(customer, email=f"{customer.lower()}@example.com", modified=at(DENVER, 10))
    chain.add_sale("H1-2025", long_ago, customer_id="H1", location_id="STORE-PHX")
    chain.add_sale("L1-JUL20", dt.datetime(2026, 7, 20, 18), customer_id="L1", location_id="STORE-PHX")
    return chain


@pytest.fixture
def two_sandboxes(sandbox_factory):
    return sandbox_factory(uid="colorado-uid", **SANDBOX_LIMITS), sandbox_factory(uid="arizona-uid", **SANDBOX_LIMITS)


def account(name: str, sandbox, locations: Sequence[str], **options: Any) -> AccountSettings:
    return AccountSettings(name=name, uid=sandbox.uid, base_url=sandbox.base_url, api_key_env=f"KEY_{name.upper()}",
                           locations=tuple(locations), requests_per_second=LIMIT_PER_SECOND, **options)


def run(pos_url: str, sync_url: str, accounts: dict[AccountSettings, Any], *, inventory: bool = False,
        look_up: bool = True, **aiq_options: Any) -> dg.ExecuteInProcessResult:
    """One run of the daily assets (or the inventory ones) for July 15 with these accounts, each at its sandbox;
    ``look_up=False`` extracts as a sync database set up for one account does, without the shoppers' stores."""
    push, push_inventory = build_push_assets(list(accounts), prefixed=True)
    settings = load_settings()
    resources: dict[str, Any] = {"pos": PosDatabase.from_settings(settings, url=pos_url),
                                 "sync": SyncDatabase.from_settings(settings, url=sync_url, look_up_shopper_stores=look_up)}
    for config, sandbox in accounts.items():
        resources[f"aiq_{config.name}"] = AiqResource.from_account(
            settings, config, api_key=sandbox.api_key, rate_limit_database_url=sync_url, timeout_seconds=5,
            batch_size_sales=2, batch_size_members=2, batch_size_inventory=1, **aiq_options,
        )
    assets = [pos_inventory, push_inventory] if inventory else [pos_transactions, pos_personas, push]
    with dg.instance_for_test() as instance:
        result = dg.materialize(assets, resources=resources, instance=instance,
                                partition_key=None if inventory else DAY, raise_on_error=False)
        LOGS[result.run_id] = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return result


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict[str, Any]:
    events = [e.materialization for e in result.get_asset_materialization_events()
              if e.asset_key == dg.AssetKey.from_user_string(key)]
    assert events, f"{key} was not materialized"
    return {k: v.value for k, v in events[0].metadata.items()}


def checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}.{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def received(sandbox) -> tuple[set[str], set[str]]:
    state = sandbox.state()
    return {sale["pos_id"] for sale in state["sales"]}, {member["pos_user"] for member in state["members"]}


def busiest_second(*sandboxes) -> int:
    """The most requests that arrived at these sandboxes together within any one second."""
    arrivals = sorted(r["received_at"] for sandbox in sandboxes for r in sandbox.requests())
    return max((sum(1 for later in arrivals[i:] if later - first < 1.0) for i, first in enumerate(arrivals)), default=0)


def assert_each_account_gets_exactly_its_stores_sales_and_their_shoppers_in_parallel(chain, sync_url, two_sandboxes):
    colorado_box, arizona_box = two_sandboxes
    colorado, arizona = account("colorado", colorado_box, ["STORE-01"]), account("arizona", arizona_box, ["STORE-PHX"])

    result = run(chain.url, sync_url, {colorado: colorado_box, arizona: arizona_box})

    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert received(colorado_box) == ({f"DEN-{n:02}" for n in range(12)}, {"D1", "D2", "D3", "B1", "B2"})
    assert received(arizona_box) == ({f"PHX-{n:02}" for n in range(12)}, {"A1", "A2", "A3", "B1", "B2"})
    assert "N1" not in received(colorado_box)[1] | received(arizona_box)[1], "no default account: N1 shops nowhere"
    for sandbox in two_sandboxes:
        statuses = {r["status"] for r in sandbox.requests()}
        assert statuses == {200}, f"{sandbox.uid} answered {statuses}: an account went over its own limits"
        assert busiest_second(sandbox) <= LIMIT_PER_SECOND
    assert busiest_second(*two_sandboxes) > LIMIT_PER_SECOND, "both accounts sent at once, each on its own budget"
    first_last = [(min(t), max(t)) for t in ([r["received_at"] for r in s.requests()] for s in two_sandboxes)]
    assert first_last[0][0] < first_last[1][1] and first_last[1][0] < first_last[0][1], "the pushes overlapped"

    for name, sales in (("colorado", 12), ("arizona", 12)):
        sales_meta, persona_meta = metadata(result, f"{name}/aiq_sales"), metadata(result, f"{name}/aiq_personas")
        assert (sales_meta["staged"], sales_meta["sent"], sales_meta["quarantined"]) == (sales, sales, 0), name
        assert sales_meta["aiq_account"] == f"{name}-uid"
        assert persona_meta["sent"] == 5, name  # the staged personas and those the sales need
    assert checks(result) and all(checks(result).values()), checks(result)
    logs = LOGS[result.run_id]
    assert "[arizona] transaction: 12 sent, 0 unchanged, 0 quarantined of 12 staged, in 6 requests" in logs, logs
    assert any(line.startswith("[colorado] persona: ") for line in logs), "each line names its account"
    assert {key.rsplit(".", 1)[0] for key in checks(result) if "aiq" in key} == {
        "colorado/aiq_personas", "colorado/aiq_sales", "arizona/aiq_personas", "arizona/aiq_sales"}

    requests = [len(sandbox.requests()) for sandbox in two_sandboxes]
    again = run(chain.url, sync_url, {colorado: colorado_box, arizona: arizona_box})

    assert again.success
    assert [len(sandbox.requests()) for sandbox in two_sandboxes] == requests, "a re-run sends nothing to either"
    assert metadata(again, "arizona/aiq_sales")["unchanged"] == 12


def assert_a_store_no_account_lists_is_quarantined_until_one_does(chain, sync_url, two_sandboxes):
    colorado_box, arizona_box = two_sandboxes
    arizona = account("arizona", arizona_box, ["STORE-PHX"])

    result = run(chain.url, sync_url, {arizona: arizona_box})

    assert result.success
    engine = sa.create_engine(sync_url)
    with engine.connect() as conn:
        held = conn.execute(sa.select(quarantine.c.record_key, quarantine.c.reason, quarantine.c.account)).all()
    reason = UNLISTED_STORE.format(location="STORE-01", name="Muffins Denver")
    assert sorted(held) == [(f"DEN-{n:02}", reason, "") for n in range(12)]
    assert received(arizona_box)[0] == {f"PHX-{n:02}" for n in range(12)}

    colorado = account("colorado", colorado_box, ["STORE-01"])
    listed = run(chain.url, sync_url, {colorado: colorado_box, arizona: arizona_box})

    assert listed.success
    assert received(colorado_box)[0] == {f"DEN-{n:02}" for n in range(12)}
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(quarantine)) == 0, "sent, so no longer held"


def assert_an_older_sync_database_gains_the_quarantines_account_column(sync_url):
    # The quarantine as an earlier version created it: no account column.
    earlier = sa.Table("quarantine", sa.MetaData(), *(
        sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in quarantine.columns if c.name != "account"
    ))
    engine = engine_for(sync_url)
    earlier.create(engine)
    with engine.begin() as conn:
        conn.execute(earlier.insert().values(entity="transaction", record_key="T1", stage="aiq", reason="refused",
                                             run_id="r0", quarantined_at=dt.datetime(2026, 7, 1)))

    ensure_schema(engine)
    ensure_schema(engine)  # and again, as every process that opens the database does

    with engine.begin() as conn:
        conn.execute(quarantine.insert().values(entity="persona", record_key="C1", stage="aiq", reason="refused",
                                                run_id="r1", quarantined_at=dt.datetime(2026, 7, 2), account="a|1"))
        rows = conn.execute(sa.select(quarantine.c.record_key, quarantine.c.account).order_by(quarantine.c.id)).all()
    assert rows == [("T1", ""), ("C1", "a|1")]


def keys_sent(sandbox) -> set[str]:
    """Every record key the sandbox's request log shows it was sent, whatever it answered."""
    return {key for request in sandbox.requests() for key in request["keys"] or ()}


def assert_shoppers_go_to_the_accounts_of_the_stores_they_bought_in(pos_url, sync_url, two_sandboxes):
    """H1 and L1 bought only in Phoenix, on days not extracted: arizona's alone, never the default colorado's; N1
    bought nothing: colorado's alone. Before their stores are looked up, no account gets them."""
    colorado_box, arizona_box = two_sandboxes
    colorado = account("colorado", colorado_box, ["STORE-01"], default=True)
    arizona = account("arizona", arizona_box, ["STORE-PHX"])
    boxes = {colorado: colorado_box, arizona: arizona_box}

    unknown = run(pos_url, sync_url, boxes, look_up=False)

    assert unknown.success, [e.message for e in unknown.all_events if e.is_failure]
    assert not {"H1", "L1", "N1"} & (keys_sent(colorado_box) | keys_sent(arizona_box)), "stores unknown: nobody"
    with engine_for(sync_url).connect() as conn:
        held = conn.execute(sa.select(quarantine.c.record_key, quarantine.c.reason, quarantine.c.account)
                            .where(quarantine.c.entity == "persona")).all()
    assert sorted(held) == [(key, UNPLACED_SHOPPER, "") for key in ("H1", "L1", "N1")]
    assert checks(unknown) and all(checks(unknown).values()), "held back, so delivered holds for every account"

    known = run(pos_url, sync_url, boxes)

    assert known.success, [e.message for e in known.all_events if e.is_failure]
    assert not {"H1", "L1"} & keys_sent(colorado_box), "never sent to an account none of whose stores they bought in"
    assert {"H1", "L1"} <= received(arizona_box)[1] and "N1" not in keys_sent(arizona_box)
    assert received(colorado_box)[1] == {"D1", "D2", "D3", "B1", "B2", "N1"}
    assert received(arizona_box)[1] == {"A1", "A2", "A3", "B1", "B2", "H1", "L1"}
    assert not {"H1-2025", "L1-JUL20"} & (keys_sent(colorado_box) | keys_sent(arizona_box)), "only July 15's sales"
    with engine_for(sync_url).connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(quarantine)) == 0, "placed, sent, no longer held"
        stores = set(conn.execute(sa.select(shopper_stores.c.customer_id, shopper_stores.c.location_id)))
    assert {("H1", "STORE-PHX"), ("L1", "STORE-PHX"), ("N1", ""), ("B1", "STORE-01"), ("B1", "STORE-PHX")} <= stores
    assert metadata(known, "arizona/aiq_personas")["sent"] == 2 and metadata(known, "colorado/aiq_personas")["sent"] == 1

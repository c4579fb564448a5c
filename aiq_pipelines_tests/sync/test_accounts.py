"""Several AIQ accounts against two sandboxes: each receives exactly its stores' sales and their shoppers, under its own
limits while both push at once, and a re-run sends nothing to either.

A Denver store belongs to account ``colorado``, a Phoenix store to ``arizona``. Shoppers ``D*`` buy only in Denver,
``A*`` only in Phoenix, ``B*`` in both; ``N1`` was modified on the day and has bought nothing.
"""

from __future__ import annotations

import pytest

from aiq_pipelines.pos.dropfiles import export_tables, scan
from aiq_pipelines.pos.mirror import DropMirror
from aiq_pipelines.pos.times import StoreDays
from aiq_pipelines.sync.intake import take_in
from aiq_pipelines.sync.store import SyncStore
from aiq_pipelines_tests.support.accounts import (
    DENVER,
    account,
    assert_a_store_no_account_lists_is_quarantined_until_one_does,
    assert_an_older_sync_database_gains_the_quarantines_account_column,
    assert_each_account_gets_exactly_its_stores_sales_and_their_shoppers_in_parallel,
    assert_shoppers_go_to_the_accounts_of_the_stores_they_bought_in,
    checks,
    metadata,
    received,
    run,
)


@pytest.mark.slow
def test_each_account_gets_exactly_its_stores_sales_and_their_shoppers_in_parallel(chain, sync_url, two_sandboxes):
    assert_each_account_gets_exactly_its_stores_sales_and_their_shoppers_in_parallel(chain, sync_url, two_sandboxes)


def test_the_default_account_takes_unlisted_stores_and_shoppers_without_a_sale(chain, sync_url, two_sandboxes):
    colorado_box, arizona_box = two_sandboxes
    colorado = account("colorado", colorado_box, [], default=True)
    arizona = account("arizona", arizona_box, ["STORE-PHX"])

    result = run(chain.url, sync_url, {colorado: colorado_box, arizona: arizona_box})

    assert result.success
    assert received(colorado_box) == ({f"DEN-{n:02}" for n in range(12)}, {"D1", "D2", "D3", "B1", "B2", "N1"})
    assert received(arizona_box) == ({f"PHX-{n:02}" for n in range(12)}, {"A1", "A2", "A3", "B1", "B2"})


def test_a_store_no_account_lists_is_quarantined_until_one_does(chain, sync_url, two_sandboxes):
    assert_a_store_no_account_lists_is_quarantined_until_one_does(chain, sync_url, two_sandboxes)


def test_each_account_gets_the_stock_of_its_own_stores(chain, sync_url, two_sandboxes):
    colorado_box, arizona_box = two_sandboxes
    colorado, arizona = account("colorado", colorado_box, ["STORE-01"]), account("arizona", arizona_box, ["STORE-PHX"])

    result = run(chain.url, sync_url, {colorado: colorado_box, arizona: arizona_box}, inventory=True)

    assert result.success, [e.message for e in result.all_events if e.is_failure]
    quantities = [{item["productId"]: float(item["quantity"]) for item in box.state()["inventory"]}
                  for box in two_sandboxes]
    assert quantities == [{"P1": 5}, {"P1": 7, "P2": 3}], "only the account's stores, summed over them"
    push_checks = {key: passed for key, passed in checks(result).items() if "aiq" in key}
    assert all(push_checks.values()) and len(push_checks) == 4, push_checks
    assert metadata(result, "colorado/aiq_inventory")["sent"] == 1


def test_one_account_failing_stops_neither_the_other_nor_its_record(chain, sync_url, two_sandboxes):
    colorado_box, arizona_box = two_sandboxes
    colorado, arizona = account("colorado", colorado_box, ["STORE-01"]), account("arizona", arizona_box, ["STORE-PHX"])
    arizona_box.stop()

    result = run(chain.url, sync_url, {colorado: colorado_box, arizona: arizona_box}, max_attempts=1)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert "the push failed for AIQ account(s) arizona;" in failure
    assert received(colorado_box)[0] == {f"DEN-{n:02}" for n in range(12)}
    assert metadata(result, "colorado/aiq_sales")["sent"] == 12


def test_an_older_sync_database_gains_the_quarantines_account_column(sync_url):
    assert_an_older_sync_database_gains_the_quarantines_account_column(sync_url)


def test_shoppers_go_to_the_accounts_of_the_stores_they_bought_in(wider_chain, sync_url, two_sandboxes):
    assert_shoppers_go_to_the_accounts_of_the_stores_they_bought_in(wider_chain.url, sync_url, two_sandboxes)


def test_shoppers_go_to_the_accounts_of_the_stores_they_bought_in_from_csv_drops(wider_chain, sync_url, two_sandboxes,
                                                                                tmp_path):
    mirror = DropMirror(f"sqlite:///{tmp_path / 'mirror.db'}", StoreDays(DENVER))
    export_tables(wider_chain.engine, tmp_path / "drop")
    loads = take_in(mirror, SyncStore(sync_url, "America/Denver").engine, scan(tmp_path / "drop"), "intake")
    assert [load.error for load in loads] == [None] * 6 and sum(load.rows for load in loads) > 50
    assert_shoppers_go_to_the_accounts_of_the_stores_they_bought_in(str(mirror.engine.url), sync_url, two_sandboxes)

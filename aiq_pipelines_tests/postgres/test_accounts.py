"""Several AIQ accounts on a PostgreSQL sync database: the same tests as on SQLite (``sync/test_accounts.py``; both
call the bodies in ``support/accounts.py``), with ``pos`` and ``sync_url`` on the PostgreSQL test server."""

import pytest

from aiq_pipelines_tests.support.accounts import (
    assert_a_store_no_account_lists_is_quarantined_until_one_does,
    assert_an_older_sync_database_gains_the_quarantines_account_column,
    assert_each_account_gets_exactly_its_stores_sales_and_their_shoppers_in_parallel,
    assert_shoppers_go_to_the_accounts_of_the_stores_they_bought_in,
)


def test_a_store_no_account_lists_is_quarantined_until_one_does(chain, sync_url, two_sandboxes):
    assert_a_store_no_account_lists_is_quarantined_until_one_does(chain, sync_url, two_sandboxes)


def test_an_older_sync_database_gains_the_quarantines_account_column(sync_url):
    assert_an_older_sync_database_gains_the_quarantines_account_column(sync_url)


@pytest.mark.slow
def test_each_account_gets_exactly_its_stores_sales_and_their_shoppers_in_parallel(chain, sync_url, two_sandboxes):
    assert_each_account_gets_exactly_its_stores_sales_and_their_shoppers_in_parallel(chain, sync_url, two_sandboxes)


def test_shoppers_go_to_the_accounts_of_the_stores_they_bought_in(wider_chain, sync_url, two_sandboxes):
    assert_shoppers_go_to_the_accounts_of_the_stores_they_bought_in(wider_chain.url, sync_url, two_sandboxes)

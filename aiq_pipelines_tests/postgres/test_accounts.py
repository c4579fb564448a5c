"""Several AIQ accounts on a PostgreSQL sync database: the same tests as on SQLite (``sync/test_accounts.py``), with
``pos`` and ``sync_url`` on the PostgreSQL test server."""

from aiq_pipelines_tests.sync.test_accounts import (  # noqa: F401 (fixtures and tests collected here again)
    chain,
    test_a_store_no_account_lists_is_quarantined_until_one_does,
    test_an_older_sync_database_gains_the_quarantines_account_column,
    test_each_account_gets_exactly_its_stores_sales_and_their_shoppers_in_parallel,
    two_sandboxes,
)

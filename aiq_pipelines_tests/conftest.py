"""Shared fixtures. The sandbox fixtures live in support/sandbox.py, those of several accounts in support/accounts.py,
the alerts' webhook in support/webhook.py."""

import datetime as dt
import os

import pytest

# The shared test bodies and checks in support/ report a failed assert as the tests' own do.
pytest.register_assert_rewrite("aiq_pipelines_tests.support")

# The code location reads its settings once at import; tests run against the documented defaults, whatever the
# developer's shell holds.
for _name in list(os.environ):
    if _name.startswith(("POS_", "SYNC_", "AIQ_", "QUARANTINE_", "EXTRACT_", "SENSOR_", "INVENTORY_", "PULL_", "AUTOMATION_",
                          "AUDIT_")):
        del os.environ[_name]

from aiq_pipelines.pos import demo  # noqa: E402
from aiq_pipelines_tests.support.pos_factory import PosFactory  # noqa: E402

pytest_plugins = ["aiq_pipelines_tests.support.sandbox", "aiq_pipelines_tests.support.accounts",
                  "aiq_pipelines_tests.support.webhook"]

DEMO_OPTIONS = demo.DemoOptions(
    days=7, stores=2, seed=7, end_date=dt.date(2026, 3, 10), min_sales=20, max_sales=60, products=60
)


@pytest.fixture(scope="session")
def demo_pos_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small demo POS (7 days to 2026-03-10, across the spring DST change), generated once. Treat as read-only."""
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'pos.db'}"
    demo.generate(url, DEMO_OPTIONS, now=dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    return url


@pytest.fixture
def sync_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'sync.db'}"


@pytest.fixture
def pos(tmp_path) -> PosFactory:
    """An empty reference-schema POS to write hand-made rows into."""
    return PosFactory(f"sqlite:///{tmp_path / 'pos.db'}")

"""The PostgreSQL tests: one server for the session; ``pos`` and ``sync_url`` are databases on it here."""

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

import aiq_pipelines
from aiq_pipelines_tests.support.pos_factory import PosFactory
from aiq_pipelines_tests.support.postgres import (  # noqa: F401 (fixtures used by these tests)
    SUPERUSER,
    PostgresServer,
    pg_database,
    pg_server,
)

PRODUCTION_YAML = Path(aiq_pipelines.__file__).parent / "deploy" / "dagster.production.yaml"


@pytest.fixture
def pos(pg_database: Callable[..., str]) -> PosFactory:  # noqa: F811
    """An empty reference-schema POS in its own PostgreSQL database."""
    return PosFactory(pg_database("pos"))


@pytest.fixture
def sync_url(pg_database: Callable[..., str]) -> str:  # noqa: F811
    """A sync database of its own on the PostgreSQL test server."""
    return pg_database("sync")


@pytest.fixture
def dagster_home(
    tmp_path: Path, pg_server: PostgresServer, pg_database: Callable[..., str]  # noqa: F811
) -> tuple[Path, dict[str, str]]:
    """A DAGSTER_HOME holding the production dagster.yaml, and the environment that points it at the test server."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PRODUCTION_YAML, home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(pg_server.port),
        "DAGSTER_PG_USERNAME": SUPERUSER,
        "DAGSTER_PG_PASSWORD": "not-checked-by-trust-auth",
        "DAGSTER_PG_DB": sa.make_url(pg_database("dagster")).database,
    }
    return home, env

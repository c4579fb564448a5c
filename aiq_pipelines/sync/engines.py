"""SQLAlchemy engines, one per URL per process, with SQLite set up for several processes at once."""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa

SQLITE_BUSY_TIMEOUT_MS = 60_000


def _configure_sqlite(dbapi_connection, _record) -> None:
    # WAL lets readers (sensors, the UI's checks) run while a sync writes; the busy timeout makes concurrent
    # writers from other runs wait their turn instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@functools.cache
def engine_for(url: str) -> sa.Engine:
    """The process's engine for ``url``; SQLite files get their folder created and WAL mode."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        sa.event.listen(engine, "connect", _configure_sqlite)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)

"""SQLAlchemy engines, one per URL per process, with SQLite set up for several processes at once."""

from __future__ import annotations

import functools
import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa

SQLITE_BUSY_TIMEOUT_MS = 60_000


def _configure_sqlite(dbapi_connection, _record) -> None:
    # WAL lets readers (sensors, the UI's checks) run while a sync writes; the busy timeout makes concurrent
    # writers from other runs wait their turn instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # Switching a new file to WAL takes an exclusive lock that the busy handler does not wait for: when several
    # processes open a fresh database at once, retry until one of them has switched it.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def sqlalchemy_url(url: str) -> sa.URL:
    """``url`` parsed; a plain ``postgresql://`` (or ``postgres://``) URL, as libpq and most tools write it, gets the
    psycopg 3 driver the project installs, so users can paste a standard connection URL."""
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


@functools.cache
def engine_for(url: str) -> sa.Engine:
    """The process's engine for ``url``; SQLite files get their folder created and WAL mode."""
    parsed = sqlalchemy_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        sa.event.listen(engine, "connect", _configure_sqlite)
        return engine
    return sa.create_engine(parsed, pool_pre_ping=True)


@functools.cache
def read_only_engine_for(url: str) -> sa.Engine:
    """The process's engine for reading someone else's database (the POS).

    A SQLite file is opened read-only and left as it is: a missing file is an error, not a new empty database, and its
    journal mode is not switched (WAL is a lasting property of the file, the POS's to choose). PostgreSQL as
    ``engine_for``; the POS queries are SELECTs only.
    """
    parsed = sqlalchemy_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return engine_for(url)
    uri = Path(parsed.database).resolve().as_uri() + "?mode=ro"

    def connect() -> sqlite3.Connection:
        # check_same_thread off as SQLAlchemy sets it for pooled file databases: Dagster may read from another thread.
        return sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)

    return sa.create_engine(parsed, creator=connect)


def serialized_engine(url: str) -> sa.Engine:
    """A new engine whose every transaction holds the database's writer lock from its start (SQLite ``BEGIN
    IMMEDIATE``; PostgreSQL as ``engine_for``, where callers take advisory locks), for short critical sections such
    as the rate limiter's. Its owner disposes of it."""
    parsed = sqlalchemy_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return sa.create_engine(parsed, pool_pre_ping=True)
    if backend != "sqlite":
        raise ValueError(f"expected a SQLite or PostgreSQL database, not {backend!r}")
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @sa.event.listens_for(engine, "connect")
    def _manual_transactions(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # SQLAlchemy's "begin" event issues BEGIN IMMEDIATE instead of pysqlite's deferred BEGIN.
        dbapi_connection.isolation_level = None
        # No fsync per commit: what a power cut (never a crash) loses here is a rate-limit stamp, at most one 429.
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine

"""SQLAlchemy engines, one per URL per process, with SQLite set up for several processes at once."""

from __future__ import annotations

import functools
import hashlib
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa

SQLITE_BUSY_TIMEOUT_MS = 60_000
SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(b"aiq_pipelines schema").digest()[:8], "big", signed=True)

logger = logging.getLogger(__name__)


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


def create_tables(
    engine: sa.Engine,
    metadata: sa.MetaData,
    tables: Sequence[sa.Table] | None = None,
    *,
    rebuildable: Sequence[sa.Table] = (),
) -> None:
    """Create the tables that don't exist yet, safely when several processes start on a fresh database at once.

    Checking for a table and creating it are separate statements, so two runs starting together would both find it
    missing and the slower CREATE would fail. Checking and creating under the database's writer lock (SQLite) or an
    advisory lock (PostgreSQL) makes the second process find the first one's tables.

    A ``rebuildable`` table holds only what the pipeline can produce again (staging): when its columns or indexes
    differ from this version's, it is dropped and created anew rather than failing every query on a missing column
    (or running without the index a query relies on). Any other table of an older version gets the indexes it lacks
    (an index changes no data); a new column there would need a migration.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
        inspector = sa.inspect(conn)
        for table in rebuildable:
            if not inspector.has_table(table.name):
                continue
            columns = {column["name"] for column in inspector.get_columns(table.name)}
            indexes = {index["name"] for index in inspector.get_indexes(table.name)}
            if columns != set(table.columns.keys()) or indexes != {index.name for index in table.indexes}:
                logger.warning(f"{table.name} has an older layout; recreating it (the next extract restages it)")
                table.drop(conn)
        metadata.create_all(conn, tables=tables)
        # A table kept from an older version (the quarantine, the ledger) gets the indexes this version added. Only
        # missing ones are created: on PostgreSQL even CREATE INDEX IF NOT EXISTS first locks the table against
        # writes, which would make every process that opens the database wait for a running extract to commit.
        inspector = sa.inspect(conn)  # a fresh one: the first cached what existed before create_all
        for table in metadata.sorted_tables if tables is None else tables:
            existing = {index["name"] for index in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in existing:
                    conn.execute(sa.schema.CreateIndex(index))
        conn.commit()


class _Slot(NamedTuple):
    """Where a value goes in a statement rendered by ``_rendered``: parameter ``name``, element ``index`` of a list."""

    name: str
    index: int | None


@functools.lru_cache(maxsize=512)
def _rendered(
    statement: sa.Executable, dialect: sa.Dialect, shape: tuple[tuple[str, int | None], ...]
) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
    """``statement`` as driver SQL with each list parameter expanded to its length in ``shape``, and where every
    driver parameter's value comes from (a ``_Slot``, or a constant of the statement)."""
    compiled = statement.compile(dialect=dialect)
    slots = {name: _Slot(name, None) if length is None else [_Slot(name, i) for i in range(length)]
             for name, length in shape}
    state = compiled.construct_expanded_state(slots)
    return state.statement, tuple(state.positiontup) if state.positiontup is not None else None, dict(state.parameters)


def execute_with_lists(conn: sa.Connection, statement: sa.Executable, parameters: Mapping[str, Any]) -> sa.CursorResult:
    """``conn.execute(statement, parameters)`` for a statement whose list parameters are ``expanding`` bind parameters,
    the SQL for each combination of list lengths rendered once and run on the driver.

    SQLAlchemy renders the expanded SQL at every execution: about 0.2 ms for 100 keys, once or more per batch a push
    sends (13% of the time the 100k sales push held the interpreter on the thread that feeds the senders). Values and
    rows pass as the driver takes and returns them, without SQLAlchemy's type conversions: use it for text and
    numbers.
    """
    shape = tuple((name, len(value) if isinstance(value, (list, tuple)) else None)
                  for name, value in parameters.items())
    sql, order, sources = _rendered(statement, conn.dialect, shape)

    def value(source: Any) -> Any:
        if not isinstance(source, _Slot):
            return source  # a constant of the statement, such as a literal compared with
        given = parameters[source.name]
        return given if source.index is None else given[source.index]

    if order is not None:
        return conn.exec_driver_sql(sql, tuple(value(sources[name]) for name in order))
    return conn.exec_driver_sql(sql, {name: value(source) for name, source in sources.items()})

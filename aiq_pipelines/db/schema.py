"""Creating tables, safely when several processes open a fresh database at once."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa

from aiq_pipelines.db.locks import begin_exclusive

SCHEMA_LOCK = "aiq_pipelines schema"

logger = logging.getLogger(__name__)


def create_tables(
    engine: sa.Engine,
    metadata: sa.MetaData,
    tables: Sequence[sa.Table] | None = None,
    *,
    rebuildable: Sequence[sa.Table] = (),
) -> None:
    """Create the tables of ``metadata`` (or just ``tables``) that don't exist yet.

    Checking for a table and creating it are separate statements, so two runs starting together would both find it
    missing and the slower CREATE would fail. Checking and creating under the database's writer lock (SQLite) or an
    advisory lock (PostgreSQL) makes the second process find the first one's tables.

    A ``rebuildable`` table holds only what the pipeline can produce again (staging): when its columns or indexes
    differ from this version's, it is dropped and created anew rather than failing every query on a missing column
    (or running without the index a query relies on). Any other table of an older version gets the indexes it lacks
    (an index changes no data) and the columns it lacks, when each has a server default (a new column of this version
    is always added with one, so existing rows get a value); any other change would need a migration.
    """
    with engine.connect() as conn:
        begin_exclusive(conn, SCHEMA_LOCK)
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
        # Only missing indexes are created: on PostgreSQL even CREATE INDEX IF NOT EXISTS first locks the table
        # against writes, which would make every process that opens the database wait for a running extract.
        inspector = sa.inspect(conn)  # a fresh one: the first cached what existed before create_all
        for table in metadata.sorted_tables if tables is None else tables:
            _add_missing_columns(conn, table, {column["name"] for column in inspector.get_columns(table.name)})
            existing = {index["name"] for index in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in existing:
                    conn.execute(sa.schema.CreateIndex(index))
        conn.commit()


def _add_missing_columns(conn: sa.Connection, table: sa.Table, existing: set[str]) -> None:
    for column in table.columns:
        if column.name in existing:
            continue
        if column.server_default is None:
            raise RuntimeError(f"{table.name} lacks column {column.name}, which has no server default to fill existing "
                               "rows with: this table needs a migration")
        logger.warning(f"{table.name}: adding column {column.name} of this version")
        spec = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {conn.dialect.identifier_preparer.format_table(table)} ADD COLUMN {spec}"))

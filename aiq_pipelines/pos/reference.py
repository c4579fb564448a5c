"""The reference POS schema (``reference_schema.sql``): creating its tables, and its columns as the one description of
what each table holds (the drop folder's CSV headers, their types, which are required)."""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass
from importlib import resources

import sqlalchemy as sa

# In the order a POS fills them: a table's references come before it.
TABLES = ("locations", "customers", "products", "inventory", "transactions", "transaction_items")


def schema_statements() -> list[str]:
    text = resources.files("aiq_pipelines.pos").joinpath("reference_schema.sql").read_text()
    body = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    return [stmt.strip() for stmt in body.split(";") if stmt.strip()]


def create_reference_schema(engine: sa.Engine, *, replace: bool = False) -> None:
    """Create the reference POS tables that do not exist; with ``replace``, drop them first."""
    with engine.begin() as conn:
        if replace:
            for table in reversed(TABLES):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        existing = set(sa.inspect(conn).get_table_names())
        for statement in schema_statements():
            words = statement.split()
            if words[:2] == ["CREATE", "TABLE"] and words[2] in existing:
                continue
            conn.exec_driver_sql(statement.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1))


@dataclass(frozen=True)
class Column:
    """One column of a reference table: its name, its type's family and whether a row must give it."""

    name: str
    kind: str  # text | integer | numeric | timestamp | date | boolean
    required: bool  # part of the key, or NOT NULL without a default
    key: bool
    default: str | None  # the schema's DEFAULT, as SQL text
    declared: str  # the type as the schema declares it (a copy of the column compares and stores values alike)


def _kind(declared: str) -> str:
    declared = declared.upper()
    for prefix, kind in (("INTEGER", "integer"), ("NUMERIC", "numeric"), ("TIMESTAMP", "timestamp"),
                         ("DATE", "date"), ("BOOLEAN", "boolean")):
        if declared.startswith(prefix):
            return kind
    return "text"


@functools.cache
def reference_columns() -> dict[str, tuple[Column, ...]]:
    """Each reference table's columns in schema order, read from the schema itself."""
    db = sqlite3.connect(":memory:")
    try:
        for statement in schema_statements():
            db.execute(statement)
        columns = {}
        for table in TABLES:
            rows = db.execute(f"PRAGMA table_info({table})").fetchall()  # cid, name, type, notnull, default, pk
            columns[table] = tuple(
                Column(name, _kind(declared), bool(pk) or (bool(notnull) and default is None), bool(pk), default,
                       declared)
                for _, name, declared, notnull, default, pk in rows
            )
        return columns
    finally:
        db.close()

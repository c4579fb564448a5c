"""Searching for personal data: every form a shopper's values could take, every value a database stores as text, and
where any of those forms is found."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for


def personal_forms(fields: dict[str, str]) -> list[str]:
    """Every form a shopper's personal data could take: names, address and city as typed, the phone as typed and as
    its ten digits, the email as typed (matched in any case), the birthday as the POS (YYYY-MM-DD) and as AIQ
    (MM/DD/YYYY) write it."""
    digits = "".join(ch for ch in fields["phone"] if ch.isdigit())[-10:]
    year, month, day = fields["birthday"].split("-")
    return [fields["first_name"], fields["last_name"], fields["phone"], digits, fields["email"], fields["birthday"],
            f"{month}/{day}/{year}", fields["address1"], fields["address2"], fields["city"]]


def found(texts: Iterable[tuple[str, str]], needles: list[str]) -> list[tuple[str, str]]:
    """(where, needle) for every needle in a text, matched in any case (an email is one whatever its case)."""
    lowered = [needle.lower() for needle in needles]
    return [(where, needle) for where, text in texts for needle in lowered if needle in text.lower()]


def shopper_found(texts: Iterable[tuple[str, str]], fields: dict[str, str]) -> list[tuple[str, str]]:
    """(where, form) for every form of this shopper's personal data found in the texts."""
    return found(texts, personal_forms(fields))


def as_text(value: Any) -> str:
    """A stored value as text to search: bytes decoded as UTF-8, JSON documents and arrays as JSON (characters as
    they are, not escaped), anything else as ``str`` gives it."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=as_text)
    return str(value)


def stored_values(url: str) -> list[tuple[str, str]]:
    """(table.column, value as text) for every value the database at ``url`` stores: every column of every table and
    materialized view of every schema (a schema other than the default one prefixes the table's name).

    Each table is read with ``SELECT *`` and every value turned into text (``as_text``), whatever its column's type:
    no column is left out because its type is JSONB, an array, BYTEA or one SQLAlchemy does not know.
    """
    engine = engine_for(url)
    inspector = sa.inspect(engine)
    values = []
    with engine.connect() as conn:
        for schema in inspector.get_schema_names():
            if schema == "information_schema":
                continue
            names = inspector.get_table_names(schema)
            with contextlib.suppress(NotImplementedError):  # SQLite has no materialized views
                names += inspector.get_materialized_view_names(schema)
            prefix = "" if schema == inspector.default_schema_name else f"{schema}."
            for name in names:
                for row in conn.execute(sa.select(sa.text("*")).select_from(sa.table(name, schema=schema))).mappings():
                    values += [(f"{prefix}{name}.{column}", as_text(value))
                               for column, value in row.items() if value is not None]
    return values

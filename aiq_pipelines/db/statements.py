"""Statements the sync runs once per batch, compiled once: keyed upserts and statements with key lists.

Both go to the driver directly with the SQL SQLAlchemy compiled for them. SQLAlchemy's per-execution work (rendering
expanded lists, processing each row's parameters) cost as much as running the statements themselves on SQLite
(``bench/RESULTS.md``, "statement helpers"). Values are converted by SQLAlchemy's own bind processors, so what is
stored is the same as through ``conn.execute``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def upsert(
    conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]],
    *, keep_unless: tuple[str, tuple[str, ...]] | None = None,
) -> None:
    """Insert rows, or update them where their primary key exists (SQLite and PostgreSQL). Every row has the keys of
    the first. ``keep_unless=(column, witnesses)`` keeps a stored row's ``column`` when none of its ``witnesses``
    changed (NULL equal to NULL): a timestamp of the last real change, kept across rewrites of the same content."""
    if rows:
        statement = _compiled_upsert(conn.dialect, table, tuple(rows[0]), keep_unless)
        conn.exec_driver_sql(statement.sql, [statement.parameters(row) for row in rows])


@dataclass(frozen=True)
class _CompiledUpsert:
    """An upsert compiled once for a dialect and a set of columns, with each column's type conversion."""

    sql: str
    names: tuple[str, ...]
    positional: bool
    values: Callable[[Mapping[str, Any]], Sequence[Any]]  # a row's values in ``names`` order, in one C call
    conversions: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, converter) of the columns that need one

    def parameters(self, row: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        values = self.values(row)
        if self.conversions:
            values = list(values)
            for i, convert in self.conversions:
                values[i] = convert(values[i])
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))


@functools.cache
def _compiled_upsert(
    dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...], keep_unless: tuple[str, tuple[str, ...]] | None
) -> _CompiledUpsert:
    unknown = sorted(set(columns) - set(table.c.keys()))
    if unknown:
        raise ValueError(f"{table.name} has no columns {unknown}: a row to upsert must hold the table's columns only")
    compiled = _upsert_statement(dialect.name, table, keep_unless).compile(dialect=dialect, column_keys=list(columns))
    names = tuple(compiled.positiontup) if compiled.positional else tuple(columns)
    processors = (table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
    values = operator.itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
    conversions = tuple((i, convert) for i, convert in enumerate(processors) if convert is not None)
    return _CompiledUpsert(str(compiled), names, compiled.positional, values, conversions)


@functools.cache
def _upsert_statement(
    dialect: str, table: sa.Table, keep_unless: tuple[str, tuple[str, ...]] | None
) -> sa.Executable:
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
    if insert is None:
        raise NotImplementedError(f"the sync database supports SQLite and PostgreSQL, not {dialect}")
    stmt = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    values: dict[str, Any] = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    if keep_unless is not None:
        kept, witnesses = keep_unless
        same = sa.and_(*(table.c[name].is_not_distinct_from(stmt.excluded[name]) for name in witnesses))
        values[kept] = sa.case((same, table.c[kept]), else_=stmt.excluded[kept])
    return stmt.on_conflict_do_update(index_elements=keys, set_=values)


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

    Values and rows pass as the driver takes and returns them, without SQLAlchemy's type conversions: use it for text
    and numbers.
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

"""The drop folder's mirror: a SQLite database in the reference schema that each new or changed drop file is loaded
into, so the extract reads drops with the same SELECTs as any POS.

A file is loaded in one transaction: its rows go to a scratch table as they are read (memory does not grow with the
file), then replace the mirror's rows with the same key, the file's last line for a key winning; a file of
transaction lines replaces all the lines of each receipt whose lines changed. Each load is recorded in ``drop_loads`` with the
file's fingerprint (name, size, modification time, SHA-256) and the business days of the rows it changed: a
daily full export of a table changes the few rows that did, and only their days are synced again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.pos.dropfiles import ColumnMap, DropFile, DropFileError, Row, read_rows
from aiq_pipelines.pos.reference import create_reference_schema, reference_columns
from aiq_pipelines.pos.times import StoreDays, utc_now

CHUNK = 5000
OnRejects = Callable[[DropFile, Sequence[Row]], None]

_meta = sa.MetaData()
drop_loads = sa.Table(
    "drop_loads", _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String, nullable=False, index=True),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("mtime_ns", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("changed", sa.Integer, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
    sa.Column("days", sa.Text, nullable=False),  # JSON list of the business days the rows touch
    sa.Column("error", sa.Text),  # why the file could not be read; its rows were not loaded
    sa.Column("run_id", sa.String, nullable=False),
    sa.Column("loaded_at", sa.DateTime, nullable=False),
)
# A customer's day is the day it was modified; a sale's, the day it was rung in its store's zone.
_DAY_COLUMN = {"transactions": "transaction_at", "customers": "last_modified_at"}


@dataclass
class LoadResult:
    """What loading one file did."""

    name: str
    kind: str
    rows: int = 0
    changed: int = 0  # rows that differ from the mirror's: what the days' syncs will find changed
    rejected: int = 0
    blank: int = 0  # lines without a value (a trailing empty line, a line of commas): skipped, not rejected
    days: list[str] = field(default_factory=list)
    error: str | None = None
    unchanged: bool = False


class DropMirror:
    """The mirror database at ``url`` (SQLite), its reference tables and load log created on first use."""

    def __init__(self, url: str, store_days: StoreDays):
        if sa.make_url(url).get_backend_name() != "sqlite":
            raise ValueError("the drop folder's mirror (POS_DATABASE_URL) must be a SQLite database")
        self.engine = engine_for(url)
        self.days = store_days  # the default zone; each store's own comes from the mirror's locations
        create_reference_schema(self.engine)
        _meta.create_all(self.engine)

    def loaded(self, name: str) -> tuple[int, int, str] | None:
        """The fingerprint (size, modification time, SHA-256) of the file ``name`` as last loaded, if ever."""
        query = (sa.select(drop_loads.c.size, drop_loads.c.mtime_ns, drop_loads.c.sha256)
                 .where(drop_loads.c.name == name).order_by(drop_loads.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (row.size, row.mtime_ns, row.sha256)

    def forget_customer(self, customer_id: str) -> int:
        """Delete a customer's row (its personal data) from the mirror; their sales keep the key, as the drop files
        give them. Returns the rows deleted."""
        with self.engine.begin() as conn:
            return conn.execute(sa.text("DELETE FROM customers WHERE customer_id = :key"), {"key": customer_id}).rowcount

    def load(self, file: DropFile, digest: str, run_id: str, column_map: ColumnMap | None = None,
             on_rejects: OnRejects | None = None) -> LoadResult:
        """Load one file (see the module's docstring); a file that cannot be read loads nothing and says why."""
        result = LoadResult(file.name, file.kind)
        try:
            with self.engine.begin() as conn:
                self._load(conn, file, column_map, on_rejects, result)
                self._record(conn, file, digest, run_id, result)
        except DropFileError as exc:
            result.rows, result.rejected, result.blank, result.days, result.error = 0, 0, 0, [], str(exc)
            with self.engine.begin() as conn:
                self._record(conn, file, digest, run_id, result)
        return result

    def _load(self, conn: sa.Connection, file: DropFile, column_map: ColumnMap | None, on_rejects: OnRejects | None,
              result: LoadResult) -> None:
        columns = reference_columns()[file.kind]
        names, keys = [c.name for c in columns], [c.name for c in columns if c.key]
        for table in ("drop_scratch", "drop_changed"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{table}")
        # Declared as the reference table is, so a value is stored, and compares, as it does there.
        conn.exec_driver_sql("CREATE TEMP TABLE drop_scratch (line INTEGER PRIMARY KEY, "
                             + ", ".join(f"{c.name} {c.declared}" for c in columns) + ")")
        present: list[str] | None = None
        good: list[dict] = []
        bad: list[Row] = []
        for row in read_rows(file, column_map):
            if row.values is None and row.problem is None:
                result.blank += 1
            elif row.values is None:
                bad.append(row)
            else:
                present = present or [n for n in names if n in row.values]
                good.append({"line": row.line, **row.values})
            if len(good) >= CHUNK:
                self._insert(conn, present, good)
            if len(bad) >= CHUNK:
                self._reject(file, bad, on_rejects, result)
        self._insert(conn, present, good)
        self._reject(file, bad, on_rejects, result)
        if present is not None:
            result.rows = conn.exec_driver_sql("SELECT count(*) FROM drop_scratch").scalar() or 0
            self._apply(conn, file.kind, present, keys, result)
        for table in ("drop_scratch", "drop_changed"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{table}")

    def _apply(self, conn: sa.Connection, kind: str, present: list[str], keys: list[str], result: LoadResult) -> None:
        """Keep each key's last line, find the rows that differ from the mirror's, and write those."""
        key_list, on_keys = ", ".join(keys), " AND ".join(f"t.{k} = s.{k}" for k in keys)
        # Without the index, finding each key's last line would compare every row with every other.
        conn.exec_driver_sql(f"CREATE INDEX temp.drop_scratch_key ON drop_scratch ({key_list}, line)")
        conn.exec_driver_sql(f"DELETE FROM drop_scratch WHERE EXISTS (SELECT 1 FROM drop_scratch t WHERE "
                             f"{on_keys.replace('s.', 'drop_scratch.')} AND t.line > drop_scratch.line)")
        same = " AND ".join(f"t.{n} IS s.{n}" for n in present)
        conn.exec_driver_sql(f"CREATE TEMP TABLE drop_changed AS SELECT s.* FROM drop_scratch s LEFT JOIN {kind} t "
                             f"ON {on_keys} WHERE t.{keys[0]} IS NULL OR NOT ({same})")
        if kind == "transaction_items":
            # A receipt whose lines changed, or lost one, gets the file's lines in place of all its own.
            conn.exec_driver_sql(
                "INSERT INTO drop_changed SELECT s.* FROM drop_scratch s WHERE s.transaction_id IN (SELECT t.transaction_id "
                "FROM transaction_items t JOIN (SELECT DISTINCT transaction_id FROM drop_scratch) r USING (transaction_id) "
                "WHERE NOT EXISTS (SELECT 1 FROM drop_scratch x WHERE x.transaction_id = t.transaction_id AND "
                "x.line_number = t.line_number)) AND s.line NOT IN (SELECT line FROM drop_changed)")
            conn.exec_driver_sql("INSERT INTO drop_changed SELECT s.* FROM drop_scratch s WHERE s.transaction_id IN "
                                 "(SELECT transaction_id FROM drop_changed) AND s.line NOT IN (SELECT line FROM drop_changed)")
        result.changed = conn.exec_driver_sql("SELECT count(*) FROM drop_changed").scalar() or 0
        days_before = self._days(conn, kind, keys)
        if kind == "transaction_items":
            conn.exec_driver_sql("DELETE FROM transaction_items WHERE transaction_id IN "
                                 "(SELECT transaction_id FROM drop_changed)")
        updates = ", ".join(f"{n} = excluded.{n}" for n in present if n not in keys)
        conflict = f"ON CONFLICT ({key_list}) DO " + (f"UPDATE SET {updates}" if updates else "NOTHING")
        conn.exec_driver_sql(f"INSERT INTO {kind} ({', '.join(present)}) SELECT {', '.join(present)} "
                             f"FROM drop_changed WHERE true {conflict}")
        result.days = sorted(days_before | self._days(conn, kind, keys))

    @staticmethod
    def _insert(conn: sa.Connection, present: list[str] | None, rows: list[dict]) -> None:
        if rows and present:
            placeholders = ", ".join(f":{n}" for n in ["line", *present])
            conn.execute(sa.text(f"INSERT INTO drop_scratch (line, {', '.join(present)}) VALUES ({placeholders})"),
                         rows)
        rows.clear()

    @staticmethod
    def _reject(file: DropFile, rows: list[Row], on_rejects: OnRejects | None, result: LoadResult) -> None:
        if rows:
            result.rejected += len(rows)
            if on_rejects is not None:
                on_rejects(file, list(rows))
        rows.clear()

    def _days(self, conn: sa.Connection, kind: str, keys: list[str]) -> set[str]:
        """The business days of the mirror's rows that changed (sales in their store's zone)."""
        if kind == "transaction_items":
            query = ("SELECT x.transaction_at, x.location_id FROM transactions x WHERE x.transaction_id IN "
                     "(SELECT transaction_id FROM drop_changed)")
        elif kind in _DAY_COLUMN:
            store = "t.location_id" if kind == "transactions" else "NULL"
            query = (f"SELECT t.{_DAY_COLUMN[kind]}, {store} FROM {kind} t JOIN drop_changed s USING "
                     f"({', '.join(keys)})")
        else:
            return set()
        zones = dict(conn.exec_driver_sql("SELECT location_id, timezone FROM locations").all())
        days = set()
        for moment, location in conn.exec_driver_sql(query):
            try:
                days.add(self.days.date_of(_moment(moment), zones.get(location)).isoformat())
            except ValueError:
                days.add(self.days.date_of(_moment(moment), None).isoformat())  # the extract names the bad zone
        return days

    @staticmethod
    def _record(conn: sa.Connection, file: DropFile, digest: str, run_id: str, result: LoadResult) -> None:
        conn.execute(drop_loads.insert().values(
            name=file.name, kind=file.kind, size=file.size, mtime_ns=file.mtime_ns, sha256=digest, rows=result.rows,
            changed=result.changed, rejected=result.rejected, days=json.dumps(result.days), error=result.error, run_id=run_id,
            loaded_at=utc_now(),
        ))


def loads_after(engine: sa.Engine, load_id: int) -> list[tuple[int, str, str, list[str], int]]:
    """The loads recorded after ``load_id``: (id, file name, kind, business days, rows changed), oldest first."""
    if not sa.inspect(engine).has_table("drop_loads"):
        return []
    query = (sa.select(drop_loads.c.id, drop_loads.c.name, drop_loads.c.kind, drop_loads.c.days, drop_loads.c.changed)
             .where(drop_loads.c.id > load_id, drop_loads.c.error.is_(None)).order_by(drop_loads.c.id))
    with engine.connect() as conn:
        return [(i, name, kind, json.loads(days), changed) for i, name, kind, days, changed in conn.execute(query)]


def _moment(value: object) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))

"""Reading the POS: its queries streamed in chunks and grouped into records.

Rows are fetched ``chunk_size`` at a time (``stream_results`` + ``yield_per``: a server-side cursor on PostgreSQL), so
memory never grows with the length of the window.
"""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from aiq_pipelines.db.engines import read_only_engine_for
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.queries import (
    COUNT_SQL,
    NO_SHOPPER_STORES,
    PosQueryError,
    customized,
    load_queries,
    reads_shopper_stores,
)
from aiq_pipelines.pos.records import record_key
from aiq_pipelines.pos.times import StoreDays, naive_utc, utc_timestamp

RowGroup = tuple[str | None, list[Mapping[str, Any]]]  # the key as its record spells it (record_key)
DEFAULT_CHUNK_SIZE = 5000  # rows a round trip; EXTRACT_CHUNK_SIZE's default


@dataclass(frozen=True)
class PosChange:
    """POS rows modified in a window whose business timestamps lie within one hour (aware UTC datetimes).

    The business timestamps are None for rows whose own is missing or not a timestamp: strays, which no partition reads
    (the extracts quarantine them).
    """

    first_business_at: dt.datetime | None
    last_business_at: dt.datetime | None
    last_modified_at: dt.datetime
    rows: int
    timezone: str | None = None  # the store's, for sales; None for customers (POS_TIMEZONE's days)


def _utc(column: str, value: Any) -> dt.datetime:
    moment = utc_timestamp(value)
    if moment is None:
        raise PosQueryError(f"the POS changes query returned a {column} that is not a timestamp")
    return moment


class PosSource:
    """Streams the POS's rows for a UTC window, grouped by record key (the queries order by key)."""

    def __init__(self, database_url: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE, queries_file: Path | None = None):
        self.engine = read_only_engine_for(database_url)
        self.chunk_size = chunk_size
        self.queries = load_queries(queries_file)

    def _window_params(self, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        start_utc, end_utc = naive_utc(start), naive_utc(end)
        if self.engine.dialect.name == "sqlite":
            # SQLite compares timestamps as text. Whole-second bounds without a fraction order correctly against
            # both "YYYY-MM-DD HH:MM:SS" and "YYYY-MM-DD HH:MM:SS.ffffff" values.
            return {"window_start": f"{start_utc:%Y-%m-%d %H:%M:%S}", "window_end": f"{end_utc:%Y-%m-%d %H:%M:%S}"}
        return {"window_start": start_utc, "window_end": end_utc}

    def _stream(self, entity: str, params: Mapping[str, Any], *, reading: str | None = None) -> Iterator[RowGroup]:
        """The query's rows grouped by key; an error says it could not read ``reading`` (the entity by default)."""
        query = self.queries[entity]
        try:
            with self.engine.connect() as conn:
                statement = sa.text(query.sql)
                if "customer_ids" in params:
                    statement = statement.bindparams(sa.bindparam("customer_ids", expanding=True))
                result = conn.execution_options(stream_results=True, yield_per=self.chunk_size).execute(
                    statement, dict(params)
                )
                missing = query.required_columns - set(result.keys())
                if missing:
                    raise PosQueryError(
                        f"the POS query for {entity} does not return the columns {sorted(missing)}; "
                        "see docs/custom-schema.md"
                    )
                columns = list(result.keys())
                rows = (dict(zip(columns, row, strict=True)) for row in result)
                for key, group in itertools.groupby(rows, key=lambda row: record_key(row[query.key])):
                    yield key, list(group)
        except sa.exc.SQLAlchemyError as exc:
            raise PosQueryError(
                f"cannot read {reading or entity} from the POS database "
                f"({self.engine.url.render_as_string(hide_password=True)}): "
                f"{exc.__class__.__name__}: {str(exc.orig if hasattr(exc, 'orig') else exc).splitlines()[0]}"
            ) from None

    def transactions(self, start: dt.datetime, end: dt.datetime) -> Iterator[RowGroup]:
        """Receipts whose ``transaction_at`` falls in [start, end), one group of line rows per receipt."""
        return self._stream("transactions", self._window_params(start, end))

    def count(self, entity: str, start: dt.datetime, end: dt.datetime) -> int | None:
        """How many records ``entity``'s query returns for [start, end), when the reference query is in use (a cheap
        count on an indexed column); None for a custom query, whose count would cost a second read."""
        if entity not in COUNT_SQL or customized(self.queries, entity):
            return None
        try:
            with self.engine.connect() as conn:
                return conn.execute(sa.text(COUNT_SQL[entity]), self._window_params(start, end)).scalar()
        except sa.exc.SQLAlchemyError:
            return None  # only a progress figure: the read itself reports what is wrong

    def personas(self, start: dt.datetime, end: dt.datetime) -> Iterator[RowGroup]:
        """Customers created or modified in [start, end)."""
        return self._stream("personas", self._window_params(start, end))

    def personas_by_id(self, customer_ids: Sequence[str]) -> Iterator[RowGroup]:
        """The customers with these ids, however long ago they were modified (sales need their persona first)."""
        return self._stream("personas_by_id", {"customer_ids": list(customer_ids)})

    def shopper_stores(self, customer_ids: Sequence[str]) -> Iterator[RowGroup]:
        """The stores each of these customers bought in, in the POS's whole history: one row per customer and store
        (a customer who bought nothing has none). A custom transactions query without its own lookup fails (never
        guess which table holds the sales)."""
        self.check_shopper_stores()
        return self._stream("shopper_stores", {"customer_ids": list(customer_ids)})

    def check_shopper_stores(self) -> None:
        """Fail, saying what to add, when the stores customers bought in cannot be read (``shopper_stores``)."""
        if not reads_shopper_stores(self.queries):
            raise PosQueryError(NO_SHOPPER_STORES)

    def strays(self, entity: Entity, first_start: dt.datetime, last_end: dt.datetime) -> Iterator[RowGroup]:
        """Rows of ``entity`` (transactions or personas) no partition from ``first_start`` to ``last_end`` reads.

        One row per record with ``business_at`` (its raw business timestamp, possibly NULL or not a timestamp).
        """
        return self._stream(f"stray_{entity.query}", self._window_params(first_start, last_end))

    def reads_strays(self, entity: Entity) -> bool:
        """Whether the strays of ``entity`` can be read: a custom query for the entity needs a custom stray query."""
        return not customized(self.queries, entity.query) or customized(self.queries, f"stray_{entity.query}")

    def store_zones(self) -> dict[str, str | None]:
        """Each store's time zone name as the POS gives it (``locations``). A POS whose custom queries replace the
        transactions but give no locations query has none: its stores' days are all POS_TIMEZONE's."""
        if customized(self.queries, "transactions") and not customized(self.queries, "locations"):
            return {}
        # Read as part of reading the sales: an unreachable POS says it could not read the transactions, as before.
        return {str(key): rows[0]["timezone"] for key, rows in self._stream("locations", {}, reading="transactions")}

    def store_days(self, default: zoneinfo.ZoneInfo) -> StoreDays:
        """The stores' business days, each store's zone checked: one that is not an IANA name stops the extract,
        naming the store."""
        days = StoreDays(default)
        for store, name in self.store_zones().items():
            try:
                days.include(name)
            except ValueError as exc:
                raise PosQueryError(f"store {store}: its timezone (locations.timezone) {exc}") from None
        return days

    def inventory(self) -> Iterator[RowGroup]:
        """Every product with one row per store that stocks it."""
        return self._stream("inventory", {})

    def changes(self, since: dt.datetime, until: dt.datetime) -> list[PosChange]:
        """Transactions and customers whose ``last_modified_at`` lies in [since, until), grouped by business hour."""
        params = {"since": self._timestamp_param(since), "until": self._timestamp_param(until)}
        return [
            PosChange(
                first_business_at=utc_timestamp(row["first_business_at"]),
                last_business_at=utc_timestamp(row["last_business_at"]),
                last_modified_at=_utc("last_modified_at", row["last_modified_at"]),
                rows=int(row["changed_rows"]),
                timezone=row.get("timezone") or None,
            )
            for _, rows in self._stream("changes", params)
            for row in rows
        ]

    def _timestamp_param(self, moment: dt.datetime) -> Any:
        utc = naive_utc(moment)
        if self.engine.dialect.name == "sqlite":
            # SQLite compares text. A fraction only when there is one orders a start-inclusive, end-exclusive bound
            # correctly against values stored with a fraction (".000000" included) and without one.
            return f"{utc:%Y-%m-%d %H:%M:%S.%f}" if utc.microsecond else f"{utc:%Y-%m-%d %H:%M:%S}"
        return utc


def chunked(groups: Iterator[RowGroup], size: int) -> Iterator[Sequence[RowGroup]]:
    """Batches of at most ``size`` record groups, pulled lazily."""
    while batch := list(itertools.islice(groups, size)):
        yield batch

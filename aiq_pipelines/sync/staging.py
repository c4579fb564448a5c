"""The sync database's staging area: canonical records per business day, and the quarantine.

Extract assets replace a window's staged records in one transaction, so re-running a partition is idempotent and a
failed run leaves the previous staging intact. Records that cannot be staged go to the quarantine with a reason
that names fields and rules only (no phone or email), tied to the business day so a re-run replaces them too.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import operator
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.dialects import postgresql, sqlite

from aiq_pipelines.aiq import mapping
from aiq_pipelines.aiq.payloads import Member, payload_hash
from aiq_pipelines.pos.records import (
    InventoryItem,
    Persona,
    RecordRejected,
    Transaction,
    build_inventory_item,
    build_persona,
    build_transaction,
)
from aiq_pipelines.pos.source import PosSource, RowGroup, chunked, utc_timestamp
from aiq_pipelines.sync.collector import old_objects_frozen
from aiq_pipelines.sync.engines import create_tables, engine_for

metadata = sa.MetaData()
CUSTOMER_CHUNK = 500  # customer ids per POS query and per upsert into staged_sale_customers
NOT_IN_POS = "the customer is not in the POS: the personas_by_id query found no row for it"

staged_transactions = sa.Table(
    "staged_transactions",
    metadata,
    sa.Column("transaction_id", sa.String, primary_key=True),
    sa.Column("business_date", sa.Date, nullable=False),
    sa.Column("transaction_at", sa.DateTime, nullable=False),
    sa.Column("customer_id", sa.String, index=True),
    sa.Column("is_void", sa.Boolean, nullable=False),
    sa.Column("last_modified_at", sa.DateTime, nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    # The sale as AIQ receives it (mapping.visit_payload), built once here so a push sends stored bytes; when it
    # cannot be built, payload_error says why and the push quarantines the sale at stage "payload".
    sa.Column("payload", sa.LargeBinary),
    sa.Column("payload_hash", sa.String(64)),
    sa.Column("payload_error", sa.Text),
    sa.Column("run_id", sa.String, nullable=False, index=True),
    sa.Column("staged_at", sa.DateTime, nullable=False),
    # The push reads a window's sales in this order, so the first batch leaves without the wide rows being sorted
    # first (a sort by transaction_id alone held the first request back by 0.5 s at 100k sales); and it covers "the
    # customers of a window's sales" (push._personas_missing) and the delivered check (Pusher.undelivered) without
    # reading the wide rows.
    sa.Index("ix_staged_transactions_day_key", "business_date", "transaction_id", "customer_id", "is_void",
             "content_hash"),
)

staged_personas = sa.Table(
    "staged_personas",
    metadata,
    sa.Column("customer_id", sa.String, primary_key=True),
    sa.Column("business_date", sa.Date, nullable=False),
    sa.Column("last_modified_at", sa.DateTime, nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    # The persona as AIQ receives it (PersonaPayload: mapping.member_payload), built once here so a push neither
    # parses the record nor normalizes phones and emails again; payload_issues names what was left out of it.
    sa.Column("payload", sa.LargeBinary),
    sa.Column("payload_hash", sa.String(64)),
    sa.Column("payload_issues", sa.Text),
    sa.Column("payload_error", sa.Text),
    sa.Column("run_id", sa.String, nullable=False, index=True),
    sa.Column("staged_at", sa.DateTime, nullable=False),
    # The push reads a window's personas in this order: no sort of the wide rows before the first batch; the delivered
    # check reads the index alone.
    sa.Index("ix_staged_personas_day_key_hash", "business_date", "customer_id", "content_hash"),
)

# The customers the staged sales name, whatever day they were last modified, with their payloads: a sale's persona
# must reach AIQ before the sale, and most customers of a day's sales were modified long before it. Keyed by customer
# (not by day, which would repeat a regular's payload on every day they shop); ``pos_transactions`` refreshes the rows
# of its window's customers, so the push sends stored bytes and never reads the POS. A customer that cannot be staged
# has NULL content_hash and payload, and payload_error says why.
staged_sale_customers = sa.Table(
    "staged_sale_customers",
    metadata,
    sa.Column("customer_id", sa.String, primary_key=True),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("payload", sa.LargeBinary),
    sa.Column("payload_hash", sa.String(64)),
    sa.Column("payload_issues", sa.Text),
    sa.Column("payload_error", sa.Text),
    sa.Column("run_id", sa.String, nullable=False),
    sa.Column("staged_at", sa.DateTime, nullable=False),
)

staged_inventory = sa.Table(
    "staged_inventory",
    metadata,
    sa.Column("product_id", sa.String, primary_key=True),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String, nullable=False, index=True),
    sa.Column("staged_at", sa.DateTime, nullable=False),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.String, nullable=False),
    sa.Column("record_key", sa.String),
    sa.Column("stage", sa.String, nullable=False),  # extract | payload | aiq
    sa.Column("business_date", sa.Date, index=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("source_hash", sa.String(64)),
    sa.Column("source", sa.Text),  # the POS row(s) as read, for the operator; stays in the sync database
    sa.Column("run_id", sa.String, nullable=False),
    sa.Column("quarantined_at", sa.DateTime, nullable=False),
    sa.Index("quarantine_lookup", "entity", "stage", "business_date"),
    # The push's lookups by record (refusals, clearing a batch's rows, the delivered check's "not quarantined"): with
    # only quarantine_lookup, the delivered check of 100k sales took 63 s beside 4,000 quarantined ones (0.3 s with it).
    sa.Index("quarantine_key", "entity", "record_key", "stage"),
)


@dataclass(frozen=True, repr=False)
class PersonaPayload:
    """A persona's AIQ payload as staged beside it: the bytes a bulk call sends, their hash and what was left out
    (``mapping.member_payload``), or the reason no payload could be built."""

    encoded: bytes | None
    digest: str | None
    issues: frozenset[str]
    error: str | None
    built: Member | None = None  # the model, when it was just mapped rather than read from staging

    @classmethod
    def of(cls, persona: Persona) -> PersonaPayload:
        try:
            mapped = mapping.member_payload(persona)
        except ValidationError as exc:
            return cls.failed(mapping.payload_reason(exc))
        return cls(mapped.member.encoded, payload_hash(mapped.member), mapped.issues, None, mapped.member)

    @classmethod
    def failed(cls, reason: str) -> PersonaPayload:
        """No payload, and why."""
        return cls(None, None, frozenset(), reason)

    @classmethod
    def staged(cls, encoded: bytes | None, digest: str | None, issues: str | None, error: str | None) -> PersonaPayload:
        """From the payload columns of ``staged_personas`` or ``staged_sale_customers``."""
        return cls(None if encoded is None else bytes(encoded), digest,
                   frozenset(issues.split(",")) if issues else frozenset(), error)

    def columns(self) -> dict[str, Any]:
        return {"payload": self.encoded, "payload_hash": self.digest,
                "payload_issues": ",".join(sorted(self.issues)) or None, "payload_error": self.error}

    def member(self) -> Member:
        """The payload as a model (the override call and the ledger need its phone and email): the bytes read back.

        The model sends the staged bytes themselves, the ones ``digest`` hashes, rather than encoding them again."""
        if self.built is not None:
            return self.built
        if self.encoded is None:
            raise ValueError(f"no payload: {self.error}")
        member = Member.model_validate_json(self.encoded)
        member.__dict__["encoded"] = self.encoded  # the cached_property's slot: AiqPayload.encoded
        return member

    def __repr__(self) -> str:  # the bytes hold a phone and an email: never shown
        return f"PersonaPayload({len(self.encoded or b'')} bytes, issues={sorted(self.issues)}, error={self.error!r})"


def upsert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, or update them where their primary key exists (SQLite and PostgreSQL). Every row has the keys of
    the first."""
    if rows:
        statement = _compiled_upsert(conn.dialect, table, tuple(rows[0]))
        conn.exec_driver_sql(statement.sql, [statement.parameters(row) for row in rows])


@dataclass(frozen=True)
class _CompiledUpsert:
    """An upsert compiled once for a dialect and a set of columns, with each column's type conversion.

    The staging and ledger writes go to the driver's ``executemany`` with these parameters: SQLAlchemy's generic
    per-row parameter processing cost about 20 µs a staged sale, a tenth of the extract's CPU. The values are
    converted by the very bind processors SQLAlchemy would apply (``_bind_processor``), so what is stored does not
    change.
    """

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
def _compiled_upsert(dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...]) -> _CompiledUpsert:
    unknown = sorted(set(columns) - set(table.c.keys()))
    if unknown:
        raise ValueError(f"{table.name} has no columns {unknown}: a row to upsert must hold the table's columns only")
    compiled = _upsert_statement(dialect.name, table).compile(dialect=dialect, column_keys=list(columns))
    names = tuple(compiled.positiontup) if compiled.positional else tuple(columns)
    processors = (_bind_processor(table.c[name].type, dialect) for name in names)
    values = operator.itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
    conversions = tuple((i, convert) for i, convert in enumerate(processors) if convert is not None)
    return _CompiledUpsert(str(compiled), names, compiled.positional, values, conversions)


def _bind_processor(column_type: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    """SQLAlchemy's bind processor for the column, with SQLite's date and time ones replaced by ``isoformat``.

    SQLite stores them as text in SQLAlchemy's default format, which ``isoformat`` writes for naive values 2-3 times
    faster (three per staged sale, one per ledger row); anything else (an aware value, a date in a DateTime column)
    goes to SQLAlchemy's processor, so the stored text is the same either way.
    """
    impl = column_type.dialect_impl(dialect)
    process = impl.bind_processor(dialect)
    if process is None or dialect.name != "sqlite":
        return process
    if isinstance(impl, sqlite.DATETIME) and impl._storage_format == sqlite.DATETIME._storage_format:

        def datetime_text(value: Any) -> Any:
            if value.__class__ is dt.datetime and value.tzinfo is None:
                return value.isoformat(" ", "microseconds")
            return process(value)

        return datetime_text
    if isinstance(impl, sqlite.DATE) and impl._storage_format == sqlite.DATE._storage_format:

        def date_text(value: Any) -> Any:
            return value.isoformat() if value.__class__ is dt.date else process(value)

        return date_text
    return process


@functools.cache
def _upsert_statement(dialect: str, table: sa.Table) -> sa.Executable:
    # Built once per table: building it and its cache key again for every batch showed in the push's profile.
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(dialect)
    if insert is None:
        raise NotImplementedError(f"the sync database supports SQLite and PostgreSQL, not {dialect}")
    stmt = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _naive_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _json_default(value: Any) -> str:
    return str(value)


@dataclass(kw_only=True)
class QuarantineTally:
    """Quarantined records of a run by reason, with a few example keys: what the UI shows, no personal data."""

    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    example_keys: dict[str, list[str]] = field(default_factory=dict)

    def reject(self, key: Any, reason: str) -> None:
        self.quarantined += 1
        self.reasons[reason] += 1
        examples = self.example_keys.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(str(key))

    def reasons_markdown(self, limit: int = 20) -> str:
        """Quarantine reasons as a markdown table: reasons and POS keys only, never personal data."""
        if not self.reasons:
            return "No records quarantined."
        lines = ["| reason | records | example keys |", "|---|---:|---|"]
        for reason, count in self.reasons.most_common(limit):
            keys = ", ".join(f"`{k}`" for k in self.example_keys.get(reason, []))
            lines.append(f"| {reason.replace('|', '/')} | {count} | {keys} |")
        if len(self.reasons) > limit:
            lines.append(f"| … {len(self.reasons) - limit} more reasons | | |")
        return "\n".join(lines)


@dataclass(kw_only=True)
class StageReport(QuarantineTally):
    """What one extract staged for one window."""

    entity: str
    window_start: dt.datetime
    window_end: dt.datetime
    staged: int = 0
    chunks: int = 0
    # Counted in the staging transaction itself: once it commits, another run of the same days may restage the rows.
    keys_staged: int = 0
    outside_window: int = 0
    # pos_transactions: the customers of the window's sales staged with their payloads (staged_sale_customers), and
    # how many of them have none (the reason is staged; the push quarantines the customer if it has to send it).
    sale_customers: int = 0
    sale_customers_without_payload: int = 0

    @property
    def extracted(self) -> int:
        return self.staged + self.quarantined

    @property
    def quarantine_rate(self) -> float:
        return self.quarantined / self.extracted if self.extracted else 0.0


@dataclass(kw_only=True)
class StrayReport(QuarantineTally):
    """Records no partition reads (see ``PosSource.strays``), quarantined so they are not lost silently."""

    entity: str


class SyncStore:
    """The pipeline's own database: staging and quarantine (the ledger lives beside them)."""

    def __init__(self, database_url: str, timezone: str):
        self.engine = engine_for(database_url)
        self.tz = zoneinfo.ZoneInfo(timezone)
        # Staging holds nothing the next extract cannot rebuild, so a staging table of an older layout is recreated.
        create_tables(
            self.engine, metadata,
            rebuildable=(staged_transactions, staged_personas, staged_sale_customers, staged_inventory),
        )

    def business_date(self, moment: dt.datetime) -> dt.date:
        """The store's local day of a UTC moment (naive values are UTC)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(self.tz).date()

    def _window_dates(self, start: dt.datetime, end: dt.datetime) -> tuple[dt.date, dt.date]:
        return start.astimezone(self.tz).date(), end.astimezone(self.tz).date()

    def _quarantine_rows(
        self, entity: str, run_id: str, rejects: Sequence[tuple[Any, dt.date | None, str, Any]]
    ) -> list[dict[str, Any]]:
        now = _utcnow()
        rows = []
        for key, day, reason, source in rejects:
            text = json.dumps(source, default=_json_default, sort_keys=True)
            rows.append(
                {
                    "entity": entity,
                    "record_key": None if key is None else str(key),
                    "stage": "extract",
                    "business_date": day,
                    "reason": reason,
                    "source_hash": _sha256(text),
                    "source": text,
                    "run_id": run_id,
                    "quarantined_at": now,
                }
            )
        return rows

    def _raw_business_date(self, value: Any, fallback: dt.date) -> dt.date:
        """Business day of a raw timestamp that may not parse (a quarantined row still belongs to a day)."""
        moment = utc_timestamp(value)
        return fallback if moment is None else self.business_date(moment)

    def _stage(
        self,
        *,
        entity: str,
        table: sa.Table,
        groups: Iterator[RowGroup],
        build: Callable[[list[Mapping[str, Any]]], Any],
        to_row: Callable[[Any, str, dt.datetime], dict[str, Any]],
        raw_moment_column: str | None,
        start: dt.datetime,
        end: dt.datetime,
        run_id: str,
        chunk_size: int,
        on_chunk: Callable[[StageReport], None] | None,
        finish: Callable[[sa.Connection, StageReport], None] | None = None,
    ) -> StageReport:
        """Replace the window's staged rows in one transaction; ``finish`` runs in it once every row is written.

        The objects that exist before sit out the garbage collector's full passes meanwhile (``old_objects_frozen``).
        """
        report = StageReport(entity=entity, window_start=start, window_end=end)
        first_day, end_day = self._window_dates(start, end)
        with old_objects_frozen(), self.engine.begin() as conn:
            if raw_moment_column is None:
                conn.execute(table.delete())
                conn.execute(quarantine.delete().where(quarantine.c.entity == entity, quarantine.c.stage == "extract"))
            else:
                in_window = table.c.business_date.between(first_day, end_day - dt.timedelta(days=1))
                conn.execute(table.delete().where(in_window))
                conn.execute(
                    quarantine.delete().where(
                        quarantine.c.entity == entity,
                        quarantine.c.stage == "extract",
                        quarantine.c.business_date >= first_day,
                        quarantine.c.business_date < end_day,
                    )
                )
            for batch in chunked(groups, chunk_size):
                now = _utcnow()
                good: list[dict[str, Any]] = []
                rejects: list[tuple[Any, dt.date | None, str, Any]] = []
                for key, rows in batch:
                    try:
                        record = build(rows)
                    except RecordRejected as exc:
                        day = (
                            None
                            if raw_moment_column is None
                            else self._raw_business_date(rows[0].get(raw_moment_column), first_day)
                        )
                        rejects.append((key, day, exc.reason, rows))
                        report.reject(key, exc.reason)
                        continue
                    good.append(to_row(record, run_id, now))
                upsert(conn, table, good)
                if rejects:
                    conn.execute(quarantine.insert(), self._quarantine_rows(entity, run_id, rejects))
                report.staged += len(good)
                report.chunks += 1
                if on_chunk is not None:
                    on_chunk(report)
            if finish is not None:
                finish(conn, report)
            self._count_staged(conn, table, run_id, first_day, end_day, report)
        return report

    @staticmethod
    def _count_staged(
        conn: sa.Connection, table: sa.Table, run_id: str, first_day: dt.date, end_day: dt.date, report: StageReport
    ) -> None:
        """The counts behind the blocking checks: keys this run staged, and how many fall outside its window.

        Runs before commit. Our rows stay locked until then, so a concurrent run of the same days cannot restage
        them under its run id in between (counting after commit once made that run's unique_keys check fail).
        """
        by_run = table.c.run_id == run_id
        report.keys_staged = conn.scalar(sa.select(sa.func.count()).select_from(table).where(by_run)) or 0
        if "business_date" in table.c:
            outside = sa.or_(table.c.business_date < first_day, table.c.business_date >= end_day)
            report.outside_window = (
                conn.scalar(sa.select(sa.func.count()).select_from(table).where(by_run, outside)) or 0
            )

    def quarantine_strays(
        self, source: PosSource, entity: str, first_start: dt.datetime, last_end: dt.datetime, *, run_id: str
    ) -> StrayReport:
        """Replace the quarantined strays of ``entity`` ("transactions" or "personas") with those the POS holds now.

        ``first_start`` and ``last_end`` bound every partition. A stray's quarantine row carries its own business day
        (none when it has no timestamp), outside every partition, so no partition's extract replaces it; a stray
        that comes into range (a sale dated tomorrow, once tomorrow is a partition) is staged by its day's extract.
        """
        name, column = {"transactions": ("transaction", "transaction_at"), "personas": ("persona", "last_modified_at")}[
            entity
        ]
        report = StrayReport(entity=name)
        first_day, end_day = self._window_dates(first_start, last_end)
        rejects: list[tuple[Any, dt.date | None, str, Any]] = []
        for key, rows in source.strays(entity, first_start, last_end):
            moment = utc_timestamp(rows[0]["business_at"])
            if moment is None:
                reason = f"{column} is missing or not a timestamp: the record belongs to no business day"
            elif moment >= last_end:
                reason = (f"{column} is later than today in POS_TIMEZONE: no partition reads the record until its "
                          "day comes; check the POS clock or the record")
            elif moment < first_start:
                reason = (f"{column} is before POS_START_DATE although the record was modified since: no partition "
                          "reads it; check the POS clock or the record, or move POS_START_DATE back")
            else:
                continue  # inside the partitions after all (SQLite compared its text): its day's extract reads it
            rejects.append((key, None if moment is None else self.business_date(moment), reason, rows))
            report.reject(key, reason)
        outside = sa.or_(
            quarantine.c.business_date.is_(None),
            quarantine.c.business_date < first_day,
            quarantine.c.business_date >= end_day,
        )
        with self.engine.begin() as conn:
            conn.execute(
                quarantine.delete().where(quarantine.c.entity == name, quarantine.c.stage == "extract", outside)
            )
            if rejects:
                conn.execute(quarantine.insert(), self._quarantine_rows(name, run_id, rejects))
        return report

    def stage_transactions(
        self,
        source: PosSource,
        start: dt.datetime,
        end: dt.datetime,
        *,
        run_id: str,
        chunk_size: int = 5000,
        on_chunk: Callable[[StageReport], None] | None = None,
    ) -> StageReport:
        """Replace the staged receipts of the business days in [start, end) with what the POS holds now, and stage
        the customers they name (``staged_sale_customers``) as the POS holds them now."""
        customers: set[str] = set()

        def to_row(tx: Transaction, run: str, now: dt.datetime) -> dict[str, Any]:
            if tx.customer_id is not None and not tx.is_void:  # a void is never sent, so it needs no persona
                customers.add(tx.customer_id)
            try:
                visit = mapping.visit_payload(tx)
                payload, digest, error = visit.encoded, payload_hash(visit), None
            except ValidationError as exc:
                payload, digest, error = None, None, mapping.payload_reason(exc)
            return {
                "transaction_id": tx.transaction_id,
                "business_date": self.business_date(tx.transaction_at),
                "transaction_at": _naive_utc(tx.transaction_at),
                "customer_id": tx.customer_id,
                "is_void": tx.is_void,
                "last_modified_at": _naive_utc(tx.last_modified_at),
                **_record_columns(tx),
                "payload": payload,
                "payload_hash": digest,
                "payload_error": error,
                "run_id": run,
                "staged_at": now,
            }

        return self._stage(
            entity="transaction",
            table=staged_transactions,
            groups=source.transactions(start, end),
            build=build_transaction,
            to_row=to_row,
            raw_moment_column="transaction_at",
            start=start,
            end=end,
            run_id=run_id,
            chunk_size=chunk_size,
            on_chunk=on_chunk,
            finish=lambda conn, report: self._stage_sale_customers(conn, source, customers, run_id, report),
        )

    def _stage_sale_customers(
        self, conn: sa.Connection, source: PosSource, customer_ids: set[str], run_id: str, report: StageReport
    ) -> None:
        """Stage the payload of every customer in ``customer_ids``, read from the POS now, in the staging transaction.

        Every customer is mapped again, even one staged before with the same record: a change to the mapping must
        reach the payloads at the next extract, as it does for sales and personas.
        """
        table = staged_sale_customers
        for ids in chunked(iter(sorted(customer_ids)), CUSTOMER_CHUNK):
            now = _utcnow()
            rows: list[dict[str, Any]] = []
            for key, pos_rows in source.personas_by_id(ids):
                try:
                    persona = build_persona(pos_rows[0])
                except RecordRejected as exc:
                    rows.append(_sale_customer_row(str(key), None, PersonaPayload.failed(exc.reason), run_id, now))
                    continue
                rows.append(_sale_customer_row(persona.customer_id, persona.content_hash(), PersonaPayload.of(persona),
                                               run_id, now))
            missing = set(ids).difference(row["customer_id"] for row in rows)
            rows += [_sale_customer_row(key, None, PersonaPayload.failed(NOT_IN_POS), run_id, now) for key in missing]
            upsert(conn, table, rows)
            report.sale_customers += len(rows)
            report.sale_customers_without_payload += sum(row["payload"] is None for row in rows)

    def stage_personas(
        self,
        source: PosSource,
        start: dt.datetime,
        end: dt.datetime,
        *,
        run_id: str,
        chunk_size: int = 5000,
        on_chunk: Callable[[StageReport], None] | None = None,
    ) -> StageReport:
        """Replace the staged personas created or modified on the business days in [start, end)."""

        def to_row(persona: Persona, run: str, now: dt.datetime) -> dict[str, Any]:
            return {
                "customer_id": persona.customer_id,
                "business_date": self.business_date(persona.last_modified_at),
                "last_modified_at": _naive_utc(persona.last_modified_at),
                **_record_columns(persona),
                **PersonaPayload.of(persona).columns(),
                "run_id": run,
                "staged_at": now,
            }

        return self._stage(
            entity="persona",
            table=staged_personas,
            groups=source.personas(start, end),
            build=lambda rows: build_persona(rows[0]) if len(rows) == 1 else _duplicate("customer_id"),
            to_row=to_row,
            raw_moment_column="last_modified_at",
            start=start,
            end=end,
            run_id=run_id,
            chunk_size=chunk_size,
            on_chunk=on_chunk,
        )

    def stage_inventory(
        self,
        source: PosSource,
        *,
        run_id: str,
        chunk_size: int = 5000,
        on_chunk: Callable[[StageReport], None] | None = None,
    ) -> StageReport:
        """Replace the staged inventory snapshot with the POS's current stock."""
        now = dt.datetime.now(dt.UTC)

        def to_row(item: InventoryItem, run: str, staged_at: dt.datetime) -> dict[str, Any]:
            return {
                "product_id": item.product_id,
                **_record_columns(item),
                "run_id": run,
                "staged_at": staged_at,
            }

        return self._stage(
            entity="inventory",
            table=staged_inventory,
            groups=source.inventory(),
            build=build_inventory_item,
            to_row=to_row,
            raw_moment_column=None,
            start=now,
            end=now,
            run_id=run_id,
            chunk_size=chunk_size,
            on_chunk=on_chunk,
        )

    def quarantined(self, entity: str, stage: str | None = None) -> list[dict[str, Any]]:
        """Quarantined records of an entity, newest first (for tests and operators)."""
        query = sa.select(quarantine).where(quarantine.c.entity == entity).order_by(quarantine.c.id.desc())
        if stage is not None:
            query = query.where(quarantine.c.stage == stage)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def staged_records(self, table: sa.Table, model: type, where: Iterable[Any] = ()) -> Iterator[Any]:
        """Staged records as canonical models, streamed."""
        query = sa.select(table.c.record).where(*where).order_by(*table.primary_key.columns)
        with self.engine.connect() as conn:
            for (record,) in conn.execution_options(stream_results=True, yield_per=1000).execute(query):
                yield model.model_validate_json(record)


def _sale_customer_row(
    key: str, content_hash: str | None, payload: PersonaPayload, run_id: str, now: dt.datetime
) -> dict[str, Any]:
    return {"customer_id": key, "content_hash": content_hash, **payload.columns(), "run_id": run_id, "staged_at": now}


def _record_columns(record: Any) -> dict[str, str]:
    """The staged JSON and its content hash (``record.content_hash()``), serialized once."""
    text = record.model_dump_json()
    return {"record": text, "content_hash": _sha256(text)}


def _duplicate(column: str) -> Any:
    raise RecordRejected(f"duplicate {column} in the POS query result")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()

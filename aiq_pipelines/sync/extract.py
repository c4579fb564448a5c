"""Extract: a window's POS records staged as canonical records with their AIQ payloads, in one transaction.

An extract replaces the window's staged rows and its ``extract`` quarantine in one transaction, so re-running a
partition is idempotent and a failed run leaves the previous staging intact. Rows are upserted and those of the window
the POS no longer holds deleted, so a record restaged unchanged keeps its ``changed_at`` (``schema.CHANGED_AT``).

Sales are staged with the payload AIQ receives (``mapping.visit_payload``), personas with theirs
(``PersonaPayload``), so a push sends stored bytes. The customers the window's sales name are staged too
(``staged_sale_customers``), read from the POS now: a sale's persona must reach AIQ before the sale, and most
customers of a day's sales were modified long before it. With several AIQ accounts, every customer staged (the window's
personas, the customers its sales name) has the stores it ever bought in looked up in the POS (``shopper_stores``), in
the same transaction, so each account receives exactly its stores' shoppers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from aiq_pipelines.aiq.payloads import payload_hash
from aiq_pipelines.db.hashing import digest
from aiq_pipelines.db.statements import execute_with_lists, upsert
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.queries import PosQueryError
from aiq_pipelines.pos.records import (
    InventoryItem,
    Persona,
    RecordRejected,
    Transaction,
    build_inventory_item,
    build_persona,
    build_transaction,
    record_key,
)
from aiq_pipelines.pos.source import PosSource, RowGroup, chunked
from aiq_pipelines.pos.times import BusinessCalendar, naive_utc, utc_now, utc_timestamp
from aiq_pipelines.sync import mapping
from aiq_pipelines.sync.collector import old_objects_frozen
from aiq_pipelines.sync.payload import PersonaPayload
from aiq_pipelines.sync.quarantine import Reject, Stage, extract_rows
from aiq_pipelines.sync.reports import StageReport
from aiq_pipelines.sync.schema import (
    CHANGED_AT,
    NO_SALE,
    quarantine,
    shopper_stores,
    staged_inventory,
    staged_personas,
    staged_sale_customers,
    staged_transactions,
)

CUSTOMER_CHUNK = 500  # customer ids per POS query and per upsert into staged_sale_customers
NOT_IN_POS = "the customer is not in the POS: the personas_by_id query found no row for it"

OnChunk = Callable[[StageReport], None] | None
_FORGET_STORES = shopper_stores.delete().where(shopper_stores.c.customer_id.in_(sa.bindparam("ids", expanding=True)))


@dataclass(frozen=True)
class _Plan:
    """How one entity is staged: its table, how POS rows become a record and the record a row."""

    entity: Entity
    table: sa.Table
    build: Callable[[list[Mapping[str, Any]]], Any]
    to_row: Callable[[Any, str, dt.datetime], dict[str, Any]]
    raw_moment_column: str | None  # the POS column that dates a record; None for the undated inventory snapshot
    finish: Callable[[sa.Connection, StageReport], None] | None = None  # runs in the transaction, once all is written
    after_batch: Callable[[sa.Connection, list[dict[str, Any]]], None] | None = None  # each batch's staged rows
    # Records read only because the window was widened to hold every store's days, whose own store's day lies outside
    # the window: another partition's extract stages or quarantines them. (With one zone, there are none.)
    elsewhere: Callable[[Any], bool] | None = None
    rows_elsewhere: Callable[[list[Mapping[str, Any]]], bool] | None = None
    day_of_rows: Callable[[list[Mapping[str, Any]]], dt.date | None] | None = None

    @property
    def tracks_changes(self) -> bool:
        return "changed_at" in self.table.c


def _stage(
    engine: sa.Engine, calendar: BusinessCalendar, plan: _Plan, groups: Iterator[RowGroup], start: dt.datetime,
    end: dt.datetime, *, run_id: str, chunk_size: int, on_chunk: OnChunk, expected: int | None = None,
) -> StageReport:
    """Replace the window's staged rows in one transaction. The objects that exist before sit out the garbage
    collector's full passes meanwhile (``old_objects_frozen``)."""
    table, entity = plan.table, plan.entity
    report = StageReport(entity=entity, window_start=start, window_end=end, expected=expected)
    first_day, end_day = calendar.dates(start, end)
    mine = sa.and_(quarantine.c.entity == entity, quarantine.c.stage == Stage.EXTRACT)
    in_window = [] if plan.raw_moment_column is None else [
        table.c.business_date.between(first_day, end_day - dt.timedelta(days=1))
    ]
    keep_unless = CHANGED_AT if plan.tracks_changes else None
    quarantined_in_window = [] if plan.raw_moment_column is None else [
        quarantine.c.business_date >= first_day, quarantine.c.business_date < end_day
    ]
    with old_objects_frozen(), engine.begin() as conn:
        conn.execute(quarantine.delete().where(mine, *quarantined_in_window))
        # Rows an earlier staging under this same run id wrote (a retried step) count as another run's, so those the
        # POS no longer holds are deleted below too.
        conn.execute(table.update().where(*in_window, table.c.run_id == run_id).values(run_id=""))
        for batch in chunked(groups, chunk_size):
            now = utc_now()
            good: list[dict[str, Any]] = []
            rejects: list[Reject] = []
            for key, rows in batch:
                try:
                    record = plan.build(rows)
                except RecordRejected as exc:
                    if plan.rows_elsewhere is not None and plan.rows_elsewhere(rows):
                        continue
                    day = None
                    if plan.raw_moment_column is not None:
                        day = plan.day_of_rows(rows) if plan.day_of_rows is not None else None
                        if day is None:
                            moment = utc_timestamp(rows[0].get(plan.raw_moment_column))
                            day = first_day if moment is None else calendar.date_of(moment)  # still belongs to a day
                    rejects.append((key, day, exc.reason, rows))
                    report.reject_on(day, key, exc.reason)
                    continue
                if plan.elsewhere is not None and plan.elsewhere(record):
                    continue
                row = plan.to_row(record, run_id, now)
                report.stage_on(row.get("business_date"))
                good.append(row)
            upsert(conn, table, good, keep_unless=keep_unless)
            if plan.after_batch is not None:
                plan.after_batch(conn, good)
            if rejects:
                conn.execute(quarantine.insert(), extract_rows(entity, run_id, rejects))
            report.chunks += 1
            if on_chunk is not None:
                on_chunk(report)
        # What this run did not write is gone from the POS's window. Deleted last, after every row this run wrote is
        # locked: a run staging the same days at once (PostgreSQL) then waits, and the later commit wins whole.
        conn.execute(table.delete().where(*in_window, table.c.run_id != run_id))
        conn.execute(quarantine.delete().where(mine, *quarantined_in_window, quarantine.c.run_id != run_id))
        if plan.finish is not None:
            plan.finish(conn, report)
        if plan.tracks_changes:
            conn.execute(table.update().where(table.c.run_id == run_id, table.c.changed_at.is_(None))
                         .values(changed_at=utc_now()))
        _count_staged(conn, table, run_id, first_day, end_day, report)
    return report


def _count_staged(
    conn: sa.Connection, table: sa.Table, run_id: str, first_day: dt.date, end_day: dt.date, report: StageReport
) -> None:
    """The counts behind the blocking checks: keys this run staged, and how many fall outside its window.

    Runs before commit. Our rows stay locked until then, so a concurrent run of the same days cannot restage them
    under its run id in between (counting after commit once made that run's unique_keys check fail).
    """
    by_run = table.c.run_id == run_id
    report.keys_staged = conn.scalar(sa.select(sa.func.count()).select_from(table).where(by_run)) or 0
    if "business_date" in table.c:
        outside = sa.or_(table.c.business_date < first_day, table.c.business_date >= end_day)
        report.outside_window = conn.scalar(sa.select(sa.func.count()).select_from(table).where(by_run, outside)) or 0


def _record_columns(record: Any) -> dict[str, str]:
    """The staged JSON and its content hash (``record.content_hash()``), serialized once."""
    text = record.model_dump_json()
    return {"record": text, "content_hash": digest(text)}


def stage_transactions(
    engine: sa.Engine, calendar: BusinessCalendar, source: PosSource, start: dt.datetime, end: dt.datetime, *,
    run_id: str, chunk_size: int, on_chunk: OnChunk = None, look_up_stores: bool = False,
) -> StageReport:
    """Replace the staged receipts of the business days in [start, end) with what the POS holds now, and stage the
    customers they name (``staged_sale_customers``) as the POS holds them now; with ``look_up_stores`` (several AIQ
    accounts), those customers' stores too (``shopper_stores``).

    A receipt's business day is its store's local day: the POS is read over the window that holds those days in every
    store's zone, and each receipt staged with the partition of its own store's day.
    """
    if look_up_stores:
        source.check_shopper_stores()  # before anything is read: a run that cannot place its shoppers stages nothing
    customers: set[str] = set()
    days = source.store_days(calendar.tz)
    first_day, end_day = calendar.dates(start, end)
    read_from, read_to = days.span(first_day, end_day)

    def day_of(tx: Transaction) -> dt.date:
        try:
            return days.date_of(tx.transaction_at, tx.location_timezone)
        except ValueError as exc:  # a custom query's location_timezone, not checked against the locations
            raise PosQueryError(f"store {tx.location_id}: its timezone (location_timezone) {exc}") from None

    def elsewhere(tx: Transaction) -> bool:
        return read_from <= tx.transaction_at < read_to and not first_day <= day_of(tx) < end_day

    def day_of_rows(rows: list[Mapping[str, Any]]) -> dt.date | None:
        moment = utc_timestamp(rows[0].get("transaction_at"))
        try:
            return None if moment is None else days.date_of(moment, rows[0].get("location_timezone"))
        except ValueError:
            return None  # the store's zone is not one: the default zone's day

    def rows_elsewhere(rows: list[Mapping[str, Any]]) -> bool:
        moment, day = utc_timestamp(rows[0].get("transaction_at")), day_of_rows(rows)
        return moment is not None and day is not None and read_from <= moment < read_to and not first_day <= day < end_day

    def to_row(tx: Transaction, run: str, now: dt.datetime) -> dict[str, Any]:
        if tx.customer_id is not None and not tx.is_void:  # a void is never sent, so it needs no persona
            customers.add(tx.customer_id)
        try:
            visit = mapping.visit_payload(tx)
            payload, payload_digest, error = visit.encoded, payload_hash(visit), None
        except ValidationError as exc:
            payload, payload_digest, error = None, None, mapping.payload_reason(exc)
        return {
            "transaction_id": tx.transaction_id,
            "business_date": day_of(tx),
            "transaction_at": naive_utc(tx.transaction_at),
            "location_id": tx.location_id,
            "location_name": tx.location_name,
            "location_timezone": tx.location_timezone,
            "customer_id": tx.customer_id,
            "is_void": tx.is_void,
            "last_modified_at": naive_utc(tx.last_modified_at),
            **_record_columns(tx),
            "payload": payload,
            "payload_hash": payload_digest,
            "payload_error": error,
            "run_id": run,
            "staged_at": now,
            "changed_at": None,  # kept when the content is unchanged, else stamped before commit
        }

    plan = _Plan(
        Entity.TRANSACTION, staged_transactions, build_transaction, to_row, "transaction_at",
        finish=lambda conn, report: _stage_sale_customers(conn, source, customers, run_id, report, look_up_stores),
        elsewhere=elsewhere, rows_elsewhere=rows_elsewhere, day_of_rows=day_of_rows,
    )
    return _stage(engine, calendar, plan, source.transactions(read_from, read_to), start, end, run_id=run_id,
                  chunk_size=chunk_size, on_chunk=on_chunk, expected=source.count("transactions", read_from, read_to))


def _sale_customer_row(
    key: str, content_hash: str | None, payload: PersonaPayload, run_id: str, now: dt.datetime
) -> dict[str, Any]:
    return {"customer_id": key, "content_hash": content_hash, **payload.columns(), "run_id": run_id, "staged_at": now}


def _look_up_stores(conn: sa.Connection, source: PosSource, customer_ids: Sequence[str]) -> None:
    """Replace the ``shopper_stores`` rows of these customers with the stores the POS holds a sale of each in, or
    ``NO_SALE`` for a customer it holds none of."""
    now = utc_now()
    rows = [{"customer_id": key, "location_id": record_key(row["location_id"]), "looked_up_at": now}
            for key, group in source.shopper_stores(customer_ids) for row in group if row["location_id"] is not None]
    bought = {row["customer_id"] for row in rows}
    rows += [{"customer_id": key, "location_id": NO_SALE, "looked_up_at": now}
             for key in customer_ids if key not in bought]
    execute_with_lists(conn, _FORGET_STORES, {"ids": list(customer_ids)})
    # In key order, as every extract writes them: two extracts of the same customers then never wait on each other
    # in a cycle (PostgreSQL would end one as a deadlock).
    upsert(conn, shopper_stores, sorted(rows, key=lambda row: (row["customer_id"], row["location_id"])))


def _forget_stores(conn: sa.Connection) -> None:
    """With one account nothing is looked up: drop what an earlier setup looked up, which would go stale (a shopper
    looked up then must be looked up again before several accounts read them)."""
    if conn.scalar(sa.select(shopper_stores.c.customer_id).limit(1)) is not None:
        conn.execute(shopper_stores.delete())


def _stage_sale_customers(
    conn: sa.Connection, source: PosSource, customer_ids: set[str], run_id: str, report: StageReport,
    look_up_stores: bool,
) -> None:
    """Stage the payload of every customer in ``customer_ids``, read from the POS now, in the staging transaction, and
    with ``look_up_stores`` the stores each bought in.

    Every customer is mapped again, even one staged before with the same record: a change to the mapping must reach
    the payloads at the next extract, as it does for sales and personas. A customer that cannot be staged gets NULL
    content hash and payload, and its reason.
    """
    if not look_up_stores:
        _forget_stores(conn)
    for ids in chunked(iter(sorted(customer_ids)), CUSTOMER_CHUNK):
        if look_up_stores:
            _look_up_stores(conn, source, ids)
        now = utc_now()
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
        upsert(conn, staged_sale_customers, rows)
        report.sale_customers += len(rows)
        report.sale_customers_without_payload += sum(row["payload"] is None for row in rows)


def _one_persona(rows: list[Mapping[str, Any]]) -> Persona:
    if len(rows) != 1:
        raise RecordRejected("duplicate customer_id in the POS query result")
    return build_persona(rows[0])


def stage_personas(
    engine: sa.Engine, calendar: BusinessCalendar, source: PosSource, start: dt.datetime, end: dt.datetime, *,
    run_id: str, chunk_size: int, on_chunk: OnChunk = None, look_up_stores: bool = False,
) -> StageReport:
    """Replace the staged personas created or modified on the business days in [start, end); with
    ``look_up_stores`` (several AIQ accounts), look up the stores each bought in (``shopper_stores``)."""
    if look_up_stores:
        source.check_shopper_stores()

    def stores_of(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        for ids in chunked(iter([row["customer_id"] for row in rows]), CUSTOMER_CHUNK):
            _look_up_stores(conn, source, ids)

    def to_row(persona: Persona, run: str, now: dt.datetime) -> dict[str, Any]:
        return {
            "customer_id": persona.customer_id,
            "business_date": calendar.date_of(persona.last_modified_at),
            "last_modified_at": naive_utc(persona.last_modified_at),
            **_record_columns(persona),
            **PersonaPayload.of(persona).columns(),
            "run_id": run,
            "staged_at": now,
            "changed_at": None,  # kept when the content is unchanged, else stamped before commit
        }

    plan = _Plan(Entity.PERSONA, staged_personas, _one_persona, to_row, "last_modified_at",
                 finish=None if look_up_stores else lambda conn, report: _forget_stores(conn),
                 after_batch=stores_of if look_up_stores else None)
    return _stage(engine, calendar, plan, source.personas(start, end), start, end, run_id=run_id,
                  chunk_size=chunk_size, on_chunk=on_chunk, expected=source.count("personas", start, end))


def stage_inventory(
    engine: sa.Engine, calendar: BusinessCalendar, source: PosSource, *, run_id: str, chunk_size: int,
    on_chunk: OnChunk = None,
) -> StageReport:
    """Replace the staged inventory snapshot with the POS's current stock."""
    now = dt.datetime.now(dt.UTC)

    def to_row(item: InventoryItem, run: str, staged_at: dt.datetime) -> dict[str, Any]:
        return {"product_id": item.product_id, **_record_columns(item), "run_id": run, "staged_at": staged_at}

    plan = _Plan(Entity.INVENTORY, staged_inventory, build_inventory_item, to_row, None)
    return _stage(engine, calendar, plan, source.inventory(), now, now, run_id=run_id, chunk_size=chunk_size,
                  on_chunk=on_chunk)

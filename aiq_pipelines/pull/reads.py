"""What the pull API reads from the sync database: staged records in keyset order, and what is held back, each within
the caller's ``StoreScope`` (its account's stores and shoppers; everything in the single-key set-up).

Every page is bounded above by the window's fixed ``before`` (on ``changed_at``) and ordered by ``(changed_at, key)``,
or for a backfill by ``(transaction_at, key)``: a record that changes while a caller pages moves above the bound, so
no order shifts under the caller and paging neither skips nor repeats a row. Reads only: the service never writes the
database.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.sync.accounts import StoreScope
from aiq_pipelines.sync.quarantine import Stage
from aiq_pipelines.sync.schema import (
    quarantine,
    staged_inventory,
    staged_personas,
    staged_sale_customers,
    staged_transactions,
)


@dataclass(frozen=True)
class Window:
    """``changed_at`` in [since, before); for a backfill also ``transaction_at`` in [occurred_from, occurred_to)
    (naive UTC datetimes, as the sync database stores them)."""

    since: dt.datetime | None
    before: dt.datetime
    occurred_from: dt.datetime | None = None
    occurred_to: dt.datetime | None = None
    location_id: str | None = None

    @property
    def backfill(self) -> bool:
        return self.occurred_from is not None and self.occurred_to is not None


def _after(columns: Sequence[sa.ColumnElement], after: tuple[dt.datetime, str] | None) -> list[sa.ColumnElement[bool]]:
    return [] if after is None else [sa.tuple_(*columns) > sa.tuple_(*after)]


def _changed(column: sa.ColumnElement, window: Window) -> list[sa.ColumnElement[bool]]:
    return [column < window.before] + ([] if window.since is None else [column >= window.since])


def transactions(conn: sa.Connection, window: Window, after: tuple[dt.datetime, str] | None, limit: int,
                 scope: StoreScope) -> list[sa.Row]:
    """Up to ``limit`` staged sales of the window and scope after ``after``: (changed_at, transaction_id), or for a
    backfill (transaction_at, transaction_id)."""
    table = staged_transactions
    order = (table.c.transaction_at if window.backfill else table.c.changed_at, table.c.transaction_id)
    conditions = [*_changed(table.c.changed_at, window), *_after(order, after), *scope.stores(table.c.location_id)]
    if window.occurred_from is not None and window.occurred_to is not None:
        conditions += [table.c.transaction_at >= window.occurred_from, table.c.transaction_at < window.occurred_to]
    if window.location_id is not None:
        conditions.append(table.c.location_id == window.location_id)
    query = (sa.select(table.c.transaction_id, table.c.record, table.c.business_date, table.c.transaction_at,
                       table.c.changed_at, table.c.staged_at, table.c.customer_id)
             .where(*conditions).order_by(*order).limit(limit))
    return list(conn.execute(query).all())


def customers(conn: sa.Connection, window: Window, after: tuple[dt.datetime, str] | None, limit: int,
              scope: StoreScope) -> list[sa.Row]:
    """Up to ``limit`` staged personas with a payload, changed in the window after ``after``, of the scope's shoppers."""
    table = staged_personas
    order = (table.c.changed_at, table.c.customer_id)
    conditions = [*_changed(table.c.changed_at, window), table.c.payload.is_not(None), *_after(order, after),
                  *scope.shoppers(table.c.customer_id)]
    query = (sa.select(table.c.customer_id, table.c.record, table.c.payload, table.c.changed_at, table.c.staged_at)
             .where(*conditions).order_by(*order).limit(limit))
    return list(conn.execute(query))


@dataclass(frozen=True)
class Shopper:
    """A customer as the newest staging of them has it: their persona (``record`` set) or, for a customer the extract
    staged only because a sale names them, the payload ``pos_transactions`` staged (``record`` None)."""

    customer_id: str
    payload: bytes
    record: str | None
    changed_at: dt.datetime | None
    staged_at: dt.datetime


def shoppers(conn: sa.Connection, ids: Sequence[str], scope: StoreScope) -> list[Shopper]:
    """The customers ``ids`` with a payload, within the scope, each in its newest staged version, in ``ids``' order."""
    if not ids:
        return []
    personas, buyers = staged_personas, staged_sale_customers
    wanted = sorted(set(ids))
    found: dict[str, Shopper] = {}
    query = (sa.select(buyers.c.customer_id, buyers.c.payload, buyers.c.staged_at)
             .where(buyers.c.customer_id.in_(wanted), buyers.c.payload.is_not(None), *scope.shoppers(buyers.c.customer_id)))
    for key, payload, staged_at in conn.execute(query):
        found[key] = Shopper(key, payload, None, None, staged_at)
    query = (sa.select(personas.c.customer_id, personas.c.payload, personas.c.record, personas.c.changed_at,
                       personas.c.staged_at)
             .where(personas.c.customer_id.in_(wanted), personas.c.payload.is_not(None),
                    *scope.shoppers(personas.c.customer_id)))
    for key, payload, record, changed_at, staged_at in conn.execute(query):
        bought = found.get(key)
        # The persona's own record dates its creation; its payload serves unless the sale's staging is newer.
        newer = bought is not None and bought.staged_at > staged_at
        found[key] = Shopper(key, bought.payload if newer else payload, record, None if newer else changed_at,
                             bought.staged_at if newer else staged_at)
    return [found[key] for key in dict.fromkeys(ids) if key in found]


def _held_sales(conn: sa.Connection, conditions: list[sa.ColumnElement[bool]], scope: StoreScope) -> int:
    if scope.everything:
        return conn.scalar(sa.select(sa.func.count()).select_from(quarantine).where(*conditions)) or 0
    # A held-back receipt has no staged row; its store is in the POS rows the quarantine kept.
    count = 0
    for (source,) in conn.execute(sa.select(quarantine.c.source).where(*conditions)):
        rows = json.loads(source) if source else None
        first = rows[0] if isinstance(rows, list) and rows else rows
        location = first.get("location_id") if isinstance(first, dict) else None
        count += location is not None and scope.covers(str(location))
    return count


def held_back(conn: sa.Connection, entity: Entity, window: Window, first_day: dt.date | None,
              end_day: dt.date | None, scope: StoreScope) -> int:
    """Records of the window and scope the extract quarantined: by business day for a backfill, else by when they
    were quarantined; personas without a payload count too."""
    conditions = [quarantine.c.entity == entity, quarantine.c.stage == Stage.EXTRACT]
    if first_day is not None and end_day is not None:
        conditions += [quarantine.c.business_date >= first_day, quarantine.c.business_date < end_day]
    else:
        conditions += _changed(quarantine.c.quarantined_at, window)
    if entity != Entity.PERSONA:
        return _held_sales(conn, conditions, scope)
    count = conn.scalar(sa.select(sa.func.count()).select_from(quarantine)
                        .where(*conditions, *scope.shoppers(quarantine.c.record_key))) or 0
    table = staged_personas
    unsendable = [table.c.payload.is_(None), *_changed(table.c.changed_at, window), *scope.shoppers(table.c.customer_id)]
    return count + (conn.scalar(sa.select(sa.func.count()).select_from(table).where(*unsendable)) or 0)


def locations(conn: sa.Connection, scope: StoreScope) -> list[tuple[str, str, str | None]]:
    """The scope's stores the staged sales name: (location_id, name, time zone or None for POS_TIMEZONE's)."""
    table = staged_transactions
    query = (sa.select(table.c.location_id, sa.func.max(table.c.location_name), sa.func.max(table.c.location_timezone))
             .where(*scope.stores(table.c.location_id)).group_by(table.c.location_id).order_by(table.c.location_id))
    return [(row[0], row[1], row[2]) for row in conn.execute(query)]


def inventory(conn: sa.Connection, after: str | None, limit: int) -> list[sa.Row]:
    """Up to ``limit`` products of the staged snapshot after product ``after``, with their content hashes."""
    table = staged_inventory
    conditions = [] if after is None else [table.c.product_id > after]
    query = (sa.select(table.c.product_id, table.c.record, table.c.content_hash, table.c.staged_at)
             .where(*conditions).order_by(table.c.product_id).limit(limit))
    return list(conn.execute(query))


def inventory_snapshot(conn: sa.Connection) -> tuple[tuple[str, ...], dt.datetime | None]:
    """The staged snapshot's content hashes in product order (what identifies its content) and when it was taken."""
    table = staged_inventory
    hashes = tuple(conn.scalars(sa.select(table.c.content_hash).order_by(table.c.product_id)))
    return hashes, conn.scalar(sa.select(sa.func.max(table.c.staged_at)))

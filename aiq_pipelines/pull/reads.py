"""What the pull API reads from the sync database: staged records in keyset order, and what is held back.

Every page is bounded above by the window's fixed ``before`` (on ``changed_at``) and ordered by ``(changed_at, key)``,
or for a backfill by ``(transaction_at, key)``: a record that changes while a caller pages moves above the bound, so
no order shifts under the caller and paging neither skips nor repeats a row. Reads only: the service never writes the
database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from aiq_pipelines.db.hashing import digest
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.sync.quarantine import Stage
from aiq_pipelines.sync.schema import quarantine, staged_inventory, staged_personas, staged_transactions


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


def transactions(
    conn: sa.Connection, window: Window, after: tuple[dt.datetime, str] | None, limit: int
) -> list[sa.Row]:
    """Up to ``limit`` staged sales of the window after ``after``: (changed_at, transaction_id), or for a backfill
    (transaction_at, transaction_id)."""
    table = staged_transactions
    order = (table.c.transaction_at if window.backfill else table.c.changed_at, table.c.transaction_id)
    conditions = [table.c.changed_at < window.before, *_after(order, after)]
    if window.since is not None:
        conditions.append(table.c.changed_at >= window.since)
    if window.occurred_from is not None and window.occurred_to is not None:
        conditions += [table.c.transaction_at >= window.occurred_from, table.c.transaction_at < window.occurred_to]
    if window.location_id is not None:
        conditions.append(table.c.location_id == window.location_id)
    query = (sa.select(table.c.transaction_id, table.c.record, table.c.business_date, table.c.transaction_at,
                       table.c.changed_at, table.c.staged_at)
             .where(*conditions).order_by(*order).limit(limit))
    return list(conn.execute(query))


def customers(conn: sa.Connection, window: Window, after: tuple[dt.datetime, str] | None, limit: int) -> list[sa.Row]:
    """Up to ``limit`` staged personas with a payload, changed in the window after ``after``."""
    table = staged_personas
    order = (table.c.changed_at, table.c.customer_id)
    conditions = [table.c.changed_at < window.before, table.c.payload.is_not(None), *_after(order, after)]
    if window.since is not None:
        conditions.append(table.c.changed_at >= window.since)
    query = (sa.select(table.c.customer_id, table.c.record, table.c.payload, table.c.changed_at, table.c.staged_at)
             .where(*conditions).order_by(*order).limit(limit))
    return list(conn.execute(query))


def held_back(conn: sa.Connection, entity: Entity, window: Window, first_day: dt.date | None,
              end_day: dt.date | None) -> int:
    """Records of the window the extract quarantined: by business day for a backfill, else by when they were
    quarantined; personas without a payload count too."""
    conditions = [quarantine.c.entity == entity, quarantine.c.stage == Stage.EXTRACT]
    if first_day is not None and end_day is not None:
        conditions += [quarantine.c.business_date >= first_day, quarantine.c.business_date < end_day]
    else:
        conditions.append(quarantine.c.quarantined_at < window.before)
        if window.since is not None:
            conditions.append(quarantine.c.quarantined_at >= window.since)
    count = conn.scalar(sa.select(sa.func.count()).select_from(quarantine).where(*conditions)) or 0
    if entity == Entity.PERSONA:
        table = staged_personas
        unsendable = [table.c.payload.is_(None), table.c.changed_at < window.before]
        if window.since is not None:
            unsendable.append(table.c.changed_at >= window.since)
        count += conn.scalar(sa.select(sa.func.count()).select_from(table).where(*unsendable)) or 0
    return count


def locations(conn: sa.Connection) -> list[tuple[str, str, str | None]]:
    """The stores the staged sales name: (location_id, name, time zone or None for POS_TIMEZONE's)."""
    table = staged_transactions
    query = (sa.select(table.c.location_id, sa.func.max(table.c.location_name), sa.func.max(table.c.location_timezone))
             .group_by(table.c.location_id).order_by(table.c.location_id))
    return [(row[0], row[1], row[2]) for row in conn.execute(query)]


def inventory(conn: sa.Connection, after: str | None, limit: int) -> list[sa.Row]:
    """Up to ``limit`` products of the staged snapshot after product ``after``."""
    table = staged_inventory
    conditions = [] if after is None else [table.c.product_id > after]
    query = (sa.select(table.c.product_id, table.c.record, table.c.staged_at)
             .where(*conditions).order_by(table.c.product_id).limit(limit))
    return list(conn.execute(query))


def inventory_version(conn: sa.Connection, location_id: str | None) -> tuple[str, dt.datetime | None]:
    """A digest of the snapshot's content as served for ``location_id`` (its ETag), and when it was taken."""
    table = staged_inventory
    hashes = conn.scalars(sa.select(table.c.content_hash).order_by(table.c.product_id))
    served = ",".join(hashes) + ("" if location_id is None else f"|{location_id}")
    return digest(served)[:32], conn.scalar(sa.select(sa.func.max(table.c.staged_at)))

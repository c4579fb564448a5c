"""What a push reads from staging: records in key order, streamed, with the payloads the extract built.

A window is given as its local dates ``[first, stop)``, and an account's stores as its ``StoreScope``. Sales and
personas are read in their day-and-key index's order, so the first batch leaves without the wide rows being sorted
first; nothing here parses a staged record but inventory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

import sqlalchemy as sa

from aiq_pipelines.aiq.payloads import EncodedPayload
from aiq_pipelines.db.statements import execute_with_lists
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.records import InventoryItem
from aiq_pipelines.pos.source import chunked
from aiq_pipelines.sync.accounts import EVERYTHING, StoreScope
from aiq_pipelines.sync.diff import Staged, StagedSale
from aiq_pipelines.sync.ledger import RESEND
from aiq_pipelines.sync.payload import PersonaPayload
from aiq_pipelines.sync.schema import (
    aiq_ledger,
    staged_inventory,
    staged_personas,
    staged_sale_customers,
    staged_transactions,
)

CHUNK = 500  # records a push reads, diffs and settles at a time
CUSTOMER_NOT_STAGED = "payload missing: the customer is not staged; re-run the day's pos_transactions"
Days = tuple[dt.date, dt.date] | None  # [first, stop) local dates; None for the undated inventory snapshot

_SALE_CUSTOMERS = sa.select(
    staged_sale_customers.c.customer_id, staged_sale_customers.c.content_hash, staged_sale_customers.c.payload,
    staged_sale_customers.c.payload_hash, staged_sale_customers.c.payload_issues, staged_sale_customers.c.payload_error,
).where(staged_sale_customers.c.customer_id.in_(sa.bindparam("ids", expanding=True)))

TABLES = {Entity.TRANSACTION: staged_transactions, Entity.PERSONA: staged_personas, Entity.INVENTORY: staged_inventory}


def in_days(table: sa.Table, days: Days) -> list[sa.ColumnElement[bool]]:
    return [] if days is None else [table.c.business_date >= days[0], table.c.business_date < days[1]]


def inventory(engine: sa.Engine) -> Iterator[tuple[InventoryItem, Staged]]:
    """The staged inventory snapshot's products, parsed, in key order."""
    table = staged_inventory
    query = sa.select(table.c.product_id, table.c.content_hash, table.c.record).order_by(table.c.product_id)
    with engine.connect() as conn:
        for key, content_hash, record in conn.execution_options(stream_results=True, yield_per=CHUNK).execute(query):
            yield InventoryItem.model_validate_json(record), Staged(key, content_hash, None)


def personas(engine: sa.Engine, days: Days, scope: StoreScope = EVERYTHING) -> Iterator[tuple[PersonaPayload, Staged]]:
    """The window's staged personas that the account receives, with their payloads, day by day in key order."""
    table = staged_personas
    query = (
        sa.select(table.c.customer_id, table.c.content_hash, table.c.business_date, table.c.payload,
                  table.c.payload_hash, table.c.payload_issues, table.c.payload_error)
        .where(*in_days(table, days), *scope.shoppers(table.c.customer_id))
        .order_by(table.c.business_date, table.c.customer_id)  # ix_staged_personas_day_key_hash: no sort
    )
    with engine.connect() as conn:
        rows = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(query)
        for key, content_hash, business_date, payload, digest, issues, error in rows:
            yield PersonaPayload.staged(payload, digest, issues, error), Staged(key, content_hash, business_date)


def sales(engine: sa.Engine, days: Days, scope: StoreScope = EVERYTHING) -> Iterator[tuple[StagedSale, Staged]]:
    """The window's staged receipts of the account's stores with their payloads, day by day in key order."""
    table = staged_transactions
    query = (
        sa.select(table.c.transaction_id, table.c.content_hash, table.c.business_date, table.c.customer_id,
                  table.c.is_void, table.c.payload, table.c.payload_hash, table.c.payload_error)
        .where(*in_days(table, days), *scope.stores(table.c.location_id))
        .order_by(table.c.business_date, table.c.transaction_id)  # the index's order: no sort
    )
    with engine.connect() as conn:
        rows = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(query)
        for key, content_hash, business_date, customer_id, is_void, payload, digest, error in rows:
            sale = StagedSale(customer_id, is_void, None if payload is None else EncodedPayload(bytes(payload)),
                              digest, error)
            yield sale, Staged(key, content_hash, business_date)


def sale_customers(
    engine: sa.Engine, customers: Iterable[tuple[str, dt.date | None]]
) -> Iterator[tuple[PersonaPayload, Staged]]:
    """The staged payloads of customers that sales name, each given with the day of its first sale in the window (its
    day in the push's figures and in quarantine), in the order given. A customer without one (it could not be built,
    or no extract staged it) comes with the reason, and the push quarantines it."""
    for chunk in chunked(iter(customers), CHUNK):
        with engine.connect() as conn:
            rows = {row[0]: row for row in execute_with_lists(conn, _SALE_CUSTOMERS, {"ids": [k for k, _ in chunk]})}
        for key, day in chunk:
            row = rows.get(key)
            if row is None:
                yield PersonaPayload.failed(CUSTOMER_NOT_STAGED), Staged(key, "", day)
                continue
            _, content_hash, payload, digest, issues, error = row
            yield PersonaPayload.staged(payload, digest, issues, error), Staged(key, content_hash or "", day)


def personas_missing(
    engine: sa.Engine, account: str, days: Days, scope: StoreScope = EVERYTHING, *, besides_staged_personas: bool = False
) -> list[tuple[str, dt.date]]:
    """Customers of the window's sales in the account's stores (voids aside) that the account's ledger lacks (or holds
    for re-sending: ``ledger.RESEND``), with the day of their first such sale, in key order; with
    ``besides_staged_personas``, not those staged for the window that the account receives (they are sent as staged)."""
    sales_table = staged_transactions
    known = sa.exists().where(
        aiq_ledger.c.account == account, aiq_ledger.c.entity == Entity.PERSONA,
        aiq_ledger.c.record_key == sales_table.c.customer_id, aiq_ledger.c.source_hash != RESEND,
    )
    conditions = [*in_days(sales_table, days), *scope.stores(sales_table.c.location_id),
                  sales_table.c.customer_id.is_not(None), sa.not_(sales_table.c.is_void), sa.not_(known)]
    if besides_staged_personas:
        conditions.append(sa.not_(sa.exists().where(
            staged_personas.c.customer_id == sales_table.c.customer_id, *in_days(staged_personas, days),
            *scope.shoppers(staged_personas.c.customer_id),
        )))
    query = (sa.select(sales_table.c.customer_id, sa.func.min(sales_table.c.business_date)).where(*conditions)
             .group_by(sales_table.c.customer_id).order_by(sales_table.c.customer_id))
    with engine.connect() as conn:
        return [(key, day) for key, day in conn.execute(query)]


def in_scope(entity: Entity, scope: StoreScope) -> list[sa.ColumnElement[bool]]:
    """The conditions that keep an account's staged records (inventory is filtered by ``StoreScope.product``)."""
    if entity == Entity.TRANSACTION:
        return scope.stores(staged_transactions.c.location_id)
    if entity == Entity.PERSONA:
        return scope.shoppers(staged_personas.c.customer_id)
    return []


def count(engine: sa.Engine, entity: Entity, days: Days, scope: StoreScope = EVERYTHING) -> int:
    """The account's staged records of ``entity`` in the window (the whole snapshot for inventory)."""
    table = TABLES[entity]
    query = sa.select(sa.func.count()).select_from(table).where(*in_days(table, days), *in_scope(entity, scope))
    with engine.connect() as conn:
        return conn.scalar(query) or 0

"""What a delivery audit reads back: the personas AIQ acknowledged for business days, as the days' pushes sent them.

A day's personas are the ones its push sends (``Pusher.push_personas``): those staged for the day (created or modified
that day) and the customers the day's sales name in the account's stores, voids aside. One of them is *audited* when
the account's ledger holds the payload staged for it now: the staged bytes are then exactly what AIQ acknowledged, and
what AIQ's copy is compared with. A persona the ledger does not hold as staged (never sent, changed since, quarantined,
or waiting to be re-sent after an earlier audit) is counted, not read. A day's *audited sales* are its sales with a
customer that the ledger holds as staged: whether AIQ can attribute them is whether their persona is there.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import sqlalchemy as sa

from aiq_pipelines.aiq.payloads import Member
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.source import chunked
from aiq_pipelines.sync.accounts import StoreScope
from aiq_pipelines.sync.ledger import RESEND
from aiq_pipelines.sync.schema import aiq_ledger, staged_personas, staged_sale_customers, staged_transactions
from aiq_pipelines.sync.staged import CHUNK, in_days


class Sent(NamedTuple):
    """What AIQ acknowledged for one persona: the ledger's row and the fields of the payload it acknowledged."""

    key: str
    payload_hash: str
    acked_at: dt.datetime  # naive UTC
    contact_id: str | None
    phone: str | None
    email: str | None
    first_name: str | None
    last_name: str | None

    def __repr__(self) -> str:  # no name, phone or email in logs or tracebacks
        return f"Sent({self.key!r}, contact_id={self.contact_id!r}, acked_at={self.acked_at!r})"


class Sale(NamedTuple):
    """An audited sale: acknowledged as staged, with its customer."""

    key: str
    customer: str
    payload_hash: str


@dataclass
class Targets:
    """The personas and sales of some days, and what the ledger says AIQ acknowledged of them."""

    personas: dict[dt.date, set[str]] = field(default_factory=lambda: defaultdict(set))  # every persona of each day
    sales: dict[dt.date, list[Sale]] = field(default_factory=lambda: defaultdict(list))
    sent: dict[str, Sent] = field(default_factory=dict)  # the audited ones: acknowledged as staged
    awaiting_resend: set[str] = field(default_factory=set)  # found missing before, not re-sent yet

    @property
    def days(self) -> list[dt.date]:
        return sorted(self.personas.keys() | self.sales.keys())


_LEDGER = sa.select(
    aiq_ledger.c.record_key, aiq_ledger.c.payload_hash, aiq_ledger.c.source_hash, aiq_ledger.c.acked_at,
    aiq_ledger.c.contact_id,
).where(aiq_ledger.c.account == sa.bindparam("account"), aiq_ledger.c.entity == sa.bindparam("entity"),
        aiq_ledger.c.record_key.in_(sa.bindparam("keys", expanding=True)))
_PAYLOADS = tuple(
    sa.select(table.c.customer_id, table.c.payload_hash, table.c.payload)
    .where(table.c.customer_id.in_(sa.bindparam("keys", expanding=True)), table.c.payload.is_not(None))
    for table in (staged_personas, staged_sale_customers)
)


def targets(engine: sa.Engine, account: str, days: tuple[dt.date, dt.date], scope: StoreScope) -> Targets:
    """The personas and sales of the local dates ``[first, stop)`` that the account receives."""
    found = Targets()
    sales_table, personas_table = staged_transactions, staged_personas
    day_personas = sa.select(personas_table.c.business_date, personas_table.c.customer_id).where(
        *in_days(personas_table, days), *scope.shoppers(personas_table.c.customer_id))
    day_sales = sa.select(
        sales_table.c.business_date, sales_table.c.transaction_id, sales_table.c.customer_id,
        sales_table.c.content_hash, sales_table.c.payload_hash,
    ).where(*in_days(sales_table, days), *scope.stores(sales_table.c.location_id), sa.not_(sales_table.c.is_void),
            sales_table.c.customer_id.is_not(None))
    with engine.connect() as conn:
        for day, key in conn.execute(day_personas):
            found.personas[day].add(key)
        sales = conn.execute(day_sales).all()
    for day, _, customer, _, _ in sales:
        found.personas[day].add(customer)
    for chunk in chunked(iter(sales), CHUNK):
        acked = _ledger(engine, account, Entity.TRANSACTION, [key for _, key, *_ in chunk])
        for day, key, customer, content_hash, digest in chunk:
            row = acked.get(key)
            if row is not None and (row.payload_hash, row.source_hash) == (digest, content_hash):
                found.sales[day].append(Sale(key, customer, digest))
    keys = sorted(set().union(*found.personas.values()))
    for chunk in chunked(iter(keys), CHUNK):
        acked = _ledger(engine, account, Entity.PERSONA, chunk)
        found.awaiting_resend.update(key for key, row in acked.items() if row.payload_hash == RESEND)
        for sent in _sent(engine, acked, chunk):
            found.sent[sent.key] = sent
    return found


def _ledger(engine: sa.Engine, account: str, entity: Entity, keys: Sequence[str]) -> dict[str, sa.Row]:
    with engine.connect() as conn:
        rows = conn.execute(_LEDGER, {"account": account, "entity": str(entity), "keys": list(keys)})
        return {row.record_key: row for row in rows}


def _sent(engine: sa.Engine, acked: dict[str, sa.Row], keys: Iterable[str]) -> Iterator[Sent]:
    """The personas among ``keys`` whose staged payload (of any day, or as a sale's customer) is the one acknowledged."""
    wanted = [key for key in keys if key in acked and acked[key].payload_hash != RESEND]
    payloads: dict[str, bytes] = {}
    with engine.connect() as conn:
        for query in _PAYLOADS:
            for key, digest, payload in conn.execute(query, {"keys": wanted}):
                if digest == acked[key].payload_hash:
                    payloads[key] = bytes(payload)
    for key in wanted:
        if key in payloads:
            row, member = acked[key], Member.from_encoded(payloads[key])
            yield Sent(key, row.payload_hash, row.acked_at, row.contact_id, member.phone_number, member.email,
                       member.first_name, member.last_name)

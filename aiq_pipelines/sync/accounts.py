"""Which stores' records an AIQ account receives: its ``StoreScope``, as SQL conditions on the staged records.

A chain may run several AIQ accounts (one per brand or state). Each store belongs to one account: its sales and its
stock go there. A shopper goes to every account in whose stores a sale names them anywhere in the POS's history (not
only in the days staged: ``shopper_stores``, looked up by the extract), so one who shops in two accounts' stores is in
both; the default account also receives the stores no account lists, and the shoppers the POS knows no sale of. A
shopper whose stores were never looked up goes to no account and is held back with a reason (fail closed). With one
account (no ``AIQ_ACCOUNTS_FILE``) the scope is everything and adds no condition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.records import InventoryItem
from aiq_pipelines.pos.times import utc_now
from aiq_pipelines.sync.quarantine import NO_ACCOUNT, Stage
from aiq_pipelines.sync.schema import quarantine, shopper_stores, staged_personas, staged_transactions

UNLISTED_STORE = ("store {location} ({name}) belongs to no AIQ account: list it under an account's locations in "
                  "AIQ_ACCOUNTS_FILE, or make one account default: true, then re-run the day")
UNPLACED_SHOPPER = ("no AIQ account receives this shopper yet: the stores they bought in were never read from the POS "
                    "(staged before several accounts were set, or by an earlier version); re-run the day, whose "
                    "pos_personas reads them, and the shopper is sent to the accounts of those stores")


@dataclass(frozen=True)
class StoreScope:
    """The stores of one account: ``only`` those, or (``only`` None) every store but ``excluded``."""

    only: frozenset[str] | None = None
    excluded: frozenset[str] = frozenset()

    @classmethod
    def for_accounts(cls, accounts: Mapping[str, tuple[Iterable[str], bool]]) -> dict[str, StoreScope]:
        """Each account's scope from its listed locations and whether it is the default: name -> scope."""
        listed = frozenset(location for locations, _ in accounts.values() for location in locations)
        return {
            name: cls(None, listed - frozenset(locations)) if default else cls(frozenset(locations))
            for name, (locations, default) in accounts.items()
        }

    @property
    def everything(self) -> bool:
        return self.only is None and not self.excluded

    @property
    def takes_the_rest(self) -> bool:
        """Whether this is the default account: unlisted stores and shoppers without a sale are its own."""
        return self.only is None

    def covers(self, location_id: str) -> bool:
        return location_id in self.only if self.only is not None else location_id not in self.excluded

    def stores(self, location: sa.ColumnElement[str]) -> list[sa.ColumnElement[bool]]:
        """Conditions that keep the rows of this account's stores (none for everything)."""
        if self.only is not None:
            return [location.in_(sorted(self.only))]
        return [location.not_in(sorted(self.excluded))] if self.excluded else []

    def shoppers(self, customer_id: sa.ColumnElement[str]) -> list[sa.ColumnElement[bool]]:
        """Conditions that keep the customers this account receives: those the POS knows a sale of in its stores,
        plus, for the default account, those it knows no sale of at all (their one ``shopper_stores`` row is
        ``NO_SALE``, which no listed store is). A customer never looked up has no row: no account receives them."""
        if self.everything:
            return []
        stores = shopper_stores.alias("scope_stores")
        return [sa.exists().where(stores.c.customer_id == customer_id, *self.stores(stores.c.location_id))]

    def product(self, item: InventoryItem) -> InventoryItem | None:
        """The product as this account sees it, its stock in this account's stores only; None when it is not this
        account's: stocked in none of its stores (the default account also takes products stocked nowhere)."""
        if self.everything:
            return item
        if not self.takes([entry.location_id for entry in item.stock]):
            return None
        stock = tuple(entry for entry in item.stock if self.covers(entry.location_id))
        return item if len(stock) == len(item.stock) else item.model_copy(update={"stock": stock})

    def takes(self, stocked_at: Sequence[str]) -> bool:
        """Whether a product stocked at these stores is this account's."""
        return self.everything or any(map(self.covers, stocked_at)) or (self.takes_the_rest and not stocked_at)


EVERYTHING = StoreScope()

def _hold(engine: sa.Engine, entity: Entity, days: tuple[dt.date, dt.date], held: sa.Select,
          reason: Callable[[sa.Row], str], run_id: str) -> int:
    """Quarantine, at stage payload and for no account, the records ``held`` selects (key, day, content hash, and what
    ``reason`` words the reason from), in place of the window's earlier such rows of ``entity``: seen, never silently
    dropped. Returns how many."""
    mine = [quarantine.c.entity == entity, quarantine.c.stage == Stage.PAYLOAD, quarantine.c.account == NO_ACCOUNT,
            quarantine.c.business_date >= days[0], quarantine.c.business_date < days[1]]
    now = utc_now()
    with engine.begin() as conn:
        conn.execute(quarantine.delete().where(*mine))
        rows = [
            {"entity": entity, "record_key": row[0], "stage": Stage.PAYLOAD, "account": NO_ACCOUNT,
             "business_date": row[1], "reason": reason(row), "source_hash": row[2], "source": None, "run_id": run_id,
             "quarantined_at": now}
            for row in conn.execute(held)
        ]
        if rows:
            conn.execute(quarantine.insert(), rows)
    return len(rows)


def hold_unlisted_sales(engine: sa.Engine, days: tuple[dt.date, dt.date], listed: frozenset[str], run_id: str) -> int:
    """With no default account, quarantine the window's sales of stores that no account lists. Returns how many."""
    sales = staged_transactions
    unlisted = sa.select(sales.c.transaction_id, sales.c.business_date, sales.c.content_hash, sales.c.location_id,
                         sales.c.location_name).where(sales.c.business_date >= days[0], sales.c.business_date < days[1],
                                                      sales.c.location_id.not_in(sorted(listed)))
    return _hold(engine, Entity.TRANSACTION, days, unlisted,
                 lambda row: UNLISTED_STORE.format(location=row[3], name=row[4]), run_id)


def hold_unplaced_shoppers(engine: sa.Engine, days: tuple[dt.date, dt.date], run_id: str) -> int:
    """Quarantine the window's staged personas whose stores were never looked up (``UNPLACED_SHOPPER``): no account
    receives them until their day is extracted again. Returns how many."""
    personas = staged_personas
    looked_up = sa.exists().where(shopper_stores.c.customer_id == personas.c.customer_id)
    unplaced = sa.select(personas.c.customer_id, personas.c.business_date, personas.c.content_hash).where(
        personas.c.business_date >= days[0], personas.c.business_date < days[1], sa.not_(looked_up))
    return _hold(engine, Entity.PERSONA, days, unplaced, lambda row: UNPLACED_SHOPPER, run_id)

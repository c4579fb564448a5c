"""Which stores' records an AIQ account receives: its ``StoreScope``, as SQL conditions on the staged records.

A chain may run several AIQ accounts (one per brand or state). Each store belongs to one account: its sales and its
stock go there. A shopper goes to every account in whose stores a staged sale names them, so one who shops in two
accounts' stores is in both; the default account also receives the stores no account lists, and the shoppers with no
staged sale at all. With one account (no ``AIQ_ACCOUNTS_FILE``) the scope is everything and adds no condition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.records import InventoryItem
from aiq_pipelines.pos.times import utc_now
from aiq_pipelines.sync.quarantine import NO_ACCOUNT, Stage
from aiq_pipelines.sync.schema import quarantine, staged_transactions

UNLISTED_STORE = ("store {location} ({name}) belongs to no AIQ account: list it under an account's locations in "
                  "AIQ_ACCOUNTS_FILE, or make one account default: true, then re-run the day")


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
        """Conditions that keep the customers this account receives: those with a staged sale in its stores, plus,
        for the default account, those with no staged sale anywhere."""
        if self.everything:
            return []
        sales = staged_transactions.alias("scope_sales")
        shops_here = sa.exists().where(sales.c.customer_id == customer_id, *self.stores(sales.c.location_id))
        if not self.takes_the_rest:
            return [shops_here]
        shops_anywhere = sa.exists().where(sales.c.customer_id == customer_id)
        return [sa.or_(shops_here, sa.not_(shops_anywhere))]

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


def hold_unlisted_sales(engine: sa.Engine, days: tuple[dt.date, dt.date], listed: frozenset[str], run_id: str) -> int:
    """With no default account, quarantine the window's sales of stores that no account lists, so they are seen and
    never silently dropped; the window's earlier such rows are replaced. Returns how many are held."""
    sales = staged_transactions
    unlisted = sa.select(sales.c.transaction_id, sales.c.business_date, sales.c.location_id, sales.c.location_name,
                         sales.c.content_hash).where(sales.c.business_date >= days[0], sales.c.business_date < days[1],
                                                     sales.c.location_id.not_in(sorted(listed)))
    mine = [quarantine.c.entity == Entity.TRANSACTION, quarantine.c.stage == Stage.PAYLOAD,
            quarantine.c.account == NO_ACCOUNT, quarantine.c.business_date >= days[0],
            quarantine.c.business_date < days[1]]
    now = utc_now()
    with engine.begin() as conn:
        conn.execute(quarantine.delete().where(*mine))
        rows = [
            {"entity": Entity.TRANSACTION, "record_key": key, "stage": Stage.PAYLOAD, "account": NO_ACCOUNT,
             "business_date": day, "reason": UNLISTED_STORE.format(location=location, name=name),
             "source_hash": content_hash, "source": None, "run_id": run_id, "quarantined_at": now}
            for key, day, location, name, content_hash in conn.execute(unlisted)
        ]
        if rows:
            conn.execute(quarantine.insert(), rows)
    return len(rows)

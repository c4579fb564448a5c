"""The shoppers the erasure tests forget (``sync/test_erasure.py`` with a drop folder and SQLite,
``postgres/test_erasure.py`` with a POS and a sync database on PostgreSQL): two shoppers with a distinctive value in
every personal field, each with a sale on June 10, 2026."""

from __future__ import annotations

import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.sync.schema import shopper_erasures
from aiq_pipelines_tests.support.days import local
from aiq_pipelines_tests.support.pos_factory import PosFactory

DAY = "2026-06-10"
SHOPPERS = {
    "E1": dict(first_name="Wilhelmina", last_name="Thistlewood", phone="(720) 482-6614", email="W.Thistle@Example.COM",
               birthday="1958-09-23", address1="27 Sleepy Otter Way", address2="Flat 3Otter", city="Marrowdale"),
    "K1": dict(first_name="Barnabus", last_name="Quenneville", phone="303-482-7781", email="barnq@example.org",
               birthday="1966-04-11", address1="9 Hollow Finch Road", address2="Unit 5Finch", city="Gorsefield"),
}
# Where the sync database keeps a synced shopper's personal data: the staged persona (record and payload), the payload
# staged for their sales, and the phone and email the ledger last sent.
SYNCED_COPIES = {"staged_personas.record", "staged_personas.payload", "staged_sale_customers.payload",
                 "aiq_ledger.sent_phone", "aiq_ledger.sent_email"}


def add_shoppers(pos: PosFactory) -> None:
    """E1 and K1 into the POS, modified the morning of June 10, each with a sale at noon that day."""
    for key, fields in SHOPPERS.items():
        pos.add_customer(key, modified=local(2026, 6, 10, 8), **fields)
        pos.add_sale(f"SALE-{key}", local(2026, 6, 10, 12), customer_id=key)


def erasures(sync_url: str) -> list[tuple[str, str, bool]]:
    """The erasures recorded in the sync database: (key, by whom, whether the source still held the shopper)."""
    with engine_for(sync_url).connect() as conn:
        return [tuple(row) for row in conn.execute(sa.select(
            shopper_erasures.c.customer_id, shopper_erasures.c.erased_by, shopper_erasures.c.pos_still_holds))]

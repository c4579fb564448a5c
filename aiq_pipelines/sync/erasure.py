"""Erasing a shopper: their personal data removed from everything the sync database keeps, and the erasure recorded.

Removed: the staged persona (record and payload), the payload staged for the sales that name them, the stores looked
up for them, every account's ledger row of the persona (it holds the phone and email last sent), and every quarantine
row of theirs: the persona's at any stage (the POS row kept for the operator, AIQ's message) and the drop-file lines
that give them. Their staged sales are kept: a sale carries no personal data, only the customer's POS key, as the POS
keeps it. The erasure itself is recorded in ``shopper_erasures`` (key, when, by whom), in the same transaction.

AIQ publishes no delete call: the persona is deleted in AIQ's own UI. If the POS still holds the shopper, the next
sync of a day that names them brings them back: erase in the POS first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import sqlalchemy as sa

from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.times import utc_now
from aiq_pipelines.sync.quarantine import Stage
from aiq_pipelines.sync.schema import (
    aiq_ledger,
    quarantine,
    quarantine_seen,
    shopper_erasures,
    shopper_stores,
    staged_personas,
    staged_sale_customers,
)


@dataclass
class Erasure:
    """What erasing one shopper removed (rows per table), and whether the source still holds them."""

    customer_id: str
    removed: dict[str, int] = field(default_factory=dict)
    still_in: list[str] = field(default_factory=list)  # where the shopper is still held: the POS, drop files

    @property
    def rows_removed(self) -> int:
        return sum(self.removed.values())

    def summary(self) -> list[str]:
        """What was done and what is left to the operator, naming the shopper by their POS key only."""
        counts = ", ".join(f"{table} {n}" for table, n in self.removed.items() if n) or "nothing was kept"
        lines = [f"shopper {self.customer_id}: {self.rows_removed} rows of their data removed ({counts})"]
        if self.still_in:
            verb = "holds" if len(self.still_in) == 1 else "hold"
            lines.append(f"WARNING: {'; '.join(self.still_in)} still {verb} shopper {self.customer_id}: the next sync "
                         "that reads them brings the shopper back. Erase them in the POS first, then erase here again.")
        lines.append(f"AIQ publishes no delete call: delete the persona (pos_user {self.customer_id}) in AIQ's own "
                     "UI, in every AIQ account that received it.")
        return lines


def _intake_lines(conn: sa.Connection, customer_id: str) -> list[str]:
    """The keys of the quarantined drop-file lines that give this customer (a customers file's line)."""
    rows = conn.execute(sa.select(quarantine.c.record_key, quarantine.c.source).where(
        quarantine.c.stage == Stage.INTAKE, quarantine.c.entity == Entity.PERSONA, quarantine.c.source.is_not(None)))
    return [key for key, source in rows if str(json.loads(source).get("customer_id", "")).strip() == customer_id]


def forget_shopper(engine: sa.Engine, customer_id: str, erased_by: str, *, still_in: list[str] | None = None,
                   elsewhere: dict[str, int] | None = None) -> Erasure:
    """Remove ``customer_id``'s personal data from the sync database and record the erasure, in one transaction.

    ``still_in`` names where the shopper is still held (recorded as ``pos_still_holds``); ``elsewhere`` counts rows
    removed outside the sync database (the drop folder's mirror), for the record.
    """
    erasure = Erasure(customer_id, dict(elsewhere or {}), list(still_in or []))
    persona = Entity.PERSONA
    with engine.begin() as conn:
        lines = _intake_lines(conn, customer_id)
        deletes = {
            "staged_personas": staged_personas.delete().where(staged_personas.c.customer_id == customer_id),
            "staged_sale_customers": staged_sale_customers.delete().where(
                staged_sale_customers.c.customer_id == customer_id),
            "shopper_stores": shopper_stores.delete().where(shopper_stores.c.customer_id == customer_id),
            "aiq_ledger": aiq_ledger.delete().where(aiq_ledger.c.entity == persona,
                                                    aiq_ledger.c.record_key == customer_id),
            "quarantine": quarantine.delete().where(sa.or_(
                sa.and_(quarantine.c.entity == persona, quarantine.c.record_key == customer_id),
                sa.and_(quarantine.c.stage == Stage.INTAKE, quarantine.c.record_key.in_(lines)))),
            "quarantine_seen": quarantine_seen.delete().where(
                quarantine_seen.c.entity == persona, quarantine_seen.c.record_key.in_([customer_id, *lines])),
        }
        for table, statement in deletes.items():
            erasure.removed[table] = conn.execute(statement).rowcount
        conn.execute(shopper_erasures.insert().values(
            customer_id=customer_id, erased_at=utc_now(), erased_by=erased_by, rows_removed=erasure.rows_removed,
            pos_still_holds=bool(erasure.still_in)))
    return erasure

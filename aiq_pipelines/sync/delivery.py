"""The proof behind the push's ``delivered`` check: every staged record the account receives is in AIQ as staged,
quarantined, or a void never sent."""

from __future__ import annotations

import json

import sqlalchemy as sa

from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.sync.accounts import EVERYTHING, StoreScope
from aiq_pipelines.sync.quarantine import NO_ACCOUNT, PUSH_STAGES
from aiq_pipelines.sync.schema import aiq_ledger, quarantine
from aiq_pipelines.sync.staged import TABLES, Days, in_days, in_scope


def undelivered(engine: sa.Engine, account: str, entity: Entity, days: Days = None,
                scope: StoreScope = EVERYTHING) -> int:
    """Staged records of the account's stores that are neither in AIQ as staged (per the account's ledger), nor
    quarantined at a push stage for it, nor voided before they were ever sent."""
    table = TABLES[entity]
    key = next(iter(table.primary_key.columns))
    ledger = aiq_ledger.alias("ledger")
    in_ledger = sa.and_(ledger.c.account == account, ledger.c.entity == entity, ledger.c.record_key == key)
    quarantined = sa.exists().where(
        quarantine.c.entity == entity, quarantine.c.stage.in_(PUSH_STAGES), quarantine.c.record_key == key,
        quarantine.c.account.in_([account, NO_ACCOUNT]),
    )
    conditions = [
        sa.or_(ledger.c.record_key.is_(None), ledger.c.source_hash != table.c.content_hash),
        sa.not_(quarantined),
        *in_days(table, days),
        *in_scope(entity, scope),
    ]
    if entity == Entity.TRANSACTION:
        conditions.append(sa.not_(sa.and_(table.c.is_void, ledger.c.record_key.is_(None))))
    joined = table.outerjoin(ledger, in_ledger)
    with engine.connect() as conn:
        if entity != Entity.INVENTORY or scope.everything:
            return conn.scalar(sa.select(sa.func.count()).select_from(joined).where(*conditions)) or 0
        # Which account a product belongs to lies in its stock, inside the staged record: read it for the few
        # products not delivered as staged.
        records = conn.scalars(sa.select(table.c.record).select_from(joined).where(*conditions))
        return sum(scope.takes([s["location_id"] for s in json.loads(record)["stock"]]) for record in records)

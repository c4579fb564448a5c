"""The proof behind the push's ``delivered`` check: every staged record is in AIQ as staged, quarantined, or a void
never sent."""

from __future__ import annotations

import sqlalchemy as sa

from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.sync.quarantine import PUSH_STAGES
from aiq_pipelines.sync.schema import aiq_ledger, quarantine
from aiq_pipelines.sync.staged import TABLES, Days, in_days


def undelivered(engine: sa.Engine, account: str, entity: Entity, days: Days = None) -> int:
    """Staged records that are neither in AIQ as staged (per the account's ledger), nor quarantined at a push
    stage, nor voided before they were ever sent."""
    table = TABLES[entity]
    key = next(iter(table.primary_key.columns))
    ledger = aiq_ledger.alias("ledger")
    in_ledger = sa.and_(ledger.c.account == account, ledger.c.entity == entity, ledger.c.record_key == key)
    quarantined = sa.exists().where(
        quarantine.c.entity == entity, quarantine.c.stage.in_(PUSH_STAGES), quarantine.c.record_key == key
    )
    conditions = [
        sa.or_(ledger.c.record_key.is_(None), ledger.c.source_hash != table.c.content_hash),
        sa.not_(quarantined),
        *in_days(table, days),
    ]
    if entity == Entity.TRANSACTION:
        conditions.append(sa.not_(sa.and_(table.c.is_void, ledger.c.record_key.is_(None))))
    query = sa.select(sa.func.count()).select_from(table.outerjoin(ledger, in_ledger)).where(*conditions)
    with engine.connect() as conn:
        return conn.scalar(query) or 0

"""The quarantine: records held back, each with its reason (fields and rules only, never a phone or an email).

A record is quarantined at the stage that refused it: ``intake`` (a drop file's line that does not parse; its key is
``<file>:<line>``), ``extract`` (its POS rows do not make a valid record), ``payload``
(no valid AIQ payload, or it waits for its persona), ``aiq`` (AIQ refused it) or ``audit`` (AIQ accepted it, and two
delivery audits running did not find it as sent: ``sync.audit_outcome``). An extract replaces its window's
``extract`` rows, and a push the rows of the records it settles, so a record fixed at the source leaves the quarantine.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from aiq_pipelines.db.hashing import digest
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.times import utc_now
from aiq_pipelines.sync.schema import quarantine

# (key, business day, reason, the POS rows as read)
Reject = tuple[Any, Any, str, Any]


class Stage(enum.StrEnum):
    """Where a record was held back."""

    INTAKE = "intake"
    EXTRACT = "extract"
    PAYLOAD = "payload"
    AIQ = "aiq"
    AUDIT = "audit"


PUSH_STAGES = (Stage.PAYLOAD, Stage.AIQ)
NO_ACCOUNT = ""  # the account of rows no account's push owns: extract rows, sales of a store no account receives


def extract_rows(entity: Entity, run_id: str, rejects: Sequence[Reject]) -> list[dict[str, Any]]:
    """Quarantine rows for records an extract could not stage, each with the POS rows it read (kept for the operator
    in the sync database, never shown in the UI)."""
    now = utc_now()
    rows = []
    for key, day, reason, source in rejects:
        text = json.dumps(source, default=str, sort_keys=True)
        rows.append({
            "entity": entity, "record_key": None if key is None else str(key), "stage": Stage.EXTRACT,
            "business_date": day, "reason": reason, "source_hash": digest(text), "source": text, "run_id": run_id,
            "quarantined_at": now,
        })
    return rows


def quarantined(engine: sa.Engine, entity: Entity, stage: Stage | None = None) -> list[dict[str, Any]]:
    """Quarantined records of an entity, newest first (for tests and operators)."""
    query = sa.select(quarantine).where(quarantine.c.entity == entity).order_by(quarantine.c.id.desc())
    if stage is not None:
        query = query.where(quarantine.c.stage == stage)
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def quarantine_count(engine: sa.Engine, entity: Entity, account: str | None = None) -> int:
    """Records of ``entity`` in quarantine, at any stage; with ``account``, those held back by that account's push or
    by no account's (extract rows, sales of a store no account receives)."""
    query = sa.select(sa.func.count()).select_from(quarantine).where(quarantine.c.entity == entity)
    if account is not None:
        query = query.where(quarantine.c.account.in_([account, NO_ACCOUNT]))
    with engine.connect() as conn:
        return conn.scalar(query) or 0

"""What an audit changes: a persona that did not land as sent is re-sent by the next sync; the second time running,
it is held in quarantine with its reason, until a later audit finds it or ``retry_quarantined`` sends it again.

*Re-sent*: its ledger row keeps its contact ids but loses its hashes (``ledger.RESEND``), so no sync counts it
delivered: the next sync of any day that needs it sends it again, the day's ``delivered`` check waits for that, and the
resend sensor asks for a sync of the audited day. A missing persona's audited sales of that day are re-sent with it,
after it, so AIQ can attribute them. The row is cleared only while it still holds what the audit read: a record AIQ
acknowledged anew meanwhile is left alone.

*Held*: ``aiq_audit`` counts, per account and persona, the audits running that did not find it as sent. At two, the
persona is quarantined at stage ``audit`` ("accepted by AIQ, absent after N hours", N counted from when AIQ first
accepted what it was not found with) and no longer re-sent on its own: re-sending what AIQ drops twice would spend the
budget for nothing. Unlike a refusal, which waits for new content, ``release_holds`` (``retry_quarantined``) re-sends it
as it is. An audit that finds the persona as sent forgets both rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import sqlalchemy as sa

from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.sync.audit_targets import Sale, Sent
from aiq_pipelines.sync.ledger import RESEND
from aiq_pipelines.sync.quarantine import Stage
from aiq_pipelines.sync.schema import aiq_audit, aiq_ledger, quarantine, staged_transactions

CONFIRMED, MISSING, MISMATCHED = "confirmed", "missing", "mismatched"
HOLD_AFTER = 2  # audits running that did not find a persona as sent, before it is held


class Verdict(NamedTuple):
    """An audited persona AIQ does not hold as sent: ``missing``, or ``mismatched`` in ``fields``."""

    sent: Sent
    day: dt.date
    status: str
    fields: tuple[str, ...] = ()


def reason(status: str, fields: Sequence[str], hours: float) -> str:
    """The quarantine reason of a held persona (fields by name only, never values)."""
    if status == MISSING:
        return f"accepted by AIQ, absent after {hours:.0f} hours"
    return f"accepted by AIQ, but AIQ holds another {', '.join(fields)} after {hours:.0f} hours"


_KEYS = sa.bindparam("keys", expanding=True)
_MINE = (quarantine.c.entity == Entity.PERSONA, quarantine.c.stage == Stage.AUDIT,
         quarantine.c.account == sa.bindparam("account"))
_PREVIOUS = sa.select(aiq_audit).where(aiq_audit.c.account == sa.bindparam("account"), aiq_audit.c.record_key.in_(_KEYS))
_FORGET = aiq_audit.delete().where(aiq_audit.c.account == sa.bindparam("account"), aiq_audit.c.record_key.in_(_KEYS))
_UNHOLD = quarantine.delete().where(*_MINE, quarantine.c.record_key.in_(_KEYS))


def _resend(conn: sa.Connection, account: str, entity: Entity, rows: Iterable[tuple[str, str | None]]) -> None:
    """Clear the ledger rows of ``(key, hash read)`` pairs, each only while it holds that hash (None: any)."""
    params = [{"key": key, "hash": digest} for key, digest in rows]
    if params:
        conn.execute(
            aiq_ledger.update().where(
                aiq_ledger.c.account == account, aiq_ledger.c.entity == entity,
                aiq_ledger.c.record_key == sa.bindparam("key"),
                sa.or_(aiq_ledger.c.payload_hash == sa.bindparam("hash"), sa.bindparam("hash").is_(None)),
            ).values(payload_hash=RESEND, source_hash=RESEND),
            params,
        )


def settle(
    engine: sa.Engine, account: str, run_id: str, now: dt.datetime, confirmed: Iterable[str],
    verdicts: Sequence[Verdict], sales: dict[str, list[Sale]],
) -> tuple[int, int]:
    """Write an audit's findings in one transaction; ``sales`` are the audited sales by customer. Returns how many
    personas are now to be re-sent and how many are held in quarantine."""
    resend, held = [], []
    with engine.begin() as conn:
        conn.execute(_FORGET, {"account": account, "keys": list(confirmed)})
        conn.execute(_UNHOLD, {"account": account, "keys": list(confirmed)})
        keys = [v.sent.key for v in verdicts]
        previous = {row.record_key: row for row in conn.execute(_PREVIOUS, {"account": account,
                                                                                         "keys": keys})}
        conn.execute(_FORGET, {"account": account, "keys": keys})
        conn.execute(_UNHOLD, {"account": account, "keys": keys})
        rows = []
        for verdict in verdicts:
            before = previous.get(verdict.sent.key)
            misses = (before.misses if before else 0) + 1
            first = before.first_accepted_at if before else verdict.sent.acked_at
            rows.append({"account": account, "record_key": verdict.sent.key, "business_date": verdict.day,
                         "status": verdict.status, "fields": ",".join(verdict.fields) or None, "misses": misses,
                         "first_accepted_at": first, "audited_at": now})
            (held if misses >= HOLD_AFTER else resend).append((verdict, first))
        if rows:
            conn.execute(aiq_audit.insert(), rows)
        _resend(conn, account, Entity.PERSONA, [(v.sent.key, v.sent.payload_hash) for v, _ in resend])
        _resend(conn, account, Entity.TRANSACTION, [(sale.key, sale.payload_hash) for v, _ in resend
                                                    if v.status == MISSING for sale in sales.get(v.sent.key, ())])
        if held:
            conn.execute(quarantine.insert(), [
                {"entity": Entity.PERSONA, "record_key": v.sent.key, "stage": Stage.AUDIT, "account": account,
                 "business_date": v.day, "reason": reason(v.status, v.fields, (now - first).total_seconds() / 3600),
                 "source_hash": v.sent.payload_hash, "source": None, "run_id": run_id, "quarantined_at": now}
                for v, first in held
            ])
    return len(resend), len(held)


def release_holds(engine: sa.Engine, days: tuple[dt.date, dt.date] | None = None) -> int:
    """Re-send, as they are, the personas audits hold in quarantine (those of the local dates ``[first, stop)``), with
    the sales of the day each went missing on; their quarantine rows go. Returns how many were released."""
    held = sa.select(quarantine.c.account, quarantine.c.record_key, quarantine.c.business_date).where(
        quarantine.c.entity == Entity.PERSONA, quarantine.c.stage == Stage.AUDIT)
    if days is not None:
        held = held.where(quarantine.c.business_date >= days[0], quarantine.c.business_date < days[1])
    with engine.begin() as conn:
        rows = conn.execute(held).all()
        for account, key, day in rows:
            status = conn.scalar(sa.select(aiq_audit.c.status).where(aiq_audit.c.account == account,
                                                                     aiq_audit.c.record_key == key))
            sales = [] if status != MISSING else conn.scalars(sa.select(staged_transactions.c.transaction_id).where(
                staged_transactions.c.business_date == day, staged_transactions.c.customer_id == key,
                sa.not_(staged_transactions.c.is_void))).all()
            _resend(conn, account, Entity.PERSONA, [(key, None)])
            _resend(conn, account, Entity.TRANSACTION, [(sale, None) for sale in sales])
            conn.execute(_UNHOLD, {"account": account, "keys": [key]})
    return len(rows)


def days_to_resend(engine: sa.Engine) -> dict[dt.date, dt.datetime]:
    """The days whose audit found personas that no sync has re-sent yet, each with when it was last audited."""
    query = (
        sa.select(aiq_audit.c.business_date, sa.func.max(aiq_audit.c.audited_at))
        .join(aiq_ledger, sa.and_(aiq_ledger.c.account == aiq_audit.c.account, aiq_ledger.c.entity == Entity.PERSONA,
                                  aiq_ledger.c.record_key == aiq_audit.c.record_key))
        .where(aiq_ledger.c.payload_hash == RESEND)
        .group_by(aiq_audit.c.business_date)
    )
    with engine.connect() as conn:
        return dict(conn.execute(query).all())

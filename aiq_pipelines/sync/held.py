"""The records held back now, as an operator reads them: what, which day, where it stopped, why, and since when.

Each quarantine row is replaced whenever a run holds its record back again, so it knows only the last time; the
``quarantine_seen`` table, brought up to date by ``held_records``, keeps when each record was first seen there.
Nothing here carries a phone or an email: keys are POS ids (or ``<file>:<line>``), reasons are rules and fields.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa

from aiq_pipelines.aiq.redaction import redact_personal_data
from aiq_pipelines.pos.times import utc_now
from aiq_pipelines.sync.schema import quarantine, quarantine_seen

_SAME = ("entity", "stage", "account")
_QUOTED = re.compile(r"'[^']*'")
_NUMBERS = re.compile(r"\b\d+\b")


@dataclass(frozen=True)
class Held:
    entity: str
    key: str
    business_date: dt.date | None
    stage: str
    reason: str
    first_seen: dt.datetime
    last_seen: dt.datetime


def reason_kind(reason: str) -> str:
    """A reason without what varies from record to record (file lines, quoted values, numbers): what to count by."""
    kind = reason.split(": ", 1)[1] if " line " in reason.split(": ", 1)[0] else reason
    return _NUMBERS.sub("N", shown_reason(kind))[:120]


def shown_reason(reason: str) -> str:
    """A reason as the UI shows it: quoted values (a drop file's line quotes what it could not read, which a shifted
    column can make a name or a birthday) elided, phones and emails masked. The full row stays in the sync database."""
    return redact_personal_data(_QUOTED.sub("'…'", reason))


def held_records(engine: sa.Engine, now: dt.datetime | None = None) -> list[Held]:
    """Every record in quarantine, oldest first; records first seen now are remembered, those gone forgotten."""
    now = now or utc_now()
    key = sa.func.coalesce(quarantine.c.record_key, "")
    current = (sa.select(quarantine.c.entity, key.label("record_key"), quarantine.c.stage, quarantine.c.account,
                         sa.func.min(quarantine.c.quarantined_at).label("since"))
               .group_by(quarantine.c.entity, key, quarantine.c.stage, quarantine.c.account).subquery())
    seen = quarantine_seen
    matches = sa.and_(*(seen.c[name] == current.c[name] for name in ("record_key", *_SAME)))
    with engine.begin() as conn:
        conn.execute(seen.delete().where(~sa.exists().where(matches)))
        conn.execute(seen.insert().from_select(
            ["entity", "record_key", "stage", "account", "first_seen"],
            sa.select(current.c.entity, current.c.record_key, current.c.stage, current.c.account, current.c.since)
            .where(~sa.exists().where(matches)),
        ))
        query = (
            sa.select(quarantine.c.entity, key, quarantine.c.business_date, quarantine.c.stage, quarantine.c.reason,
                      seen.c.first_seen, quarantine.c.quarantined_at)
            .join(seen, sa.and_(seen.c.record_key == key, *(seen.c[name] == quarantine.c[name] for name in _SAME)))
            .order_by(seen.c.first_seen, quarantine.c.entity, key)
        )
        return [Held(*row) for row in conn.execute(query)]


def counts(records: list[Held]) -> tuple[Counter[str], Counter[str]]:
    """Records by stage and by reason kind."""
    return Counter(r.stage for r in records), Counter(reason_kind(r.reason) for r in records)


def fingerprint(engine: sa.Engine) -> str:
    """A short digest of the quarantine's state: it changes whenever a row is added or removed (a record held back
    again is a new row), so whoever watches it needs no list of what may change it."""
    query = sa.select(sa.func.count(), sa.func.max(quarantine.c.id), sa.func.max(quarantine.c.quarantined_at))
    with engine.connect() as conn:
        rows, last_id, last_at = conn.execute(query).one()
    return f"{rows}:{last_id or 0}:{last_at.isoformat() if last_at else ''}"

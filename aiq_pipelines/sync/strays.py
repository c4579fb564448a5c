"""Strays: POS records that no partition reads, quarantined so that none is lost silently.

A sale with no date, one dated later than today, or one dated before ``POS_START_DATE`` though modified since (a
terminal whose clock reset), and a customer last modified at no date or later than today. A stray's quarantine row
carries its own business day (none when it has no timestamp), outside every partition, so no partition's extract
replaces it; a stray that comes into range (a sale dated tomorrow, once tomorrow is a partition) is staged by its day's
extract.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.source import PosSource
from aiq_pipelines.pos.times import BusinessCalendar, utc_timestamp
from aiq_pipelines.sync.quarantine import Reject, Stage, extract_rows
from aiq_pipelines.sync.reports import StrayReport
from aiq_pipelines.sync.schema import quarantine

_DATING_COLUMN = {Entity.TRANSACTION: "transaction_at", Entity.PERSONA: "last_modified_at"}


def quarantine_strays(
    engine: sa.Engine, calendar: BusinessCalendar, source: PosSource, entity: Entity, first_start: dt.datetime,
    last_end: dt.datetime, *, run_id: str,
) -> StrayReport:
    """Replace the quarantined strays of ``entity`` (transactions or personas) with those the POS holds now.

    ``first_start`` and ``last_end`` bound every partition.
    """
    column = _DATING_COLUMN[entity]
    report = StrayReport(entity=entity)
    first_day, end_day = calendar.dates(first_start, last_end)
    if entity == Entity.TRANSACTION:  # a sale's day is its store's: the partitions' bounds in every store's zone
        first_start, last_end = source.store_days(calendar.tz).span(first_day, end_day)
    rejects: list[Reject] = []
    for key, rows in source.strays(entity, first_start, last_end):
        moment = utc_timestamp(rows[0]["business_at"])
        if moment is None:
            reason = f"{column} is missing or not a timestamp: the record belongs to no business day"
        elif moment >= last_end:
            reason = (f"{column} is later than today in POS_TIMEZONE: no partition reads the record until its "
                      "day comes; check the POS clock or the record")
        elif moment < first_start:
            reason = (f"{column} is before POS_START_DATE although the record was modified since: no partition "
                      "reads it; check the POS clock or the record, or move POS_START_DATE back")
        else:
            continue  # inside the partitions after all (SQLite compared its text): its day's extract reads it
        rejects.append((key, None if moment is None else calendar.date_of(moment), reason, rows))
        report.reject(key, reason)
    outside = sa.or_(
        quarantine.c.business_date.is_(None),
        quarantine.c.business_date < first_day,
        quarantine.c.business_date >= end_day,
    )
    with engine.begin() as conn:
        conn.execute(quarantine.delete().where(quarantine.c.entity == entity, quarantine.c.stage == Stage.EXTRACT,
                                               outside))
        if rejects:
            conn.execute(quarantine.insert(), extract_rows(entity, run_id, rejects))
    return report

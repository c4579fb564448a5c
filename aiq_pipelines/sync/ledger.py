"""The ledger: what AIQ has acknowledged, per account, entity and key.

A row is written only after AIQ acknowledged the batch that carried the record, in a transaction of its own, so a
crash, a kill or an outage leaves the ledger true: at worst AIQ holds a record the ledger doesn't know about yet, and
the next run re-sends it (AIQ's upserts are keyed, so that is harmless). ``payload_hash`` is what AIQ holds;
``source_hash`` is the staged record it came from, so the ``delivered`` check can prove a window is in AIQ.
For personas it also keeps AIQ's ``contactID``/``srcID`` and the phone and email last sent, which the override call
and the ``piis`` search need (the sync database is the one place personal data is kept besides the POS).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from aiq_pipelines.db.statements import execute_with_lists, upsert
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.times import utc_now
from aiq_pipelines.sync.schema import aiq_ledger

RESEND = ""
"""The hashes of a ledger row whose record a delivery audit did not find at AIQ (``sync.audit_outcome``): no payload
or staged record matches them, so the next sync sends the record again (its contact ids are kept) and the push's
``delivered`` check holds the record undelivered until AIQ acknowledged it anew."""


class LedgerEntry(NamedTuple):
    """What AIQ acknowledged for one record (a named tuple: one is built per record pushed, several times faster than a
    frozen dataclass)."""

    record_key: str
    payload_hash: str
    source_hash: str
    profile_hash: str | None = None
    sent_phone: str | None = None
    sent_email: str | None = None
    contact_id: str | None = None
    src_id: str | None = None

    def __repr__(self) -> str:  # no phone or email in logs or tracebacks
        return f"LedgerEntry({self.record_key!r}, contact_id={self.contact_id!r})"


@functools.cache
def _rows_query(columns: tuple[str, ...]) -> sa.Select:
    # Built once per column set: building it and its cache key for every chunk cost as much as running it.
    return sa.select(*(aiq_ledger.c[name] for name in columns)).where(
        aiq_ledger.c.account == sa.bindparam("account"),
        aiq_ledger.c.entity == sa.bindparam("entity"),
        aiq_ledger.c.record_key.in_(sa.bindparam("keys", expanding=True)),
    )


class Ledger:
    """Reads and writes the ledger of one AIQ account."""

    def __init__(self, engine: sa.Engine, account: str):
        self.engine = engine
        self.account = account

    def _rows(self, entity: Entity, keys: Iterable[str], *columns: sa.Column) -> Iterator[sa.Row]:
        """The ledger rows of ``keys`` (``columns`` of them), read 500 keys a query."""
        keys = list(set(keys))
        if not keys:
            return
        query = _rows_query(tuple(column.name for column in columns))
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 500):
                yield from execute_with_lists(conn, query, {"account": self.account, "entity": str(entity),
                                                            "keys": keys[start : start + 500]})

    def entries(self, entity: Entity, keys: Iterable[str]) -> dict[str, LedgerEntry]:
        columns = [aiq_ledger.c[name] for name in LedgerEntry._fields]
        return {row[0]: LedgerEntry._make(row) for row in self._rows(entity, keys, *columns)}

    def known(self, entity: Entity, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` AIQ has acknowledged, whatever their payload, unless an audit found them missing since."""
        return {key for key, digest in self._rows(entity, keys, aiq_ledger.c.record_key, aiq_ledger.c.source_hash)
                if digest != RESEND}

    def acknowledge(self, conn: sa.Connection, entity: Entity, entries: Sequence[LedgerEntry], run_id: str) -> None:
        """Record entries AIQ acknowledged (call inside the transaction that also clears their quarantine)."""
        if not entries:
            return
        now = utc_now()
        rows: list[dict[str, Any]] = [
            {**entry._asdict(), "account": self.account, "entity": str(entity), "acked_at": now, "run_id": run_id}
            for entry in entries
        ]
        upsert(conn, aiq_ledger, rows)

    def refresh_source_hashes(self, entity: Entity, changes: Sequence[tuple[str, str]]) -> None:
        """Point unchanged payloads at the staged record they now come from (no request to AIQ involved)."""
        if not changes:
            return
        with self.engine.begin() as conn:
            conn.execute(
                aiq_ledger.update()
                .where(
                    aiq_ledger.c.account == self.account,
                    aiq_ledger.c.entity == entity,
                    aiq_ledger.c.record_key == sa.bindparam("key"),
                )
                .values(source_hash=sa.bindparam("hash")),
                [{"key": key, "hash": source_hash} for key, source_hash in changes],
            )

    def count(self, entity: Entity) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(
                sa.select(sa.func.count()).select_from(aiq_ledger).where(
                    aiq_ledger.c.account == self.account, aiq_ledger.c.entity == entity
                )
            ) or 0

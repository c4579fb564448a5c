"""Taking in a drop folder: each new or changed file loaded into the mirror, its unreadable lines quarantined.

A file whose content (SHA-256) is what was last loaded under its name is skipped, however its modification time
moved. A line that does not parse is quarantined at stage ``intake``, keyed ``<file>:<line>`` with the problem as its
reason, and the rest of the file is loaded; loading the file again replaces its lines' quarantine rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from aiq_pipelines.aiq.redaction import redact_personal_data
from aiq_pipelines.pos.dropfiles import ColumnMap, DropFile, Row, sha256
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.mirror import DropMirror, LoadResult
from aiq_pipelines.pos.times import utc_now
from aiq_pipelines.sync.quarantine import Stage
from aiq_pipelines.sync.schema import quarantine

# The entity whose sync a file's rows feed: its quarantined lines are counted with it.
ENTITY_OF = {"locations": Entity.TRANSACTION, "transactions": Entity.TRANSACTION,
             "transaction_items": Entity.TRANSACTION, "customers": Entity.PERSONA, "products": Entity.INVENTORY,
             "inventory": Entity.INVENTORY}


def _of_file(name: str) -> sa.ColumnElement[bool]:
    prefix = f"{name}:"
    return sa.and_(quarantine.c.stage == Stage.INTAKE, sa.func.substr(quarantine.c.record_key, 1, len(prefix)) == prefix)


def take_in(mirror: DropMirror, sync_engine: sa.Engine, files: Iterable[DropFile], run_id: str,
            column_map: ColumnMap | None = None) -> list[LoadResult]:
    """Load each file (in the order given) whose content changed since it was last loaded."""
    results = []

    def quarantine_lines(file: DropFile, rows: Sequence[Row]) -> None:
        now = utc_now()
        with sync_engine.begin() as conn:
            conn.execute(quarantine.insert(), [
                {"entity": ENTITY_OF[file.kind], "record_key": f"{file.name}:{row.line}", "stage": Stage.INTAKE,
                 # A shifted column can put a phone or an email where a number was expected: masked in the reason.
                 "business_date": None, "reason": redact_personal_data(f"{file.name} line {row.line}: {row.problem}"),
                 "source_hash": None, "source": json.dumps(row.raw, sort_keys=True), "run_id": run_id,
                 "quarantined_at": now}
                for row in rows
            ])

    for file in files:
        digest = sha256(file.path)
        last = mirror.loaded(file.name)
        if last is not None and last[2] == digest:
            results.append(LoadResult(file.name, file.kind, unchanged=True))
            continue
        with sync_engine.begin() as conn:
            conn.execute(quarantine.delete().where(_of_file(file.name)))
        results.append(mirror.load(file, digest, run_id, column_map, quarantine_lines))
    return results

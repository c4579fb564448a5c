"""``SyncStore``: the pipeline's own database for one business calendar: staging, strays and the quarantine."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

from aiq_pipelines.db.engines import engine_for
from aiq_pipelines.pos.entity import Entity
from aiq_pipelines.pos.source import DEFAULT_CHUNK_SIZE, PosSource
from aiq_pipelines.pos.times import BusinessCalendar
from aiq_pipelines.sync import extract, strays
from aiq_pipelines.sync.extract import OnChunk
from aiq_pipelines.sync.quarantine import Stage, quarantine_count, quarantined
from aiq_pipelines.sync.reports import StageReport, StrayReport
from aiq_pipelines.sync.schema import ensure_schema


class SyncStore:
    """The sync database (``SYNC_DATABASE_URL``) seen from one business calendar (``POS_TIMEZONE``); with
    ``look_up_stores`` (several AIQ accounts split the shoppers) the extracts look up each staged shopper's stores."""

    def __init__(self, database_url: str, timezone: str, *, look_up_stores: bool = False):
        self.engine = engine_for(database_url)
        self.calendar = BusinessCalendar(timezone)
        self.look_up_stores = look_up_stores
        ensure_schema(self.engine)

    @property
    def tz(self) -> Any:
        return self.calendar.tz

    def business_date(self, moment: dt.datetime) -> dt.date:
        """The store's local day of a UTC moment (naive values are UTC)."""
        return self.calendar.date_of(moment)

    def stage_transactions(
        self, source: PosSource, start: dt.datetime, end: dt.datetime, *, run_id: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE, on_chunk: OnChunk = None,
    ) -> StageReport:
        """See ``extract.stage_transactions``."""
        return extract.stage_transactions(self.engine, self.calendar, source, start, end, run_id=run_id,
                                          chunk_size=chunk_size, on_chunk=on_chunk, look_up_stores=self.look_up_stores)

    def stage_personas(
        self, source: PosSource, start: dt.datetime, end: dt.datetime, *, run_id: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE, on_chunk: OnChunk = None,
    ) -> StageReport:
        """See ``extract.stage_personas``."""
        return extract.stage_personas(self.engine, self.calendar, source, start, end, run_id=run_id,
                                      chunk_size=chunk_size, on_chunk=on_chunk, look_up_stores=self.look_up_stores)

    def stage_inventory(
        self, source: PosSource, *, run_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE, on_chunk: OnChunk = None
    ) -> StageReport:
        """See ``extract.stage_inventory``."""
        return extract.stage_inventory(self.engine, self.calendar, source, run_id=run_id, chunk_size=chunk_size,
                                       on_chunk=on_chunk)

    def quarantine_strays(
        self, source: PosSource, entity: Entity, first_start: dt.datetime, last_end: dt.datetime, *, run_id: str
    ) -> StrayReport:
        """See ``strays.quarantine_strays``."""
        return strays.quarantine_strays(self.engine, self.calendar, source, Entity(entity), first_start, last_end,
                                        run_id=run_id)

    def quarantined(self, entity: Entity, stage: Stage | None = None) -> list[dict[str, Any]]:
        """Quarantined records of an entity, newest first (for tests and operators)."""
        return quarantined(self.engine, entity, stage)

    def quarantine_count(self, entity: Entity) -> int:
        return quarantine_count(self.engine, entity)

    def staged_records(self, table: sa.Table, model: type, where: Iterable[Any] = ()) -> Iterator[Any]:
        """Staged records as canonical models, streamed."""
        query = sa.select(table.c.record).where(*where).order_by(*table.primary_key.columns)
        with self.engine.connect() as conn:
            for (record,) in conn.execution_options(stream_results=True, yield_per=1000).execute(query):
                yield model.model_validate_json(record)

"""Dagster resources for the two databases (the AIQ resource lives in aiq/resource.py)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from aiq_pipelines.pos.source import PosSource
from aiq_pipelines.settings import Settings
from aiq_pipelines.sync.staging import SyncStore


class PosDatabase(dg.ConfigurableResource):
    """The POS database the extract assets read (reference schema, or custom queries)."""

    url: str = Field(description="SQLAlchemy URL of the POS database (POS_DATABASE_URL).")
    queries_file: str | None = Field(None, description="YAML file of custom extract queries (POS_QUERIES_FILE).")
    chunk_size: int = Field(5000, description="Rows fetched per round trip (EXTRACT_CHUNK_SIZE).")

    def source(self) -> PosSource:
        return PosSource(
            self.url, chunk_size=self.chunk_size, queries_file=Path(self.queries_file) if self.queries_file else None
        )


class SyncDatabase(dg.ConfigurableResource):
    """The pipeline's own database: staged records, ledger, quarantine, rate-limit log (SYNC_DATABASE_URL)."""

    url: str = Field(description="SQLAlchemy URL of the sync database (SYNC_DATABASE_URL).")
    timezone: str = Field(description="IANA time zone of the business day (POS_TIMEZONE).")

    def store(self) -> SyncStore:
        return SyncStore(self.url, self.timezone)


def _url(name: str, default: str) -> str | dg.EnvVar:
    # A production URL can carry a password: when set, it is read at launch through EnvVar and stays out of the UI.
    return dg.EnvVar(name) if os.environ.get(name) else default


def database_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "pos": PosDatabase(
            url=_url("POS_DATABASE_URL", settings.pos_database_url),
            queries_file=str(settings.pos_queries_file) if settings.pos_queries_file else None,
            chunk_size=settings.extract_chunk_size,
        ),
        "sync": SyncDatabase(url=_url("SYNC_DATABASE_URL", settings.sync_database_url), timezone=settings.pos_timezone),
    }

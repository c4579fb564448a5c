"""The pull API built from the settings: its read-only view of the sync database, its keys and limits."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import FastAPI

from aiq_pipelines.db.engines import read_only_engine_for
from aiq_pipelines.pull.app import PullConfig, create_app
from aiq_pipelines.pull.auth import ApiKeys
from aiq_pipelines.settings import Settings, SettingsError


def read_only(url: str) -> sa.Engine:
    """The sync database, read-only: a SQLite file opened with ``mode=ro``, PostgreSQL in read-only transactions."""
    engine = read_only_engine_for(url)
    return engine.execution_options(postgresql_readonly=True) if engine.dialect.name == "postgresql" else engine


def build_app(settings: Settings) -> FastAPI:
    """The service for ``settings``; a missing key is a settings error naming PULL_API_KEYS."""
    try:
        keys = ApiKeys(settings.pull_api_key_list)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return create_app(PullConfig(
        engine=read_only(settings.sync_database_url),
        timezone=settings.pos_timezone,
        keys=keys,
        settle_seconds=settings.pull_api_settle_seconds,
        requests_per_minute=settings.pull_api_requests_per_minute,
    ))

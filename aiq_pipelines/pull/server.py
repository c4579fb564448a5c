"""The pull API built from the settings: its read-only view of the sync database, its keys and what each reads."""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from fastapi import FastAPI

from aiq_pipelines.db.engines import read_only_engine_for
from aiq_pipelines.pull.app import PullConfig, create_app
from aiq_pipelines.pull.auth import ApiKeys
from aiq_pipelines.pull.logs import log_config
from aiq_pipelines.settings import Settings, SettingsError
from aiq_pipelines.sync.accounts import EVERYTHING, StoreScope


def read_only(url: str) -> sa.Engine:
    """The sync database, read-only: a SQLite file opened with ``mode=ro``, PostgreSQL in read-only transactions."""
    engine = read_only_engine_for(url)
    return engine.execution_options(postgresql_readonly=True) if engine.dialect.name == "postgresql" else engine


def _split(text: str) -> list[str]:
    return [key.strip() for key in text.split(",") if key.strip()]


def account_keys(settings: Settings, environ: Mapping[str, str]) -> tuple[dict[str | None, Sequence[str]],
                                                                           dict[str | None, StoreScope]]:
    """Each account's pull keys and the stores and shoppers they read. Without AIQ_ACCOUNTS_FILE, PULL_API_KEYS read
    everything; with it, each account's ``pull_api_keys_env`` names its keys and PULL_API_KEYS is refused, since a key
    reading every account's shoppers is what the file is there to prevent."""
    if settings.aiq_accounts_file is None:
        keys = settings.pull_api_key_list
        if not keys:
            raise SettingsError("PULL_API_KEYS: expected one or more API keys separated by commas")
        return {None: keys}, {None: EVERYTHING}
    if settings.pull_api_keys is not None:
        raise SettingsError("PULL_API_KEYS: with AIQ_ACCOUNTS_FILE each account's pull keys come from the variable its "
                            "pull_api_keys_env names; unset PULL_API_KEYS (a key reading every account is refused)")
    accounts = settings.aiq_accounts
    variables: dict[str, str] = {}
    keys: dict[str | None, Sequence[str]] = {}
    for account in accounts:
        variable = account.pull_api_keys_env
        if variable is None:
            continue
        if variable in variables:
            raise SettingsError(f"AIQ_ACCOUNTS_FILE: accounts {variables[variable]!r} and {account.name!r} both name "
                                f"{variable} as pull_api_keys_env: give each account keys of its own")
        variables[variable] = account.name
        keys[account.name] = _split(environ.get(variable, ""))
        if not keys[account.name]:
            raise SettingsError(f"{variable}: account {account.name!r} reads its pull keys from it, but it is unset or "
                                "empty; set one or more keys separated by commas")
    if not keys:
        raise SettingsError("AIQ_ACCOUNTS_FILE: no account names pull_api_keys_env, so no key could read anything; "
                            "give each account that AIQ pulls from a variable holding its keys")
    scopes = StoreScope.for_accounts({a.name: (a.locations, a.default) for a in accounts})
    return keys, {name: scopes[name] for name in keys}


def build_app(settings: Settings, environ: Mapping[str, str] | None = None) -> FastAPI:
    """The service for ``settings``; a missing or misplaced key is a settings error naming the variable."""
    keys, scopes = account_keys(settings, os.environ if environ is None else environ)
    try:
        api_keys = ApiKeys(keys)
    except ValueError as exc:
        raise SettingsError(f"AIQ_ACCOUNTS_FILE: {exc}") from None
    return create_app(PullConfig(
        engine=read_only(settings.sync_database_url),
        timezone=settings.pos_timezone,
        keys=api_keys,
        settle_seconds=settings.pull_api_settle_seconds,
        requests_per_minute=settings.pull_api_requests_per_minute,
        failed_keys_per_minute=settings.pull_api_failed_keys_per_minute,
        scopes=scopes,
    ))


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the pull API with uvicorn in this one process (the request budgets live in its memory)."""
    import uvicorn

    app = build_app(settings)
    # What start-up loaded (Dagster comes with the settings) lives as long as the process: kept out of the garbage
    # collector's full passes, which would otherwise walk it all and stall the page being served.
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_config=log_config(), access_log=False)

"""Dagster resources: the POS, the sync database and AIQ, each built from ``Settings`` by ``from_settings``.

``definitions.py`` builds them once from the settings read at load; no field has a default of its own, so every value
has one source. Secrets reach them through ``dg.EnvVar``: the AIQ API key always, and a database URL whenever it is set
in the environment (it may carry a password), so Dagster reads them at launch and never shows them.
"""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import dagster as dg
import httpx
from pydantic import Field

from aiq_pipelines.aiq.client import AiqClient, BulkBatchSize, InFlight, InventoryBatchSize
from aiq_pipelines.aiq.ratelimit import AccountRateLimiter, BudgetShare
from aiq_pipelines.defs.keys import account_assets
from aiq_pipelines.pos.dropfiles import DropFile, read_column_map, scan
from aiq_pipelines.pos.mirror import DropMirror
from aiq_pipelines.pos.source import PosSource
from aiq_pipelines.pos.times import StoreDays
from aiq_pipelines.settings import AccountSettings, Settings
from aiq_pipelines.sync.store import SyncStore


def _secret_url(name: str, value: str) -> str | dg.EnvVar:
    # A production URL can carry a password: when set, it is read at launch through EnvVar and stays out of the UI.
    return dg.EnvVar(name) if os.environ.get(name) else value


class PosDatabase(dg.ConfigurableResource):
    """The POS database the extract assets read (reference schema, or custom queries)."""

    url: str = Field(description="SQLAlchemy URL of the POS database (POS_DATABASE_URL).")
    queries_file: str | None = Field(description="YAML file of custom extract queries (POS_QUERIES_FILE).")
    chunk_size: int = Field(description="Rows fetched per round trip (EXTRACT_CHUNK_SIZE).")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        fields: dict[str, Any] = {
            "url": _secret_url("POS_DATABASE_URL", settings.pos_database_url),
            "queries_file": str(settings.pos_queries_file) if settings.pos_queries_file else None,
            "chunk_size": settings.extract_chunk_size,
        }
        return cls(**{**fields, **overrides})

    def source(self) -> PosSource:
        return PosSource(
            self.url, chunk_size=self.chunk_size, queries_file=Path(self.queries_file) if self.queries_file else None
        )


class DropFolder(dg.ConfigurableResource):
    """A folder of daily CSV exports (POS_DROP_DIR) and the SQLite mirror they are loaded into, which the extract
    reads as its POS (POS_DATABASE_URL)."""

    folder: str = Field(description="The drop folder (POS_DROP_DIR); its files are only ever read.")
    columns_file: str | None = Field(description="Column map of exports named otherwise (POS_DROP_COLUMNS_FILE).")
    mirror_url: str = Field(description="SQLite URL of the mirror (POS_DATABASE_URL).")
    timezone: str = Field(description="Zone of a customer's day and of stores without one (POS_TIMEZONE).")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        if settings.pos_drop_dir is None and "folder" not in overrides:
            raise ValueError("POS_DROP_DIR is not set: there is no drop folder")
        fields: dict[str, Any] = {
            "folder": str(settings.pos_drop_dir),
            "columns_file": str(settings.pos_drop_columns_file) if settings.pos_drop_columns_file else None,
            "mirror_url": settings.pos_database_url,
            "timezone": settings.pos_timezone,
        }
        return cls(**{**fields, **overrides})

    def files(self) -> list[DropFile]:
        return scan(Path(self.folder))

    def column_map(self) -> dict[str, dict[str, str]] | None:
        return read_column_map(Path(self.columns_file)) if self.columns_file else None

    def mirror(self) -> DropMirror:
        return DropMirror(self.mirror_url, StoreDays(zoneinfo.ZoneInfo(self.timezone)))


class SyncDatabase(dg.ConfigurableResource):
    """The pipeline's own database: staged records, ledger, quarantine, rate-limit log (SYNC_DATABASE_URL), and the
    thresholds its checks hold the staged records to."""

    url: str = Field(description="SQLAlchemy URL of the sync database (SYNC_DATABASE_URL).")
    timezone: str = Field(description="IANA time zone of the business day (POS_TIMEZONE).")
    quarantine_max_rate: float = Field(description="QUARANTINE_MAX_RATE: the most a window may quarantine.")
    quarantine_min_records: int = Field(description="QUARANTINE_MIN_RECORDS: the rate check's floor.")
    quarantine_max_age_days: float = Field(description="QUARANTINE_MAX_AGE_DAYS: how long a record may wait.")
    look_up_shopper_stores: bool = Field(
        description="Whether the extracts look up the stores each staged shopper bought in, which several AIQ accounts "
        "(AIQ_ACCOUNTS_FILE) need to decide who receives the shopper.",
    )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        fields: dict[str, Any] = {
            "url": _secret_url("SYNC_DATABASE_URL", settings.sync_database_url),
            "timezone": settings.pos_timezone,
            "quarantine_max_rate": settings.quarantine_max_rate,
            "quarantine_min_records": settings.quarantine_min_records,
            "quarantine_max_age_days": settings.quarantine_max_age_days,
            "look_up_shopper_stores": settings.shoppers_split,
        }
        return cls(**{**fields, **overrides})

    def store(self) -> SyncStore:
        return SyncStore(self.url, self.timezone, look_up_stores=self.look_up_shopper_stores)


class AiqResource(dg.ConfigurableResource):
    """AIQ (Alpine IQ) for one account: rate-limited, retrying clients that share the account's request budget.

    The API key is excluded from the resource's repr, str and ``model_dump()``.
    """

    api_key: str = Field(repr=False, exclude=True, description="AIQ API key; wire it as dg.EnvVar('AIQ_API_KEY').")
    base_url: str = Field(description="AIQ API base URL (AIQ_BASE_URL).")
    uid: str = Field(description="AIQ account id (AIQ_UID).")
    requests_per_second: int
    requests_per_minute: int
    requests_per_hour: int
    rate_limit_margin_seconds: float = Field(
        description="Extra time each send counts in the rate windows (AIQ_RATE_LIMIT_MARGIN_SECONDS)."
    )
    batch_size_sales: BulkBatchSize
    batch_size_members: BulkBatchSize
    batch_size_inventory: InventoryBatchSize
    timeout_seconds: float
    max_attempts: int
    max_retry_seconds: float
    max_in_flight: InFlight = Field(description="Batches kept at AIQ at once (AIQ_MAX_IN_FLIGHT).")
    rate_limit_database_url: str = Field(
        description="Database holding the account-wide rate limiter's send log (the sync database)."
    )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        """The resource as the settings describe it; the key is ``dg.EnvVar("AIQ_API_KEY")`` unless given."""
        fields: dict[str, Any] = {
            "api_key": dg.EnvVar("AIQ_API_KEY"),
            "base_url": settings.aiq_base_url,
            "uid": settings.aiq_uid,
            "requests_per_second": settings.aiq_requests_per_second,
            "requests_per_minute": settings.aiq_requests_per_minute,
            "requests_per_hour": settings.aiq_requests_per_hour,
            "rate_limit_margin_seconds": settings.aiq_rate_limit_margin_seconds,
            "batch_size_sales": settings.aiq_batch_size_sales,
            "batch_size_members": settings.aiq_batch_size_members,
            "batch_size_inventory": settings.aiq_batch_size_inventory,
            "timeout_seconds": settings.aiq_timeout_seconds,
            "max_attempts": settings.aiq_max_attempts,
            "max_retry_seconds": settings.aiq_max_retry_seconds,
            "max_in_flight": settings.aiq_max_in_flight,
            "rate_limit_database_url": _secret_url("SYNC_DATABASE_URL", settings.sync_database_url),
        }
        return cls(**{**fields, **overrides})

    @classmethod
    def from_account(cls, settings: Settings, account: AccountSettings, **overrides: Any) -> Self:
        """The resource of one account of ``AIQ_ACCOUNTS_FILE``: its key from ``dg.EnvVar(account.api_key_env)``, its
        own limits where it sets them, the ``AIQ_*`` settings for the rest."""
        limits = {
            f"requests_per_{window}": getattr(account, f"requests_per_{window}")
            for window in ("second", "minute", "hour")
            if getattr(account, f"requests_per_{window}") is not None
        }
        return cls.from_settings(settings, **{
            "api_key": dg.EnvVar(account.api_key_env), "base_url": account.base_url, "uid": account.uid, **limits,
            **overrides,
        })

    @property
    def account(self) -> str:
        """The rate budget's and the ledger's name: one per AIQ account, whatever process or run uses it."""
        return f"{self.base_url.rstrip('/')}|{self.uid}"

    @contextmanager
    def open_client(self, share: BudgetShare | None = None) -> Iterator[AiqClient]:
        """A client for this account (spending only ``share`` of its budget, when given); its connections and the
        limiter's are released when the block ends."""
        with AccountRateLimiter(
            self.rate_limit_database_url,
            self.account,
            per_second=self.requests_per_second,
            per_minute=self.requests_per_minute,
            per_hour=self.requests_per_hour,
            margin_seconds=self.rate_limit_margin_seconds,
            share=share,
        ) as limiter, AiqClient(
            self.base_url,
            self.api_key,
            self.uid,
            limiter,
            batch_size_sales=self.batch_size_sales,
            batch_size_members=self.batch_size_members,
            batch_size_inventory=self.batch_size_inventory,
            timeout=self.timeout_seconds,
            max_attempts=self.max_attempts,
            max_retry_seconds=self.max_retry_seconds,
            max_in_flight=self.max_in_flight,
        ) as client:
            yield client


class AlertWebhook(dg.ConfigurableResource):
    """The incoming webhook (Slack or Teams) that alerts go to; its URL is a secret, read through dg.EnvVar."""

    url: str = Field(repr=False, exclude=True, description="ALERT_WEBHOOK_URL; wire it as dg.EnvVar.")
    ui_url: str = Field(description="The Dagster UI's address, for run links (ALERT_UI_URL).")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        return cls(**{"url": dg.EnvVar("ALERT_WEBHOOK_URL"), "ui_url": settings.alert_ui_url, **overrides})

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url}/runs/{run_id}"

    def post(self, text: str) -> None:
        """Post one message, ``{"text": ...}``, which both Slack's and Teams' incoming webhooks take."""
        response = httpx.post(self.url, json={"text": text}, timeout=10)
        if response.status_code >= 300:
            raise RuntimeError(f"the alert webhook (ALERT_WEBHOOK_URL) answered {response.status_code}")


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Every resource of the code location, from the settings read once at load: one ``AiqResource`` per account."""
    resources: dict[str, dg.ConfigurableResource] = {
        "pos": PosDatabase.from_settings(settings),
        "sync": SyncDatabase.from_settings(settings),
    }
    if settings.pos_drop_dir is not None:
        resources["drop"] = DropFolder.from_settings(settings)
    if settings.alert_webhook_url is not None:
        resources["alerts"] = AlertWebhook.from_settings(settings)
    prefixed = settings.aiq_accounts_file is not None
    for account in settings.aiq_accounts:
        key = account_assets(account.name, prefixed=prefixed).resource_key
        resources[key] = AiqResource.from_account(settings, account) if prefixed else AiqResource.from_settings(settings)
    return resources

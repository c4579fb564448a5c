"""Every setting of the code location, read from the environment in one place.

Each field's environment variable is its name in upper case (``pos_timezone`` is ``POS_TIMEZONE``).
Secrets are deliberately absent: ``AIQ_API_KEY`` reaches the AIQ resource only through ``dg.EnvVar``,
and database URLs that carry a password are wired the same way in ``defs/resources.py``.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from aiq_pipelines.aiq.client import BulkBatchSize, InFlight, InventoryBatchSize
from aiq_pipelines.pos.dropfiles import read_column_map
from aiq_pipelines.pos.queries import NO_SHOPPER_STORES, PosQueryError, load_queries, reads_shopper_stores
from aiq_pipelines.pos.source import DEFAULT_CHUNK_SIZE

DATA_DIR = Path(os.environ.get("AIQ_PIPELINES_DATA_DIR", ".data"))

DEFAULT_AIQ_BASE_URL = "http://127.0.0.1:8765"
AIQ_LAB_BASE_URL = "https://lab.alpineiq.com"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what it expects."""


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("expected an http(s) URL such as https://lab.alpineiq.com")
    return value.rstrip("/")


class AccountSettings(BaseModel):
    """One AIQ account and the stores whose records it receives: an entry of ``AIQ_ACCOUNTS_FILE``.

    Without that file there is one account, ``default``, made of the ``AIQ_*`` settings, receiving every store.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="Short name; prefixes the account's asset keys.")
    uid: str = Field(min_length=1, description="AIQ account id (the :uid in every path).")
    base_url: str = Field(DEFAULT_AIQ_BASE_URL, description="AIQ API base URL.")
    api_key_env: str = Field(
        pattern=r"^[A-Z_][A-Z0-9_]*$", description="Environment variable holding this account's API key."
    )
    locations: tuple[Annotated[str, Field(min_length=1)], ...] = Field(
        (), description="POS location_ids whose sales, shoppers and stock go here."
    )
    pull_api_keys_env: str | None = Field(
        None, pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable holding this account's pull API keys (comma-separated); unset, no key reads "
                    "this account's records.",
    )
    default: bool = Field(False, description="Also receives the stores no account lists, and shoppers with no sale.")
    requests_per_second: int | None = Field(None, ge=1, description="This account's limits; AIQ_REQUESTS_* if unset.")
    requests_per_minute: int | None = Field(None, ge=1)
    requests_per_hour: int | None = Field(None, ge=1)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _http_url(value)

    @property
    def ledger_account(self) -> str:
        """The name of the account's ledger rows, rate budget and push lease: one per AIQ account."""
        return f"{self.base_url}|{self.uid}"


class _AccountsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accounts: list[AccountSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_home_per_store(self) -> _AccountsFile:
        names = [a.name for a in self.accounts]
        if len(set(names)) != len(names):
            raise ValueError(f"account names must be unique, got {names}")
        ledgers = [a.ledger_account for a in self.accounts]
        if len(set(ledgers)) != len(ledgers):
            raise ValueError("two accounts have the same base_url and uid: they would share one AIQ account")
        if sum(a.default for a in self.accounts) > 1:
            raise ValueError("at most one account may be default: true")
        homes: dict[str, str] = {}
        for account in self.accounts:
            for location in account.locations:
                if location in homes:
                    raise ValueError(f"location {location!r} is listed by both {homes[location]!r} and "
                                     f"{account.name!r}: a store's sales go to one account")
                homes[location] = account.name
        for account in self.accounts:
            if not account.locations and not account.default:
                raise ValueError(f"account {account.name!r} lists no locations and is not default: true")
        return self


def read_accounts_file(path: Path) -> tuple[AccountSettings, ...]:
    """The accounts of an ``AIQ_ACCOUNTS_FILE``, validated; a ``ValueError`` says what is wrong and where."""
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        # Where and what only: YAML's own message quotes the file's lines.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', None) or 'syntax error'})") from None
    try:
        return tuple(_AccountsFile.model_validate(content).accounts)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}" if where else
                            error["msg"].removeprefix("Value error, "))
        raise ValueError(f"{path}: " + "; ".join(problems)) from None


class Settings(BaseSettings):
    """Settings with their defaults. docs/settings.md's table mirrors this class."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    pos_database_url: str = Field(
        default_factory=lambda: f"sqlite:///{DATA_DIR / 'pos.db'}",
        description="SQLAlchemy URL of the POS database (SQLite or PostgreSQL).",
    )
    sync_database_url: str = Field(
        default_factory=lambda: f"sqlite:///{DATA_DIR / 'sync.db'}",
        description="SQLAlchemy URL of the pipeline's own database: staging, ledger, quarantine, rate limiter.",
    )
    pos_timezone: str = Field("America/Denver", description="IANA time zone that defines the business day.")
    pos_start_date: dt.date = Field(dt.date(2026, 1, 1), description="First daily partition (YYYY-MM-DD).")
    pos_queries_file: Path | None = Field(
        None, description="YAML file with one SELECT per entity for a POS whose schema differs from the reference."
    )
    pos_drop_dir: Path | None = Field(
        None, description="Folder of daily CSV exports to sync instead of a POS database; POS_DATABASE_URL then names "
        "the SQLite mirror they are loaded into (.data/pos_drop.db by default).",
    )
    pos_drop_columns_file: Path | None = Field(
        None, description="YAML map of reference column to export header, per file kind, for exports named otherwise."
    )
    extract_chunk_size: int = Field(
        DEFAULT_CHUNK_SIZE, ge=1, le=100_000, description="Rows fetched from the POS per round trip."
    )
    quarantine_max_rate: float = Field(
        0.05, ge=0, le=1, description="Share of a window's records that may be quarantined before the blocking check fails."
    )

    quarantine_min_records: int = Field(
        10, ge=0, description="The quarantine-rate check fails only once at least this many records are quarantined, "
        "so one bad sale on a quiet day never holds the day back.",
    )

    quarantine_max_age_days: float = Field(
        3, gt=0, description="The quarantine check warns once a record has waited longer than this many days."
    )
    alert_webhook_url: SecretStr | None = Field(
        None, description="Slack- or Teams-compatible incoming webhook that failed runs and checks are posted to; "
        "empty: no alerts.",
    )
    alert_ui_url: str = Field(
        "http://localhost:3000", description="The Dagster UI's address, for the run links in alerts."
    )

    aiq_base_url: str = Field(DEFAULT_AIQ_BASE_URL, description="AIQ API base URL; the local sandbox by default.")
    aiq_uid: str = Field("sandbox", min_length=1, description="AIQ account id (the :uid in every path).")
    aiq_requests_per_second: int = Field(5, ge=1)
    aiq_requests_per_minute: int = Field(120, ge=1)
    aiq_requests_per_hour: int = Field(2000, ge=1)
    aiq_rate_limit_margin_seconds: float = Field(
        0.1, ge=0, le=1, description="Extra time each send counts in AIQ's windows, covering the spread of delays "
        "between our stamp and AIQ's arrival time; long windows get at least 1% of their length.",
    )
    aiq_batch_size_sales: BulkBatchSize = 100
    aiq_batch_size_members: BulkBatchSize = 100
    aiq_batch_size_inventory: InventoryBatchSize = Field(100, description="AIQ caps inventory at 100 items a call.")
    aiq_timeout_seconds: float = Field(30.0, gt=0)
    aiq_max_attempts: int = Field(6, ge=1, le=20, description="Attempts per request, the first included.")
    aiq_max_retry_seconds: float = Field(300.0, gt=0, description="Total time one request may spend retrying.")
    aiq_max_in_flight: InFlight = Field(
        3, description="Batches the push keeps at AIQ at once; acknowledgements still reach the ledger in order."
    )
    aiq_accounts_file: Path | None = Field(
        None, description="YAML file mapping POS locations to several AIQ accounts; unset, one account gets every store."
    )

    audit_after_hours: float = Field(
        24, ge=0, description="The delivery audit reads a record back once AIQ acknowledged it this long ago."
    )
    audit_budget_share: float = Field(
        0.05, gt=0, le=0.5, description="The most of each of the account's rate windows the audit's reads may take."
    )
    audit_max_missing_rate: float = Field(
        0.01, ge=0, le=1, description="The audit's check warns on any missing persona and fails above this rate."
    )
    audit_page_size: int = Field(
        100, ge=1, le=1000, description="Personas per page when the audit pages through the account (AIQ publishes "
        "no largest page).",
    )

    sensor_interval_seconds: int = Field(60, ge=5)
    inventory_sync_cron: str = Field("0 * * * *")
    automation_default_status: Literal["running", "stopped"] = Field(
        "stopped", description="Whether the sensors and schedules start running on a fresh Dagster instance; a switch "
        "the operator turns in the UI wins from then on. make dev sets running.",
    )

    pull_api_keys: SecretStr | None = Field(
        None, description="The pull API's keys, separated by commas; the service refuses to start without one."
    )
    pull_api_settle_seconds: float = Field(
        120, ge=0, le=3600, description="The pull API serves records at least this old, so a window is complete."
    )
    pull_api_requests_per_minute: int = Field(600, ge=1, description="The pull API's request budget per key.")
    pull_api_failed_keys_per_minute: int = Field(
        10, ge=1, description="Requests with a wrong or missing key one client address may make in a minute; past that "
        "it gets 429 until the minute has passed.",
    )

    @property
    def pull_api_key_list(self) -> list[str]:
        secret = self.pull_api_keys.get_secret_value() if self.pull_api_keys else ""
        return [key.strip() for key in secret.split(",") if key.strip()]

    @field_validator("pos_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone name such as America/Denver") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _drop_mirror(cls, data: Any) -> Any:
        # With a drop folder, the POS the extract reads is the folder's mirror, kept apart from a database POS.
        if isinstance(data, dict) and data.get("pos_drop_dir") and not data.get("pos_database_url"):
            return {**data, "pos_database_url": f"sqlite:///{DATA_DIR / 'pos_drop.db'}"}
        return data

    @field_validator("pos_database_url", "sync_database_url")
    @classmethod
    def _sqlalchemy_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError:
            raise ValueError("expected a SQLAlchemy URL such as sqlite:///.data/pos.db or postgresql://host/db") from None
        return value

    @field_validator("inventory_sync_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        # A schedule built with it is Dagster's own check, so a value that passes here is one its schedules accept.
        import dagster as dg

        if len(value.split()) != 5:
            raise ValueError("expected a cron expression of five fields such as '0 * * * *'")
        try:
            dg.ScheduleDefinition(name="inventory_sync_cron_check", cron_schedule=value, job_name="check")
        except dg.DagsterInvalidDefinitionError:
            raise ValueError("expected a cron expression of five fields such as '0 * * * *'") from None
        return value

    @field_validator("aiq_base_url", "alert_ui_url")
    @classmethod
    def _aiq_url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        _http_url(value.get_secret_value())
        return value

    @field_validator("pos_queries_file", "aiq_accounts_file", "pos_drop_columns_file")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("expected the path of an existing YAML file")
        return value

    @field_validator("pos_drop_dir")
    @classmethod
    def _existing_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError("expected the path of an existing folder")
        return value

    @field_validator("pos_drop_columns_file")
    @classmethod
    def _column_map(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_column_map(value)
        return value

    @model_validator(mode="after")
    def _drop_mirror_is_sqlite(self) -> Settings:
        if self.pos_drop_dir is not None and not self.pos_database_url.startswith("sqlite:"):
            raise ValueError("POS_DATABASE_URL: with POS_DROP_DIR it names the SQLite mirror the drop files are loaded "
                             "into, e.g. sqlite:///.data/pos_drop.db")
        return self

    @model_validator(mode="after")
    def _consistent_rate_limits(self) -> Settings:
        if self.aiq_requests_per_minute < self.aiq_requests_per_second:
            raise ValueError("AIQ_REQUESTS_PER_MINUTE must be at least AIQ_REQUESTS_PER_SECOND")
        if self.aiq_requests_per_hour < self.aiq_requests_per_minute:
            raise ValueError("AIQ_REQUESTS_PER_HOUR must be at least AIQ_REQUESTS_PER_MINUTE")
        return self

    _accounts: tuple[AccountSettings, ...] = PrivateAttr(())

    @model_validator(mode="after")
    def _read_accounts(self) -> Settings:
        if self.aiq_accounts_file is None:
            self._accounts = (AccountSettings(name="default", uid=self.aiq_uid, base_url=self.aiq_base_url,
                                              api_key_env="AIQ_API_KEY", default=True),)
        else:
            try:
                self._accounts = read_accounts_file(self.aiq_accounts_file)
            except ValueError as exc:
                raise ValueError(f"AIQ_ACCOUNTS_FILE: {exc}") from None
            for account in self._accounts:
                second, minute, hour = (getattr(account, f"requests_per_{w}") or getattr(self, f"aiq_requests_per_{w}")
                                        for w in ("second", "minute", "hour"))
                if not second <= minute <= hour:
                    raise ValueError(
                        f"AIQ_ACCOUNTS_FILE: account {account.name!r}: its limits ({second}/s, {minute}/min, {hour}/h, "
                        "from the file or AIQ_REQUESTS_*) must not shrink as the window grows"
                    )
        return self

    @model_validator(mode="after")
    def _shopper_stores_query(self) -> Settings:
        # Several accounts decide who gets a shopper from the stores the POS knows their sales in: a custom schema
        # must say how to read them, or no shopper could be placed (found here, not at the first run).
        if self.shoppers_split and self.pos_queries_file is not None:
            try:
                queries = load_queries(self.pos_queries_file)
            except PosQueryError as exc:
                raise ValueError(str(exc)) from None
            if not reads_shopper_stores(queries):
                raise ValueError(NO_SHOPPER_STORES)
        return self

    @property
    def aiq_accounts(self) -> tuple[AccountSettings, ...]:
        """The AIQ accounts to push to, read once with the settings."""
        return self._accounts

    @property
    def shoppers_split(self) -> bool:
        """Whether some account receives only some shoppers (one that is not the default): the extracts then look up
        the stores each staged shopper bought in."""
        return any(not account.default for account in self._accounts)

    @property
    def timezone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.pos_timezone)


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's error into one that names each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            name = "_".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if name else message)  # a whole-settings rule names its variables
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once when the code location loads."""
    return load_settings()

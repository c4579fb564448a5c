"""``AiqResource``: the Dagster resource that opens AIQ clients for one account.

Every field but the API key defaults to the code location's settings (``aiq_pipelines.settings``); the key is
wired as ``dg.EnvVar("AIQ_API_KEY")`` so Dagster reads it at launch and never shows it. The key is excluded from
the resource's repr, str and ``model_dump()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from aiq_pipelines.aiq.client import AiqClient
from aiq_pipelines.aiq.ratelimit import AccountRateLimiter
from aiq_pipelines.settings import get_settings


class AiqResource(dg.ConfigurableResource):
    """AIQ (Alpine IQ) for one account: rate-limited, retrying clients that share the account's request budget."""

    api_key: str = Field(repr=False, exclude=True, description="AIQ API key; wire it as dg.EnvVar('AIQ_API_KEY').")
    base_url: str = Field(default_factory=lambda: get_settings().aiq_base_url, description="AIQ API base URL.")
    uid: str = Field(default_factory=lambda: get_settings().aiq_uid, description="AIQ account id (AIQ_UID).")
    requests_per_second: int = Field(default_factory=lambda: get_settings().aiq_requests_per_second)
    requests_per_minute: int = Field(default_factory=lambda: get_settings().aiq_requests_per_minute)
    requests_per_hour: int = Field(default_factory=lambda: get_settings().aiq_requests_per_hour)
    rate_limit_margin_seconds: float = Field(
        default_factory=lambda: get_settings().aiq_rate_limit_margin_seconds,
        description="Extra time each send counts in the rate windows (AIQ_RATE_LIMIT_MARGIN_SECONDS).",
    )
    batch_size_sales: int = Field(default_factory=lambda: get_settings().aiq_batch_size_sales)
    batch_size_members: int = Field(default_factory=lambda: get_settings().aiq_batch_size_members)
    batch_size_inventory: int = Field(default_factory=lambda: get_settings().aiq_batch_size_inventory)
    timeout_seconds: float = Field(default_factory=lambda: get_settings().aiq_timeout_seconds)
    max_attempts: int = Field(default_factory=lambda: get_settings().aiq_max_attempts)
    max_retry_seconds: float = Field(default_factory=lambda: get_settings().aiq_max_retry_seconds)
    max_in_flight: int = Field(
        default_factory=lambda: get_settings().aiq_max_in_flight,
        description="Batches kept at AIQ at once (AIQ_MAX_IN_FLIGHT, 1 to 16); the rate limits hold regardless.",
    )
    rate_limit_database_url: str = Field(
        default_factory=lambda: get_settings().sync_database_url,
        description="Database holding the account-wide rate limiter's send log (the sync database).",
    )

    @property
    def account(self) -> str:
        """The rate budget's name: one per AIQ account, whatever process or run uses it."""
        return f"{self.base_url.rstrip('/')}|{self.uid}"

    @contextmanager
    def open_client(self) -> Iterator[AiqClient]:
        """A client for this account; its connections and the limiter's are released when the block ends."""
        with AccountRateLimiter(
            self.rate_limit_database_url,
            self.account,
            per_second=self.requests_per_second,
            per_minute=self.requests_per_minute,
            per_hour=self.requests_per_hour,
            margin_seconds=self.rate_limit_margin_seconds,
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

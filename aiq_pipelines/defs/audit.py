"""The delivery audit (group ``aiq``): per AIQ account and business day, what AIQ holds of what it acknowledged.

One multi-asset, ``aiq_delivery_audit``, holds each account's audit asset (``<account>/aiq_delivery_audit`` with an
accounts file, like the push assets); each day of a run gets a materialization of its own with the day's counts, and
each account's check ``none_missing`` warns on any missing persona and fails above AUDIT_MAX_MISSING_RATE. The reads
spend the account's budget through a limiter held to AUDIT_BUDGET_SHARE of every window (``aiq.ratelimit``), in the
pool ``aiq_audit``: audits take turns with each other, never with the pushes. Records by POS key only, never a name,
phone or email.
"""


import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import dagster as dg
from pydantic import Field

from aiq_pipelines.aiq.ratelimit import BudgetShare
from aiq_pipelines.defs.keys import AIQ_TAGS, OWNERS, account_assets
from aiq_pipelines.defs.partitions import daily_partitions, settings
from aiq_pipelines.defs.resources import AiqResource, SyncDatabase
from aiq_pipelines.settings import AccountSettings, Settings
from aiq_pipelines.sync.accounts import StoreScope
from aiq_pipelines.sync.audit import Auditor, AuditResult, DayAudit

AIQ_DELIVERY_AUDIT = dg.AssetKey("aiq_delivery_audit")
CHECK_NONE_MISSING = "none_missing"
AUDIT_POOL = "aiq_audit"
AUDIT_PURPOSE = "audit"
TABLE_ROWS = 50  # records named per day; the counts cover all of them
NOT_READ_BACK = ("Sale lines are not read back: AIQ publishes no read for sales. A sale is checked for its persona only "
                 "(attributed when AIQ holds it).")


def audit_key(account: str, *, prefixed: bool) -> dg.AssetKey:
    return AIQ_DELIVERY_AUDIT.with_prefix(account) if prefixed else AIQ_DELIVERY_AUDIT


class DeliveryAudit(dg.ConfigurableResource):
    """How the delivery audit reads AIQ back: when, at what share of the budget, and what it tolerates."""

    after_hours: float = Field(description="AUDIT_AFTER_HOURS: records acknowledged more recently are pending.")
    budget_share: float = Field(description="AUDIT_BUDGET_SHARE: the most of any rate window the reads may take.")
    max_missing_rate: float = Field(description="AUDIT_MAX_MISSING_RATE: none_missing fails above it.")
    page_size: int = Field(description="AUDIT_PAGE_SIZE: personas per page when paging through the account.")

    @classmethod
    def from_settings(cls, config: Settings, **overrides: Any) -> Self:
        return cls(**{"after_hours": config.audit_after_hours, "budget_share": config.audit_budget_share,
                      "max_missing_rate": config.audit_max_missing_rate, "page_size": config.audit_page_size,
                      **overrides})

    @property
    def share(self) -> BudgetShare:
        return BudgetShare(AUDIT_PURPOSE, self.budget_share)

    def requests_per_day(self, aiq: AiqResource) -> int:
        """What one day's audit may spend: its share of an hour of the account's budget, so it ends within the hour."""
        return max(1, int(self.budget_share * aiq.requests_per_hour))


def _records_table(day: DayAudit) -> str:
    rows = [(key, "missing", "") for key in day.missing_keys]
    rows += [(key, "mismatched", ", ".join(fields)) for key, fields in day.mismatched_fields.items()]
    if not rows:
        return "none"
    shown = "\n".join(f"| `{key}` | {status} | {fields} |" for key, status, fields in rows[:TABLE_ROWS])
    more = f"\n\n{len(rows) - TABLE_ROWS} more not shown." if len(rows) > TABLE_ROWS else ""
    return f"| persona (POS key) | status | fields |\n|---|---|---|\n{shown}{more}"


def day_metadata(day: DayAudit, aiq: AiqResource) -> dict[str, Any]:
    """What the UI shows and plots for one audited day."""
    low, high = day.missing_interval
    return {
        "dagster/row_count": day.personas,
        "personas": day.personas, "confirmed": day.confirmed, "mismatched": day.mismatched, "missing": day.missing,
        "pending": day.pending, "unread": day.unread, "not_audited": day.not_audited,
        "awaiting_resend": day.awaiting_resend,
        "confirmed_rate": dg.MetadataValue.float(day.confirmed / day.read if day.read else 1.0),
        "missing_rate": dg.MetadataValue.float(day.missing_rate),
        "sampled": dg.MetadataValue.bool(day.sampled), "sample_size": day.read, "readable": day.readable,
        "missing_rate_low": dg.MetadataValue.float(low), "missing_rate_high": dg.MetadataValue.float(high),
        "missing_estimate": day.missing_estimate,
        "sales_audited": day.sales_audited, "sales_attributed": day.sales_attributed,
        "sales_unattributed": day.sales_unattributed, "sale_lines": NOT_READ_BACK,
        "read_method": day.method or "none", "aiq_requests": day.requests, "days_read_together": day.days_in_pass,
        "aiq_account": aiq.uid,
        "records": dg.MetadataValue.md(_records_table(day)),
    }


def none_missing(key: dg.AssetKey, result: AuditResult, max_rate: float) -> dg.AssetCheckResult:
    """Warns on any missing persona of the run's days, fails (severity ERROR) above ``max_rate`` of those read."""
    read, missing = sum(d.read for d in result.days), sum(d.missing for d in result.days)
    rate = missing / read if read else 0.0
    severity = dg.AssetCheckSeverity.ERROR if rate > max_rate else dg.AssetCheckSeverity.WARN
    keys = [k for d in result.days for k in d.missing_keys]
    return dg.AssetCheckResult(
        asset_key=key, check_name=CHECK_NONE_MISSING, passed=missing == 0, severity=severity,
        metadata={"read": read, "missing": missing, "missing_rate": dg.MetadataValue.float(rate),
                  "max_missing_rate": dg.MetadataValue.float(max_rate), "resend": result.resend, "held": result.held},
        description=None if missing == 0 else (
            f"{missing} of {read} personas read back are missing at AIQ ({rate:.1%}; AUDIT_MAX_MISSING_RATE "
            f"{max_rate:.1%}): {result.resend} to be re-sent by the next sync, {result.held} held in quarantine "
            f"(stage audit). First keys: {', '.join(keys[:10])}"
        ),
    )


class _AccountLog(logging.LoggerAdapter):
    """The run's log, each line naming the account it is about (accounts are audited at once)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['account']}] {msg}", kwargs


class _Account:
    def __init__(self, config: AccountSettings, key: dg.AssetKey, resource_key: str, scope: StoreScope,
                 labelled: bool):
        self.config, self.key, self.resource_key, self.scope, self.labelled = config, key, resource_key, scope, labelled

    def audit(self, context: dg.AssetExecutionContext) -> list[Any]:
        """Audit the run's days for this account: a materialization per day, then the account's check."""
        aiq: AiqResource = getattr(context.resources, self.resource_key)
        audit: DeliveryAudit = context.resources.audit
        sync: SyncDatabase = context.resources.sync
        store = sync.store()
        first, stop = store.calendar.dates(context.partition_time_window.start, context.partition_time_window.end)
        log = _AccountLog(context.log, {"account": self.config.name}) if self.labelled else context.log
        with aiq.open_client(audit.share) as client:
            auditor = Auditor(store.engine, client, aiq.account, context.run.run_id,
                              after=dt.timedelta(hours=audit.after_hours), page_size=audit.page_size,
                              max_requests_per_day=audit.requests_per_day(aiq), scope=self.scope, log=log)
            result = auditor.audit(first, stop)
        events: list[Any] = [dg.AssetMaterialization(asset_key=self.key, partition=day.day.isoformat(),
                                                     metadata=day_metadata(day, aiq)) for day in result.days]
        return [*events, none_missing(self.key, result, audit.max_missing_rate)]


def build_audit_assets(configs: Sequence[AccountSettings], *, prefixed: bool) -> dg.AssetsDefinition:
    """``aiq_delivery_audit``: the audit asset of every account, downstream of its push assets."""
    scopes = StoreScope.for_accounts({c.name: (c.locations, c.default) for c in configs})
    accounts = []
    specs, checks = [], []
    for config in configs:
        pushes = account_assets(config.name, prefixed=prefixed)
        key = audit_key(config.name, prefixed=prefixed)
        accounts.append(_Account(config, key, pushes.resource_key, scopes[config.name], len(configs) > 1))
        note = f" This is AIQ account `{config.name}`'s." if len(configs) > 1 else ""
        specs.append(dg.AssetSpec(
            key, group_name="aiq", kinds={"api", "python"}, owners=OWNERS, tags={**AIQ_TAGS, "layer": "audit"},
            deps=[pushes.personas, pushes.sales], skippable=True,
            description=(
                "What AIQ holds of what it acknowledged for each business day, read back from AIQ." + note + "\n\n"
                "Per persona of the day (those staged for it and the customers of its sales): confirmed (AIQ holds "
                "it as sent: phone, email, first and last name), mismatched (AIQ holds other values in those "
                "fields), missing, pending (acknowledged less than AUDIT_AFTER_HOURS ago), unread (not in a random "
                "sample). Missing and mismatched personas are re-sent by the next sync; twice missing, they are held "
                "in sync_quarantine (stage audit) until retry_quarantined. " + NOT_READ_BACK + " The reads take at "
                "most AUDIT_BUDGET_SHARE of the account's rate budget: paging through the account or one search per "
                "persona, whichever costs fewer requests."
            ),
        ))
        checks.append(dg.AssetCheckSpec(
            CHECK_NONE_MISSING, asset=key,
            description="Warns when a persona AIQ acknowledged is missing at AIQ; fails above AUDIT_MAX_MISSING_RATE "
                        "of the personas read.",
        ))
    required = {"sync", "audit", *(account.resource_key for account in accounts)}

    @dg.multi_asset(
        name="aiq_delivery_audit", specs=specs, check_specs=checks, partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(), pool=AUDIT_POOL, can_subset=True,
        required_resource_keys=required,
    )
    def aiq_delivery_audit(context: dg.AssetExecutionContext) -> Iterator[Any]:
        """Read back what AIQ acknowledged for the run's days, every selected account at once (each under its own
        budget), and record per day what is confirmed, pending, missing and mismatched."""
        selected = [account for account in accounts if account.key in context.selected_asset_keys]
        with ThreadPoolExecutor(max(1, len(selected)), thread_name_prefix="aiq-audit") as pool:
            for events in pool.map(lambda account: account.audit(context), selected):
                yield from events

    return aiq_delivery_audit


aiq_delivery_audit = build_audit_assets(settings.aiq_accounts, prefixed=settings.aiq_accounts_file is not None)
delivery_audit = dg.define_asset_job(
    "delivery_audit", selection=[aiq_delivery_audit], executor_def=dg.in_process_executor,
    description="Read back from AIQ what it acknowledged for business days (a day, or a range as one run).",
)
